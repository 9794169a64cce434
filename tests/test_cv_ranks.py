"""``pagkd-lite cv`` under torchrun (:mod:`pagkd_lite.apps.cv_folds`): the folds spread over
two gloo ranks give the pooled result of one process (one thread each); finished folds are
read, not trained again; a rank without a fold says so and waits; a rank killed mid-fold
stops the run with one line naming it and its fold, and the restart trains only the
unfinished folds.

The data is a tiny real-layout folder of JPEGs (2 classes x 2 modalities x 10 files); the
smoke preset at 32 px, 3 folds, wli_only. The reference is one process, run in this one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_ddp import _port
from test_decode_cache import write_jpegs

from pagkd_lite.apps.cli import main

REPO = Path(__file__).resolve().parents[1]
ARGS = ["cv", "--folds", "3", "--method", "wli_only", "--preset", "smoke",
        "--set", "data.image_size=32", "--set", "train.epochs=8", "--set", "bootstrap=20",
        "--val-fraction", "0.3", "--device", "cpu", "--threads", "1", "--seed", "0", "--quiet"]


def _drop_seconds(path: Path) -> list[list[str]]:
    """cv_results.csv without its wall-time column."""
    rows = [r.split(",") for r in path.read_text().splitlines()]
    col = rows[0].index("seconds")
    return [r[:col] + r[col + 1:] for r in rows]


def _same_results(a: Path, b: Path) -> None:
    assert (a / "predictions.csv").read_text() == (b / "predictions.csv").read_text()
    assert _drop_seconds(a / "cv_results.csv") == _drop_seconds(b / "cv_results.csv")


def _torchrun(*args: str, nproc: int = 2, script: list[str] | None = None) -> list[str]:
    """The torchrun command line: ``-m pagkd_lite`` (or ``script``) with ``args``."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
              "--master_addr", "127.0.0.1", "--master_port", _port()]
    return [*launch, *(script or ["-m", "pagkd_lite"]), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> tuple[list[str], Path]:
    """The data, the arguments every run shares, and the one-process run's --out."""
    root = tmp_path_factory.mktemp("cv_ranks")
    data = write_jpegs(root / "data", per_class=10, px=48)
    argv = [*ARGS, "--data-root", str(data), "--cache-dir", str(root / "cache")]
    assert main([*argv, "--out", str(root / "plain")]) == 0
    return argv, root / "plain"


def test_two_ranks_give_the_pooled_result_of_one_process(plain, tmp_path, capsys):
    argv, ref = plain
    capsys.readouterr()
    out = tmp_path / "two"
    res = subprocess.run(_torchrun(*argv, "--out", str(out)), capture_output=True, text=True,
                         env=_env(), timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _same_results(out, ref)
    # rank 0 trains folds 1 and 3, rank 1 fold 2; rank 0 prints the table once
    assert "fold 1/3 (rank 0)" in res.stdout and "fold 3/3 (rank 0)" in res.stdout
    assert "fold 2/3 (rank 1)" in res.stderr
    assert res.stdout.count("| **pooled** |") == 1
    report = json.loads((out / "load_report.json").read_text())
    assert sum(sum(c.values()) for c in report["counts"].values()) == 40
    for i in range(3):  # every fold's result kept, no fold left marked running
        assert (out / f"fold{i}" / "result.json").exists()
        assert not (out / f"fold{i}" / "RUNNING").exists()


def test_finished_folds_are_read_and_a_rank_without_a_fold_waits(plain, tmp_path):
    """Through the ``pagkd-lite`` script: two folds already finished, one left for two
    ranks."""
    argv, ref = plain
    script = Path(sys.executable).with_name("pagkd-lite")
    if not script.exists():
        pytest.skip(f"no pagkd-lite script beside {sys.executable}")
    out = tmp_path / "resumed"
    for i in (0, 1):
        (out / f"fold{i}").mkdir(parents=True)
        shutil.copy(ref / f"fold{i}" / "result.json", out / f"fold{i}" / "result.json")
    res = subprocess.run(_torchrun(*argv, "--out", str(out),
                                   script=["--no-python", str(script)]),
                         capture_output=True, text=True, env=_env(), timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    _same_results(out, ref)
    assert "fold 1/3: finished before" in res.stdout and "fold 2/3: finished before" in res.stdout
    assert "fold 3/3 (rank 0)" in res.stdout
    assert ("rank 1: no fold to train (1 unfinished fold(s) for 2 ranks); waiting for the "
            "other ranks") in res.stderr
    assert not (out / "fold0" / "wli_only").exists()  # not trained again


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_rank_killed_mid_fold_stops_the_run_and_the_restart_trains_the_rest(plain,
                                                                            tmp_path):
    """Rank 1 is paused mid-fold (fold 2/3), rank 0 finishes fold 1/3, then rank 1 is
    killed: one line names rank 1 and its fold; the restart reads fold 1/3 and trains the
    other two; the pooled result is the uninterrupted one's."""
    argv, ref = plain
    out = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun(*argv, "--out", str(out)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    running, epoch = out / "fold1" / "RUNNING", out / "fold1" / "wli_only" / "last.pt"
    deadline = time.monotonic() + 180
    while not (running.exists() and epoch.exists()) and proc.poll() is None:
        assert time.monotonic() < deadline, "rank 1 never started fold 2/3"
        time.sleep(0.01)
    pid = json.loads(running.read_text())["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        assert json.loads(running.read_text())["rank"] == 1
        assert not (out / "fold1" / "result.json").exists()  # caught mid-fold
        while not (out / "fold0" / "result.json").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "rank 0 never finished fold 1/3"
            time.sleep(0.01)
    finally:
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    ours = [ln for ln in err.splitlines() if ln.startswith("pagkd-lite cv:")]
    assert len(ours) == 1, err[-3000:]
    assert f"rank 1 stopped during fold 2/3 ({out / 'fold1'})" in ours[0]
    assert "run the same command again to train the unfinished folds only" in ours[0]
    assert not (out / "predictions.csv").exists()
    first = (out / "fold0" / "result.json").read_bytes()

    res = subprocess.run(_torchrun(*argv, "--out", str(out)), capture_output=True, text=True,
                         env=_env(), timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "fold 1/3: finished before, not trained again" in res.stdout
    trained = res.stdout + res.stderr
    assert "fold 2/3 (rank" in trained and "fold 3/3 (rank" in trained
    assert "fold 1/3 (rank" not in trained
    assert (out / "fold0" / "result.json").read_bytes() == first
    _same_results(out, ref)
