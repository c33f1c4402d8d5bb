"""Multi-node DDP training under Slurm survives a requeue and resumes exactly.

An sbatch job of ``tests/slurm/tiny_train.py`` on 2 nodes (1 task each, Lightning DDP over gloo) gets Slurm's
warning signal mid-run (``scancel --signal=USR1``,
what ``--signal=USR1@90`` sends before the time limit), checkpoints at the next safe step,
requeues itself, restarts and must end with weights bit-identical to an undisturbed run of the
same 2-process DDP training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.slurm.conftest import REPO
from tests.slurm.jobs import job_info, wait_final
from tests.slurm.tiny_train import EPOCHS

STEPS_PER_EPOCH = 4  # 64 samples / batch 8 / 2 ranks


def _submit(out: Path, name: str) -> str:
    out.mkdir(parents=True)
    cmd = [
        "sbatch",
        "--parsable",
        "-J",
        name,
        "--requeue",
        "--signal=USR1@90",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=1",
        "--time=10",
        # The test nodes are names on this host that DNS does not know; on a real cluster
        # Lightning takes the first node of SLURM_NODELIST as the rendezvous address.
        "--export=ALL,MASTER_ADDR=127.0.0.1",
        f"--chdir={REPO}",
        f"--output={out}/slurm-%j.out",
        "--open-mode=append",
        "--wrap",
        f"srun {sys.executable} -m tests.slurm.tiny_train {out}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30).stdout.strip().split(";")[0]


def _log(out: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in out.glob("slurm-*.out"))


def test_requeued_ddp_training_resumes_exactly(slurm_cluster, tmp_path: Path) -> None:
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    job = _submit(interrupted, "tiny_requeue")
    # The uninterrupted reference: the same 2-process DDP run, started by Lightning outside Slurm
    # (the cluster's 2 CPUs are taken by `job`), at the same time.
    reference.mkdir()
    ref_log = open(reference / "run.log", "w")  # noqa: SIM115 - the reference run writes it
    ref = subprocess.Popen(
        [sys.executable, "-m", "tests.slurm.tiny_train", str(reference)],
        cwd=REPO,
        stdout=ref_log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TINY_DEVICES": "2"},
        start_new_session=True,
    )

    # Signal once training is two epochs in, well before the end.
    progress = interrupted / "progress.json"
    deadline = time.monotonic() + 180
    while True:
        step = json.loads(progress.read_text())["global_step"] if progress.exists() else 0
        if step >= 2 * STEPS_PER_EPOCH:
            break
        assert time.monotonic() < deadline, f"training never got going:\n{_log(interrupted)}"
        time.sleep(0.2)
    assert step < EPOCHS * STEPS_PER_EPOCH - STEPS_PER_EPOCH, "signal came too late to test a resume"
    subprocess.run(["scancel", "--signal=USR1", job], check=True, timeout=30)

    try:
        assert ref.wait(timeout=300) == 0, (reference / "run.log").read_text()[-3000:]
    finally:
        if ref.poll() is None:
            os.killpg(ref.pid, signal.SIGKILL)
        ref_log.close()
    assert wait_final(job, timeout=300) == "COMPLETED", _log(interrupted)
    info_job = job_info(job)
    assert info_job["Restarts"] == "1", _log(interrupted)
    assert info_job["NumNodes"] == "2" and info_job["NodeList"] == "n[1-2]", info_job

    log = _log(interrupted)
    assert "requeueing Slurm job" in log and "hpc_ckpt_1.ckpt" in log, log
    info = json.loads((interrupted / "final.json").read_text())
    ref_info = json.loads((reference / "final.json").read_text())
    assert info["restart_count"] == 1 and info["resumed_from"].endswith("hpc_ckpt_1.ckpt")
    assert ref_info["resumed_from"] is None
    assert info["world_size"] == ref_info["world_size"] == 2
    assert info["global_step"] == ref_info["global_step"] == EPOCHS * STEPS_PER_EPOCH

    got = torch.load(interrupted / "final.pt")
    want = torch.load(reference / "final.pt")
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), f"{k} differs after the requeue: {got[k]} vs {want[k]}"
