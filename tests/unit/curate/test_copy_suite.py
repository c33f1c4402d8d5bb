import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.config.curate import CopySuiteConfig
from pipeline.curate.copy_suite import KINDS, copy_bytes, make_copy


def _img(size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_each_kind_stays_in_its_range():
    o, img = CopySuiteConfig(), _img(100)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        c = make_copy(img, "crop", rng, o)
        assert 60 <= c.width <= 100 and 60 <= c.height <= 100
        r = make_copy(img, "resize", rng, o)
        assert 50 <= r.width <= 200 and r.width == r.height
        b = np.asarray(make_copy(img, "brightness", rng, o), np.float32).mean() / np.asarray(img, np.float32).mean()
        assert 0.78 <= b <= 1.22
    assert np.array_equal(
        np.asarray(make_copy(img, "flip", np.random.default_rng(0), o)), np.asarray(ImageOps.mirror(img))
    )


def test_copies_are_seeded_and_jpeg_copies_are_jpeg_files():
    o, img = CopySuiteConfig(), _img()
    a = copy_bytes(img, "jpeg", np.random.default_rng(3), o)
    assert a == copy_bytes(img, "jpeg", np.random.default_rng(3), o) and a[1] == "jpg"
    assert Image.open(io.BytesIO(a[0])).format == "JPEG"
    assert all(copy_bytes(img, k, np.random.default_rng(0), o)[1] == "png" for k in KINDS if k != "jpeg")


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="choose from"):
        make_copy(_img(), "rotate", np.random.default_rng(0), CopySuiteConfig())
