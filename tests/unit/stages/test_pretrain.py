"""The pretrain stage's own checks."""

from __future__ import annotations

from pipeline.stages import pretrain as stage


def test_a_run_that_ends_below_its_start_is_named() -> None:
    m = {"knn_start.defect": 0.80, "knn.defect": 0.78, "knn_start.type": 0.90, "knn.type": 0.903}
    assert stage.worse_than_start(m) == ["defect"]
    assert stage.worse_than_start({"knn.defect": 0.7}) == []  # a resumed run has no start figure
