"""ELPV module groups: synthetic modules are recovered exactly, and the real package splits into its 44 modules."""

from __future__ import annotations

import numpy as np
import pytest

from data_recipes.elpv_demo.groups import (
    ELPV_MODULE_STARTS,
    boundary_contrast,
    correlation,
    groups_from_starts,
    module_groups,
)


def _modules(sizes: list[int], seed: int = 0, noise: float = 0.6) -> np.ndarray:
    """Cells as rows: each module its own random pattern, each cell that pattern plus noise."""
    rng = np.random.default_rng(seed)
    rows = [rng.normal(size=(1, 256)) + noise * rng.normal(size=(s, 256)) for s in sizes]
    return np.concatenate(rows).astype(np.float32)


def _expected(sizes: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def test_correlation_is_pearson() -> None:
    x = np.random.default_rng(1).normal(size=(5, 30))
    np.testing.assert_allclose(correlation(x), np.corrcoef(x), atol=1e-12)


def test_boundary_contrast_peaks_at_the_boundary() -> None:
    sim = np.full((20, 20), 0.2)
    sim[:8, :8] = sim[8:, 8:] = 0.9
    np.fill_diagonal(sim, 1.0)
    c = boundary_contrast(sim, window=4)
    assert np.isnan(c[0]) and np.isnan(c[1]) and np.isnan(c[20])
    assert c[8] == pytest.approx(0.9 - 0.2)
    assert c[4] == pytest.approx(0.0) and np.nanargmax(c) == 8


def test_short_and_long_modules_are_found_without_types() -> None:
    # A grid of 60 would cut the 54-cell module and shift every boundary after it.
    sizes = [60, 54, 60, 60, 72, 48]
    g = module_groups(_modules(sizes), types=None, module_size=60, tolerance=12, window=10)
    np.testing.assert_array_equal(g, _expected(sizes))
    assert g.dtype == np.int64


def test_type_changes_are_always_boundaries() -> None:
    # Identical patterns on both sides: only the type change can tell them apart.
    x = np.tile(_modules([1]), (100, 1))
    types = ["mono"] * 40 + ["poly"] * 60
    np.testing.assert_array_equal(module_groups(x, types), _expected([40, 60]))


def test_a_run_shorter_than_a_module_is_one_group() -> None:
    assert module_groups(_modules([7]), ["mono"] * 7).tolist() == [0] * 7
    assert module_groups(np.zeros((0, 4), np.float32)).shape == (0,)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="types"):
        module_groups(_modules([5]), ["mono"] * 4)
    with pytest.raises(ValueError, match="tolerance"):
        module_groups(_modules([5]), tolerance=60)


def test_groups_from_starts() -> None:
    assert groups_from_starts(5, [2, 4]).tolist() == [0, 0, 1, 1, 2]
    with pytest.raises(ValueError, match="outside"):
        groups_from_starts(5, [5])


def test_the_stored_elpv_modules_cover_the_package() -> None:
    g = groups_from_starts(2624, ELPV_MODULE_STARTS)
    assert g.max() + 1 == 44 and np.bincount(g).min() >= 48 and np.bincount(g).max() <= 72


def test_the_twin_module_is_the_same_cells_imaged_again_and_shares_a_group() -> None:
    from data_recipes.elpv_demo.groups import ELPV_TWIN_MODULES, cell_pixels, elpv_groups
    from data_recipes.elpv_demo.prepare import elpv_records

    recs = elpv_records()
    ((twin, original),) = ELPV_TWIN_MODULES.items()

    def corr(offset: int) -> np.ndarray:
        a = cell_pixels([recs[i]["path"] for i in range(original, original + 50)])
        b = cell_pixels([recs[i + offset]["path"] for i in range(original, original + 50)])
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    offset = twin - original
    assert np.median(corr(offset)) > 0.9 and (corr(offset) > 0.9).sum() >= 45
    assert np.median(corr(offset + 1)) < 0.75 and np.median(corr(1)) < 0.75  # not any two cells of a module
    g = elpv_groups(groups_from_starts(len(recs), ELPV_MODULE_STARTS))
    assert g[twin] == g[original] and len(set(g.tolist())) == 43
    first = groups_from_starts(2000, [s for s in ELPV_MODULE_STARTS if s < 2000])
    assert (elpv_groups(first) == first).all()  # without the twin, modules and groups are one


@pytest.mark.slow
def test_the_elpv_package_splits_into_its_44_modules() -> None:
    """Deitsch et al. describe 44 modules (18 mono, 26 poly); the grid snaps to every type change unaided."""
    from data_recipes.elpv_demo.groups import cell_pixels
    from data_recipes.elpv_demo.prepare import elpv_records

    recs = elpv_records()
    x = cell_pixels([r["path"] for r in recs])
    types = [r["type"] for r in recs]
    g = module_groups(x, types)
    assert g.max() + 1 == 44
    mono = {int(i) for i, t in zip(g, types) if t == "mono"}
    assert len(mono) == 18
    type_changes = {i for i in range(1, len(types)) if types[i] != types[i - 1]}
    blind = module_groups(x, None)
    assert type_changes <= set((np.flatnonzero(np.diff(blind)) + 1).tolist())
    sizes = np.bincount(g)
    # 2,624 = 40 x 60 + 54 + 50 + 72 + 48: the odd modules sit where the type runs are not multiples of 60.
    assert sorted(sizes[sizes != 60].tolist()) == [48, 50, 54, 72]
    assert tuple((np.flatnonzero(np.diff(g)) + 1).tolist()) == ELPV_MODULE_STARTS
