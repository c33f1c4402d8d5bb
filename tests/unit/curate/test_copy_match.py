import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from pipeline.config.curate import EmbedConfig
from pipeline.curate.calibrate import knn_score
from pipeline.curate.copy_align import centre
from pipeline.curate.copy_match import align_one, fine_grid, fine_thumb, item_rows, pair_similarity


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
    knn = knn_score(centre(rc, mean), centre(ra, mean), False)
    refined = pair_similarity(c, a, o, mean)
    assert refined >= knn - 1e-6 and refined > 0.95 and refined - knn > 0.02
    assert pair_similarity(_texture(1), a, o, mean) < 0.6


def test_a_mirror_match_is_not_refined():
    o = EmbedConfig()
    a = _texture(2)
    m = a.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert pair_similarity(m, a, o) > 0.999


def _cell(module: int, seed: int, size: int = 160) -> Image.Image:
    """Solar-cell-like images: a shared layout (busbars every 40 px), a smooth shading shared by the
    cells of one module, and a faint texture of each cell's own: at 16 x 16 the cells of one module
    look alike, at 32 x 32 their textures differ."""
    y, _ = np.mgrid[0:size, 0:size]
    layout = 120 + 60 * ((y % 40) < 4)
    shade = gaussian_filter(np.random.default_rng(100 + module).normal(size=(size, size)), 12) * 400
    tex = gaussian_filter(np.random.default_rng(seed).normal(size=(size, size)), 1.0) * 25
    return Image.fromarray(np.clip(layout + shade + tex, 0, 255).astype(np.uint8))


def test_the_aligned_box_finds_a_heavy_crop_on_a_repeated_layout():
    o = EmbedConfig()
    a = _cell(0, 0)
    box = (32, 16, 136, 136)  # 20 % off the left, 10 % off the top, 15 % off the right and the bottom
    c = a.crop(box)
    m = align_one(c.convert("L"), a.convert("L"), o)
    assert m.src == 1 and not m.mirror  # the box lies in the original
    # within half a grid step (crop / 8 = 2.5 % of the side) of the cut
    assert np.allclose(np.array(m.box) * 160, box, atol=0.5 * 0.025 * 160 + 1e-6)
    assert m.score > 0.95


def test_the_fine_stage_keeps_copies_and_separates_cells_of_one_module():
    o = EmbedConfig()
    imgs = [_cell(m, 10 * m + s) for m in range(4) for s in range(4)]
    mean = np.stack([item_rows(im, o)[0] for im in imgs]).mean(axis=0)
    fine = np.mean([fine_thumb(im, o) for im in imgs], axis=0)
    a = imgs[0]
    copies = (a.crop((32, 16, 136, 136)), a.resize((120, 120)), a.crop((10, 30, 150, 140)).resize((150, 128)))
    for c in copies:
        assert pair_similarity(c, a, o, mean, fine_mean=fine) > 0.98
    same_module = imgs[1:4]
    coarse = [pair_similarity(b, a, o, mean) for b in same_module]
    fine_scores = [pair_similarity(b, a, o, mean, fine_mean=fine) for b in same_module]
    assert min(coarse) > 0.93 and max(fine_scores) < 0.9  # alike at 16 x 16, apart at 32 x 32
    assert max(pair_similarity(b, a, o, mean, fine_mean=fine) for b in imgs[4:]) < 0.5
    assert fine_grid((100, 160), (160, 160), o) == 0 and fine_grid((128, 160), (160, 160), o) == o.copy_refine_grid
