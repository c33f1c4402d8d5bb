"""Exact resume: a run stopped mid-epoch and resumed from its last checkpoint repeats the
per-step losses of an uninterrupted run (tiny ViT, CPU, seconds; compiled, under a minute;
a CNN with BatchNorm, whose running statistics are part of the checkpoint; EfficientNet-Lite0 warm-started
from its ImageNet weights with frozen BatchNorm statistics, the continued-pretraining recipe)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.pretrain.logger import read_metrics
from pipeline.pretrain.module import PretrainModule
from pipeline.stages import pretrain as stage
from tests.unit.pretrain_tiny import CNN_OVERRIDES, compose, make_output_dir


class Killed(RuntimeError):
    pass


@pytest.mark.parametrize(
    ("compiled", "backbone"),
    [(False, "vit"), (True, "vit"), (False, "cnn"), pytest.param(False, "cnn_warm", marks=pytest.mark.slow)],
)
def test_killed_run_resumes_with_identical_losses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compiled: bool, backbone: str
) -> None:
    """``compiled``: trunks and loss terms under ``torch.compile`` (``pretrain.trainer.compile=true``);
    ``cnn``: a ResNet with a frozen-then-ramped backbone, layer decay and L2-SP; ``cnn_warm``: the same
    on EfficientNet-Lite0 from its offline ImageNet weights (BatchNorm statistics frozen)."""
    full_root, cut_root = tmp_path / "full", tmp_path / "cut"
    make_output_dir(full_root)
    make_output_dir(cut_root)
    over = ["pretrain.monitor.knn_every_n_epochs=-1", f"pretrain.trainer.compile={str(compiled).lower()}"]
    if backbone != "vit":
        over += [
            *CNN_OVERRIDES,
            "pretrain.optim.freeze_backbone_epochs=0.6",
            "pretrain.optim.backbone_warmup_epochs=0.6",
            "pretrain.optim.backbone_lr_scale=0.5",
            "pretrain.optim.layer_decay=0.8",
            "pretrain.optim.l2sp_weight=0.01",
        ]
    if backbone == "cnn_warm":
        over += ["pretrain.model.name=efficientnet_lite0", "pretrain.model.weights=efficientnet_lite0_pypi"]
    # 40 images / batch 8 = 5 steps per epoch, 2 epochs; checkpoints at steps 3, 6, 9.
    m = stage.run(compose(full_root, *over))
    assert m.counts["steps"] == 10
    assert m.extra["batch_norm"] == ("frozen" if backbone == "cnn_warm" else "batch")
    full = read_metrics(full_root / "elpv_demo" / "pretrain", "train/loss")
    assert len(full) == 10

    original = PretrainModule.on_train_batch_end

    def dying(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        if self.global_step == 8:  # mid-epoch 2, two steps after the step-6 checkpoint
            raise Killed("simulated crash")

    monkeypatch.setattr(PretrainModule, "on_train_batch_end", dying)
    cfg = compose(cut_root, *over)
    with pytest.raises(Killed):
        stage.run(cfg)
    out = cut_root / "elpv_demo" / "pretrain"
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "manifest.json").exists()
    monkeypatch.setattr(PretrainModule, "on_train_batch_end", original)
    m2 = stage.run(cfg)  # resumes from last.ckpt (step 6)
    assert m2.counts["steps"] == 10
    resumed = read_metrics(out, "train/loss")
    assert sorted(resumed) == sorted(full)
    for step in sorted(full):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), f"step {step}"
    # and the stream really moved on: losses differ from step to step
    assert len({round(v, 6) for v in full.values()}) > 5
