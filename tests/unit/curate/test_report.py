"""The curation report: thumbnail grids, similarity histograms and ``index.html``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.curate.report import histogram, histogram_range, image_grid, write_index
from tests.bad_inputs import encode

RED = (255, 0, 0)
WHITE = (255, 255, 255)


def test_image_grid_lays_out_centred_thumbnails_on_a_white_canvas(tmp_path: Path) -> None:
    wide = encode(Image.new("RGB", (64, 32), RED), "PNG")  # thumbnailed to 32 x 16, centred vertically
    rows = [[(wide, "a very long caption that gets cut"), (None, "empty")], [(wide, "x"), (wide, "y"), (wide, "z")]]
    path = image_grid(rows, tmp_path / "g" / "grid.png", thumb=32)
    with Image.open(path) as im:
        im = im.convert("RGB")
        # 3 columns of (32 + 4) px plus a 4 px margin; 2 rows of (32 + 14 caption + 6) px plus 4.
        assert im.size == (3 * 36 + 4, 2 * 52 + 4)
        x, y = 4, 4  # the first cell
        assert im.getpixel((x + 16, y + 16)) == RED  # centre of the thumbnail
        assert im.getpixel((x + 16, y + 2)) == WHITE  # above the 16 px tall, centred thumbnail
        assert im.getpixel((x + 36 + 16, y + 16)) == WHITE  # the empty cell
        assert im.getpixel((x + 2 * 36 + 16, y + 52 + 16)) == RED  # row 2, column 3
        assert im.getpixel((x + 2 * 36 + 16, y + 16)) == WHITE  # row 1 has only two cells


def test_histogram_png_has_the_figure_size_in_log_and_zoomed_modes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    series = {"pool": rng.uniform(-0.2, 1.0, 500), "eval": np.array([0.99, np.nan, 0.5])}
    log_png = histogram(series, tmp_path / "h" / "log.png", "all", thresholds={"dup": 0.95})
    zoom_png = histogram(series, tmp_path / "h" / "zoom.png", "zoom", thresholds={"dup": 0.95}, lo=0.9)
    for path in (log_png, zoom_png):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (630, 315)  # 7 x 3.5 in at 90 dpi
    assert log_png.read_bytes() != zoom_png.read_bytes()


def test_histogram_range_covers_rounded_self_similarities() -> None:
    v = np.array([-0.3, 0.5, 1.0000001])
    assert histogram_range(v) == (-0.3, 1.0000001)  # copies' cosines round past 1 and stay in the plot
    assert histogram_range(v, lo=0.9) == (0.9, 1.0000001)
    assert histogram_range(np.array([0.2, 0.8])) == (-0.1, 1.0)


def test_index_lists_counts_sections_and_images_escaped(tmp_path: Path) -> None:
    counts = {"pool": 1200, "kept": 300, "kept_share": 0.25, "sim <p50>": 0.123456, "mean_sim": np.float32(0.87654321)}
    sections = [("Near duplicates", "pairs over 0.95 & below 1", ["dup.png", "dup2.png"]), ("Seeds", "", [])]
    path = write_index(tmp_path / "r" / "index.html", "Curation <demo>", counts, sections)
    doc = path.read_text()
    assert "<title>Curation &lt;demo&gt;</title>" in doc and "<h1>Curation &lt;demo&gt;</h1>" in doc
    assert "<tr><td>pool</td><td>1200</td></tr>" in doc and "<tr><td>kept</td><td>300</td></tr>" in doc
    assert "<tr><td>kept_share</td><td>0.25</td></tr>" in doc
    assert "<tr><td>sim &lt;p50&gt;</td><td>0.1235</td></tr>" in doc  # floats to 4 significant digits
    assert "<tr><td>mean_sim</td><td>0.8765</td></tr>" in doc  # numpy float32 too
    assert "<h2>Near duplicates</h2><p>pairs over 0.95 &amp; below 1</p>" in doc and "<h2>Seeds</h2>" in doc
    assert doc.index('<img src="dup.png"') < doc.index('<img src="dup2.png"') < doc.index("<h2>Seeds</h2>")
    assert doc.index("<h1>") < doc.index("<table") < doc.index("<h2>Near duplicates</h2>")
