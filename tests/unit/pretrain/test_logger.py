from pathlib import Path

from pipeline.core import tracking
from pipeline.pretrain.logger import StageLogger, read_metrics


def test_metrics_go_to_jsonl_and_the_stage_child_run(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with (
        tracking.parent_run(True, uri, "t", str(tmp_path / "art"), "parent", {}),
        tracking.child_run("pretrain") as child_id,
    ):
        lg = StageLogger(tmp_path)
        lg.log_metrics({"train/loss": 2.0, "knn/defect": 0.7}, step=3)
        lg.log_metrics({"train/loss": 1.5}, step=4)
    assert read_metrics(tmp_path, "train/loss") == {3: 2.0, 4: 1.5}
    hist = mlflow.tracking.MlflowClient(uri).get_metric_history(child_id, "train/loss")
    assert [(m.step, m.value) for m in hist] == [(3, 2.0), (4, 1.5)]
