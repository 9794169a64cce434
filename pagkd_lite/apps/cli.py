"""``pagkd-lite``: the command line.

    pagkd-lite make-data      --preset demo --out data/synthendo
    pagkd-lite pretrain       --preset demo     (SimCLR backbone for --set model.init=ssl)
    pagkd-lite train-teacher  --preset demo
    pagkd-lite train-student  --preset demo --method pagkd
    pagkd-lite evaluate       --preset demo --method pagkd
    pagkd-lite demo           --preset smoke
    pagkd-lite cache          --preset demo     (class mode: the course's models, once)
    pagkd-lite bench          --preset demo --seeds 5
    pagkd-lite cv             --data-root DIR --folds 5 --method pagkd

Every config field can be changed with ``--set section.field=value`` (repeatable), e.g.
``--set train.epochs=3 --set model.backbone=resnet18``; every command honours ``--set``,
``--seed``, ``--device`` and ``--threads`` (``evaluate`` applies them to the checkpoint's
config). Also ``python -m pagkd_lite.apps.cli``.

A problem with the user's input (:class:`~pagkd_lite.errors.KitError`) ends the command
with a one-line message naming the argument or file, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

from ..config import PRESETS, Config, get_preset, method_config, override
from ..config import build_config as _build_config
from ..distributed import init_from_env, rank, shutdown
from ..errors import ConfigError, KitError
from ..files import check_out_dir
from ..method.distill import METHODS, get_method, method_help

# the commands that split their work over torchrun's ranks; the others run as one process
DISTRIBUTED_COMMANDS = ("train-teacher", "train-student")
#: seeds go to numpy, torch and random; every one of them takes 0 .. 2**32 - 1
MAX_SEED = 2**32 - 1
#: options that name a file or folder: an empty value is refused, never read as "."
PATH_OPTIONS = ("out", "data_root", "manifest", "checkpoint", "csv", "write", "cache_dir")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS),
                   help="settings to start from (default: demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override a config field, e.g. train.epochs=3 (repeatable)")
    p.add_argument("--seed", type=int, default=None,
                   help=f"training and data seed, 0 to {MAX_SEED}")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads torch uses (torch.set_num_threads; default: torch's "
                        "choice). Results are bit-identical only at the same thread count")
    p.add_argument("--out", default=None, help="output folder (default: runs/<preset>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_config(args: argparse.Namespace, base: Config | None = None) -> Config:
    """The run's Config: ``base`` (default: the ``--preset``) with ``--set``, ``--seed`` and
    ``--device`` applied."""
    cfg = _build_config(args.preset if base is None else base, args.overrides, args.seed,
                        args.device)
    for name, value in (("seed", cfg.seed), ("data.seed", cfg.data.seed)):
        if not 0 <= value <= MAX_SEED:
            raise ConfigError(f"--set {name}={value}: a seed must be an integer from 0 to "
                              f"{MAX_SEED}")
    return cfg


def _out(args, cfg: Config) -> Path:
    return Path(args.out) if args.out else Path(cfg.out_dir) / cfg.name


def cmd_make_data(args) -> None:
    from ..data.synthendo import export_folder
    from ..training.pipeline import make_data

    cfg = build_config(args)
    sets = make_data(cfg)
    root = export_folder(sets, _out(args, cfg) / "synthendo")
    for name, s in sets.items():
        print(f"{name:10s} {len(s):5d} images  per class {s.class_counts()}")
    print(f"written to {root}")


def cmd_pretrain(args) -> None:
    from ..training.pipeline import make_data, pretrained_backbone

    cfg = build_config(args)
    sets = make_data(cfg)
    _, info = pretrained_backbone(cfg, sets, out_dir=_out(args, cfg), progress=not args.quiet,
                                  cache=not args.no_cache)
    p = cfg.pretrain
    print(f"ssl backbone ({cfg.model.backbone}): {'loaded' if info['loaded'] else 'trained'} "
          f"({info['seconds']:.0f} s of training, {p.epochs} epochs, batch {p.batch_size}) on "
          f"{len(sets['wli_train'])} WLI + {len(sets['nbi_train'])} NBI training images; "
          f"final NT-Xent loss {info['final_loss']:.3f}")
    print(f"checkpoint: {info['path']}  (used by --set model.init=ssl with the same --preset, "
          f"--set and --out)")


def cmd_train_teacher(args) -> None:
    from ..training.pipeline import evaluate, make_data, train_teacher

    cfg = build_config(args)
    sets = make_data(cfg)
    teacher, info = train_teacher(cfg, sets, out_dir=_out(args, cfg), progress=not args.quiet,
                                  cache=not args.no_cache)
    ev = evaluate(teacher, sets["nbi_test"], teacher.fc.weight.device, cfg.bootstrap, cfg.seed,
                  runtime=cfg.runtime)
    print(f"teacher: best epoch {info['best_epoch'] + 1}, val AUC {info['best_val_auc']:.3f}, "
          f"NBI test AUC {ev.metrics['auc']}")


def cmd_train_student(args) -> None:
    from ..training.pipeline import evaluate, make_data, train_student, train_teacher

    cfg = build_config(args)
    out = _out(args, cfg)
    sets = make_data(cfg)
    teacher = None
    if METHODS[args.method].needs_teacher:
        teacher, _ = train_teacher(method_config(cfg, args.method), sets, out_dir=out,
                                   progress=not args.quiet)
    distiller, result = train_student(cfg, sets, args.method, teacher, out_dir=out,
                                      resume=args.resume, progress=not args.quiet)
    ev = evaluate(distiller, sets["wli_test"], distiller.student.fc.weight.device,
                  cfg.bootstrap, cfg.seed, runtime=cfg.runtime)
    print(f"{args.method}: best epoch {result.best_epoch + 1} (val AUC "
          f"{result.best_val_auc:.3f}); WLI test AUC {ev.metrics['auc']}")
    print(f"checkpoint: {out / args.method / 'best.pt'}")


def cmd_evaluate(args) -> None:
    from ..config import from_dict
    from ..method.distill import build_distiller
    from ..models.classifier import Classifier
    from ..training.checkpoint import (
        CheckpointError,
        check_provenance,
        load_checkpoint,
        load_weights,
    )
    from ..training.pipeline import evaluate, format_table, make_data, provenance
    from ..training.train import pick_device

    cfg = build_config(args)
    path = Path(args.checkpoint) if args.checkpoint else _out(args, cfg) / args.method / "best.pt"
    if not args.checkpoint and not path.exists():
        raise CheckpointError(
            f"checkpoint {path}: no such file (the default for --method {args.method} under "
            f"--out); train it first (pagkd-lite train-student --method {args.method}, same "
            f"--preset and --out) or give --checkpoint FILE")
    ck = load_checkpoint(path, required=("distiller", "config", "method"),
                         what="--checkpoint" if args.checkpoint else "checkpoint")
    try:
        if not isinstance(ck["config"], dict):
            raise TypeError(f"a {type(ck['config']).__name__}, not a dict")
        base = from_dict(ck["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: its config cannot be read "
                              f"({type(err).__name__}: {err})") from None
    if ck["method"] not in METHODS:
        raise CheckpointError(f"checkpoint {path}: unknown method {ck['method']!r}")
    check_provenance(path, ck, data={"source": "synthendo", "config": ck["config"]["data"]})
    cfg = build_config(args, base=base)
    sets = make_data(cfg)
    k = sets["wli_test"].num_classes
    check_provenance(path, ck, model=provenance(cfg, sets["wli_test"])["model"])
    needs_teacher = get_method(ck["method"]).needs_teacher
    teacher = Classifier(cfg.model, k) if needs_teacher else None
    distiller = build_distiller(ck["method"], Classifier(cfg.model, k), teacher, cfg, k)
    load_weights(path, distiller, ck["distiller"])
    device = pick_device(cfg.device)
    ev = evaluate(distiller.to(device), sets["wli_test"], device, cfg.bootstrap, cfg.seed,
                  runtime=cfg.runtime)
    print(format_table([{"name": ck["method"], "split": "wli_test", "metrics": ev.metrics,
                         "seconds": 0.0}],
                       metrics=("auc", "accuracy", "precision", "sensitivity", "specificity",
                                "f1")))


def cmd_demo(args) -> None:
    from ..training.pipeline import demo

    cfg = build_config(args)
    res = demo(cfg, methods=tuple(args.methods), out_dir=_out(args, cfg),
               progress=not args.quiet)
    print(res["table"])
    print(f"report: {res['report']}  (wall time {res['seconds']:.0f} s)")


def cmd_cache(args) -> None:
    from ..course.class_mode import build_cache

    cfg = build_config(args)
    course = build_cache(cfg, methods=tuple(args.methods),
                         root=Path(args.out) if args.out else Path(cfg.out_dir) / "course",
                         progress=not args.quiet)
    print(f"class mode: {len(course.log)} models in {course.folder}")


def cmd_diagnose(args) -> None:
    from .diagnose import render_diagnosis, run_diagnosis, write_diagnosis

    cfg = build_config(args)
    record = run_diagnosis(cfg, args.method, out_dir=_out(args, cfg), progress=not args.quiet)
    print(render_diagnosis(record))
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        data, view = write_diagnosis(record, args.write)
        print(f"written to {data} (the data) and {view} (its Markdown view)")


def cmd_bench(args) -> None:
    """Train and score every (seed, method), optionally per sweep value; see :mod:`.bench`."""
    from .bench import parse_grid, read_rows, run_bench, summarize, write_outputs

    cfg = build_config(args)
    out = _out(args, cfg) if args.out else Path("benchmarks/results")
    cells = parse_grid(args.sweep)
    fields = list(cells[0])
    name = "synthendo_sweep" if fields else "synthendo_bench"
    csv_path = Path(args.csv) if args.csv else out / f"{name}.csv"
    t0 = time.perf_counter()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    cache = Path(cfg.out_dir) / "bench"
    for cell in cells:  # a grid is the cross product of the --sweep fields
        run_bench(override(cfg, [f"{f}={v}" for f, v in cell.items()]), seeds, args.methods,
                  csv_path, cache_dir=cache, progress=not args.quiet, extra=cell)
    rows = read_rows(csv_path)
    md = write_outputs(rows, csv_path, fields or None, methods=args.methods)
    print(summarize(rows, by=fields or None))
    print(f"\nrows: {csv_path}  table: {md}  wall time this run: "
          f"{time.perf_counter() - t0:.0f} s")


def cmd_cv(args) -> None:
    """Check, load (the load report is written on success AND failure), fold,
    cross-validate, write; see :mod:`.cv`."""
    from ..data.decode_cache import default_cache_dir
    from ..data.realdata import RealDataConfig, load_dataset
    from ..data.splits import lesion_folds
    from ..files import readable
    from ..training.train import pick_device
    from .cv import check_method, run_cv, unpaired_folds

    # Everything that can be checked without the data, before loading it.
    check_method(args.method)
    cfg = build_config(args)
    out = Path(args.out) if args.out else Path(cfg.out_dir) / f"cv-{cfg.name}-{args.method}"
    check_out_dir(out)
    if args.decode_per_step and args.cache_dir is not None:
        raise ConfigError("--decode-per-step and --cache-dir: images kept as files are "
                          "decoded at every step, never cached; give one of the two")
    cache_dir = None
    if not (args.no_decode_cache or args.decode_per_step):
        cache_dir = str(check_out_dir(args.cache_dir or default_cache_dir(cfg.out_dir),
                                      "--cache-dir"))
    pick_device(cfg.device)
    if not 0 < args.val_fraction < 1:  # also refuses nan
        raise ConfigError(f"--val-fraction {args.val_fraction}: must be > 0 and < 1 (each "
                          f"fold selects its best epoch on validation images)")
    if args.folds < 2:
        raise ConfigError(f"--folds {args.folds}: cross-validation needs at least 2 folds")
    data_cfg = RealDataConfig(
        root=args.data_root, image_size=cfg.data.image_size, manifest=args.manifest,
        id_regex=args.id_regex, class_names=_names(args.class_names, "--class-names"),
        progress=not args.quiet, max_pixels=args.max_pixels,
        decode_warnings="keep" if args.keep_decode_warnings else "skip",
        allow_missing_classes=args.allow_missing_classes, stem_reuse=args.stem_reuse,
        allow_outside_root=args.allow_outside_root,
        cache_dir=cache_dir, decode_per_step=args.decode_per_step,
        loader_workers=args.loader_workers,
        **{f"{m}_names": _names(getattr(args, f"{m}_names"), f"--{m}-names")
           for m in ("wli", "nbi") if getattr(args, f"{m}_names") is not None})
    # Load everything and write the load report, on success and on failure; then train.
    try:
        sets, report = load_dataset(data_cfg)
    except KitError as err:
        if err.report is not None:
            print(readable(err.report.to_text()))
            print(f"load report: {err.report.save(out / 'load_report')[1]}")
        raise
    print(readable(report.to_text()))
    print(f"load report: {report.save(out / 'load_report')[1]}")
    folds = lesion_folds(sets, args.folds, cfg.seed, group_by=args.group_by,
                         val_fraction=args.val_fraction)
    if args.unpair:
        folds = unpaired_folds(sets, folds, cfg.seed, group_by=args.group_by)
    res = run_cv(cfg, sets, folds, args.method, out, progress=not args.quiet,
                 group_by=args.group_by, load_report=report)
    print(res.table())
    print(f"\nresults: {res.files['results']}  predictions: {res.files['predictions']}  "
          f"report: {res.files['report']}  (wall time {res.seconds:.0f} s)")


def _names(text: str | None, flag: str) -> tuple[str, ...] | None:
    """A comma-separated list option as a tuple; an empty or repeated name is a
    :class:`ConfigError` naming ``flag``."""
    if text is None:
        return None
    from ..data.realdata import check_names

    names = tuple(c.strip() for c in text.split(","))
    check_names(names, flag)
    return names


def _command(sub, name: str, help: str, func, methods=None, description=None):
    """A subcommand with the common options; ``methods`` (names) are listed, one line each
    with their registry help, at the end of its ``--help``."""
    epilog = f"methods:\n{method_help(methods)}" if methods else None
    p = sub.add_parser(name, help=help, description=description or help, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``pagkd-lite`` parser; method choices and their help come from ``distill.METHODS``."""
    from ..data.lesion_ids import STEM_REUSE
    from ..data.splits import GROUP_BY
    from ..training.pipeline import DEMO_METHODS
    from .bench import BENCH_METHODS
    from .cv import CV_METHODS
    from .cv import __doc__ as cv_doc

    parser = argparse.ArgumentParser(prog="pagkd-lite", description=__doc__,
                                     epilog=f"methods:\n{method_help()}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    names = list(METHODS)

    _command(sub, "make-data", "generate SynthEndo and export folder + manifest", cmd_make_data)

    p = _command(sub, "pretrain", "SimCLR on the unlabelled WLI and NBI training images: the "
                 "backbone that model.init=ssl starts from", cmd_pretrain)
    p.add_argument("--no-cache", action="store_true", help="retrain even if cached")

    p = _command(sub, "train-teacher", "train the NBI teacher", cmd_train_teacher)
    p.add_argument("--no-cache", action="store_true", help="retrain even if cached")

    p = _command(sub, "train-student", "train a WLI student", cmd_train_student, names)
    p.add_argument("--method", default="pagkd", choices=names)
    p.add_argument("--resume", action="store_true", help="continue from <out>/<method>/last.pt")

    p = _command(sub, "evaluate", "evaluate a trained student on the WLI test split",
                 cmd_evaluate, names)
    p.add_argument("--method", default="pagkd", choices=names)
    p.add_argument("--checkpoint", default=None, help="default: <out>/<method>/best.pt")

    p = _command(sub, "demo", "teacher, then the students of pipeline.DEMO_METHODS; table, report",
                 cmd_demo, names)
    p.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), choices=names)

    p = _command(sub, "diagnose", "token-label and relation-map quality against SynthEndo's "
                 "true lesion masks", cmd_diagnose, names)
    p.add_argument("--method", default="pagkd", choices=names,
                   help="the student whose CAM is measured (default: pagkd)")
    p.add_argument("--write", default=None, metavar="FILE",
                   help="also write the diagnosis as data, FILE.json (what "
                        "benchmarks/diagnose_summary.py reads), and its Markdown view "
                        "beside it (suffix .md)")

    from ..course.class_mode import COURSE_METHODS

    p = _command(sub, "cache", "class mode: train the notebooks' models once (runs/course)",
                 cmd_cache, list(COURSE_METHODS))
    p.add_argument("--methods", nargs="+", default=list(COURSE_METHODS), choices=names)

    p = _command(sub, "bench", "the SynthEndo benchmark over seeds and methods", cmd_bench,
                 names)
    p.add_argument("--seeds", type=int, default=5, help="number of seeds")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds are FIRST..FIRST+N-1 (the benchmark: 0; validation: 100)")
    p.add_argument("--methods", nargs="+", default=list(BENCH_METHODS), choices=names)
    p.add_argument("--sweep", action="append", default=None, metavar="FIELD=V1,V2,...",
                   help="repeat for each value of a config field, e.g. data.wli_contrast=0.1,0.3;"
                        " several --sweep run their cross product (the regime map)")
    p.add_argument("--csv", default=None, help="results CSV (default: <out>/<name>.csv)")

    p = _command(sub, "cv", "K-fold cross-validation on your own WLI/NBI data", cmd_cv,
                 list(CV_METHODS), description=cv_doc)
    p.add_argument("--data-root", required=True, metavar="DIR",
                   help="data root: <DIR>/<modality>/<class>/<image>, or the folder the "
                        "manifest paths are relative to")
    p.add_argument("--manifest", default=None, metavar="CSV",
                   help="CSV with path,modality,label,patient_id,lesion_id[,fold]")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--method", default="pagkd",
                   help=f"student method, one of {', '.join(CV_METHODS)} (default pagkd)")
    p.add_argument("--group-by", default="patient", choices=GROUP_BY,
                   help="keep patients (default) or only lesions out of training")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of each fold's training groups used for model selection "
                        "(> 0 and < 1; default 0.2)")
    p.add_argument("--id-regex", default=None,
                   help="folder layout: regex with named groups lesion/patient searched in "
                        "each file stem, e.g. '^(?P<lesion>.+)_\\d+$'")
    p.add_argument("--unpair", action="store_true",
                   help="paired data (the same lesions in WLI and NBI): train each fold's "
                        "teacher and student on disjoint lesions (splits.unpair)")
    p.add_argument("--class-names", default=None, metavar="A,B,...",
                   help="label order (index = label), e.g. hyperplastic,adenoma")
    p.add_argument("--keep-decode-warnings", action="store_true",
                   help="load images whose decoder warns (e.g. corrupt JPEG data) instead of "
                        "skipping them; the warnings go to the load report")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="skip images with more pixels than this (default 40000000)")
    p.add_argument("--allow-missing-classes", action="store_true",
                   help="keep a class that has images in one modality only (recorded as a "
                        "warning) instead of stopping")
    p.add_argument("--wli-names", default=None, metavar="A,B,...",
                   help="folder names (and manifest modality values) read as WLI, "
                        "case-insensitive; replaces the default WLI,WL,White_light,"
                        "white_light,white-light")
    p.add_argument("--nbi-names", default=None, metavar="A,B,...",
                   help="folder names (and manifest modality values) read as NBI, "
                        "case-insensitive; replaces the default NBI")
    p.add_argument("--stem-reuse", default="split", choices=STEM_REUSE,
                   help="a lesion id from file names (stem or --id-regex) seen under several "
                        "classes: split = one lesion per class, recorded in the load report "
                        "(default); error = stop")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="read manifest paths outside --data-root ('../x.png', absolute "
                        "paths elsewhere) instead of refusing them")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="decode cache: each image is decoded once into a memory-mapped store "
                        "under DIR, which later runs, folds and methods read (default: "
                        "$PAGKD_CACHE_DIR, else runs/decode-cache; delete the folder to "
                        "clear it)")
    p.add_argument("--no-decode-cache", action="store_true",
                   help="decode every image into RAM at every run (no store on disk)")
    p.add_argument("--decode-per-step", action="store_true",
                   help="keep the images as files (ImageFolder style): each file is checked "
                        "once at load, then every training and prediction batch is decoded "
                        "when it is used, by DataLoader workers; no decode cache")
    p.add_argument("--loader-workers", type=int, default=2, metavar="N",
                   help="with --decode-per-step: DataLoader worker processes that decode "
                        "the batches (default 2; 0 decodes in the training process)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if under_torchrun and args.command not in DISTRIBUTED_COMMANDS:
        print(f"pagkd-lite {args.command}: error: under torchrun (WORLD_SIZE > 1) only "
              f"{' and '.join(DISTRIBUTED_COMMANDS)} run; start {args.command} as one process",
              file=sys.stderr)
        return 2
    wants_cuda = (args.device or "auto").split(":")[0] in ("auto", "cuda")
    if under_torchrun and init_from_env(
        "cuda" if wants_cuda and torch.cuda.is_available() else "cpu"
    ):
        # torchrun: every rank trains on its own group steps; rank 0 prints and saves
        if rank() != 0:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            _check_early(args)
            if args.threads is not None:
                torch.set_num_threads(args.threads)
            args.func(args)
    except (KitError, ValueError, FileNotFoundError) as err:
        print(f"pagkd-lite {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pagkd-lite {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - not the user's input: keep the traceback
        traceback.print_exc()
        print(f"pagkd-lite {args.command}: internal error (the traceback above is the kit's, "
              f"not your input's): please report it with the command you ran",
              file=sys.stderr)
        return 1
    finally:  # main() called in-process (tests, notebooks) leaves the caller's setting
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    shutdown()
    return 0


def _check_early(args: argparse.Namespace) -> None:
    """Before any data is made or any training starts: empty paths, seeds, thread count,
    the output folder and the device."""
    from ..training.train import pick_device

    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and not value.strip():
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {value!r}: empty path; give a file or folder name "
                              f"(for the current folder, write {flag} .)")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed {args.seed}: a seed must be an integer from 0 to "
                          f"{MAX_SEED}, e.g. --seed 0")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: must be >= 1, e.g. --threads "
                          f"{os.cpu_count() or 1}")
    if args.command == "bench":
        if args.seeds < 1:
            raise ConfigError(f"--seeds {args.seeds}: must be >= 1 (the number of seeds)")
        if not 0 <= args.first_seed <= MAX_SEED - args.seeds + 1:
            raise ConfigError(f"--first-seed {args.first_seed}: seeds FIRST..FIRST+N-1 must "
                              f"lie in 0..{MAX_SEED}")
    check_out_dir(args.out or get_preset(args.preset).out_dir)
    if args.device is not None:
        pick_device(args.device)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, without the source line (``warnings.showwarning``)."""
    print(f"pagkd-lite: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
