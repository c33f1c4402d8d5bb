"""Requeue-safe Lightning training under Slurm.

Slurm warns a job before its time limit (``sbatch --signal=USR1@90``; submitit, and so the
Hydra ``slurm_*`` launchers, ask for USR2) or on preemption.
:class:`RequeueOnSignal` turns that warning into an exact resume:

1. the signal handler only sets a flag (saving inside a handler could catch the optimizer
   half-way through a step);
2. at the next *safe* boundary every rank agrees (one all-reduce), a checkpoint is written
   to ``hpc_ckpt_<n>.ckpt`` in ``trainer.default_root_dir`` and rank 0 runs
   ``scontrol requeue $SLURM_JOB_ID``; the process then exits;
3. Slurm restarts the same batch script; :func:`resume_checkpoint` finds the newest
   checkpoint and ``trainer.fit(..., ckpt_path=...)`` continues from that exact step.

A boundary is safe after any batch when every train dataloader is resumable
(``state_dict``/``load_state_dict``), else at the end of an epoch: Lightning cannot skip
the batches already seen in a plain ``DataLoader``, so a mid-epoch resume would repeat them.

Use it with ``plugins=slurm_plugins()``, which keeps Lightning's own SLURM handler (that saves
from inside the signal handler) out of the way while still reading ranks from ``SLURM_*``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

EXIT_REQUEUED = 0  # Slurm ignores the exit code of a job it is requeueing; 0 keeps logs clean
CKPT_PREFIX = "hpc_ckpt_"


def slurm_job_id() -> str | None:
    """``<array job>_<task>`` for array tasks, else ``SLURM_JOB_ID`` (``None`` outside Slurm)."""
    array_id = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_id is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{array_id}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def slurm_plugins() -> list[Any]:
    """Trainer plugins for Slurm: ranks from ``SLURM_*``, no Lightning auto-requeue (we do it)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def resume_checkpoint(folder: str | Path) -> str | None:
    """The newest ``*.ckpt`` under ``folder`` (requeue or periodic checkpoints), or ``None``."""
    ckpts = [p for p in Path(folder).rglob("*.ckpt") if p.is_file()]
    return str(max(ckpts, key=lambda p: p.stat().st_mtime_ns)) if ckpts else None


def next_hpc_path(folder: str | Path) -> Path:
    """``<folder>/hpc_ckpt_<n+1>.ckpt``, Lightning's naming for requeue checkpoints."""
    nums = [
        int(m.group(1)) for p in Path(folder).glob(f"{CKPT_PREFIX}*.ckpt") if (m := re.search(r"_(\d+)\.ckpt$", p.name))
    ]
    return Path(folder) / f"{CKPT_PREFIX}{max(nums, default=0) + 1}.ckpt"


def _resumable(trainer: pl.Trainer) -> bool:
    loaders = trainer.fit_loop._combined_loader  # noqa: SLF001 - no public accessor for the loaders
    if loaders is None:
        return False
    return all(hasattr(dl, "state_dict") and hasattr(dl, "load_state_dict") for dl in loaders.flattened)


class RequeueOnSignal(Callback):
    """On a warning signal, checkpoint at the next safe step and requeue the Slurm job.

    Args:
        signums: The warning signals: USR1 (``sbatch --signal=USR1@<s>``) and USR2 (submitit's).
            Their previous handlers (submitit's) are set aside while ``fit`` runs.
        requeue: Run ``scontrol requeue``; set ``False`` to only checkpoint and exit
            (for schedulers that resubmit by themselves).
    """

    def __init__(self, signums: tuple[int, ...] = (signal.SIGUSR1, signal.SIGUSR2), requeue: bool = True) -> None:
        self.signums = tuple(signums)
        self.requeue = requeue
        self._flag = False
        self._previous: dict[int, Any] = {}
        self.saved: Path | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        log.warning("received signal %d: checkpoint and requeue at the next safe step", signum)
        self._flag = True

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            # Replaces submitit's or Lightning's handler for the duration of fit.
            self._previous = {s: signal.signal(s, self._handler) for s in self.signums}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous and threading.current_thread() is threading.main_thread():
            for s, handler in self._previous.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
            self._previous = {}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Every rank must take part in the decision and the save (a collective in DDP).
        if not trainer.strategy.reduce_boolean_decision(self._flag, all=False):
            return
        epoch_end = batch_idx + 1 >= trainer.num_training_batches
        if not (epoch_end or _resumable(trainer)):
            return
        self.saved = next_hpc_path(trainer.default_root_dir)
        trainer.save_checkpoint(self.saved)
        log.warning("saved %s at global step %d", self.saved, trainer.global_step)
        job = slurm_job_id()
        if trainer.is_global_zero and self.requeue and job is not None:
            # Said before the call: Slurm kills the job's processes as it requeues it, often before
            # `scontrol` returns, so a line written after it can be lost.
            log.warning("requeueing Slurm job %s; it resumes from %s", job, self.saved)
            r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                log.error("scontrol requeue %s failed: %s", job, r.stderr.strip())
        trainer.strategy.barrier("requeue")
        # Leave now: finishing the run would let later code treat a partial model as final.
        sys.exit(EXIT_REQUEUED)


def finish_distributed() -> None:
    """Wait for every rank, then tear the process group down.

    Lightning leaves the group alive after ``fit``; a rank that exits with gloo's threads
    still running can abort (``terminate called without an active exception``), which
    Slurm reports as a failed job although training finished.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
