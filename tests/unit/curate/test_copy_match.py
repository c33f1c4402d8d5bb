import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from pipeline.config.curate import EmbedConfig
from pipeline.curate.calibrate import centred, knn_score
from pipeline.curate.copy_match import item_rows, pair_similarity


def _texture(seed: int, size: int = 96) -> Image.Image:
    x = gaussian_filter(np.random.default_rng(seed).normal(size=(size, size)), 2.0)
    return Image.fromarray(((x - x.min()) / (x.max() - x.min()) * 200 + 20).astype(np.uint8))


def test_refinement_recovers_a_crop_between_the_boxes():
    o = EmbedConfig()
    a = _texture(0)
    # 10% off the left, 2% off the right, 18% off the top: 0.05 from the nearest box on two sides.
    c = a.crop((10, 17, 94, 96))
    ra, rc = item_rows(a, o), item_rows(c, o)
    mean = np.zeros(ra.shape[1], np.float32)
    knn = knn_score(centred(rc, mean), centred(ra, mean), False)
    refined = pair_similarity(c, a, o, mean)
    assert refined >= knn - 1e-6 and refined > 0.95 and refined - knn > 0.02
    assert pair_similarity(_texture(1), a, o, mean) < 0.6


def test_a_mirror_match_is_not_refined():
    o = EmbedConfig()
    a = _texture(2)
    m = a.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert pair_similarity(m, a, o) > 0.999
