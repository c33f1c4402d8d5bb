"""The pretrain stage with ``pretrain/augment=gpu`` (views made in the module, not the workers), on CPU
and, where there is one, on CUDA; including the exact resume of a killed run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.augment import GPUMultiCrop
from pipeline.pretrain.logger import read_metrics
from pipeline.pretrain.module import PretrainModule
from pipeline.stages import pretrain as stage
from tests.unit.pretrain_tiny import compose, make_output_dir


class Killed(RuntimeError):
    pass


def test_gpu_augment_stage_runs_in_workers_and_exports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = make_output_dir(tmp_path)
    seen: list[list[tuple[int, ...]]] = []
    original = PretrainModule.training_step

    def spy(self, batch, batch_idx):
        assert isinstance(self.device_augment, GPUMultiCrop)
        seen.append([tuple(v.shape) for v in batch])
        return original(self, batch, batch_idx)

    monkeypatch.setattr(PretrainModule, "training_step", spy)
    cfg = compose(
        tmp_path,
        "pretrain/augment=gpu",
        "pretrain.data.num_workers=1",
        "pretrain.trainer.max_steps=2",
        "pretrain.monitor.knn_every_n_epochs=1",
    )
    m = stage.run(cfg)
    assert m.counts["steps"] == 2
    assert m.extra["augment_backend"] == "gpu" and m.extra["augment_preset"] == "grayscale"
    # 2 global 16 px + 2 local 8 px views of the 8 images, made from 18 px squares (load_size 0 -> 16 * 8/7)
    assert seen == [[(8, 3, 16, 16)] * 2 + [(8, 3, 8, 8)] * 2] * 2
    assert {"knn_start.stripe", "knn.stripe", "final_loss", "images_per_s"} <= set(m.metrics)
    assert torch.isfinite(torch.tensor(m.metrics["final_loss"]))
    assert (out / "pretrain" / "export" / "model.safetensors").is_file()


def test_gpu_augment_killed_run_resumes_with_identical_losses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As tests/unit/pretrain/test_resume.py, with the views made by the module: 5 steps per epoch,
    # 2 epochs, checkpoints at steps 3, 6, 9; killed at step 8, resumed from step 6.
    over = ("pretrain/augment=gpu", "pretrain.monitor.knn_every_n_epochs=-1")
    full_root, cut_root = tmp_path / "full", tmp_path / "cut"
    make_output_dir(full_root)
    make_output_dir(cut_root)
    assert stage.run(compose(full_root, *over)).counts["steps"] == 10
    full = read_metrics(full_root / "elpv_demo" / "pretrain", "train/loss")
    assert len(full) == 10

    original = PretrainModule.on_train_batch_end

    def dying(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        if self.global_step == 8:
            raise Killed("simulated crash")

    monkeypatch.setattr(PretrainModule, "on_train_batch_end", dying)
    cfg = compose(cut_root, *over)
    with pytest.raises(Killed):
        stage.run(cfg)
    monkeypatch.setattr(PretrainModule, "on_train_batch_end", original)
    assert stage.run(cfg).counts["steps"] == 10
    resumed = read_metrics(cut_root / "elpv_demo" / "pretrain", "train/loss")
    assert sorted(resumed) == sorted(full)
    for step in sorted(full):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), f"step {step}"
    assert len({round(v, 6) for v in full.values()}) > 5


@pytest.mark.gpu
def test_gpu_augment_stage_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    make_output_dir(tmp_path)
    devices: list[str] = []
    original = PretrainModule.training_step

    def spy(self, batch, batch_idx):
        devices.extend(v.device.type for v in batch)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(PretrainModule, "training_step", spy)
    cfg = compose(
        tmp_path,
        "pretrain/augment=gpu",
        "pretrain.trainer.accelerator=auto",
        "pretrain.trainer.devices=1",
        "pretrain.data.num_workers=1",
        "pretrain.trainer.max_steps=3",
        "pretrain.monitor.knn_every_n_epochs=-1",
    )
    m = stage.run(cfg)
    assert m.counts["steps"] == 3 and m.extra["augment_backend"] == "gpu"
    assert devices and set(devices) == {"cuda"}  # bf16-mixed on the GPU, views made there
    assert torch.isfinite(torch.tensor(m.metrics["final_loss"]))
