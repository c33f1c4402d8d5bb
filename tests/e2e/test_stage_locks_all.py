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
from tests.unit.pretrain_tiny import TINY_OVERRIDES

# What this chain sets differently from the pretrain tests' tiny run.
DIFFERENT = ("pretrain.data.source", "pretrain.trainer.max_epochs")
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
    # The tiny ViT and its crops, as in the pretrain tests, for one epoch.
    "experiment=elpv_scratch",
    *(o for o in TINY_OVERRIDES if o.startswith("pretrain.") and o.split("=")[0] not in DIFFERENT),
    "pretrain.trainer.max_epochs=1",
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
