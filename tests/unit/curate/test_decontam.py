import numpy as np
import pytest
from PIL import Image, ImageEnhance

from pipeline.curate.copy_descriptor import center_on_pool, copy_descriptor, pool_mean
from pipeline.curate.decontam import best_match, find_contaminated


def test_find_contaminated_best_match_per_item_with_crops():
    # 2 pool items x 2 query rows; eval index: 3 items x 2 rows
    sims = np.array([[0.99, 0.5], [0.96, 0.1], [0.2, 0.1], [0.3, 0.2]], np.float32)
    ids = np.array([[4, 0], [1, 2], [0, 1], [5, 2]])
    found = find_contaminated(sims, ids, 0.95, query_rows_per_item=2, index_rows_per_item=2)
    assert [(c.pool, c.eval) for c in found] == [(0, 2)]
    assert abs(found[0].similarity - 0.99) < 1e-6
    assert np.allclose(best_match(sims, ids, 2), [0.99, 0.3])


def _texture(seed, size=120):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(size // 8, size // 8))
    img = np.kron(base, np.ones((8, 8))) * 40 + 128
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def test_copy_descriptor_separates_copies_from_others():
    imgs = [_texture(s) for s in range(20)]
    scales = (1.0, 0.94, 0.88)
    x = np.stack([copy_descriptor(im, 16, scales) for im in imgs])
    a = imgs[0]
    w, h = a.size
    copies = [
        a.resize((int(w * 0.8), int(h * 0.8))),
        ImageEnhance.Brightness(a).enhance(1.2),
        a.crop((4, 4, w - 4, h - 4)),
    ]
    q = np.stack([copy_descriptor(c, 16, scales) for c in copies])
    mu = pool_mean(x, 3)
    rows = center_on_pool(x, mu, 3).astype(np.float32)
    qrows = center_on_pool(q, mu, 3).astype(np.float32)[::3]
    s = (qrows @ rows.T).reshape(len(copies), 20, 3).max(axis=2)
    assert (s[:, 0] > 0.9).all()
    assert (s[:, 1:].max(axis=1) < 0.6).all()


def test_flat_image_descriptor_is_finite():
    d = copy_descriptor(Image.new("L", (50, 50), 7), 8, (1.0,))
    assert np.isfinite(d).all() and abs(np.linalg.norm(d) - 1) < 1e-5


def test_candidate_pairs_keep_every_pair_and_best_per_pool():
    from pipeline.curate.decontam import best_per_pool, candidate_pairs

    # 2 pool items x 2 crops (query rows 0,1 -> item 0; 2,3 -> item 1); eval items 1 row each
    sims = np.array([[0.99, 0.98], [0.985, 0.5], [0.97, 0.2], [0.1, 0.0]], np.float32)
    ids = np.array([[0, 1], [0, 2], [2, -1], [1, 0]])
    c = candidate_pairs(sims, ids, 0.975, query_rows_per_item=2)
    assert [(x.pool, x.eval) for x in c] == [(0, 0), (0, 1)]
    assert c[0].similarity == pytest.approx(0.99)
    assert [(x.pool, x.eval) for x in best_per_pool(c)] == [(0, 0)]
    assert candidate_pairs(sims, ids, 0.999) == []
