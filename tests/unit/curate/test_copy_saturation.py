import numpy as np
from PIL import Image, ImageEnhance
from scipy.ndimage import gaussian_filter

from pipeline.config.curate import EmbedConfig
from pipeline.curate.copy_match import pair_scores, saturated_scores
from pipeline.curate.copy_saturation import match_saturation, mismatched, saturation


def _bright(seed: int, size: int = 160) -> Image.Image:
    """A bright textured image: brightening it by 20 % clips most of it to white."""
    x = gaussian_filter(np.random.default_rng(seed).normal(size=(size, size)), 3.0)
    x = (x - x.min()) / (x.max() - x.min())
    return Image.fromarray((150 + 100 * x).astype(np.uint8))


def test_saturation_counts_the_pixels_at_either_end():
    a = np.array([[0, 0, 1, 5], [9, 254, 255, 255]], np.float32)
    assert saturation(a) == (3 / 8, 3 / 8)
    assert mismatched((0.06, 0.0), (0.0, 0.0)) and not mismatched((0.03, 0.0), (0.0, 0.0))
    assert not mismatched((0.5, 0.4), (0.2, 0.6))  # two graphics saturated at both ends


def test_matching_clips_the_original_like_its_brightened_copy():
    a = _bright(0)
    c = ImageEnhance.Brightness(a).enhance(1.2)
    share = saturation(np.asarray(c, np.float32))[0]
    assert share > 0.2  # a heavily clipped copy
    matched = match_saturation(c, a)
    assert matched is not None
    mc, ma = (np.asarray(m, np.float32) for m in matched)
    assert abs(saturation(ma)[0] - share) < 0.03  # clipped by about the same share (up to one grey level)
    assert np.corrcoef(mc.ravel(), ma.ravel())[0, 1] > 0.99
    assert match_saturation(a, a.rotate(90)) is None  # alike saturated: nothing to match


def test_a_clipped_copy_scores_as_a_copy_and_a_clipped_distinct_image_does_not():
    o = EmbedConfig()
    a = _bright(1)
    c = ImageEnhance.Brightness(a).enhance(1.2)
    sat = saturated_scores(c, a, o)
    assert sat is not None and sat[1] > 0.99
    assert pair_scores(c, a, o)[1] >= sat[1]  # the pair score takes the clipped comparison in
    other = ImageEnhance.Brightness(_bright(2)).enhance(1.2)
    assert pair_scores(other, a, o)[1] < 0.6
