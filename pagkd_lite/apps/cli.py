"""``pagkd-lite``: the command line: the parser, early checks, errors as one line.

Each command runs in :mod:`pagkd_lite.apps.commands`.

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
with a one-line message naming the argument or file, and exit status 2. A ``--set`` (or
``--sweep``) that gives a field another value than a chosen method fixes (``Method.config``,
e.g. ``pagkd_authors``'s ``den.two_way=true``) is such a problem: the method would replace
it (:func:`pagkd_lite.config.check_method_overrides`).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

import torch

from ..config import PRESETS, check_method_overrides, get_preset
from ..distributed import init_from_env, rank, shutdown
from ..errors import ConfigError, KitError, RunStopped
from ..files import check_out_dir
from ..method.distill import METHODS, method_help
from . import commands
from .commands import MAX_SEED

# the commands that split their work over torchrun's ranks (training steps; cv: whole
# folds); the others run as one process
DISTRIBUTED_COMMANDS = ("train-teacher", "train-student", "cv")
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

    _command(sub, "make-data", "generate SynthEndo and export folder + manifest",
             commands.cmd_make_data)

    p = _command(sub, "pretrain", "SimCLR on the unlabelled WLI and NBI training images: the "
                 "backbone that model.init=ssl starts from", commands.cmd_pretrain)
    p.add_argument("--no-cache", action="store_true", help="retrain even if cached")

    p = _command(sub, "train-teacher", "train the NBI teacher", commands.cmd_train_teacher)
    p.add_argument("--no-cache", action="store_true", help="retrain even if cached")

    p = _command(sub, "train-student", "train a WLI student", commands.cmd_train_student, names)
    p.add_argument("--method", default="pagkd", choices=names)
    p.add_argument("--resume", action="store_true", help="continue from <out>/<method>/last.pt")

    p = _command(sub, "evaluate", "evaluate a trained student on the WLI test split",
                 commands.cmd_evaluate, names)
    p.add_argument("--method", default="pagkd", choices=names)
    p.add_argument("--checkpoint", default=None, help="default: <out>/<method>/best.pt")

    p = _command(sub, "demo", "teacher, then the students of pipeline.DEMO_METHODS; table, report",
                 commands.cmd_demo, names)
    p.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), choices=names)

    p = _command(sub, "diagnose", "token-label and relation-map quality against SynthEndo's "
                 "true lesion masks", commands.cmd_diagnose, names)
    p.add_argument("--method", default="pagkd", choices=names,
                   help="the student whose CAM is measured (default: pagkd)")
    p.add_argument("--write", default=None, metavar="FILE",
                   help="also write the diagnosis as data, FILE.json (what "
                        "benchmarks/diagnose_summary.py reads), and its Markdown view "
                        "beside it (suffix .md)")

    from ..course.class_mode import COURSE_METHODS

    p = _command(sub, "cache", "class mode: train the notebooks' models once (runs/course)",
                 commands.cmd_cache, list(COURSE_METHODS))
    p.add_argument("--methods", nargs="+", default=list(COURSE_METHODS), choices=names)

    p = _command(sub, "bench", "the SynthEndo benchmark over seeds and methods", commands.cmd_bench,
                 names)
    p.add_argument("--seeds", type=int, default=5, help="number of seeds")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds are FIRST..FIRST+N-1 (the benchmark: 0; validation: 100)")
    p.add_argument("--methods", nargs="+", default=list(BENCH_METHODS), choices=names)
    p.add_argument("--sweep", action="append", default=None, metavar="FIELD=V1,V2,...",
                   help="repeat for each value of a config field, e.g. data.wli_contrast=0.1,0.3;"
                        " several --sweep run their cross product (the regime map)")
    p.add_argument("--csv", default=None, help="results CSV (default: <out>/<name>.csv)")

    p = _command(sub, "cv", "K-fold cross-validation on your own WLI/NBI data", commands.cmd_cv,
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
              f"train-teacher and train-student run (each step split over the ranks), and cv "
              f"(its folds spread over the ranks); start {args.command} as one process",
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
    except RunStopped as err:  # torchrun stopped this rank: one rank names the failed one
        if str(err):
            print(f"pagkd-lite {args.command}: error: {err}", file=sys.stderr)
        return 1
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
    the output folder, the device, and ``--set`` / ``--sweep`` values that a chosen method
    (``--method``, ``--methods``) would replace (:func:`check_method_overrides`)."""
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
    methods = [m for m in [getattr(args, "method", None), *(getattr(args, "methods", None) or [])]
               if m]
    check_method_overrides(methods, args.overrides)
    if getattr(args, "sweep", None):
        from .bench import parse_grid

        check_method_overrides(methods, [f"{f}={v}" for cell in parse_grid(args.sweep)
                                         for f, v in cell.items()], flag="--sweep")
    check_out_dir(args.out or get_preset(args.preset).out_dir)
    if args.device is not None:
        pick_device(args.device)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, without the source line (``warnings.showwarning``)."""
    print(f"pagkd-lite: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
