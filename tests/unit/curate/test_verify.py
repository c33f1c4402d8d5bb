import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from scipy.ndimage import gaussian_filter

from pipeline.config.curate import VerifyConfig
from pipeline.curate import verify as vf


def _cell(seed: int, size: int = 200) -> Image.Image:
    """A textured 'cell': its own smooth random texture plus a layout shared by every cell (bars, frame)."""
    rng = np.random.default_rng(seed)
    t = gaussian_filter(rng.normal(0, 1, (size, size)), 2.5)
    a = 128 + 30 * t / t.std()
    a[size // 4 :: size // 4, :] = 40  # busbars: the same in every cell
    a[:, :6] = a[:, -6:] = 60
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _jpeg(img: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=q)
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out


COPIES = {
    "jpeg_q70": lambda im: _jpeg(im, 70),
    "resize_0.8": lambda im: im.resize((160, 160), Image.BILINEAR),
    "crop_6pct": lambda im: im.crop((6, 6, 194, 194)),
    "crop_asymmetric": lambda im: im.crop((2, 10, 190, 196)),
    "brighten_1.2": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
}


def _scores(a: Image.Image, b: Image.Image) -> vf.PairScore:
    o = VerifyConfig()
    return vf.pair_score(vf.thumbnail(a, o.size), vf.thumbnail(b, o.size), o)


def _score(a: Image.Image, b: Image.Image) -> float:
    return _scores(a, b).structure


@pytest.mark.parametrize("kind", sorted(COPIES))
def test_true_copies_pass(kind):
    img = _cell(0)
    for a, b in ((img, COPIES[kind](img)), (COPIES[kind](img), img)):  # either side may be the crop
        s = _scores(a, b)
        assert s.structure > 0.9 and s.outlier < 12


def test_identical_scores_one_and_different_cells_fail():
    a = _cell(1)
    assert _score(a, a) == pytest.approx(1.0, abs=1e-4)
    scores = [_score(a, _cell(s)) for s in (2, 3, 4)]
    assert max(scores) < 0.5  # the shared bars and frame are not enough


def test_local_difference_fails():
    """The same cell with one local defect added (a dark spot) is a different image."""
    a = _cell(5)
    arr = np.asarray(a).copy()
    arr[120:132, 40:52] = 30
    spot, copy = _scores(a, Image.fromarray(arr)), _scores(a, _jpeg(a, 70))
    assert spot.structure < 0.8 and copy.structure > 0.9
    assert spot.outlier > 3 * copy.outlier


def test_calibration_accepts():
    cal = vf.Calibration(structure=0.5, outlier=10.0, keep=0.99, scores=np.zeros((0, 2)))
    assert cal.accepts(np.array([[0.6, 9.0], [0.4, 9.0], [0.6, 11.0]])).tolist() == [True, False, False]


def test_synthetic_copy_ops_and_errors():
    img = _cell(6)
    rng = np.random.default_rng(0)
    for op in vf.COPY_OPS:
        out = vf.synthetic_copy(img, rng, [op])
        assert out.mode == "L" and min(out.size) >= 8
    with pytest.raises(ValueError, match="rotate"):
        vf.synthetic_copy(img, rng, ["rotate"])


def test_calibration_rule_is_the_keep_quantile_and_separates():
    imgs = [_cell(s) for s in range(10, 22)]
    cal = vf.calibrate(imgs, keep=0.9, seed=0, ops=["crop", "resize", "jpeg", "brightness", "contrast"])
    assert cal.scores.shape == (12, 2)
    assert cal.structure == pytest.approx(float(np.quantile(cal.scores[:, 0], 0.1, method="lower")))
    assert cal.outlier == pytest.approx(float(np.quantile(cal.scores[:, 1], 0.9, method="higher")))
    assert (cal.scores[:, 0] >= cal.structure).mean() >= 0.9 and (cal.scores[:, 1] <= cal.outlier).mean() >= 0.9
    assert cal.accepts(cal.scores).mean() >= 0.8
    again = vf.calibrate(imgs, keep=0.9, seed=0, ops=["crop", "resize", "jpeg", "brightness", "contrast"])
    np.testing.assert_array_equal(cal.scores, again.scores)  # seeded
    different = np.array([tuple(_scores(imgs[k], imgs[k + 1])) for k in range(0, 6, 2)])
    assert not cal.accepts(different).any()
    with pytest.raises(ValueError, match="at least one image"):
        vf.calibrate([])


def test_load_thumbnails_reads_only_wanted_ids(tmp_path):
    recs = []
    with tarfile.open(tmp_path / "shard-000000.tar", "w") as tf:
        for k in range(3):
            buf = io.BytesIO()
            _cell(k, 64).save(buf, format="PNG")
            data = buf.getvalue()
            for name, payload in ((f"id{k}.png", data), (f"id{k}.json", b"{}")):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            recs.append({"id": f"id{k}", "shard": "shard-000000.tar", "status": "accepted"})
    (tmp_path / "shard-000000.records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    th = vf.load_thumbnails(tmp_path, ["id0", "id2"], 32)
    assert sorted(th) == ["id0", "id2"] and th["id0"].shape == (32, 32)
    with pytest.raises(FileNotFoundError, match="id9"):
        vf.load_thumbnails(tmp_path, ["id9"], 32)
