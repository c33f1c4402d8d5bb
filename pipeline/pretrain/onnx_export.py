"""Write the backbone as ``backbone.onnx`` (pooled features, dynamic batch) and check it with onnxruntime.

The ONNX file is for deployment beside ``model.safetensors`` (which stays the file the pipeline
itself loads). It maps ``images [N, C, S, S]`` (normalised as in ``config.json``) to
``features [N, num_features]``, the same vectors ``timm`` gives with ``num_classes=0``.

Exporter: torch's ``torch.export``-based exporter (``dynamo=True``, the default since torch
2.9, built on onnxscript) first; the TorchScript exporter is deprecated and kept only as the
fall-back for models ``torch.export`` cannot trace. Either way the file is run once with
onnxruntime against the PyTorch model before it counts as exported; a failed export or a
mismatch leaves no ``backbone.onnx`` behind and returns the reason instead of raising, so the
safetensors export never depends on it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

ONNX_FILE = "backbone.onnx"
INPUT_NAME = "images"
OUTPUT_NAME = "features"
OPSET = 18
# Protobuf files stop at 2 GiB; beyond about this many weight bytes they go to a side file
EXTERNAL_DATA_BYTES = 1_500_000_000


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` did; ``error`` is set (and ``file`` is ``None``) when it wrote nothing."""

    file: str | None
    exporter: str | None = None
    opset: int = OPSET
    max_abs_diff: float | None = None
    error: str | None = None
    fallback_reason: str | None = None  # why torch.export was not used, when TorchScript wrote the file

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _detached_copy(model: nn.Module) -> nn.Module:
    """A CPU float32 eval-mode copy: exporting must not move, cast or re-mode the trained model.

    ``module.compile()`` (``trainer.compile``) leaves a compiled call on the module that
    ``torch.export`` cannot trace through; the copy runs the eager forward.
    """
    twin = copy.deepcopy(model).cpu().float().eval()
    for m in twin.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None  # noqa: SLF001 - how nn.Module.compile() marks a module
    return twin


def _export(model: nn.Module, example: torch.Tensor, path: Path, dynamo: bool, external: bool) -> None:
    # Both exporters print progress and warn about their own internals; the outcome is logged by the caller.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        # The two exporters name the batch axis differently; everything else is shared.
        batch_axis: dict[str, Any] = (
            {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},), "external_data": external, "verbose": False}
            if dynamo
            else {"dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}}
        )
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=dynamo,
            **batch_axis,
        )


def onnx_features(path: Path, images: np.ndarray) -> np.ndarray:
    """Run ``backbone.onnx`` on a float32 ``[N, C, S, S]`` batch with onnxruntime (CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.astype(np.float32)})
    return np.asarray(out)


def export_onnx(
    model: nn.Module,
    folder: Path,
    input_size: int,
    in_chans: int = 3,
    atol: float = 1e-3,
    seed: int = 0,
) -> OnnxExport:
    """Write ``folder/backbone.onnx`` for ``model`` (pooled features) and check it against PyTorch.

    The check runs a batch of 3 random images (a size the export did not trace with, so the
    batch axis is shown to be dynamic) through both and compares the features; features are
    compared relative to their scale (``max |onnx - torch| <= atol * max(1, max |torch|)``).
    Returns what was done; on any failure nothing is left in ``folder`` and ``error`` says why.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ONNX_FILE
    twin = _detached_copy(model)
    external = sum(p.numel() * p.element_size() for p in twin.parameters()) > EXTERNAL_DATA_BYTES
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(2, in_chans, input_size, input_size, generator=gen)
    check = torch.randn(3, in_chans, input_size, input_size, generator=gen)
    errors: list[str] = []
    for exporter, dynamo in (("torch.export", True), ("torchscript", False)):
        _remove(path)
        try:
            _export(twin, example, path, dynamo, external)
            with torch.no_grad():
                ref = twin(check).numpy()
            got = onnx_features(path, check.numpy())
        except Exception as e:  # noqa: BLE001 - any exporter failure falls through to the next one
            errors.append(f"{exporter}: {_reason(e)}")
            continue
        if got.shape != ref.shape:
            errors.append(f"{exporter}: onnxruntime gave features of shape {got.shape}, PyTorch {ref.shape}")
            continue
        diff = float(np.abs(got - ref).max())
        if not diff <= atol * max(1.0, float(np.abs(ref).max())):
            errors.append(f"{exporter}: onnxruntime and PyTorch features differ by up to {diff:.3g}")
            continue
        return OnnxExport(
            file=ONNX_FILE, exporter=exporter, max_abs_diff=diff, fallback_reason="; ".join(errors) or None
        )
    _remove(path)
    return OnnxExport(file=None, error="; ".join(errors))


def _reason(e: BaseException) -> str:
    """One line naming the failure: torch.onnx wraps the real error (its own message is generic)."""
    while e.__cause__ is not None:
        e = e.__cause__
    lines = [ln.strip() for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    Path(str(path) + ".data").unlink(missing_ok=True)  # the external-data side file, if any
