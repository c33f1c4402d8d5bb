"""End to end: the eval stage on a tiny synthetic evaluation set, with a fake pretrain export."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from safetensors.torch import save_file

from pipeline.config import register_configs
from pipeline.core.manifest import Manifest, read_manifest
from pipeline.io.shards import AtomicShardWriter, shard_path

CONF = str(Path(__file__).resolve().parents[2] / "conf")
TASKS = {
    "defect": {
        "column": "defect",
        "classes": ["ok", "bad"],
        "primary": True,
        "description": "bright spot",
        "normal": "ok",
    },
    "type": {"column": "type", "classes": ["a", "b"], "primary": False, "description": "stripes"},
}


def _eval_set(folder: Path, n: int = 48) -> None:
    rng = np.random.default_rng(0)
    records = []
    with AtomicShardWriter(shard_path(folder, 0)) as w:
        for i in range(n):
            bad, typ = int(i % 3 == 0), i % 2
            img = rng.integers(0, 60, size=(32, 32)).astype(np.uint8)
            if typ:
                img[::4] += 80  # stripes
            if bad:
                img[10:16, 10:16] = 255
            buf = io.BytesIO()
            Image.fromarray(img, mode="L").save(buf, format="PNG")
            key = f"{i:020x}"
            labels = {"split": "test" if i % 10 < 3 else "train", "defect": ["ok", "bad"][bad], "type": "ab"[typ]}
            meta = {"id": key, "source": f"img{i}.png", "mode": "L", "width": 32, "height": 32, "labels": labels}
            w.write(key, "png", buf.getvalue(), meta)
            records.append({**meta, "status": "accepted"})
        w.close(records)
    Manifest(stage="ingest/eval", config_hash="tinyeval", extra={"tasks": TASKS}).write(folder)


def _pretrain_export(folder: Path) -> None:
    torch.manual_seed(1)
    model = timm.create_model("test_vit", num_classes=0, img_size=32)
    (folder / "export").mkdir(parents=True)
    save_file(model.state_dict(), str(folder / "export" / "model.safetensors"))
    (folder / "export" / "config.json").write_text(
        json.dumps({"architecture": "test_vit", "model_kwargs": {"img_size": 32}, "pretrained_cfg": {}})
    )
    Manifest(stage="pretrain", config_hash="fake", artifacts={"export": "export"}).write(folder)


def _cfg(root: Path, *extra: str):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                f"paths.root={root}",
                f"paths.output_dir={root}/out",
                "stage=eval",
                "progress=false",
                "eval.fractions=[0.25,1.0]",
                "eval.seeds=[0,1]",
                "eval.finetune.enabled=true",
                "eval.finetune.seeds=[0]",
                "eval.finetune.fractions=[1.0]",
                "eval.finetune.min_steps=2",
                "eval.finetune.epochs=1",
                "eval.finetune.img_size=32",
                "eval.finetune.accelerator=cpu",
                "eval.linear_probe.c_grid=[0.1,1.0]",
                "eval.backbones=[{name:domain,role:domain,weights:" + f"{root}/out/pretrain" + "},"
                "{name:random_init,arch:test_efficientnet,arch_from:domain,img_size:32},"
                "{name:raw_pixels,arch:raw_pixels,img_size:8,finetune:false}]",
                *extra,
            ],
        )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _eval_set(tmp_path / "out" / "ingest" / "eval")
    return tmp_path


def test_eval_stage_with_export_tracking_and_resume(root: Path) -> None:
    from pipeline.app import run_pipeline

    _pretrain_export(root / "out" / "pretrain")
    cfg = _cfg(root, "tracking=local")
    m = run_pipeline(cfg)["eval"]
    rep = root / "out" / "eval" / "report"
    for name in (
        "report.md",
        "summary.png",
        "results.csv",
        "summary.csv",
        "label_efficiency_defect_finetune.png",
        "label_efficiency_type_knn.png",
        "label_efficiency_defect_linear_probe.png",
    ):
        assert (rep / name).is_file(), name
    assert [b["name"] for b in m.extra["backbones"]] == ["domain", "random_init", "raw_pixels"]
    # random_init copies the domain architecture (a ViT fixed to 32 px) from the export.
    assert m.extra["backbones"][1]["arch"] == "test_vit"
    import csv

    rows = list(csv.DictReader((rep / "results.csv").open()))
    # 3 backbones x 2 tasks x 2 protocols x 2 fractions x 2 seeds x 5 folds (grouped cross-validation),
    # + fine-tuning on the fixed split: 2 nets x 1 task x 1 fraction x 1 seed,
    # + the patch protocol: 2 nets x the one task with a normal class x the 5 folds of the first partition.
    assert len(rows) == 3 * 2 * 2 * 2 * 2 * 5 + 2 + 2 * 5
    assert {r["protocol"] for r in rows} == {"knn", "linear_probe", "finetune", "patchcore"}
    patch = [r for r in rows if r["protocol"] == "patchcore"]
    assert {(r["backbone"], r["task"], r["fraction"], r["fold"]) for r in patch} == {
        (b, "defect", "1.0", str(f)) for b in ("domain", "random_init") for f in range(5)
    }
    # The planted bright square is a local defect: the patch protocol finds it.
    assert all(float(r["auroc"]) > 0.8 for r in patch if r["auroc"] != "nan")
    assert (rep / "patch_heatmaps_defect_domain.png").is_file()
    for r in rows:
        assert 0.0 <= float(r["balanced_accuracy"]) <= 1.0
        assert r["auroc"] != ""
    full = [r for r in rows if r["fraction"] == "1.0" and r["task"] == "defect" and r["protocol"] == "knn"]
    assert {int(r["n_labels"]) + int(r["n_test"]) for r in full} == {48}  # every image, once on each side
    ft = [r for r in rows if r["protocol"] == "finetune"]
    assert {int(r["n_labels"]) for r in ft} == {33}  # fine-tuning: every train image of the fixed split (48 - 15 test)
    md = (rep / "report.md").read_text()
    assert "## Headline" in md and "domain" in md
    assert md.index("summary.png") < md.index("## Headline") and "stratified group 5-fold" in md
    assert "defect.patchcore.domain.auroc" in m.metrics
    assert any(k.endswith("label_fraction_to_match") or k.endswith(".p100") for k in m.metrics)
    # MLflow: one nested run per backbone, under the stage run.
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["elpv_demo"], output_format="list")
    names = {r.info.run_name for r in runs}
    assert {"eval:domain", "eval:random_init", "eval:raw_pixels", "eval"} <= names
    dom = next(r for r in runs if r.info.run_name == "eval:domain")
    assert "defect.knn.balanced_accuracy.p100" in dom.data.metrics
    # A re-run with the same config is skipped: the manifest is not rewritten.
    before = (root / "out" / "eval" / "manifest.json").read_text()
    from pipeline.stages import eval as eval_stage

    eval_stage.run(_cfg(root, "tracking=off"))
    assert (root / "out" / "eval" / "manifest.json").read_text() == before


def test_eval_stage_without_pretrain_evaluates_baselines_and_says_so(root: Path) -> None:
    from pipeline.stages import eval as eval_stage

    m = eval_stage.run(_cfg(root, "tracking=off", "eval.finetune.enabled=false", "eval.tasks=[type]"))
    assert [b["name"] for b in m.extra["backbones"]] == ["random_init", "raw_pixels"]
    assert m.extra["backbones"][0]["arch"] == "test_efficientnet"  # its own arch: no export to copy
    assert "pretrain stage has not run" in m.extra["skipped"][0]
    md = (root / "out" / "eval" / "report" / "report.md").read_text()
    assert "No domain backbone was evaluated" in md
    # Stripes are visible in raw pixels: the sanity floor learns the 'type' task.
    summary = read_manifest(root / "out" / "eval").metrics
    assert summary["type.linear_probe.raw_pixels.auroc.p100"] > 0.8


def test_a_result_deleted_from_a_finished_eval_is_redone(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from pipeline.stages import eval as eval_stage

    cfg = _cfg(
        root,
        "tracking=off",
        "eval.finetune.enabled=false",
        "eval.tasks=[type]",
        "eval.backbones=[{name:raw_pixels,arch:raw_pixels,img_size:8,finetune:false}]",
    )
    eval_stage.run(cfg)
    results = root / "out" / "eval" / "report" / "results.csv"
    before = results.read_text()
    lines = before.splitlines(keepends=True)
    assert len(lines) == 1 + 2 * 2 * 2 * 5  # header + 2 protocols x 2 fractions x 2 seeds x 5 folds
    results.write_text("".join(lines[:-1]))
    with caplog.at_level(logging.INFO):
        eval_stage.run(cfg)
    assert "eval: 1 output files in" in caplog.text and "report/results.csv (" in caplog.text
    assert results.read_text() == before
    caplog.clear()
    with caplog.at_level(logging.INFO):
        eval_stage.run(cfg)
    assert "match the config" in caplog.text


def test_missing_cells_are_an_error_naming_them() -> None:
    from pipeline.stages.eval import check_cells

    want = {("a", "t", "knn", f, s, 0) for f in (0.5, 1.0) for s in (0, 1)}
    rows = [
        {"backbone": "a", "task": "t", "protocol": "knn", "fraction": c[3], "seed": c[4], "fold": 0}
        for c in sorted(want)[:-1]
    ]
    with pytest.raises(RuntimeError, match=r"1 cells missing .*: a/t/knn/1.0/1/0"):
        check_cells(rows, want)
    with pytest.raises(RuntimeError, match=r"1 cells repeated"):
        check_cells(rows + rows[:1] + [{**rows[0], "fraction": 1.0, "seed": 1}], want)
    with pytest.raises(RuntimeError, match=r"1 cells not asked for"):
        check_cells([*rows, {**rows[0], "fraction": 1.0, "seed": 1, "fold": 1}], want)
    check_cells([*rows, {**rows[0], "fraction": 1.0, "seed": 1}], want)


def test_the_fixed_split_protocol_stays_available(root: Path) -> None:
    from pipeline.stages import eval as eval_stage

    cfg = _cfg(
        root,
        "tracking=off",
        "eval.protocol=split",
        "eval.finetune.enabled=false",
        "eval.tasks=[type]",
        "eval.backbones=[{name:raw_pixels,arch:raw_pixels,img_size:8,finetune:false}]",
    )
    m = eval_stage.run(cfg)
    import csv

    rows = list(csv.DictReader((root / "out" / "eval" / "report" / "results.csv").open()))
    assert len(rows) == 2 * 2 * 2 and {r["fold"] for r in rows} == {"0"}
    assert {int(r["n_test"]) for r in rows} == {15}  # the recipe's test split
    assert "fixed split" in (root / "out" / "eval" / "report" / "report.md").read_text()
    assert m.counts["runs"] == 8
