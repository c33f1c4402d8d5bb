"""LightlyTrain side of ``lightlytrain_compare.py``; runs in LightlyTrain's own venv (no ``pipeline`` imports).

    /work/venv-lt/bin/python benchmarks/_lt_runner.py --data DIR --out DIR [--batch 64 --epochs 1]

Times every step with the same definition as our ``PretrainModule`` (step = batch start to
batch end, loader wait = previous batch end to this batch start, the first batch of the
epoch excluded from both) by adding a callback to LightlyTrain's Lightning ``Trainer``.
Writes ``<out>/timing.json``; the exported backbone is ``<out>/exported_models/exported_last.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("LIGHTLY_TRAIN_EVENTS_DISABLED", "1")  # offline machine: no telemetry

import pytorch_lightning as pl  # LightlyTrain uses the ``pytorch_lightning`` namespace


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self._t_end: float | None = None
        self._t0 = 0.0
        self._wait = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t_end = None
        self.epoch_t0 = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        self._wait = 0.0 if self._t_end is None else now - self._t_end
        self._t0 = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        views = batch["views"]
        self.steps.append({"step_s": now - self._t0, "wait_s": self._wait, "images": int(views[0].shape[0])})
        self._t_end = now

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_s = time.perf_counter() - self.epoch_t0

    def summary(self) -> dict:
        """Throughput over the timed steps: the first step of the epoch (worker start-up) is left out, as in ours."""
        s = self.steps
        timed = s[1:]
        step_s = sum(x["step_s"] for x in timed)
        wait_s = sum(x["wait_s"] for x in timed)
        return {
            "steps": len(s),
            "images_seen": sum(x["images"] for x in s),
            "images_per_s": sum(x["images"] for x in timed) / (step_s + wait_s),
            "loader_wait_frac": wait_s / (step_s + wait_s),
            "train_loop_s": sum(x["step_s"] + x["wait_s"] for x in s),
            "step_times_s": [round(x["step_s"], 3) for x in s],
            "wait_times_s": [round(x["wait_s"], 3) for x in s],
        }


def attach_timer() -> StepTimer:
    """A :class:`StepTimer` that every ``pl.Trainer`` created from now on gets as a callback
    (LightlyTrain builds its own trainer, so the callback goes in through its constructor)."""
    timer = StepTimer()
    orig_init = pl.Trainer.__init__

    def init(self, *args, callbacks=None, **kw):
        orig_init(self, *args, callbacks=[*(callbacks or []), timer], **kw)

    pl.Trainer.__init__ = init
    return timer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--workers", default="auto")
    p.add_argument("--precision", default="auto")
    a = p.parse_args()
    timer = attach_timer()
    import lightly_train
    import torch

    t0 = time.perf_counter()
    lightly_train.pretrain(
        out=a.out,
        data=a.data,
        model="timm/vit_tiny_patch16_224",
        method="dino",
        epochs=a.epochs,
        batch_size=a.batch,
        num_workers=a.workers if a.workers == "auto" else int(a.workers),
        accelerator="cpu",
        devices=1,
        precision=a.precision,
        overwrite=True,
        seed=0,
    )
    wall = time.perf_counter() - t0
    res = {
        "tool": "lightly-train",
        "version": lightly_train.__version__ if hasattr(lightly_train, "__version__") else "0.18.0",
        "torch": torch.__version__,
        **timer.summary(),
        "epoch_s": getattr(timer, "epoch_s", float("nan")),
        "wall_s": wall,
        "load_avg_end": os.getloadavg(),
    }
    Path(a.out, "timing.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if not k.endswith("times_s")}))


if __name__ == "__main__":
    main()
