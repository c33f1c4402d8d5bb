import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from scipy.ndimage import gaussian_filter

from pipeline.curate.copy_descriptor import (
    boxes,
    center_on_pool,
    copy_descriptor,
    gauss,
    pool_mean,
    rows_per_item,
)


def _texture(seed: int, size: int = 120) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(size // 8, size // 8))
    img = np.kron(base, np.ones((8, 8))) * 40 + 128
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _search(copies: list[Image.Image], pool: list[Image.Image]) -> np.ndarray:
    """Each copy's best similarity to each pool item, as the kNN graph scores it (whole-image query rows)."""
    per = rows_per_item(0.2, True)
    x = np.stack([copy_descriptor(im) for im in pool])
    q = np.stack([copy_descriptor(c) for c in copies])
    mu = pool_mean(x, per)
    rows = center_on_pool(x, mu, per).astype(np.float32)
    qrows = center_on_pool(q, mu, per).astype(np.float32)[::per]
    return (qrows @ rows.T).reshape(len(copies), len(pool), per).max(axis=2)


def test_copies_of_every_kind_match_their_original_and_nothing_else():
    imgs = [_texture(s) for s in range(20)]
    a = imgs[0]
    w, h = a.size
    copies = [
        a.resize((int(w * 0.5), int(h * 0.5))),
        a.resize((w * 2, h * 2)),
        ImageEnhance.Brightness(a).enhance(1.2),
        ImageEnhance.Contrast(a).enhance(0.8),
        a.crop((int(w * 0.15), int(h * 0.05), w - int(w * 0.05), h - int(h * 0.15))),  # a crop on one of the boxes
        ImageOps.mirror(a),
    ]
    s = _search(copies, imgs)
    assert (s[:, 0] > 0.9).all(), s[:, 0]
    assert (s[:, 1:].max(axis=1) < 0.6).all()


def test_rows_are_whole_image_mirror_then_sixteen_boxes():
    assert rows_per_item(0.2, True) == 18 and rows_per_item(0.0, False) == 1 and len(boxes(0.2)) == 16
    # Box sides are cut by crop/4 or 3 crop/4: every crop of at most 0.2 per side is within 0.05 of one.
    assert sorted({b[0] for b in boxes(0.2)}) == [0.05, 0.15000000000000002]
    d = copy_descriptor(_texture(1), grid=8).reshape(18, -1)
    m = copy_descriptor(ImageOps.mirror(_texture(1)), grid=8).reshape(18, -1)
    assert np.allclose(d[1], m[0], atol=1e-5)  # the mirror row is the mirrored image's whole-image row


def test_the_gaussian_matrix_is_scipys_filter():
    x = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    k = gauss(32, 1.0)
    assert np.allclose(k @ x @ k.T, gaussian_filter(x, 1.0, mode="nearest"), atol=1e-5)


def test_flat_image_descriptor_is_finite_and_each_row_unit_length():
    d = copy_descriptor(Image.new("L", (50, 50), 7), 8, crop=0.0, flip=False)
    assert np.isfinite(d).all() and abs(np.linalg.norm(d) - 1) < 1e-5
    d = copy_descriptor(_texture(3), 8).reshape(18, -1)
    assert np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
