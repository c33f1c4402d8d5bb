"""The real pretrain stage on two Slurm nodes survives a requeue (slow: ~2 min on 2 cores).

``srun python run.py stage=pretrain`` runs one DDP rank per node; Slurm's warning signal arrives
mid-run (``scancel --signal=USR1``), the job checkpoints, requeues, resumes and must finish
like an undisturbed 2-process run of the same config: same steps, same loss curve, same
weights up to float rounding (the stage does not ask for bitwise-deterministic kernels).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.slurm.conftest import REPO
from tests.slurm.jobs import job_info, wait_final

pretrain_tiny = pytest.importorskip("tests.unit.pretrain_tiny", reason="needs the pretrain stage's test helpers")

COMMON = [
    *pretrain_tiny.TINY_OVERRIDES,
    "pretrain.trainer.max_epochs=8",
    "pretrain.trainer.strategy=ddp",
    "pretrain.trainer.checkpoint_every_n_steps=100",
    "pretrain.monitor.knn_every_n_epochs=-1",
]


def _metrics(root: Path) -> dict[int, float]:
    f = root / "elpv_demo" / "pretrain" / "metrics.jsonl"
    rows = [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


@pytest.mark.slow
def test_pretrain_stage_requeued_on_two_nodes(slurm_cluster, tmp_path: Path) -> None:
    a, b = tmp_path / "interrupted", tmp_path / "reference"
    for root in (a, b):
        pretrain_tiny.make_output_dir(root, n_pool=96)
    run = [
        sys.executable,
        "run.py",
        f"paths.root={a}",
        *COMMON,
        "pretrain.trainer.num_nodes=2",
        "pretrain.trainer.devices=1",
    ]
    job = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "-J",
            "pretrain_requeue",
            "--requeue",
            "--signal=USR1@90",
            "--nodes=2",
            "--ntasks-per-node=1",
            "--cpus-per-task=1",
            "--time=15",
            "--export=ALL,MASTER_ADDR=127.0.0.1",
            f"--chdir={REPO}",
            f"--output={a}/slurm-%j.out",
            "--open-mode=append",
            "--wrap",
            "srun " + shlex.join(run),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    ref_log = open(tmp_path / "reference.log", "w")  # noqa: SIM115 - the reference run writes it
    ref = subprocess.Popen(
        [
            sys.executable,
            "run.py",
            f"paths.root={b}",
            *COMMON,
            "pretrain.trainer.num_nodes=1",
            "pretrain.trainer.devices=2",
        ],
        cwd=REPO,
        stdout=ref_log,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while len(_metrics(a)) < 16:  # 6 steps per epoch, 48 in all: signal in epoch 3
            assert time.monotonic() < deadline, "pretrain never got going"
            time.sleep(0.5)
        subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)
        assert ref.wait(timeout=400) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        if ref.poll() is None:
            os.killpg(ref.pid, signal.SIGKILL)
        ref_log.close()
    log = lambda: "\n".join(p.read_text(errors="replace") for p in a.glob("slurm-*.out"))[-4000:]  # noqa: E731
    assert wait_final(job, timeout=400) == "COMPLETED", log()
    assert job_info(job)["Restarts"] == "1", log()
    assert "resuming from" in log() and "hpc_ckpt_1.ckpt" in log()

    ma = json.loads((a / "elpv_demo" / "pretrain" / "manifest.json").read_text())
    mb = json.loads((b / "elpv_demo" / "pretrain" / "manifest.json").read_text())
    assert ma["counts"] == mb["counts"]
    assert ma["metrics"]["final_loss"] == pytest.approx(mb["metrics"]["final_loss"], rel=1e-5)
    la, lb = _metrics(a), _metrics(b)
    common = sorted(set(la) & set(lb))
    assert len(common) >= len(lb) - 2, (sorted(la), sorted(lb))
    assert max(abs(la[s] - lb[s]) for s in common) < 1e-4
    wa = load_file(a / "elpv_demo" / "pretrain" / "export" / "model.safetensors")
    wb = load_file(b / "elpv_demo" / "pretrain" / "export" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5, msg=k)
