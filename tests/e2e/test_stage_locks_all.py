"""Two ``python run.py stage=all`` of a tiny recipe on one fresh root at once: both succeed, one waits
at each stage the other is writing, and the outputs are those of a single run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_ELPV
from tests.e2e.test_stage_locks import snapshot

TINY_ALL = [
    *TINY_ELPV,
    "stage=all",
    "progress=false",
    "ingest.workers=1",
    "curate.embed.backbone.name=test_efficientnet",
    "curate.embed.workers=0",
    "curate.embed.batch_size=32",
    "curate.shard_size=20",
    "curate/retrieval=knn",
    "curate.retrieval.k=4",
    "pretrain.data.batch_size=8",
    "pretrain.data.num_workers=0",
    "pretrain.data.shuffle_buffer=16",
    "pretrain.model.patch_size=8",
    "++pretrain.model.kwargs.depth=2",
    "++pretrain.model.kwargs.embed_dim=32",
    "++pretrain.model.kwargs.num_heads=2",
    "pretrain.augment.global_size=16",
    "pretrain.augment.local_size=8",
    "pretrain.augment.local_crops=2",
    "pretrain.method.out_dim=64",
    "pretrain.method.hidden_dim=32",
    "pretrain.method.bottleneck_dim=16",
    "pretrain.trainer.max_epochs=1",
    "pretrain.trainer.log_every_n_steps=1",
    "pretrain.trainer.checkpoint_every_n_steps=3",
    "pretrain.trainer.accelerator=cpu",
    "pretrain.optim.warmup_epochs=0.5",
    "pretrain.monitor.knn_every_n_epochs=-1",
    (
        "eval.backbones=[{name:domain,role:domain,weights:${paths.output_dir}/pretrain},"
        "{name:raw_pixels,arch:raw_pixels,img_size:8,finetune:false}]"
    ),
    "eval.finetune.enabled=false",
    "eval.fractions=[1.0]",
    "eval.seeds=[0]",
    "eval.linear_probe.c_grid=[1.0]",
]
# Written with wall-clock timings (throughput, step times), so they differ between any two runs.
TIMED = ("pretrain/metrics.jsonl", "pretrain/manifest.json", "pretrain/checkpoints/last.ckpt")


def _embedder(path: Path) -> Path:
    """Fixed weights for the curate embedder: a random init would differ from run to run, and so would
    everything curated, trained and evaluated after it."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(timm.create_model("test_efficientnet", num_classes=0).state_dict(), str(path))
    return path


def _start(root: Path, weights: Path) -> subprocess.Popen:
    env = {**os.environ, "PIPELINE_OUTPUT_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    args = [*TINY_ALL, f"curate.embed.backbone.weights={weights}"]
    return subprocess.Popen(
        [sys.executable, "run.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _outputs(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(root / "elpv_demo").items() if k not in TIMED}


@pytest.mark.slow
def test_two_stage_all_runs_at_once_match_one_run(tmp_path: Path) -> None:
    root, weights = tmp_path / "root", _embedder(tmp_path / "embedder.safetensors")
    one = _start(root, weights)
    log, _ = one.communicate(timeout=900)
    assert one.returncode == 0, log[-3000:]
    want = _outputs(root)
    assert "pretrain/export/model.safetensors" in want and "eval/report/results.csv" in want
    shutil.rmtree(root)

    a, b = _start(root, weights), _start(root, weights)
    (la, _), (lb, _) = a.communicate(timeout=900), b.communicate(timeout=900)
    assert a.returncode == 0 and b.returncode == 0, (la[-3000:], lb[-3000:])
    assert "is being written by another run" in la + lb
    got = _outputs(root)
    differ = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    assert differ == []
    assert not list((root / "elpv_demo").glob("*.lock*")), "locks are released"
