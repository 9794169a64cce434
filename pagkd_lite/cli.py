"""``pagkd-lite``: the command line.

    pagkd-lite make-data      --preset demo --out data/synthendo
    pagkd-lite train-teacher  --preset demo
    pagkd-lite train-student  --preset demo --method pagkd
    pagkd-lite evaluate       --preset demo --method pagkd
    pagkd-lite demo           --preset smoke
    pagkd-lite cache          --preset demo     (class mode: the course's models, once)
    pagkd-lite bench          --preset bench --seeds 5
    pagkd-lite cv             --data-root DIR --folds 5 --method pagkd

Every config field can be changed with ``--set section.field=value`` (repeatable), e.g.
``--set train.epochs=3 --set model.backbone=resnet18``. Also ``python -m pagkd_lite.cli``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from . import bench, cv
from .checkpoint import CheckpointError
from .config import METHODS, PRESETS, Config, get_preset, override
from .distributed import init_from_env, rank, shutdown

# the commands that split their work over torchrun's ranks; the others run as one process
DISTRIBUTED_COMMANDS = ("train-teacher", "train-student")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS),
                   help="settings to start from (default: demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override a config field, e.g. train.epochs=3 (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="training and data seed")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument("--out", default=None, help="output folder (default: runs/<preset>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_config(args: argparse.Namespace) -> Config:
    cfg = get_preset(args.preset)
    extra = list(args.overrides)
    if args.seed is not None:
        extra += [f"seed={args.seed}", f"data.seed={args.seed}"]
    if args.device is not None:
        extra.append(f"device={args.device}")
    return override(cfg, extra)


def _out(args, cfg: Config) -> Path:
    return Path(args.out) if args.out else Path(cfg.out_dir) / cfg.name


def cmd_make_data(args) -> None:
    from .pipeline import make_data
    from .synthendo import export_folder

    cfg = build_config(args)
    sets = make_data(cfg)
    root = export_folder(sets, _out(args, cfg) / "synthendo")
    for name, s in sets.items():
        print(f"{name:10s} {len(s):5d} images  per class {s.class_counts()}")
    print(f"written to {root}")


def cmd_train_teacher(args) -> None:
    from .pipeline import evaluate, make_data, train_teacher

    cfg = build_config(args)
    sets = make_data(cfg)
    teacher, info = train_teacher(cfg, sets, out_dir=_out(args, cfg), progress=not args.quiet,
                                  cache=not args.no_cache)
    ev = evaluate(teacher, sets["nbi_test"], teacher.fc.weight.device, cfg.bootstrap, cfg.seed,
                  runtime=cfg.runtime)
    print(f"teacher: best epoch {info['best_epoch'] + 1}, val AUC {info['best_val_auc']:.3f}, "
          f"NBI test AUC {ev.metrics['auc']}")


def cmd_train_student(args) -> None:
    from .pipeline import evaluate, make_data, train_student, train_teacher

    cfg = build_config(args)
    out = _out(args, cfg)
    sets = make_data(cfg)
    teacher = None
    if args.method != "wli_only":
        teacher, _ = train_teacher(cfg, sets, out_dir=out, progress=not args.quiet)
    distiller, result = train_student(cfg, sets, args.method, teacher, out_dir=out,
                                      resume=args.resume, progress=not args.quiet)
    ev = evaluate(distiller, sets["wli_test"], distiller.student.fc.weight.device,
                  cfg.bootstrap, cfg.seed, runtime=cfg.runtime)
    print(f"{args.method}: best epoch {result.best_epoch + 1} (val AUC "
          f"{result.best_val_auc:.3f}); WLI test AUC {ev.metrics['auc']}")
    print(f"checkpoint: {out / args.method / 'best.pt'}")


def cmd_evaluate(args) -> None:
    from .checkpoint import load_checkpoint
    from .config import from_dict
    from .distill import build_distiller
    from .models import Classifier
    from .pipeline import evaluate, format_table, make_data
    from .train import pick_device

    cfg = build_config(args)
    path = Path(args.checkpoint) if args.checkpoint else _out(args, cfg) / args.method / "best.pt"
    ck = load_checkpoint(path, required=("distiller", "config", "method"))
    cfg = from_dict(ck["config"])
    sets = make_data(cfg)
    k = sets["wli_test"].num_classes
    needs_teacher = ck["method"] != "wli_only"
    teacher = Classifier(cfg.model, k) if needs_teacher else None
    distiller = build_distiller(ck["method"], Classifier(cfg.model, k), teacher, cfg, k)
    distiller.load_trainable_state_dict(ck["distiller"])
    device = pick_device(cfg.device)
    ev = evaluate(distiller.to(device), sets["wli_test"], device, cfg.bootstrap, cfg.seed,
                  runtime=cfg.runtime)
    print(format_table([{"name": ck["method"], "split": "wli_test", "metrics": ev.metrics,
                         "seconds": 0.0}],
                       metrics=("auc", "accuracy", "precision", "sensitivity", "specificity",
                                "f1")))


def cmd_demo(args) -> None:
    from .pipeline import demo

    cfg = build_config(args)
    res = demo(cfg, methods=tuple(args.methods), out_dir=_out(args, cfg),
               progress=not args.quiet)
    print(res["table"])
    print(f"report: {res['report']}  (wall time {res['seconds']:.0f} s)")


def cmd_cache(args) -> None:
    from .course import build_cache

    cfg = build_config(args)
    course = build_cache(cfg, methods=tuple(args.methods),
                         root=Path(args.out) if args.out else Path(cfg.out_dir) / "course",
                         progress=not args.quiet)
    print(f"class mode: {len(course.log)} models in {course.folder}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pagkd-lite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-data", help="generate SynthEndo and export folder + manifest")
    _common(p)
    p.set_defaults(func=cmd_make_data)

    p = sub.add_parser("train-teacher", help="train the NBI teacher")
    _common(p)
    p.add_argument("--no-cache", action="store_true", help="retrain even if cached")
    p.set_defaults(func=cmd_train_teacher)

    p = sub.add_parser("train-student", help="train a WLI student")
    _common(p)
    p.add_argument("--method", default="pagkd", choices=METHODS)
    p.add_argument("--resume", action="store_true", help="continue from <out>/<method>/last.pt")
    p.set_defaults(func=cmd_train_student)

    p = sub.add_parser("evaluate", help="evaluate a trained student on the WLI test split")
    _common(p)
    p.add_argument("--method", default="pagkd", choices=METHODS)
    p.add_argument("--checkpoint", default=None, help="default: <out>/<method>/best.pt")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="teacher, WLI-only and PaGKD students, table and report")
    _common(p)
    p.add_argument("--methods", nargs="+", default=["wli_only", "pagkd"], choices=METHODS)
    p.set_defaults(func=cmd_demo)

    from .course import COURSE_METHODS

    p = sub.add_parser("cache", help="class mode: train the notebooks' models once (runs/course)")
    _common(p)
    p.add_argument("--methods", nargs="+", default=list(COURSE_METHODS), choices=METHODS)
    p.set_defaults(func=cmd_cache)

    bench.add_parser(sub, _common)
    cv.add_parser(sub, _common)

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
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"pagkd-lite {args.command}: error: {err}", file=sys.stderr)
        return 2
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
