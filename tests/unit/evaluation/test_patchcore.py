"""The PatchCore-style protocol: the coreset port against the original, the bank, scoring, a planted defect."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from pipeline.config.eval import PatchCoreConfig
from pipeline.evaluation.features import preprocessing
from pipeline.evaluation.patch_features import default_layers, network_patch_features
from pipeline.evaluation.patchcore import (
    approximate_greedy_coreset,
    coreset,
    memory_bank,
    patch_distances,
    patch_protocol,
    patch_row,
)


def _reference_approximate_greedy(features: torch.Tensor, percentage: float, start_points: list[int]) -> np.ndarray:
    """``ApproximateGreedyCoresetSampler._compute_greedy_coreset_indices`` of amazon-science/patchcore-inspection,
    transcribed (its random start points passed in instead of drawn from ``np.random``)."""

    def batchwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        aa = a.unsqueeze(1).bmm(a.unsqueeze(2)).reshape(-1, 1)
        bb = b.unsqueeze(1).bmm(b.unsqueeze(2)).reshape(1, -1)
        return (-2 * a.mm(b.T) + aa + bb).clamp(0, None).sqrt()

    anchor = torch.mean(batchwise(features, features[start_points]), axis=-1).reshape(-1, 1)
    out = []
    for _ in range(int(len(features) * percentage)):
        idx = torch.argmax(anchor).item()
        out.append(idx)
        d = batchwise(features, features[idx : idx + 1])
        anchor = torch.min(torch.cat([anchor, d], dim=-1), dim=1).values.reshape(-1, 1)
    return np.array(out)


def test_approximate_greedy_coreset_matches_the_original() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(150, 16, generator=g), 4 + 0.3 * torch.randn(50, 16, generator=g)])
    starts = np.random.default_rng(0).choice(len(x), 10, replace=False)
    ours = approximate_greedy_coreset(x, 20, starts)
    ref = _reference_approximate_greedy(x, 0.1, starts.tolist())
    np.testing.assert_array_equal(ours, ref)
    assert len(set(ours.tolist())) == 20


def test_coreset_covers_better_than_a_random_subset() -> None:
    rng = np.random.default_rng(0)
    # A dense blob and five outliers far from it and from each other: k-center selection keeps them all.
    x = np.concatenate([rng.normal(size=(500, 32)), 30 * np.eye(32)[:5]]).astype(np.float32)
    opts = PatchCoreConfig(coreset_ratio=0.05, projection_dim=16)
    idx = coreset(x, opts, seed=0)
    assert len(idx) == 25 and len(set(idx.tolist())) == 25
    assert set(range(500, 505)) <= set(idx.tolist())
    np.testing.assert_array_equal(idx, coreset(x, opts, seed=0))  # seeded
    radius = patch_distances(x[idx], x[None, :, None, :]).max()
    random_radius = patch_distances(x[rng.choice(505, 25, replace=False)], x[None, :, None, :]).max()
    assert radius < random_radius
    np.testing.assert_array_equal(coreset(x, PatchCoreConfig(coreset_ratio=1.0), 0), np.arange(505))


def test_memory_bank_caps_patches_per_image() -> None:
    patches = np.random.default_rng(1).normal(size=(6, 4, 4, 8)).astype(np.float16)
    opts = PatchCoreConfig(patches_per_image=5, coreset_ratio=0.5, projection_dim=8)
    bank = memory_bank(patches, opts, seed=0)
    assert bank.shape == (15, 8)  # 6 images x 5 patches, half kept
    flat = patches.reshape(-1, 8).astype(np.float32)
    assert all((flat == row).all(1).any() for row in bank)  # bank rows are real patches


def test_patch_distances_are_nearest_neighbour_distances() -> None:
    rng = np.random.default_rng(2)
    bank = rng.normal(size=(30, 5)).astype(np.float32)
    patches = rng.normal(size=(3, 2, 4, 5)).astype(np.float32)
    d = patch_distances(bank, patches, chunk=2)
    brute = np.sqrt(((patches[..., None, :] - bank) ** 2).sum(-1)).min(-1)
    np.testing.assert_allclose(d, brute, rtol=1e-4, atol=1e-5)


def _images(n_normal: int, n_defect: int, size: int = 64) -> tuple[list[Image.Image], np.ndarray, list[tuple]]:
    """Noisy horizontal stripes; a defect is one small bright square at a random place."""
    rng = np.random.default_rng(0)
    imgs, where = [], []
    for i in range(n_normal + n_defect):
        a = 90 + 40 * (np.arange(size) // 4 % 2)[:, None] + rng.normal(0, 8, (size, size))
        if i >= n_normal:
            r, c = rng.integers(8, size - 16, 2)
            a[r : r + 6, c : c + 6] = 250
            where.append((r + 3, c + 3))
        imgs.append(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), mode="L"))
    return imgs, np.array([0] * n_normal + [1] * n_defect), where


def test_a_planted_local_defect_scores_higher_than_normal_images() -> None:
    imgs, y, where = _images(40, 10)
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=0)
    opts = PatchCoreConfig(img_size=64, layer_dim=64, embed_dim=32, patches_per_image=16, calibration_fraction=0.2)
    feats = network_patch_features(model, imgs, preprocessing(model, 64), opts, default_layers(model))
    # Train: 30 normal images; test: 10 normal and 10 defective ones.
    train = np.arange(30)
    test = np.arange(30, 50)
    m, res = patch_protocol(feats, y, 0, train, test, opts, seed=0)
    assert m["auroc"] >= 0.95
    assert res.scores[res.is_defect].min() > np.median(res.scores[~res.is_defect])
    # The hottest patch sits at the defect (grid cells of 8 px).
    for k, (r, c) in enumerate(where):
        cell = np.unravel_index(np.argmax(res.maps[10 + k]), res.maps.shape[1:])
        assert abs(cell[0] * 8 + 4 - r) <= 12 and abs(cell[1] * 8 + 4 - c) <= 12
    row = patch_row("b", "baseline", "defect", 0, len(train), m)
    assert row["protocol"] == "patchcore" and row["fraction"] == 1.0 and "auroc" in row


def test_patch_protocol_leaves_unlabelled_out_and_needs_normal_images() -> None:
    feats = np.random.default_rng(0).normal(size=(12, 3, 3, 4)).astype(np.float16)
    y = np.array([0, 0, 0, 0, 0, 1, -1, 0, 1, 0, -1, 1])
    opts = PatchCoreConfig(patches_per_image=4, projection_dim=4)
    m, res = patch_protocol(feats, y, 0, np.arange(7), np.arange(7, 12), opts)
    np.testing.assert_array_equal(res.test_idx, [7, 8, 9, 11])
    np.testing.assert_array_equal(res.is_defect, [False, True, False, True])
    assert set(m) == {"accuracy", "balanced_accuracy", "macro_f1", "auroc"}
    with pytest.raises(ValueError, match="normal training images"):
        patch_protocol(feats, y, 1, np.arange(7), np.arange(7, 12), opts)


def test_heat_map_figure_of_the_top_and_the_calmest_normal_images(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.evaluation.heatmaps import pick_images, plot_heatmaps, upsample_map

    scores = np.array([0.1, 0.9, 0.5, 0.2, 0.8])
    is_defect = np.array([False, True, False, False, True])
    assert pick_images(scores, is_defect, top=2, normal=2) == [1, 4, 0, 3]
    up = upsample_map(np.array([[0.0, 0.0], [0.0, 1.0]]), 32)
    assert up.shape == (32, 32) and up[28, 28] > up[4, 4]
    imgs, _, _ = _images(4, 0, size=32)
    png = plot_heatmaps(
        imgs, np.random.default_rng(0).random((4, 4, 4)), scores[:4], is_defect[:4], 0.5, tmp_path / "h.png"
    )
    assert Image.open(png).size[0] > 100
