"""normalize_image: every mode to L/RGB 8-bit, orientation, bombs, truncation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from pipeline.io.images import ImageRejected, decode_rgb, normalize_image
from tests.bad_inputs import encode, jpeg_with_orientation, noise, png_bomb


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_baseline_jpeg_bytes_are_kept_as_they_are() -> None:
    data = encode(Image.fromarray(noise(20, 30)), "JPEG")
    out = normalize_image(data)
    assert out.data == data and out.ext == "jpg" and (out.width, out.height, out.mode) == (30, 20, "RGB")


def test_png_is_reencoded_losslessly() -> None:
    arr = noise(20, 30)
    out = normalize_image(encode(Image.fromarray(arr), "PNG"))
    assert out.ext == "png" and np.array_equal(_decode(out.data), arr)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_is_stretched_to_its_own_range(fmt: str) -> None:
    # An EL camera's 12-bit data inside a 16-bit container: a fixed >> 8 would leave it nearly black.
    arr = np.linspace(1000, 4000, 24 * 32).reshape(24, 32).astype(np.uint16)
    out = normalize_image(encode(Image.fromarray(arr), fmt))
    got = _decode(out.data)
    assert out.source_mode == "I;16" and out.mode == "L" and got.dtype == np.uint8
    assert got.min() == 0 and got.max() == 255
    assert np.all(np.diff(got.ravel().astype(int)) >= 0), "the stretch must keep the order of intensities"


def test_constant_16bit_image_does_not_divide_by_zero() -> None:
    out = normalize_image(encode(Image.fromarray(np.full((16, 16), 777, np.uint16)), "PNG"))
    assert out.mode == "L" and _decode(out.data).max() == 0


def test_non_finite_float_pixels_are_refused() -> None:
    arr = np.zeros((16, 16), np.float32)
    arr[0, 0] = np.inf
    with pytest.raises(ImageRejected) as e:
        normalize_image(encode(Image.fromarray(arr), "TIFF"))
    assert e.value.reason == "non_finite_pixels"


def test_transparent_pixels_become_white_not_black() -> None:
    rgba = np.zeros((16, 16, 4), np.uint8)  # fully transparent black
    out = normalize_image(encode(Image.fromarray(rgba), "PNG"))
    assert out.mode == "RGB" and _decode(out.data).min() == 255


def test_cmyk_jpeg_becomes_rgb_png() -> None:
    out = normalize_image(encode(Image.fromarray(noise(16, 16)).convert("CMYK"), "JPEG"))
    assert (out.mode, out.ext, out.source_mode) == ("RGB", "png", "CMYK")


@pytest.mark.parametrize(
    ("orientation", "size"), [(1, (40, 20)), (2, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))]
)
def test_exif_orientation(orientation: int, size: tuple[int, int]) -> None:
    data = jpeg_with_orientation(40, 20, orientation)
    out = normalize_image(data)
    assert (out.width, out.height) == size
    # Only an upright file keeps its bytes; any other orientation must be re-encoded, mirrors included.
    assert (out.ext == "jpg") == (orientation == 1)
    if orientation == 2:
        plain = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
        assert np.abs(_decode(out.data).astype(int) - plain[:, ::-1]).mean() < 1


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_files_are_named_truncated(fmt: str, keep: float) -> None:
    for arr in (noise(64, 64), np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))):
        data = encode(Image.fromarray(arr), fmt)
        with pytest.raises(ImageRejected) as e:
            normalize_image(data[: max(12, int(len(data) * keep))])
        assert e.value.reason == "truncated", (fmt, keep, str(e.value))


def test_png_missing_only_its_end_chunk_is_truncated() -> None:
    data = encode(Image.fromarray(noise(16, 16)), "PNG")
    with pytest.raises(ImageRejected, match="truncated"):
        normalize_image(data[:-12])


def test_truncation_is_caught_even_if_a_library_set_load_truncated_images(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encode(Image.fromarray(noise(64, 64)), "JPEG")
    with pytest.raises(ImageRejected, match="truncated"):
        normalize_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True, "the caller's setting was not restored"
    assert normalize_image(data).ext == "jpg"


@pytest.mark.parametrize(
    ("data", "kwargs", "reason"),
    [
        (b"", {}, "empty_file"),
        (b"hello world, not an image" * 4, {}, "not_an_image"),
        (png_bomb(), {}, "decompression_bomb"),
        (png_bomb(200, 200), {"max_pixels": 100 * 100}, "decompression_bomb"),
        (encode(Image.new("L", (5, 50)), "PNG"), {}, "too_small"),
        (encode(Image.new("L", (5, 50)), "PNG"), {"min_side": 4}, None),
    ],
)
def test_rejection_reasons(data: bytes, kwargs: dict, reason: str | None) -> None:
    if reason is None:
        assert normalize_image(data, **kwargs).mode == "L"
        return
    with pytest.raises(ImageRejected) as e:
        normalize_image(data, **kwargs)
    assert e.value.reason == reason


def test_max_pixels_above_pil_default_is_honoured() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    header_only = png_bomb(12_000, 12_000)  # 144 M pixels: PIL alone would refuse it as a bomb
    with pytest.raises(ImageRejected) as e:
        normalize_image(header_only, max_pixels=150_000_000)
    assert e.value.reason == "truncated"  # got past the size check, then ran out of data
    with pytest.raises(ImageRejected, match="decompression_bomb"):
        normalize_image(header_only, max_pixels=100_000_000)
    assert limit == Image.MAX_IMAGE_PIXELS, "the process-wide limit was not restored"


def test_decode_rgb_gives_rgb() -> None:
    assert decode_rgb(encode(Image.fromarray(noise(8, 8, 1)), "PNG")).mode == "RGB"
