#!/usr/bin/env bash
# Screenshot of JupyterLab showing notebook 01, for the README: docs/lab_notebook01.png.
#
# Starts JupyterLab headless at the repository's root, as `make lab` does (from the repo's
# .venv, port 8899, no token), waits until it answers, loads the notebook in headless
# Chromium, writes the PNG, stops the server. Needs Debian's `chromium` package:
#     apt-get update && apt-get install -y chromium
#
# Usage: scripts/lab_screenshot.sh [OUTPUT.png] [NOTEBOOK.ipynb]
#   env: PORT (8899), BUDGET_MS (virtual time budget for the page, 20000),
#        CHROMIUM (/usr/bin/chromium), WINDOW (1400,900)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-docs/lab_notebook01.png}"
NOTEBOOK="${2:-01_unpaired_data_and_grouping.ipynb}"
PORT="${PORT:-8899}"
BUDGET_MS="${BUDGET_MS:-20000}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
WINDOW="${WINDOW:-1400,900}"
JUPYTER="$ROOT/.venv/bin/jupyter"
cd "$ROOT"
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac

die() { echo "lab_screenshot: $*" >&2; exit 1; }
[ -x "$JUPYTER" ] || die "$JUPYTER not found: run 'make install' first"
[ -x "$CHROMIUM" ] || die "$CHROMIUM not found. Install Chromium first (Debian/Ubuntu):
    apt-get update && apt-get install -y chromium
or point CHROMIUM=/path/to/chromium at another build."
[ -f "notebooks/$NOTEBOOK" ] || die "notebooks/$NOTEBOOK does not exist"
if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
    die "port $PORT is already in use; stop that server or set PORT=..."
fi

extra=()
[ "$(id -u)" = 0 ] && extra+=(--allow-root)
LOG="$(mktemp)"
PROFILE="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$PROFILE" "$LOG"
}
trap cleanup EXIT

# A fresh workspace each time (no restored layout or tabs from a previous session), and
# throwaway user settings that silence the "official Jupyter news?" toast.
export JUPYTERLAB_WORKSPACES_DIR="$PROFILE/workspaces"
export JUPYTERLAB_SETTINGS_DIR="$PROFILE/settings"
mkdir -p "$JUPYTERLAB_SETTINGS_DIR/@jupyterlab/apputils-extension"
cat >"$JUPYTERLAB_SETTINGS_DIR/@jupyterlab/apputils-extension/notification.jupyterlab-settings" <<'JSON'
{"fetchNews": "false", "checkForUpdates": false, "doNotDisturbMode": true}
JSON
"$JUPYTER" lab --no-browser --port "$PORT" --ServerApp.token='' --ServerApp.password='' \
    --ServerApp.ip=127.0.0.1 --ServerApp.root_dir="$ROOT" "${extra[@]}" \
    --ContentsManager.hide_globs="['__pycache__', '*.pyc', '.ipynb_checkpoints', 'runs']" \
    >"$LOG" 2>&1 &
SERVER_PID=$!

echo "lab_screenshot: waiting for JupyterLab on port $PORT ..."
for i in $(seq 1 120); do
    if curl -sf -o /dev/null "http://127.0.0.1:$PORT/api/status"; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$LOG" >&2; die "JupyterLab exited early"; }
    [ "$i" = 120 ] && { cat "$LOG" >&2; die "JupyterLab did not answer within 60 s"; }
    sleep 0.5
done

mkdir -p "$(dirname "$OUT")"
echo "lab_screenshot: rendering $NOTEBOOK (virtual time budget ${BUDGET_MS} ms) ..."
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$PROFILE/chromium" --window-size="$WINDOW" \
    --virtual-time-budget="$BUDGET_MS" --hide-scrollbars \
    --screenshot="$OUT" "http://127.0.0.1:$PORT/lab/tree/notebooks/$NOTEBOOK" 2>>"$LOG" \
    || { cat "$LOG" >&2; die "chromium failed"; }
[ -s "$OUT" ] || die "no screenshot written"
echo "lab_screenshot: wrote $OUT ($(du -k "$OUT" | cut -f1) KB)"
