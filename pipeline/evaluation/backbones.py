"""The backbones under test: config entries resolved to buildable, fingerprinted specs.

An entry names a timm architecture and where its weights come from (see
:mod:`pipeline.models.backbone`), plus two evaluation-only cases:

* ``arch: raw_pixels``: downsampled pixels as features, the sanity floor;
* ``weights: <a stage folder with manifest.json>``: the export that folder's
  manifest names in ``artifacts.export`` (the pretrain stage's), so evaluation
  follows the pretrain stage without knowing its layout.

A ``domain`` entry whose weights do not exist yet is skipped with a warning
(the pretrain stage has not run); every other missing weight is an error.
``arch_from`` copies another entry's architecture (random init "of the same
architecture" as the domain backbone), falling back to the entry's own ``arch``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.config.eval import BackboneEntryConfig
from pipeline.config.models import BackboneConfig
from pipeline.models.backbone import NAMED_WEIGHTS, create_backbone, export_dir, read_export, weights_revision

log = logging.getLogger(__name__)

RAW_PIXELS = "raw_pixels"


@dataclass(frozen=True)
class EvalBackbone:
    """A resolved backbone: what to build and a fingerprint of its weights for caching."""

    name: str
    role: str
    arch: str
    spec: BackboneConfig | None
    img_size: int | None
    finetune: bool
    fingerprint: str
    source: str = ""
    data_cfg: tuple[tuple[str, Any], ...] = ()

    def preprocessing_overrides(self) -> dict[str, Any]:
        """Normalisation an export declares in its ``pretrained_cfg`` (mean, std, interpolation, input size)."""
        return dict(self.data_cfg)

    @property
    def is_pixels(self) -> bool:
        return self.spec is None

    def build(self, seed: int = 0) -> nn.Module:
        """The timm model with pooled-feature output (``num_classes=0``); random init is seeded."""
        if self.spec is None:
            raise ValueError(f"backbone {self.name} is raw pixels, not a network")
        torch.manual_seed(seed)
        return create_backbone(self.spec)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _export_dir(weights: str) -> Path | None:
    """The export folder ``weights`` points at (directly or via a stage manifest), or ``None``."""
    direct = export_dir(weights)
    if direct is not None:
        return direct
    p = Path(weights)
    man = p / "manifest.json"
    if man.is_file():
        rel = json.loads(man.read_text()).get("artifacts", {}).get("export")
        if rel and (p / rel / "config.json").is_file():
            return p / rel
    return None


def resolve_backbones(entries: list[BackboneEntryConfig], seed: int) -> tuple[list[EvalBackbone], list[str]]:
    """Resolve entries in order; returns ``(backbones, notes on skipped entries)``.

    Raises:
        ValueError: naming the entry, for a bad name, arch or missing baseline weights.
    """
    names = [e.name for e in entries]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"eval.backbones: duplicate names {sorted(dupes)}")
    resolved: dict[str, EvalBackbone] = {}
    arch_of: dict[str, tuple[str, dict[str, Any]]] = {}  # entry -> (timm name, model kwargs)
    data_of: dict[str, dict[str, Any]] = {}  # entry -> export normalisation
    notes: list[str] = []
    for e in entries:
        if e.role not in ("domain", "baseline"):
            raise ValueError(f"eval.backbones[{e.name}]: role must be domain or baseline, got {e.role!r}")
        if e.arch == RAW_PIXELS:
            size = e.img_size or 32
            resolved[e.name] = EvalBackbone(e.name, e.role, RAW_PIXELS, None, size, False, f"pixels:{size}", "pixels")
            continue
        arch, kwargs, weights, source = e.arch, {}, e.weights, "random init"
        data_cfg: dict[str, Any] = {}
        fingerprint = f"random:{seed}"
        if e.arch_from is not None and e.arch_from in arch_of:
            arch, kwargs = arch_of[e.arch_from][0], dict(arch_of[e.arch_from][1])
            data_cfg = dict(data_of[e.arch_from])  # same input pipeline as the backbone it mirrors
        if weights in NAMED_WEIGHTS:
            fingerprint, source = weights_revision(weights), weights
        elif weights is not None:
            export = _export_dir(weights)
            if export is not None:
                cfg = read_export(export)
                arch = cfg["architecture"]
                kwargs = {**cfg.get("model_kwargs", {})}
                # The export's own normalisation (a grayscale preset, say), which timm's
                # default config for the architecture would not know.
                pc = cfg.get("pretrained_cfg", {})
                data_cfg = {
                    k: tuple(pc[k]) if isinstance(pc[k], list) else pc[k]
                    for k in ("mean", "std", "interpolation", "input_size")
                    if k in pc
                }
                wfile = export / cfg.get("weights", "model.safetensors")
                fingerprint, source, weights = f"export:{_sha256(wfile)}", str(export), str(export)
            elif Path(weights).is_file():
                fingerprint, source = f"file:{_sha256(Path(weights))}", weights
            elif e.role == "domain":
                notes.append(
                    f"{e.name}: no backbone export at {weights} (the pretrain stage has not run, or wrote no "
                    "export); evaluating the other backbones only"
                )
                log.warning("eval: %s", notes[-1])
                continue
            else:
                raise ValueError(f"eval.backbones[{e.name}]: weights {weights} is neither a file nor an export folder")
        if not arch:
            raise ValueError(f"eval.backbones[{e.name}]: no arch (set arch, or arch_from an available entry)")
        spec = BackboneConfig(
            arch,
            weights=weights,
            img_size=e.img_size if weights is None or weights in NAMED_WEIGHTS else None,
            kwargs=dict(sorted(kwargs.items())) if weights is None else {},
        )
        arch_of[e.name], data_of[e.name] = (arch, kwargs), data_cfg
        resolved[e.name] = EvalBackbone(
            e.name, e.role, arch, spec, e.img_size, e.finetune, fingerprint, source, tuple(sorted(data_cfg.items()))
        )
    return list(resolved.values()), notes
