"""A tiny, deterministic Lightning DDP training job for the requeue test.

Run under Slurm as ``srun python -m tests.slurm.tiny_train <out>``: one process per task, on
one or more nodes, ranks from ``SLURM_*`` (Lightning's SLURMEnvironment), gloo on CPU; or, for the reference run,
``TINY_DEVICES=2 python -m tests.slurm.tiny_train <out>`` (Lightning starts the processes). It uses the same
:mod:`pipeline.cluster.requeue` pieces a real training stage uses, writes
``progress.json`` after every epoch and ``final.pt`` + ``final.json`` at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.cluster.requeue import RequeueOnSignal, finish_distributed, resume_checkpoint, slurm_plugins

EPOCHS = 10
STEP_SLEEP_S = 0.15  # long enough for the test to signal mid-run


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(8, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        time.sleep(STEP_SLEEP_S)
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class Progress(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            tmp = self.out / "progress.json.tmp"
            tmp.write_text(json.dumps({"global_step": trainer.global_step, "epoch": trainer.current_epoch}))
            tmp.replace(self.out / "progress.json")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(64, 1, generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    # Under Slurm, srun started one process per task; outside it (the reference run),
    # Lightning starts TINY_DEVICES processes itself. Same world size, same math.
    devices = int(os.environ.get("SLURM_NTASKS_PER_NODE") or os.environ.get("TINY_DEVICES", "1"))
    nodes = int(os.environ.get("SLURM_NNODES", "1"))
    world = devices * nodes
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        num_nodes=nodes,
        strategy="ddp" if world > 1 else "auto",
        plugins=slurm_plugins(),
        max_epochs=EPOCHS,
        default_root_dir=str(out),
        callbacks=[RequeueOnSignal(), Progress(out)],
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    ckpt = resume_checkpoint(out)
    model = Tiny()
    trainer.fit(model, loader, ckpt_path=ckpt)
    finish_distributed()
    if trainer.is_global_zero:
        torch.save(model.net.state_dict(), out / "final.pt")
        info = {
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
            "resumed_from": ckpt,
            "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
        }
        (out / "final.json").write_text(json.dumps(info))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
