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


def test_neighbouring_cells_are_their_own_category():
    gt = {
        **GT,
        "x": {**GT["x"], "elpv_cell": 2},
        "y": {"origin": "elpv/cell0003.png", "in_domain": True, "elpv_cell": 3},
    }
    groups = {"o1": 1, "c1": 1, "c1b": 1, "o2": 2, "c2": 5, "x": 3, "y": 3, "e1": 4}
    s = score_dedup(gt, PRESENT, [("c1", "o1"), ("o1", "c1b"), ("y", "x")], groups)
    assert s["dedup.neighbour_cell_removals"] == 1 and abs(s["dedup.neighbour_cell_rate"] - 1 / 3) < 1e-9
    assert s["dedup.precision_planted"] == 1.0 and abs(s["dedup.precision"] - 2 / 3) < 1e-9
    s = score_dedup(gt, PRESENT, [("c1", "o1"), ("o2", "x")], groups)  # a face and a cell: plainly wrong
    assert s["dedup.neighbour_cell_removals"] == 0 and s["dedup.precision_planted"] == 0.5
    d = score_decontam(gt, PRESENT, [("e1", "cell0009.png"), ("x", "cell0003.png")])
    assert d["decontam.neighbour_cell_removals"] == 1 and d["decontam.precision_planted"] == 1.0


def test_two_pool_copies_of_one_eval_image_are_one_planted_group():
    gt = {
        "a": {"origin": "t", "copy_of": {"source": "eval", "key": "e.png"}, "transform": "jpeg"},
        "b": {"origin": "t", "copy_of": {"source": "eval", "key": "e.png"}, "transform": "flip"},
        "c": {"origin": "u", "copy_of": {"source": "eval", "key": "f.png"}, "transform": "flip"},
    }
    s = score_dedup(gt, ["a", "b", "c"], [("b", "a"), ("c", "a")], {"a": 0, "b": 0, "c": 0})
    assert s["dedup.removed_correct"] == 1 and s["dedup.precision"] == 0.5


def test_distinct_cells_of_one_module_are_their_own_category():
    gt = {
        **GT,
        "x": {**GT["x"], "elpv_cell": 2, "elpv_module": 0},
        "y": {"origin": "elpv/cell0040.png", "in_domain": True, "elpv_cell": 40, "elpv_module": 0},
        "z": {"origin": "elpv/cell0090.png", "in_domain": True, "elpv_cell": 90, "elpv_module": 1},
    }
    present = [*PRESENT, "z"]
    groups = {"o1": 1, "c1": 1, "c1b": 1, "o2": 2, "c2": 5, "x": 3, "y": 3, "z": 3, "e1": 4}
    # one correct removal, one pair of distinct cells of module 0, one across modules 0 and 1
    s = score_dedup(gt, present, [("c1", "o1"), ("y", "x"), ("z", "x")], groups)
    assert s["dedup.same_module_removals"] == 1 and s["dedup.neighbour_cell_removals"] == 0
    assert abs(s["dedup.precision_distinct"] - 1 / 2) < 1e-9 and abs(s["dedup.precision"] - 1 / 3) < 1e-9


def test_two_images_of_one_cell_are_a_correct_unplanted_removal():
    gt = {
        **GT,
        "x": {**GT["x"], "elpv_cell": 1740, "elpv_same_cell": 1740, "elpv_module": 29},
        "y": {"origin": "elpv/cell2282.png", "in_domain": True, "elpv_cell": 2282, "elpv_same_cell": 1740},
    }
    groups = {"o1": 1, "c1": 1, "c1b": 1, "o2": 2, "c2": 5, "x": 3, "y": 3, "e1": 4}
    s = score_dedup(gt, PRESENT, [("c1", "o1"), ("y", "x")], groups)
    assert s["dedup.same_cell_removals"] == 1 and s["dedup.precision"] == 1.0
