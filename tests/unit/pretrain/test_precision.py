"""CPU bf16 autocast: ``precision=bf16-mixed`` trains, and checkpoints and the export stay fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf

from pipeline.config.pretrain import MethodConfig
from pipeline.models.backbone import load_state_dict
from pipeline.stages import pretrain as stage
from tests.unit.pretrain_tiny import compose, make_output_dir


def test_precision_auto_is_fp32_on_cpu_and_explicit_values_pass_through() -> None:
    t = OmegaConf.create({"precision": "auto"})
    assert stage._precision(t, gpu=False) == "32-true"
    assert stage._precision(t, gpu=True) == "bf16-mixed"
    assert stage._precision(OmegaConf.create({"precision": "bf16-mixed"}), gpu=False) == "bf16-mixed"


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_bf16_mixed_on_cpu_trains_and_saves_fp32(tmp_path: Path, param_dtype: str) -> None:
    out = make_output_dir(tmp_path, n_pool=16)
    cfg = compose(
        tmp_path,
        "pretrain.trainer.precision=bf16-mixed",
        "pretrain.trainer.max_steps=2",
        "pretrain.monitor.knn_every_n_epochs=-1",
        f"pretrain.method.param_dtype={param_dtype}",
    )
    m = stage.run(cfg)
    assert m.counts["steps"] == 2 and torch.isfinite(torch.tensor(m.metrics["final_loss"]))
    weights = load_state_dict(out / "pretrain" / "export" / "model.safetensors")
    assert weights and all(v.dtype == torch.float32 for v in weights.values())
    ckpt = torch.load(out / "pretrain" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    floats = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)


def test_bf16_weights_are_for_distillation_only() -> None:
    m = MethodConfig(kind="simclr", param_dtype="bfloat16")
    with pytest.raises(ValueError, match=r"pretrain\.method\.param_dtype='bfloat16' applies to self_distillation only"):
        stage.build_method(m, torch.nn.Identity())


def test_param_dtype_reaches_the_method(tmp_path: Path) -> None:
    cfg = compose(tmp_path, "pretrain.method.param_dtype=bfloat16")
    vit = timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, depth=1, num_classes=0, dynamic_img_size=True
    )
    method = stage.build_method(OmegaConf.to_object(cfg.pretrain.method), vit)
    assert method.spec.param_dtype == "bfloat16" and method._dtype is torch.bfloat16
