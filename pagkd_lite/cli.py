"""``pagkd-lite``: the command line.

    pagkd-lite make-data      --preset demo --out data/synthendo
    pagkd-lite train-teacher  --preset demo
    pagkd-lite train-student  --preset demo --method pagkd
    pagkd-lite evaluate       --preset demo --method pagkd
    pagkd-lite demo           --preset smoke
    pagkd-lite bench          --preset bench --seeds 5
    pagkd-lite cv             --data-root DIR --folds 5 --method pagkd

Every config field can be changed with ``--set section.field=value`` (repeatable), e.g.
``--set train.epochs=3 --set model.backbone=resnet18``. Also ``python -m pagkd_lite.cli``.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from pathlib import Path

import torch

from . import bench, cv
from .config import METHODS, PRESETS, Config, get_preset, override
from .distributed import init_from_env, rank, shutdown
from .errors import KitError
from .files import check_out_dir

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
    from .checkpoint import CheckpointError, check_provenance, load_checkpoint, load_weights
    from .config import from_dict
    from .distill import build_distiller
    from .models import Classifier
    from .pipeline import evaluate, format_table, make_data, provenance
    from .train import pick_device

    cfg = build_config(args)
    path = Path(args.checkpoint) if args.checkpoint else _out(args, cfg) / args.method / "best.pt"
    ck = load_checkpoint(path, required=("distiller", "config", "method"))
    try:
        if not isinstance(ck["config"], dict):
            raise TypeError(f"a {type(ck['config']).__name__}, not a dict")
        cfg = from_dict(ck["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: its config cannot be read "
                              f"({type(err).__name__}: {err})") from None
    if ck["method"] not in METHODS:
        raise CheckpointError(f"checkpoint {path}: unknown method {ck['method']!r}")
    check_provenance(path, ck, data={"source": "synthendo", "config": ck["config"]["data"]})
    sets = make_data(cfg)
    k = sets["wli_test"].num_classes
    check_provenance(path, ck, model=provenance(cfg, sets["wli_test"])["model"])
    needs_teacher = ck["method"] != "wli_only"
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
    from .pipeline import demo

    cfg = build_config(args)
    res = demo(cfg, methods=tuple(args.methods), out_dir=_out(args, cfg),
               progress=not args.quiet)
    print(res["table"])
    print(f"report: {res['report']}  (wall time {res['seconds']:.0f} s)")


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
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            _check_early(args)
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
    shutdown()
    return 0


def _check_early(args: argparse.Namespace) -> None:
    """Before any data is made or any training starts: the output folder and the device."""
    from .train import pick_device

    check_out_dir(args.out or get_preset(args.preset).out_dir)
    if args.device is not None:
        pick_device(args.device)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, without the source line (``warnings.showwarning``)."""
    print(f"pagkd-lite: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
