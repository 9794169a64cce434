"""Run by tests/test_ddp.py under torchrun: train a tiny PaGKD student on 2 gloo ranks and
save each rank's final weights, so the test can check the ranks stayed in lockstep."""

import sys
from pathlib import Path

import torch

from pagkd_lite.config import override, smoke
from pagkd_lite.distributed import init_from_env, rank, shutdown
from pagkd_lite.training.pipeline import make_data, train_student, train_teacher

out = Path(sys.argv[1])
gather = sys.argv[2] if len(sys.argv) > 2 else "false"  # pro.gather: prototypes across ranks
assert init_from_env("cpu"), "expected to run under torchrun with WORLD_SIZE > 1"
torch.set_num_threads(1)
cfg = override(smoke(), ["teacher.epochs=1", "train.epochs=2", "train.warmup_epochs=0",
                         f"pro.gather={gather}"])
sets = make_data(cfg)
teacher, _ = train_teacher(cfg, sets, out_dir=None, progress=False)
distiller, result = train_student(cfg, sets, "pagkd", teacher, out_dir=out, progress=False)
torch.save({k: v for k, v in distiller.trainable_state_dict().items()},
           out / f"rank{rank()}.pt")
print(f"rank {rank()} done, best epoch {result.best_epoch}")
shutdown()
