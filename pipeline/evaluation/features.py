"""Frozen features: extracted once per backbone and cached on disk.

Features as the field computes them: a CNN's last feature map global-average pooled
(or GeM-pooled, ``pooling="gem"``); a ViT's class token concatenated with the mean of
its patch tokens (DINOv2's linear evaluation), both after the final norm.

The cache file is keyed by a hash of the backbone (architecture, weights
fingerprint, input size), the pooling and the evaluation data manifest, so a new
export or new evaluation data never reuses stale features, and a re-run extracts nothing.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pipeline.core.manifest import atomic_write_bytes, config_hash
from pipeline.evaluation.backbones import EvalBackbone
from pipeline.models.backbone import data_config

log = logging.getLogger(__name__)

_INTERP = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def resample_filter(interpolation: str) -> Image.Resampling:
    """PIL's filter for timm's ``interpolation`` name (bicubic for names PIL has no match for)."""
    return _INTERP.get(interpolation, Image.Resampling.BICUBIC)


def to_tensor_batch(
    images: Sequence[Image.Image],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """Resize whole images to ``size`` x ``size`` (no crop: a defect can sit at the border) and normalise."""
    resample = resample_filter(interpolation)
    arr = np.stack([np.asarray(im.convert("RGB").resize((size, size), resample), dtype=np.float32) for im in images])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def built_input_size(model: torch.nn.Module) -> tuple[int | None, bool]:
    """``(size the model was built for, whether it accepts only that size)``; ``(None, False)`` for CNNs.

    timm's data config keeps the pretrained default (224) even for a ViT built with
    ``img_size=96``, so the patch embedding is the authority.
    """
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None)
    if size is None:
        return None, False
    fixed = not (
        getattr(model, "dynamic_img_size", False)
        or getattr(pe, "dynamic_img_size", False)
        or getattr(pe, "strict_img_size", True) is False
    )
    return int(size[0] if isinstance(size, (tuple, list)) else size), fixed


def preprocessing(model: torch.nn.Module, img_size: int | None, overrides: dict | None = None) -> dict:
    """Input size, mean, std and interpolation from timm's data config, updated with ``overrides``
    (an export's ``pretrained_cfg``).

    Size: a model fixed to one input size gets it; else ``img_size`` when given; else the
    size a ViT was built for; else the (export's or timm's) default input size.
    """
    dc = {**data_config(model), **(overrides or {})}
    built, fixed = built_input_size(model)
    size = built if fixed and built is not None else (img_size or built or dc["input_size"][-1])
    return {
        "size": int(size),
        "mean": [float(v) for v in dc["mean"]],
        "std": [float(v) for v in dc["std"]],
        "interpolation": str(dc.get("interpolation", "bicubic")),
    }


POOLINGS = ("avg", "gem")
# Bumped when the feature definition changes, so caches written before are not reused.
FEATURE_VERSION = 3


def pool(model: torch.nn.Module, x: torch.Tensor, pooling: str = "avg", gem_p: float = 3.0) -> torch.Tensor:
    """Pooled features ``(n, d)`` of a timm model for the input batch ``x`` (see :func:`pool_output`).
    Anything without ``forward_features`` goes through the model itself."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; choose one of {POOLINGS}")
    forward_features = getattr(model, "forward_features", None)
    if forward_features is None:
        return model(x)
    return pool_output(model, forward_features(x), x, pooling, gem_p)


def pool_output(
    model: torch.nn.Module, f: torch.Tensor, x: torch.Tensor, pooling: str = "avg", gem_p: float = 3.0
) -> torch.Tensor:
    """Pooled features ``(n, d)`` from ``f``, the output of the model's ``forward_features`` for input ``x``.

    ViT-like outputs ``(n, tokens, d)`` with a class token give ``[cls, mean(patch tokens)]``
    (``2d``); CNN feature maps ``(n, c, h, w)`` are averaged (``avg``) or GeM-pooled,
    ``mean(x^p)^(1/p)`` over positions (``gem``, after clamping to positive values).
    Anything else goes through the model's own head (``num_classes=0``).
    """
    if f.ndim == 3 and getattr(model, "cls_token", None) is not None:
        npt = int(getattr(model, "num_prefix_tokens", 1))
        return torch.cat([f[:, 0], f[:, npt:].mean(1)], dim=1)
    if f.ndim == 4:
        if pooling == "gem":
            return f.clamp(min=1e-6).pow(gem_p).mean((2, 3)).pow(1.0 / gem_p)
        return f.mean((2, 3))
    head = getattr(model, "forward_head", None)
    return head(f, pre_logits=True) if callable(head) else model(x)


def cpu_layout(model: torch.nn.Module) -> torch.nn.Module:
    """A CNN in channels_last memory format (oneDNN's preferred layout: about 1.9x faster
    EfficientNet-Lite0 inference on 2 CPU cores, identical outputs); ViTs are left as they are."""
    if getattr(model, "patch_embed", None) is None and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        return model.to(memory_format=torch.channels_last)
    return model


def as_layout(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory format the model's weights use (see :func:`cpu_layout`)."""
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is not None and conv.weight.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def network_features(
    model: torch.nn.Module,
    images: Sequence[Image.Image],
    prep: dict,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "features",
    pooling: str = "avg",
) -> np.ndarray:
    """Pooled features ``(n, d)`` of ``model`` (built with ``num_classes=0``) in eval mode (see :func:`pool`)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; choose one of {POOLINGS}")
    model = cpu_layout(model.eval())
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, unit="batch"):
        x = to_tensor_batch(
            images[start : start + batch_size], prep["size"], prep["mean"], prep["std"], prep["interpolation"]
        )
        out.append(pool(model, as_layout(model, x), pooling).float().reshape(len(x), -1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def pixel_features(images: Sequence[Image.Image], size: int) -> np.ndarray:
    """Raw-pixel baseline: each image downsampled to ``size`` x ``size``, flattened, in [0, 1].

    One channel when every image is gray, RGB otherwise: three equal channels change no cosine,
    triple the linear probe's cost and weaken its L2 penalty about threefold.
    """
    rgb = np.stack(
        [np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BOX), dtype=np.float32) for im in images]
    )
    gray = bool((rgb[..., :1] == rgb[..., 1:]).all())
    return (rgb[..., 0] if gray else rgb).reshape(len(images), -1) / 255.0


def feature_key(backbone: EvalBackbone, data_hash: str, seed: int, pooling: str = "avg") -> str:
    """Cache key: everything that changes the features, and nothing else (pixels have no pooling)."""
    return config_hash(
        {
            "version": FEATURE_VERSION,
            **({} if backbone.is_pixels else {"pooling": pooling}),
            "arch": backbone.arch,
            "spec": repr(backbone.spec),
            "fingerprint": backbone.fingerprint,
            "img_size": backbone.img_size,
            **({"data_cfg": repr(backbone.data_cfg)} if backbone.data_cfg else {}),
        },
        data_hash,
        seed if backbone.fingerprint.startswith("random") else None,
    )


def cached(cache_dir: Path, name: str, key: str, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """Load ``<cache_dir>/<name>-<key>.npy`` or compute and write it; returns ``(features, hit)``."""
    path = Path(cache_dir) / f"{name}-{key}.npy"
    if path.is_file():
        return np.load(path), True
    feats = np.ascontiguousarray(compute(), dtype=np.float32)
    write_npy(path, feats)
    return feats, False


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` atomically: a killed run leaves no half-written cache file."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array))
    atomic_write_bytes(path, buf.getvalue())


def extract(
    backbone: EvalBackbone,
    images: Sequence[Image.Image],
    cache_dir: Path,
    data_hash: str,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    pooling: str = "avg",
) -> np.ndarray:
    """Features of ``images`` for ``backbone``, from the cache when present."""
    key = feature_key(backbone, data_hash, seed, pooling)

    def compute() -> np.ndarray:
        if backbone.is_pixels:
            assert backbone.img_size is not None
            return pixel_features(images, backbone.img_size)
        model = backbone.build(seed)
        prep = preprocessing(model, backbone.img_size, backbone.preprocessing_overrides())
        log.info("features %s: %s at %dpx (%s)", backbone.name, backbone.arch, prep["size"], backbone.source)
        return network_features(
            model, images, prep, batch_size, progress, desc=f"features {backbone.name}", pooling=pooling
        )

    feats, hit = cached(cache_dir, backbone.name, key, compute)
    log.info("features %s: %s %s", backbone.name, "cache hit" if hit else "extracted", feats.shape)
    return feats
