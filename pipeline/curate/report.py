"""The curation report: PNG image grids, similarity histograms and an ``index.html``."""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image, ImageDraw

Cell = tuple[bytes | None, str]  # image bytes (None: empty) and a caption


def image_grid(rows: Sequence[Sequence[Cell]], path: Path, thumb: int = 96) -> Path:
    """Save rows of captioned thumbnails as one PNG."""
    cols = max((len(r) for r in rows), default=1)
    cap = 14
    w, h = cols * (thumb + 4) + 4, max(1, len(rows)) * (thumb + cap + 6) + 4
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, (data, caption) in enumerate(row):
            x, y = 4 + c * (thumb + 4), 4 + r * (thumb + cap + 6)
            if data is not None:
                img = Image.open(io.BytesIO(data)).convert("RGB")
                img.thumbnail((thumb, thumb))
                canvas.paste(img, (x + (thumb - img.width) // 2, y + (thumb - img.height) // 2))
            draw.text((x, y + thumb + 2), caption[:18], fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def histogram_range(v: np.ndarray, lo: float | None = None) -> tuple[float, float]:
    """The x range of a similarity histogram: ``[lo, 1]``, or from below the smallest value when ``lo`` is None.

    The end widens past 1 because the cosine of an image with its exact copy rounds to just above 1.
    """
    start = lo if lo is not None else min(-0.1, float(v.min()))
    return start, max(1.0, float(v.max()))


def histogram(
    series: Mapping[str, np.ndarray],
    path: Path,
    title: str,
    thresholds: Mapping[str, float] | None = None,
    bins: int = 100,
    lo: float | None = None,
) -> Path:
    """Overlaid similarity histograms (log counts) with vertical threshold lines; ``lo`` zooms to ``[lo, 1]``."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, v in series.items():
        v = np.asarray(v, np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            start, end = histogram_range(v, lo)
            shown = int((v >= start).sum())
            ax.hist(
                v, bins=bins, range=(start, end), alpha=0.6, label=f"{name} ({shown} of {v.size} shown)", log=lo is None
            )
    for name, t in (thresholds or {}).items():
        ax.axvline(t, color="red", linestyle="--", linewidth=1)
        ax.text(t, ax.get_ylim()[1], f" {name}={t:g}", color="red", va="top", fontsize=8, rotation=90)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("count (log)" if lo is None else "count")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_index(
    path: Path, title: str, counts: Mapping[str, float], sections: Sequence[tuple[str, str, Sequence[str]]]
) -> Path:
    """``index.html``: a counts table, then per section a heading, a note and images (paths relative to ``path``)."""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>"
        if isinstance(v, (float, np.floating))
        else f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>"
        for k, v in counts.items()
    )
    body = [f"<h1>{html.escape(title)}</h1>", f"<table border=1 cellpadding=3>{rows}</table>"]
    for heading, note, images in sections:
        body.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(note)}</p>")
        body += [f'<p><img src="{html.escape(src)}" alt="{html.escape(src)}"></p>' for src in images]
    doc = "<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title></head><body>"
    doc += "\n".join(body) + "</body></html>\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
    return path
