import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from pipeline.config.curate import CopySuiteConfig, EmbedConfig
from pipeline.curate.calibrate import calibrate, choose, copy_scores, noncopy_scores


def test_the_hardest_kind_sets_the_threshold():
    rng = np.random.default_rng(0)
    knn = {
        "jpeg": rng.uniform(0.95, 1.0, 200).astype(np.float32),
        "crop": rng.uniform(0.6, 1.0, 200).astype(np.float32),
    }
    refined = {"jpeg": knn["jpeg"] + 0.0, "crop": rng.uniform(0.9, 1.0, 200).astype(np.float32)}
    noncopy = np.array([0.5, 0.8, 0.92, 0.99], np.float32)
    c = choose(knn, refined, noncopy, recall=0.95, margin=0.01)
    want = min(np.quantile(refined["jpeg"], 0.05, method="lower"), np.quantile(refined["crop"], 0.05, method="lower"))
    assert c.threshold == pytest.approx(want - 0.01)
    assert c.candidate == pytest.approx(np.quantile(knn["crop"], 0.025, method="lower") - 0.01)
    assert all(v >= 0.95 for v in c.synthetic_recall().values())
    assert c.false_match_rate() == pytest.approx(np.mean(noncopy >= c.threshold))


def _texture(seed: int, size: int) -> Image.Image:
    x = gaussian_filter(np.random.default_rng(seed).normal(size=(size, size)), size / 24)
    return Image.fromarray(((x - x.min()) / (x.max() - x.min()) * 200 + 20).astype(np.uint8))


def test_synthetic_copies_of_textures_score_far_above_their_neighbours():
    o = EmbedConfig()
    imgs = [_texture(s, size) for s, size in enumerate((32, 48, 64, 96, 128, 200))]
    mean = np.zeros(2 * o.copy_grid**2, np.float32)
    scores = copy_scores(imgs, o, CopySuiteConfig(), mean, seed=0)
    noncopy = noncopy_scores(imgs, imgs[1:] + imgs[:1], o, mean)
    c = calibrate(scores, CopySuiteConfig().kinds, noncopy, 0.95, 0.01)
    assert c.threshold > 0.85 and noncopy.max() < c.threshold
    assert all(scores[f"refined_{k}"].min() > 0.85 for k in CopySuiteConfig().kinds)


def test_best_per_item_keeps_each_items_best_pairs():
    from pipeline.curate.calibrate import best_per_item

    a = np.array([0, 0, 0, 1, 2])
    b = np.array([5, 6, 7, 7, 7])
    s = np.array([0.9, 0.8, 0.7, 0.95, 0.6])
    # k=1: 0-5 (0's best), 1-7 (1's and 7's best), 2-7 (2's best); 0-6 is 6's best too; 0-7 is nobody's best.
    assert best_per_item(a, b, s, 1).tolist() == [True, True, False, True, True]
    assert best_per_item(a, b, s, 3).all()


def test_the_false_match_ceiling_raises_the_threshold_and_recall_shows_the_cost():
    rng = np.random.default_rng(1)
    knn = {"crop": rng.uniform(0.3, 1.0, 200).astype(np.float32)}
    refined = {"crop": rng.uniform(0.5, 1.0, 200).astype(np.float32)}
    noncopy = rng.uniform(0.6, 0.95, 100).astype(np.float32)
    free = choose(knn, refined, noncopy, recall=0.95, margin=0.0)
    capped = choose(knn, refined, noncopy, recall=0.95, margin=0.0, max_false=0.05)
    assert free.threshold < 0.6 < capped.threshold and capped.false_match_rate() <= 0.05
    assert capped.synthetic_recall()["crop"] < 0.8 < 0.9 <= free.synthetic_recall()["crop"]
