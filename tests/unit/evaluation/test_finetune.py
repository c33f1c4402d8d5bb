"""Few-label fine-tuning: uint8 image tensors, the step budget, and learning a trivial task."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config.eval import BackboneEntryConfig, FinetuneConfig
from pipeline.evaluation.backbones import resolve_backbones
from pipeline.evaluation.finetune import (
    default_optimizer,
    finetune_and_predict,
    images_to_uint8,
    inverse_frequency_weights,
)
from tests.bad_inputs import noise

OPTS = FinetuneConfig(img_size=32, min_steps=8, batch_size=8, accelerator="cpu")
TINY_VIT = resolve_backbones([BackboneEntryConfig("tiny", arch="test_vit", img_size=32)], seed=0)[0][0]


def _bright_or_dark(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` noisy 24 px gray images at 32 px, alternately dark (class 0) and bright (class 1)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    ims = [Image.fromarray(np.clip(rng.normal(60 + 130 * c, 20, (24, 24)), 0, 255).astype(np.uint8)) for c in y]
    return images_to_uint8(ims, 32), y


def test_images_to_uint8_resizes_to_rgb_uint8_nchw() -> None:
    ims = [Image.fromarray(noise(10, 20, channels=1, seed=0)[..., 0]), Image.fromarray(noise(30, 7, seed=1))]
    x = images_to_uint8(ims, 16)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.uint8 and x.is_contiguous()
    gray = x[0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # L mode repeated over RGB
    expected = np.asarray(ims[1].resize((16, 16), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(x[1].permute(1, 2, 0).numpy(), expected)


def test_images_to_uint8_uses_the_backbones_interpolation() -> None:
    im = Image.fromarray(noise(30, 7, seed=1))
    bilinear = images_to_uint8([im], 16, "bilinear")[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(bilinear, np.asarray(im.resize((16, 16), Image.Resampling.BILINEAR)))
    assert not np.array_equal(bilinear, images_to_uint8([im], 16, "bicubic")[0].permute(1, 2, 0).numpy())


def test_steps_grow_with_the_subset_within_the_bounds() -> None:
    opts = FinetuneConfig(epochs=2, min_steps=10, batch_size=32)
    assert opts.steps_for(5) == 10  # min_steps for a tiny subset
    assert opts.steps_for(320) == 20  # 2 epochs of 10 full batches
    assert FinetuneConfig(epochs=2, min_steps=10, batch_size=32, max_steps=15).steps_for(320) == 15


def test_a_tiny_vit_learns_bright_vs_dark_either_way_round() -> None:
    x_train, y_train = _bright_or_dark(8, seed=0)
    x_test, y_test = _bright_or_dark(12, seed=1)
    pred, proba = finetune_and_predict(TINY_VIT, x_train, y_train, x_test, 2, OPTS, seed=0)
    assert pred.shape == (12,) and proba.shape == (12, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(pred, proba.argmax(1))
    # Swapped labels must be learned too: an untrained head cannot get both right.
    swapped, _ = finetune_and_predict(TINY_VIT, x_train, 1 - y_train, x_test, 2, OPTS, seed=0)
    assert (pred == y_test).mean() >= 0.9 and (swapped == 1 - y_test).mean() >= 0.9
    # The seed fixes init, batch order and flips: a rerun gives the same probabilities.
    _, again = finetune_and_predict(TINY_VIT, x_train, y_train, x_test, 2, OPTS, seed=0)
    np.testing.assert_allclose(again, proba, atol=1e-6)


def test_the_optimizer_runs_the_step_budget_with_the_backbone_at_a_scaled_learning_rate() -> None:
    x, y = _bright_or_dark(8, seed=0)
    seen: list[tuple[float, float, tuple[int, ...]]] = []

    def recording(params: Iterable) -> torch.optim.Optimizer:
        opt = default_optimizer(params)
        opt.register_step_post_hook(
            lambda o, *_: seen.append(
                (o.param_groups[0]["lr"], o.param_groups[1]["lr"], o.param_groups[0]["params"][0].shape)
            )
        )
        return opt

    finetune_and_predict(TINY_VIT, x, y, x[:2], 2, OPTS, seed=0, optimizer=recording)
    assert len(seen) == OPTS.steps_for(8) == 8
    assert all(shape == (2, 64) for *_, shape in seen)  # group 0 is the fresh linear head
    assert all(bb == pytest.approx(head * OPTS.backbone_lr_scale) for head, bb, _ in seen)
    head_lrs = [head for head, *_ in seen]
    assert head_lrs[0] == pytest.approx(1e-3) and head_lrs == sorted(head_lrs, reverse=True)  # cosine decay


def test_inverse_frequency_weights_match_sklearn_balanced() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0, 0, 0, 1, 2, 2])
    want = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(inverse_frequency_weights(y, 3).numpy(), want, rtol=1e-6)
    assert inverse_frequency_weights(np.array([0, 0, 1]), 3).tolist()[2] == 0.0  # absent class


def test_class_weighting_lifts_the_minority_class() -> None:
    """Seven dark images to one bright one: weighted, the bright class gets more probability than unweighted."""
    x, y = _bright_or_dark(16, seed=0)
    keep = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:1]]
    x_test, y_test = _bright_or_dark(12, seed=1)
    opts = dataclasses.replace(OPTS, min_steps=4)
    _, plain = finetune_and_predict(TINY_VIT, x[keep], y[keep], x_test, 2, opts, seed=0)
    _, weighted = finetune_and_predict(
        TINY_VIT, x[keep], y[keep], x_test, 2, dataclasses.replace(opts, class_weighted=True), seed=0
    )
    bright = y_test == 1
    assert weighted[bright, 1].mean() > plain[bright, 1].mean()
