"""Every error names the argument or file, says what is wrong, and suggests the command-line
spelling of the fix; on the command line it is one line and exit status 2.

Each case here was once unclear: a message naming the wrong thing, a library's own
wording, or advice to set a Python-only option.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from test_realdata import make_tree

from pagkd_lite.apps.cli import main
from pagkd_lite.data.realdata import MANIFEST_COLUMNS, RealDataConfig, load_dataset
from pagkd_lite.errors import ConfigError, DataLayoutError
from pagkd_lite.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

FAST = ["--preset", "smoke", "--device", "cpu", "--quiet"]


def run(capsys, *argv: str) -> str:
    """``pagkd-lite argv``: assert exit status 2 and one line on stderr; return it."""
    rc = main(list(argv))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def load(root: Path, **kw):
    return load_dataset(RealDataConfig(root=str(root), image_size=8, **kw))


def rows(root: Path) -> list[str]:
    return [f"{p.relative_to(root).as_posix()},{p.parent.parent.name},{p.parent.name},"
            f"{p.stem},{p.stem}" for p in sorted(root.glob("*/*/*.png"))]


def write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------- manifests

def test_manifest_with_a_header_and_no_rows_says_so_and_names_it(tmp_path, capsys):
    root = make_tree(tmp_path / "d")
    m = write(root / "m.csv", [",".join(MANIFEST_COLUMNS)])
    with pytest.raises(DataLayoutError, match="has a header but no rows") as info:
        load(root, manifest=m)
    assert str(info.value).startswith(f"manifest {m} has a header but no rows")
    assert "only one class" not in str(info.value)
    err = run(capsys, "cv", "--data-root", str(root), "--manifest", m, "--out",
              str(tmp_path / "o"), *FAST)
    assert f"manifest {m} has a header but no rows: it lists no images" in err


def test_an_empty_manifest_file_says_so(tmp_path):
    root = make_tree(tmp_path / "d")
    with pytest.raises(DataLayoutError, match="is empty: no header and no rows"):
        load(root, manifest=write(root / "m.csv", []))


def test_manifest_that_is_a_folder(tmp_path):
    root = make_tree(tmp_path / "d")
    with pytest.raises(DataLayoutError, match="--manifest .* is a folder"):
        load(root, manifest=str(root / "WLI"))


def test_one_class_in_a_manifest_names_the_manifest(tmp_path):
    root = make_tree(tmp_path / "d")
    m = write(root / "m.csv", [",".join(MANIFEST_COLUMNS)]
              + [r for r in rows(root) if ",adenoma," in r])
    with pytest.raises(DataLayoutError, match=rf"^manifest {m}: only one class found"):
        load(root, manifest=m)


@pytest.mark.parametrize("spell", ["../outside.png", "../../../../../../../etc/passwd",
                                   "WLI/../../outside.png", "absolute"])
def test_manifest_path_outside_the_root_is_refused(tmp_path, capsys, spell):
    root = make_tree(tmp_path / "d")
    outside = tmp_path / "outside.png"
    outside.write_bytes((root / "WLI" / "adenoma" / "WLI_adenoma_0.png").read_bytes())
    path = str(outside) if spell == "absolute" else spell
    m = write(root / "m.csv", [",".join(MANIFEST_COLUMNS), *rows(root),
                               f"{path},WLI,adenoma,x,x"])
    line = len(rows(root)) + 2
    with pytest.raises(DataLayoutError) as info:
        load(root, manifest=m)
    msg = str(info.value)
    assert f"manifest {m}, line {line}: path {path!r} lies outside the data root" in msg
    assert ("is an absolute path" if spell == "absolute" else "climbs out with '..'") in msg
    assert "--allow-outside-root" in msg
    err = run(capsys, "cv", "--data-root", str(root), "--manifest", m, "--out",
              str(tmp_path / "o"), *FAST)
    assert "lies outside the data root" in err


def test_manifest_path_outside_the_root_is_read_when_allowed(tmp_path):
    root = make_tree(tmp_path / "d")
    outside = tmp_path / "outside.png"
    outside.write_bytes((root / "WLI" / "adenoma" / "WLI_adenoma_0.png").read_bytes())
    m = write(root / "m.csv", [",".join(MANIFEST_COLUMNS), *rows(root),
                               "../outside.png,WLI,adenoma,x,x",
                               f"{root / 'WLI' / 'adenoma' / 'WLI_adenoma_1.png'},NBI,"
                               f"adenoma,y,y"])   # absolute, inside the root: always fine
    sets, report = load(root, manifest=m, allow_outside_root=True)
    assert str(outside) in [str(Path(p).resolve()) for p in sets["WLI"].paths]
    assert any("1 path(s) outside the data root read" in w for w in report.warnings)
    assert "read (allow_outside_root)" in report.policy["manifest_paths"]
    _, report = load(root, manifest=write(root / "m2.csv", [",".join(MANIFEST_COLUMNS),
                                                            *rows(root)]))
    assert "refused" in report.policy["manifest_paths"]


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("content, match", [
    (b"", "empty file (0 bytes), not a checkpoint"),
    (b"epoch,auc\n1,0.5\n", "not a checkpoint (a text file)"),
    (b"\x00\x01\x02garbage", "not a checkpoint (not a file torch.save writes)"),
])
def test_checkpoint_that_is_not_one(tmp_path, capsys, content, match):
    path = tmp_path / "ck.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(match)):
        load_checkpoint(path)
    err = run(capsys, "evaluate", "--checkpoint", str(path), *FAST)
    assert f"--checkpoint {path}: {match}" in err
    assert "weights_only" not in err and "EOFError" not in err


def test_checkpoint_that_is_a_folder(tmp_path, capsys):
    err = run(capsys, "evaluate", "--checkpoint", str(tmp_path), *FAST)
    assert f"--checkpoint {tmp_path}: is a folder, not a checkpoint file" in err
    assert "no such file" not in err
    best = save_checkpoint(tmp_path / "wli_only" / "best.pt", {"a": torch.zeros(1)})
    err = run(capsys, "evaluate", "--checkpoint", str(tmp_path), *FAST)
    assert f"e.g. --checkpoint {best}" in err


def test_missing_checkpoint_and_missing_default_checkpoint(tmp_path, capsys):
    err = run(capsys, "evaluate", "--checkpoint", str(tmp_path / "nope.pt"), *FAST)
    assert f"--checkpoint {tmp_path / 'nope.pt'}: no such file" in err
    err = run(capsys, "evaluate", "--method", "wli_only", "--out", str(tmp_path), *FAST)
    assert "no such file (the default for --method wli_only under --out)" in err
    assert "pagkd-lite train-student --method wli_only" in err and "--checkpoint FILE" in err


# ----------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("names, match", [
    ("adenoma,adenoma,hyperplastic", "'adenoma' is given 2 times"),
    ("adenoma,,hyperplastic", "name number 2 is empty"),
])
def test_class_names_duplicate_or_empty(tmp_path, capsys, names, match):
    root = make_tree(tmp_path / "d")
    err = run(capsys, "cv", "--data-root", str(root), "--class-names", names, "--out",
              str(tmp_path / "o"), *FAST)
    assert err.startswith(f"pagkd-lite cv: error: --class-names {names}")
    assert match in err and "missing" not in err
    assert not (tmp_path / "o").exists()             # refused before loading
    with pytest.raises(ConfigError, match=f"RealDataConfig.class_names .*{match}"):
        RealDataConfig(root=str(root), class_names=tuple(names.split(",")))


def test_class_names_that_do_not_match_use_the_flag(tmp_path):
    root = make_tree(tmp_path / "d")
    with pytest.raises(DataLayoutError, match=r"--class-names adenoma,serrated \(class_names\) "
                                              r"does not match"):
        load(root, class_names=("adenoma", "serrated"))


@pytest.mark.parametrize("argv, match", [
    (["--seed", "-1"], "--seed -1: a seed must be an integer from 0 to 4294967295"),
    (["--seed", str(2**32)], "--seed 4294967296: a seed must be"),
    (["--set", "seed=-1"], "--set seed=-1: a seed must be an integer from 0 to"),
    (["--set", "data.seed=-5"], "--set data.seed=-5: a seed must be"),
    (["--threads", "0"], "--threads 0: must be >= 1"),
])
def test_seed_and_threads_are_checked_and_named(tmp_path, capsys, argv, match):
    err = run(capsys, "make-data", "--preset", "smoke", "--out", str(tmp_path / "o"), *argv)
    assert match in err and "numpy" not in err.lower()
    assert not (tmp_path / "o").exists()


def test_cv_seed_is_checked_before_loading(tmp_path, capsys):
    root = make_tree(tmp_path / "d")
    err = run(capsys, "cv", "--data-root", str(root), "--out", str(tmp_path / "o"), *FAST,
              "--seed", "-1")
    assert "--seed -1: a seed must be" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, match", [
    (["--seeds", "0"], "--seeds 0: must be >= 1"),
    (["--first-seed", "-3"], "--first-seed -3: seeds FIRST..FIRST+N-1 must lie in"),
])
def test_bench_seed_range(tmp_path, capsys, argv, match):
    assert match in run(capsys, "bench", "--preset", "smoke", "--out", str(tmp_path), *argv)


@pytest.mark.parametrize("argv, flag", [
    (["cv", "--data-root", ""], "--data-root"),
    (["cv", "--data-root", "  "], "--data-root"),
    (["cv", "--data-root", "x", "--manifest", ""], "--manifest"),
    (["evaluate", "--checkpoint", ""], "--checkpoint"),
    (["make-data", "--out", ""], "--out"),
])
def test_empty_paths_are_refused_not_read_as_the_current_folder(capsys, argv, flag):
    err = run(capsys, *argv, "--preset", "smoke", "--quiet")
    assert f"{flag} " in err and "empty path" in err and f"write {flag} ." in err


def test_empty_data_root_in_python():
    with pytest.raises(ConfigError, match="RealDataConfig.root is empty"):
        RealDataConfig(root="")


# ----------------------------------------------------------------------------- CLI spellings

def test_missing_class_advises_the_flag_and_the_flag_keeps_it(tmp_path, capsys):
    root = make_tree(tmp_path / "d", classes={"adenoma": 2, "hyperplastic": 2})
    for p in (root / "NBI" / "hyperplastic").iterdir():
        p.unlink()
    (root / "NBI" / "hyperplastic").rmdir()
    with pytest.raises(DataLayoutError, match="pass --allow-missing-classes "
                                              r"\(allow_missing_classes=True in Python\)"):
        load(root)
    _, report = load(root, allow_missing_classes=True)
    assert any("(kept: --allow-missing-classes)" in w for w in report.warnings)


def test_modality_folder_messages_give_the_flag(tmp_path):
    root = make_tree(tmp_path / "d", wli="Weisslicht")
    with pytest.raises(DataLayoutError, match="name it with --wli-names Weisslicht "):
        load(root)
    sets, _ = load(root, wli_names=("weisslicht",))
    assert len(sets["WLI"]) == 5
    make_tree(root, wli="WL")
    with pytest.raises(DataLayoutError, match="look like WLI.*--wli-names WL "):
        load(root, wli_names=("WL", "Weisslicht"))


def test_modality_folder_messages_on_the_command_line(tmp_path, capsys):
    root = make_tree(tmp_path / "d", wli="Weisslicht")
    err = run(capsys, "cv", "--data-root", str(root), "--out", str(tmp_path / "o"), *FAST)
    assert "no WLI folder under" in err and "Rename the folder to WLI" in err
    assert "--wli-names Weisslicht" in err
    assert err.index("--wli-names") < err.index("in Python")   # the flag first
    assert "(...)" not in err


def test_unknown_manifest_modality_advises_the_names_flags(tmp_path):
    root = make_tree(tmp_path / "d")
    m = write(root / "m.csv", [",".join(MANIFEST_COLUMNS), *rows(root),
                               "WLI/adenoma/WLI_adenoma_0.png,xray,adenoma,x,x"])
    with pytest.raises(DataLayoutError, match="unknown modality 'xray'") as info:
        load(root, manifest=m)
    assert "--wli-names WLI,xray or --nbi-names NBI,xray" in str(info.value)


def test_names_in_both_modalities_name_both_flags(tmp_path, capsys):
    err = run(capsys, "cv", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"), *FAST,
              "--wli-names", "WLI,NBI")
    assert "--wli-names and --nbi-names: ['nbi'] given to both" in err


def test_data_root_that_is_not_a_folder_names_the_flag(tmp_path, capsys):
    err = run(capsys, "cv", "--data-root", str(tmp_path / "nope"), "--out",
              str(tmp_path / "o"), *FAST)
    assert f"--data-root {tmp_path / 'nope'} is not a folder" in err
    assert "--manifest" in err


@pytest.mark.parametrize("kw, match", [
    ({"image_size": 0}, "--set data.image_size=0 (image_size): must be >= 1"),
    ({"stem_reuse": "merge"}, "--stem-reuse merge (stem_reuse): must be one of split, error"),
    ({"decode_warnings": "ignore"}, "--keep-decode-warnings for 'keep'"),
])
def test_loader_settings_in_python_also_give_the_command_line_spelling(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        RealDataConfig(root=str(tmp_path), **kw)


def test_no_message_advises_a_python_only_spelling():
    """A loader message that shows a Python spelling (``... in Python``) shows the flag in
    the lines just before it: read from the source, string literals only."""
    import pagkd_lite.data.decode as decode
    import pagkd_lite.data.file_images as file_images
    import pagkd_lite.data.layouts as layouts
    import pagkd_lite.data.lesion_ids as lesion_ids
    import pagkd_lite.data.load_report as load_report
    import pagkd_lite.data.loader_config as loader_config
    import pagkd_lite.data.realdata as realdata

    modules = (realdata, loader_config, load_report, layouts, decode, file_images, lesion_ids)
    hits = 0
    for mod in modules:
        lines = Path(mod.__file__).read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if "in Python" in line and line.strip().startswith(('f"', '"')):
                hits += 1
                assert any("--" in x for x in lines[max(0, i - 3):i + 1]), \
                    f"{mod.__name__} line {i + 1}: {line.strip()}"
    assert hits >= 5, f"only {hits} 'in Python' message lines found: did a module move?"


def test_other_messages_give_the_flag(tmp_path):
    root = make_tree(tmp_path / "d")
    (root / "WLI" / "adenoma" / "big.png").write_bytes(
        (root / "WLI" / "adenoma" / "WLI_adenoma_2.png").read_bytes())
    _, report = load(root, max_pixels=14 * 8 - 1)
    assert any("raise --max-pixels" in s["reason"] for s in report.skipped)


@pytest.mark.parametrize("argv, match", [
    (["--max-pixels", "0"], "--max-pixels 0 (max_pixels): must be >= 1"),
    (["--id-regex", "("], "--id-regex '(' is not a valid regular expression"),
    (["--id-regex", r"\d+"], r"--id-regex '\\d+' has no named group 'lesion'"),
])
def test_loader_settings_are_named_by_their_flag(tmp_path, capsys, argv, match):
    err = run(capsys, "cv", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
              *FAST, *argv)
    assert match in err


def test_new_cv_flags_reach_the_loader(tmp_path, capsys, monkeypatch):
    import pagkd_lite.data.realdata as realdata

    seen = {}

    def spy(cfg):
        seen["cfg"] = cfg
        raise DataLayoutError("stop here")

    monkeypatch.setattr(realdata, "load_dataset", spy)
    err = run(capsys, "cv", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"), *FAST,
              "--allow-missing-classes", "--wli-names", "Weisslicht, WL", "--nbi-names",
              "narrow", "--stem-reuse", "error", "--allow-outside-root",
              "--class-names", "b,a")
    assert err == "pagkd-lite cv: error: stop here"
    cfg = seen["cfg"]
    assert cfg.allow_missing_classes and cfg.allow_outside_root
    assert cfg.wli_names == ("Weisslicht", "WL") and cfg.nbi_names == ("narrow",)
    assert cfg.stem_reuse == "error" and cfg.class_names == ("b", "a")
    defaults = RealDataConfig(root="x")
    run(capsys, "cv", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"), *FAST)
    cfg = seen["cfg"]
    assert (cfg.wli_names, cfg.nbi_names, cfg.stem_reuse, cfg.allow_outside_root,
            cfg.allow_missing_classes) == (defaults.wli_names, defaults.nbi_names, "split",
                                           False, False)


def test_threads_apply_during_the_command_and_are_restored(tmp_path, monkeypatch):
    import pagkd_lite.training.pipeline as pipeline

    seen = {}

    def spy(cfg):
        seen["threads"] = torch.get_num_threads()
        raise ConfigError("stop here")

    monkeypatch.setattr(pipeline, "make_data", spy)
    before = torch.get_num_threads()
    assert main(["make-data", "--preset", "smoke", "--out", str(tmp_path), "--threads",
                 "1"]) == 2
    assert seen["threads"] == 1 and torch.get_num_threads() == before
