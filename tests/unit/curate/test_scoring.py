from pipeline.curate.scoring import score_decontam, score_dedup, score_retrieval

GT = {
    "o1": {"origin": "elpv/cell0001.png", "in_domain": True},
    "c1": {
        "origin": "elpv/cell0001.png",
        "in_domain": True,
        "copy_of": {"source": "pool", "key": "o1"},
        "transform": "jpeg_q70",
    },
    "c1b": {
        "origin": "elpv/cell0001.png",
        "in_domain": True,
        "copy_of": {"source": "pool", "key": "o1"},
        "transform": "crop_6pct",
    },
    "o2": {"origin": "distractor/face.png", "in_domain": False},
    "c2": {
        "origin": "distractor/face.png",
        "in_domain": False,
        "copy_of": {"source": "pool", "key": "o2"},
        "transform": "resize_0.8",
    },
    "x": {"origin": "elpv/cell0002.png", "in_domain": True},
    "y": {"origin": "elpv/cell0003.png", "in_domain": True},
    "e1": {
        "origin": "elpv/cell0009.png",
        "in_domain": True,
        "copy_of": {"source": "eval", "key": "cell0009.png"},
        "transform": "jpeg_q70",
    },
    "b": {
        "origin": "elpv/cell0001.png",
        "in_domain": True,
        "copy_of": {"source": "pool", "key": "o1"},
        "transform": "byte_copy",
    },
}
PRESENT = ["o1", "c1", "c1b", "o2", "c2", "x", "y", "e1"]  # "b" removed at ingest


def test_dedup_precision_counts_original_and_copies_of_same_group():
    groups = {"o1": 1, "c1": 1, "c1b": 1, "o2": 2, "c2": 5, "x": 3, "y": 3, "e1": 4}
    removals = [("c1", "o1"), ("o1", "c1b"), ("y", "x")]  # 2 right (same planted group), 1 unplanted
    s = score_dedup(GT, PRESENT, removals, groups)
    assert s["dedup.planted_pairs"] == 3  # c1-o1, c1b-o1, c2-o2; the byte copy is excluded
    assert s["dedup.pairs_found"] == 2 and abs(s["dedup.recall"] - 2 / 3) < 1e-9
    assert abs(s["dedup.precision"] - 2 / 3) < 1e-9
    assert s["dedup.unplanted"] == 1 and s["dedup.unplanted_adjacent_elpv_cells"] == 1


def test_decontam_and_retrieval_scores():
    d = score_decontam(GT, PRESENT, [("e1", "cell0009.png"), ("x", "cell0003.png")])
    assert d["decontam.recall"] == 1.0 and d["decontam.precision"] == 0.5
    assert d["decontam.unplanted"] == 1 and d["decontam.unplanted_adjacent_elpv_cells"] == 1  # cell0002 vs cell0003
    r = score_retrieval(GT, PRESENT, ["o1", "x", "o2", "y"])
    assert r["retrieve.in_domain_precision"] == 0.75
    assert abs(r["retrieve.pool_in_domain_rate"] - 6 / 8) < 1e-9
