"""The command line, end to end on the smoke preset."""

import re
import subprocess
import sys
import time

import pytest
import torch

from pagkd_lite.apps.cli import main


def test_demo_smoke_under_a_minute(tmp_path):
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pagkd_lite.apps.cli", "demo", "--preset", "smoke",
                          "--quiet", "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    wall = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr[-2000:]
    for row in ("teacher_nbi", "wli_only", "logit_kd", "pagkd_paper", "pagkd"):
        assert f"| {row} |" in res.stdout
    assert (tmp_path / "report.html").stat().st_size > 10_000
    print(f"pagkd-lite demo --preset smoke: {wall:.1f} s")  # the acceptance number (< 60 s)


def test_train_evaluate_resume_round_trip(tmp_path, capsys):
    args = ["--preset", "smoke", "--quiet", "--out", str(tmp_path), "--set", "train.epochs=1"]
    assert main(["train-student", "--method", "wli_only", *args]) == 0
    assert main(["evaluate", "--method", "wli_only", *args]) == 0
    out = capsys.readouterr().out
    assert "| wli_only | wli_test |" in out
    # resume with more epochs continues from last.pt
    assert main(["train-student", "--method", "wli_only", "--resume", "--preset", "smoke",
                 "--quiet", "--out", str(tmp_path), "--set", "train.epochs=2"]) == 0


def test_diagnose_writes_its_data_and_a_view(tmp_path, capsys):
    import json

    args = ["--preset", "smoke", "--quiet", "--out", str(tmp_path), "--set", "train.epochs=1",
            "--set", "teacher.epochs=1"]
    assert main(["diagnose", *args, "--write", str(tmp_path / "diag_seed0")]) == 0
    record = json.loads((tmp_path / "diag_seed0.json").read_text())
    assert record["preset"] == "smoke" and record["method"] == "pagkd" and record["labels"]
    view = (tmp_path / "diag_seed0.md").read_text()
    assert "| raw CAM (no PAR) | teacher on NBI |" in view
    assert view in capsys.readouterr().out


def test_make_data_exports_manifest(tmp_path, capsys):
    assert main(["make-data", "--preset", "smoke", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "synthendo" / "manifest.csv").exists()


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["train-student", "--preset", "smoke", "--set", "train.epochs=0"]) == 2
    assert "epochs must be >= 1" in capsys.readouterr().err
    assert main(["evaluate", "--preset", "smoke", "--checkpoint", str(tmp_path / "x.pt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_commands_that_do_not_split_refuse_torchrun(monkeypatch, capsys):
    """Under torchrun every rank would run the whole demo and write the same files."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["demo", "--preset", "smoke", "--quiet"]) == 2
    assert "only train-teacher and train-student run" in capsys.readouterr().err


def test_evaluate_honours_device_and_set(tmp_path, capsys, monkeypatch):
    """``evaluate`` applies --device and --set on top of the checkpoint's config."""
    from pagkd_lite.training import pipeline
    args = ["--preset", "smoke", "--quiet", "--out", str(tmp_path), "--set", "train.epochs=1"]
    assert main(["train-student", "--method", "wli_only", *args]) == 0
    seen = {}
    real = pipeline.evaluate

    def spy(model, images, device, n_boot, seed, runtime=None):
        seen.update(device=device, n_boot=n_boot, param=next(model.parameters()).device)
        return real(model, images, device, n_boot, seed, runtime=runtime)

    monkeypatch.setattr(pipeline, "evaluate", spy)
    assert main(["evaluate", "--method", "wli_only", *args, "--device", "cpu",
                 "--set", "bootstrap=17"]) == 0
    assert seen == {"device": torch.device("cpu"), "n_boot": 17, "param": torch.device("cpu")}
    assert "| wli_only | wli_test |" in capsys.readouterr().out
    # --set reaches the checkpoint config: its width check fires
    assert main(["evaluate", "--method", "wli_only", *args, "--set", "model.dim=6"]) == 2
    assert "pro.num_heads=4 must divide the token width model.dim=6" in capsys.readouterr().err


def test_help_lists_the_registry_and_only_real_presets(monkeypatch, capsys):
    from pagkd_lite.apps.cli import build_parser
    from pagkd_lite.config import PRESETS
    from pagkd_lite.method import distill

    monkeypatch.setitem(distill.METHODS, "my_method",
                        distill.Method(distill.WLIOnly, "a method added in one line"))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train-student", "--help"])
    text = capsys.readouterr().out
    for name, entry in distill.METHODS.items():
        assert name in text and entry.help in text
    assert build_parser().parse_args(["train-student", "--method", "my_method"]).method \
        == "my_method"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    top = capsys.readouterr().out
    assert "my_method" in top
    for preset in re.findall(r"--preset (\w+)", top):
        assert preset in PRESETS, preset


def test_library_modules_do_not_import_the_cli():
    """bench and cv are plain library modules: importing them leaves the CLI unloaded."""
    code = ("import sys, pagkd_lite.apps.bench, pagkd_lite.apps.cv, pagkd_lite.config; "
            "print(any(m in sys.modules for m in ('pagkd_lite.apps.cli', "
            "'pagkd_lite.apps.commands')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False"


@pytest.mark.parametrize("argv, match", [
    (["train-student", "--method", "pagkd_authors", "--set", "den.two_way=false"],
     "--set den.two_way=false: method 'pagkd_authors' runs with den.two_way=true"),
    (["bench", "--methods", "wli_only", "pagkd_authors", "--set", "train.lambda_den=0.5"],
     "--set train.lambda_den=0.5: method 'pagkd_authors' runs with train.lambda_den=1"),
    (["bench", "--methods", "pagkd_scheduled", "--sweep", "train.lambda_ramp_epochs=0,5"],
     "--sweep train.lambda_ramp_epochs=0: method 'pagkd_scheduled'"),
    (["demo", "--methods", "pagkd", "pagkd_centred", "--set", "den.center=false"],
     "method 'pagkd_centred' runs with den.center=true"),
])
def test_a_set_that_the_method_would_replace_is_refused_in_one_line(tmp_path, capsys, argv,
                                                                     match):
    """``method_config`` applies a method's own settings over ``--set``: a value it would
    replace is refused before anything is trained, naming the field, method and value."""
    assert main([*argv, "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing ran


@pytest.mark.parametrize("argv", [
    ["train-student", "--method", "pagkd_authors", "--set", "den.two_way=true",
     "--set", "train.epochs=3"],
    ["bench", "--methods", "pagkd_frozen_target", "--set", "labels.source=mask",
     "--sweep", "labels.flip_rate=0,0.1,0.3"],
    ["bench", "--methods", "oracle_masks", "--sweep", "labels.flip_rate=0,0.1"],
    ["train-student", "--preset", "authors", "--method", "pagkd", "--set", "den.two_way=false"],
])
def test_the_same_value_and_free_fields_pass_the_early_checks(tmp_path, argv):
    from pagkd_lite.apps.cli import _check_early, build_parser

    _check_early(build_parser().parse_args([*argv, "--out", str(tmp_path)]))
