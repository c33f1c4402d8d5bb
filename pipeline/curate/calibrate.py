"""Label-free copy thresholds, per domain: synthetic copies of the pool against its nearest non-copies.

A fixed cosine threshold does not transfer between domains (a 5 % crop of a
64 px tile scores lower than one of a 300 px cell; smooth tiles score higher
against each other than textured ones). So each run calibrates on its own pool:

1. a seeded sample of pool images is copied once per kind of the copy suite
   (:mod:`pipeline.curate.copy_suite`: JPEG, crop, rescale, brightness,
   contrast, blur, mirror);
2. each copy is scored against its original three times: as the kNN graph
   scores it (best descriptor row pair), aligned (:mod:`copy_align`, the best
   box of a dense grid) and refined (:func:`copy_match.pair_scores`);
3. each sampled image is scored, refined, against its second-nearest other
   image in the searched index: the non-copy side (the nearest is skipped, as
   it may be a real copy; the second is as hard a distinct image as the pool has);
4. the threshold keeps ``recall`` of the refined scores of every kind (the kind
   hardest to detect sets it), minus ``margin``, and rises where needed until at
   most ``max_false`` of the non-copy scores reach it; the candidate threshold
   for the kNN graph keeps ``(1 + recall) / 2`` of the kNN scores and the aligned
   threshold the same share of the aligned scores, so that few copies are lost
   before refinement.

The estimated false-match rate is the share of non-copy scores at or above the
threshold; the synthetic recall, per kind, is the share of copies that pass
all three thresholds. No labels are used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pipeline.config.curate import CopySuiteConfig, EmbedConfig
from pipeline.curate.copy_align import align_pairs, centre, work_array
from pipeline.curate.copy_match import fine_thumb, item_rows, pair_similarity, refine_match, saturated_scores
from pipeline.curate.copy_suite import check_kinds, make_copy


@dataclass(frozen=True)
class CopyCalibration:
    """Thresholds and the scores they came from.

    Attributes:
        candidate: kNN-graph threshold (pairs at or above it are aligned).
        threshold: Refined similarity at or above which a pair is a copy.
        recall: The target share of synthetic copies of each kind.
        aligned: Aligned-score threshold (pairs at or above it are refined).
        knn: Kind -> kNN scores of the synthetic copies against their originals.
        align: Kind -> aligned scores of the same copies.
        refined: Kind -> refined scores of the same copies.
        noncopy: Refined scores of the sampled images against their nearest other image.
        fine_mean: The sample's mean fine thumbnail the refined scores subtract (None: no fine stage).
    """

    candidate: float
    threshold: float
    recall: float
    aligned: float = -1.0
    knn: dict[str, np.ndarray] = field(default_factory=dict)
    align: dict[str, np.ndarray] = field(default_factory=dict)
    refined: dict[str, np.ndarray] = field(default_factory=dict)
    noncopy: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    fine_mean: np.ndarray | None = None

    def synthetic_recall(self) -> dict[str, float]:
        """Share of each kind's synthetic copies passing all three thresholds."""
        out = {}
        for k in self.knn:
            ok = (self.knn[k] >= self.candidate) & (self.refined[k] >= self.threshold)
            if k in self.align:
                ok &= self.align[k] >= self.aligned
            out[k] = float(np.mean(ok))
        return out

    def false_match_rate(self) -> float:
        """Share of sampled images whose nearest non-copy reaches the threshold (NaN without any)."""
        return float(np.mean(self.noncopy >= self.threshold)) if self.noncopy.size else float("nan")

    def summary(self) -> dict[str, float]:
        """Flat numbers for manifests and the report."""
        out = {
            "candidate_threshold": round(self.candidate, 5),
            "aligned_threshold": round(self.aligned, 5),
            "threshold": round(self.threshold, 5),
            "target_recall": self.recall,
            "images": float(len(self.noncopy)),
            "estimated_false_match_rate": round(self.false_match_rate(), 5),
        }
        out.update({f"synthetic_recall.{k}": round(v, 4) for k, v in self.synthetic_recall().items()})
        return out


def knn_score(a: np.ndarray, b: np.ndarray, all_rows: bool) -> float:
    """The kNN graph's score of two items' centred rows.

    ``all_rows=False`` (dedup): each whole-image row against the other's rows, the better of the
    two directions. ``all_rows=True`` (decontamination): every row pair.
    """
    if all_rows:
        return float((a @ b.T).max())
    return float(max((a[0] @ b.T).max(), (b[0] @ a.T).max()))


def best_per_item(a: np.ndarray, b: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """Mask of the pairs ``(a, b)`` among the ``k`` best-scoring pairs of ``a`` or of ``b`` (ties: input order)."""
    keep = np.zeros(a.size, bool)
    seen: dict[tuple[int, int], int] = {}
    for e in np.argsort(-np.asarray(score), kind="stable").tolist():
        for side, node in ((0, int(a[e])), (1, int(b[e]))):
            n = seen.get((side, node), 0)
            if n < k:
                keep[e] = True
            seen[(side, node)] = n + 1
    return keep


def choose(
    knn: dict[str, np.ndarray],
    refined: dict[str, np.ndarray],
    noncopy: np.ndarray,
    recall: float,
    margin: float,
    max_false: float = 1.0,
    align: dict[str, np.ndarray] | None = None,
) -> CopyCalibration:
    """Thresholds keeping ``recall`` of every kind (kNN and aligned: ``(1 + recall) / 2``), minus ``margin``.

    The copy threshold then rises, where needed, until at most ``max_false`` of the ``noncopy``
    scores reach it (a domain whose copies of some kind score like its distinct images cannot have
    both; the synthetic recall per kind reports what the ceiling costs).
    """
    if not knn or any(v.size == 0 for v in knn.values()):
        raise ValueError("calibration needs synthetic copies of every kind")
    thr = min(float(np.quantile(v, 1 - recall, method="lower")) for v in refined.values()) - margin
    if noncopy.size and max_false < 1.0:
        thr = max(thr, float(np.quantile(noncopy, 1 - max_false, method="higher")) + 1e-6)

    def loose(scores: dict[str, np.ndarray]) -> float:
        return min(float(np.quantile(v, (1 - recall) / 2, method="lower")) for v in scores.values()) - margin

    aligned = min(loose(align), thr) if align else -1.0
    return CopyCalibration(min(loose(knn), thr), thr, recall, aligned, knn, align or {}, refined, noncopy)


def copy_scores(
    images: Sequence[Image.Image],
    opts: EmbedConfig,
    suite: CopySuiteConfig,
    mean: np.ndarray,
    seed: int = 0,
    fine_mean: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Scores of one synthetic copy of each kind of every image against it (``fine_mean``: see
    :func:`copy_match.pair_similarity`).

    Returns ``knn_<kind>`` (dedup's kNN score), ``knn_all_<kind>`` (decontamination's: every row pair),
    ``aligned_<kind>`` and ``refined_<kind>``, one value per image each.
    """
    check_kinds(list(suite.kinds))
    rng = np.random.default_rng(seed)
    parts = ("knn", "knn_all", "aligned", "refined")
    out: dict[str, list[float]] = {f"{p}_{k}": [] for k in suite.kinds for p in parts}
    for img in images:
        img = img.convert("L")
        co = centre(item_rows(img, opts), mean)
        copies = [make_copy(img, kind, rng, suite).convert("L") for kind in suite.kinds]
        # one alignment call per image: the original's box grid is shared by its copies of one shape
        group = [img, *copies]
        arrays = [work_array(im, opts.copy_grid) for im in group]
        matches = align_pairs([(i, 0) for i in range(1, len(group))], arrays, [im.size for im in group], opts, mean)
        for kind, cp, m in zip(suite.kinds, copies, matches):
            cc = centre(item_rows(cp, opts), mean)
            out[f"knn_{kind}"].append(knn_score(cc, co, False))
            out[f"knn_all_{kind}"].append(knn_score(cc, co, True))
            aligned, refined = m.score, refine_match(cp, img, m, opts, mean, fine_mean)
            sat = saturated_scores(cp, img, opts, mean, fine_mean)
            if sat is not None:  # a clipped copy: the better of both, as the steps score it
                aligned, refined = max(aligned, sat[0]), max(refined, sat[1])
            out[f"aligned_{kind}"].append(aligned)
            out[f"refined_{kind}"].append(refined)
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def calibrate(
    scores: dict[str, np.ndarray],
    kinds: Sequence[str],
    noncopy: np.ndarray,
    recall: float,
    margin: float,
    all_rows: bool = False,
    max_false: float = 1.0,
) -> CopyCalibration:
    """Thresholds from :func:`copy_scores` and :func:`noncopy_scores` (decontamination: ``all_rows``)."""
    knn = {k: scores[f"knn_all_{k}" if all_rows else f"knn_{k}"] for k in kinds}
    refined = {k: scores[f"refined_{k}"] for k in kinds}
    align = {k: scores[f"aligned_{k}"] for k in kinds}
    return choose(knn, refined, noncopy, recall, margin, max_false, align)


def noncopy_scores(
    images: Sequence[Image.Image],
    neighbours: Sequence[Image.Image],
    opts: EmbedConfig,
    mean: np.ndarray,
    fine_mean: np.ndarray | None = None,
) -> np.ndarray:
    """Refined scores of ``images`` (a pool sample) against ``neighbours`` (each one's nearest other image)."""
    return np.array(
        [pair_similarity(a, b, opts, mean, fine_mean=fine_mean) for a, b in zip(images, neighbours)], np.float32
    )


def fine_mean_of(images: Sequence[Image.Image], opts: EmbedConfig) -> np.ndarray | None:
    """The domain's mean fine thumbnail over ``images`` (a pool sample), or None without a fine stage."""
    if opts.copy_refine_grid <= opts.copy_grid or not images:
        return None
    return np.mean([fine_thumb(im, opts) for im in images], axis=0).astype(np.float32)
