"""What each ``pagkd-lite`` subcommand does: one ``cmd_*`` function per command.

:mod:`pagkd_lite.apps.cli` parses the command line and calls one of these with the parsed
arguments; each builds the run's :class:`~pagkd_lite.config.Config` (:func:`build_config`),
imports what it needs (so that ``pagkd-lite --help`` stays fast) and prints where its outputs
went. A problem with the user's input is raised as a
:class:`~pagkd_lite.errors.KitError`; :func:`pagkd_lite.apps.cli.main` turns it into a
one-line message.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

from ..config import Config, check_method_overrides, method_config, override
from ..config import build_config as _build_config
from ..errors import ConfigError, KitError
from ..files import check_out_dir
from ..method.distill import METHODS, get_method

#: seeds go to numpy, torch and random; every one of them takes 0 .. 2**32 - 1
MAX_SEED = 2**32 - 1


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
    check_method_overrides([ck["method"]], args.overrides)  # the method trained with them
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
    out = _out(args, cfg) if args.out else Path(time.strftime("benchmarks/studies/%Y-%m-%d-bench"))
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
    cross-validate, write; see :mod:`.cv`. Under torchrun every rank loads the data (ranks
    that share ``--cache-dir`` fill its store once) and trains its share of the folds;
    rank 0 prints and writes (:mod:`.cv_folds`)."""
    from ..data.decode_cache import default_cache_dir
    from ..data.realdata import RealDataConfig, load_dataset
    from ..data.splits import lesion_folds
    from ..distributed import job_rank
    from ..files import readable
    from ..training.train import pick_device
    from .cv import check_method, run_cv, unpaired_folds
    from .cv_folds import stop_on_failure

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
        progress=not args.quiet and job_rank() == 0, max_pixels=args.max_pixels,
        decode_warnings="keep" if args.keep_decode_warnings else "skip",
        allow_missing_classes=args.allow_missing_classes, stem_reuse=args.stem_reuse,
        allow_outside_root=args.allow_outside_root,
        cache_dir=cache_dir, decode_per_step=args.decode_per_step,
        loader_workers=args.loader_workers,
        **{f"{m}_names": _names(getattr(args, f"{m}_names"), f"--{m}-names")
           for m in ("wli", "nbi") if getattr(args, f"{m}_names") is not None})
    first = job_rank() == 0  # the one that prints and writes under torchrun
    log = print if first else functools.partial(print, file=sys.stderr, flush=True)
    with stop_on_failure(out):
        # Load everything and write the load report, on success and on failure; then train.
        try:
            sets, report = load_dataset(data_cfg)
        except KitError as err:
            if err.report is not None and first:
                print(readable(err.report.to_text()))
                print(f"load report: {err.report.save(out / 'load_report')[1]}")
            raise
        if first:
            print(readable(report.to_text()))
            print(f"load report: {report.save(out / 'load_report')[1]}")
        else:  # rank 0's load report is the one written; the others say what they did
            log(f"rank {job_rank()}: data loaded, {report.decoded} image(s) decoded, "
                f"{report.cache.get('reused', 0)} read from the decode cache "
                f"({report.cache.get('status', 'off')})")
        folds = lesion_folds(sets, args.folds, cfg.seed, group_by=args.group_by,
                             val_fraction=args.val_fraction)
        if args.unpair:
            folds = unpaired_folds(sets, folds, cfg.seed, group_by=args.group_by)
        res = run_cv(cfg, sets, folds, args.method, out, progress=not args.quiet and first,
                     group_by=args.group_by, load_report=report, log=log)
    if first:
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
