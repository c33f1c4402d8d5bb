import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from pipeline.config.curate import EmbedConfig
from pipeline.curate.copy_align import align_pairs, box_grid, box_thumbs, shape_aspect, work_array
from pipeline.curate.copy_descriptor import thumb


def _texture(seed: int, size: tuple[int, int] = (96, 96)) -> Image.Image:
    x = gaussian_filter(np.random.default_rng(seed).normal(size=size[::-1]), 2.0)
    return Image.fromarray(((x - x.min()) / (x.max() - x.min()) * 200 + 20).astype(np.uint8))


@pytest.mark.parametrize("aspect", [1.0, 0.8, 1.3])
def test_the_box_grid_keeps_the_shape_and_cuts_no_side_by_more_than_crop(aspect: float):
    b = box_grid(0.2, aspect, 0.025)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert np.allclose(w / h, aspect, atol=1e-9)
    cuts = np.stack([b[:, 0], b[:, 1], 1 - b[:, 2], 1 - b[:, 3]], 1)
    assert cuts.min() >= -1e-9 and cuts.max() <= 0.2 + 1e-9
    assert len(np.unique(b.round(6), axis=0)) == len(b)
    if aspect == 1.0:
        assert np.allclose(b[0], [0, 0, 1, 1]) and len(b) == 249


@pytest.mark.parametrize("size", [(300, 300), (64, 48), (33, 40)])
def test_box_thumbnails_are_the_descriptor_thumbnails(size: tuple[int, int]):
    img = _texture(3, size)
    boxes = box_grid(0.2, 1.0, 0.025)[::37]
    got = box_thumbs(work_array(img, 16), boxes, 16, 0.5, 0.5)
    want = np.stack([thumb(img, (b[0], b[1], b[2], b[3]), 16, 0.5, 0.5) for b in boxes])
    # PIL's box filter counts a source pixel in or out where the matrices weigh its covered share;
    # a 300 px image is first reduced to 128 px
    assert got.shape == want.shape
    assert np.min(np.sum(got * want, axis=1)) > (0.99 if min(size) >= 64 else 0.97)


def test_each_pair_takes_its_best_direction_and_shape():
    o = EmbedConfig()
    a, other = _texture(0, (120, 100)), _texture(1, (120, 100))
    crop = a.crop((6, 15, 114, 95))  # 5 % off left and right, 15 % off the top, 5 % off the bottom
    imgs = [a, crop, other]
    m = align_pairs([(1, 0), (0, 2)], [work_array(i, 16) for i in imgs], [i.size for i in imgs], o, None)
    assert m[0].src == 1 and m[0].score > 0.97
    np.testing.assert_allclose(m[0].box, (0.05, 0.15, 0.95, 0.95), atol=0.0126)
    assert m[1].score < 0.6
    assert shape_aspect((120, 100), (108, 80)) == round((108 / 80) / 1.2, 3)
