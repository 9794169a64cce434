"""``pagkd-lite cv`` killed with SIGKILL mid-fold and started again gives the same
predictions as an uninterrupted run, and its restart reads the decode cache (0 decodes).

``cv`` resumes per fold: a restart reads the folds that finished (``fold<i>/result.json``)
and trains the others again from the seed (it does not read the killed run's ``last.pt``);
the pooled files are written atomically at the end, so a killed run leaves no half-written
``predictions.csv`` behind. The data is a tiny real-layout folder of JPEGs written by the
test. (Under torchrun: tests/test_cv_ranks.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_decode_cache import write_jpegs

from pagkd_lite.apps.cli import main

REPO = Path(__file__).resolve().parents[1]
ARGS = ["cv", "--folds", "2", "--method", "wli_only", "--preset", "smoke",
        "--set", "data.image_size=32", "--set", "train.epochs=2", "--set", "bootstrap=20",
        "--val-fraction", "0.3", "--device", "cpu", "--threads", "1", "--seed", "0", "--quiet"]


def _drop_seconds(text: str) -> list[list[str]]:
    """cv_results.csv without its wall-time column."""
    rows = [r.split(",") for r in text.splitlines()]
    col = rows[0].index("seconds")
    return [r[:col] + r[col + 1:] for r in rows]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_cv_killed_mid_fold_then_restarted_gives_the_same_predictions(tmp_path, capsys):
    data = write_jpegs(tmp_path / "data", per_class=10, px=48)
    cache = tmp_path / "cache"
    killed = tmp_path / "killed"
    argv = [*ARGS, "--data-root", str(data), "--cache-dir", str(cache)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "pagkd_lite.apps.cli", *argv, "--out",
                             str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    marker = killed / "fold0" / "wli_only" / "last.pt"  # fold 0 has finished an epoch
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert marker.exists() and not (killed / "predictions.csv").exists()

    assert main([*argv, "--out", str(killed)]) == 0          # the restart
    plain = tmp_path / "plain"
    assert main([*argv, "--out", str(plain)]) == 0           # never interrupted
    capsys.readouterr()
    assert (killed / "predictions.csv").read_text() == (plain / "predictions.csv").read_text()
    assert _drop_seconds((killed / "cv_results.csv").read_text()) == _drop_seconds(
        (plain / "cv_results.csv").read_text())
    report = json.loads((killed / "load_report.json").read_text())
    assert report["decoded"] == 0 and report["cache"]["reused"] == 40
