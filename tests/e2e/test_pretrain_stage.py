"""The pretrain stage end to end on tiny shards: train, kNN, export, manifest, skip on re-run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf

from pipeline.config.augment import AugmentConfig
from pipeline.config.models import BackboneConfig
from pipeline.models.backbone import create_backbone
from pipeline.pretrain.export import export_backbone
from pipeline.pretrain.logger import read_metrics
from pipeline.pretrain.methods.teacher_distillation import build_distillation
from pipeline.pretrain.onnx_export import onnx_features
from pipeline.stages import pretrain as stage
from tests.unit.pretrain_tiny import compose, make_output_dir, tiny_vit


def test_stage_trains_monitors_exports_and_skips(tmp_path: Path) -> None:
    out = make_output_dir(tmp_path)
    cfg = compose(
        tmp_path, "pretrain.trainer.max_epochs=1", "pretrain.monitor.knn_every_n_epochs=1", "pretrain.onnx=true"
    )
    m = stage.run(cfg)
    assert m.counts == {"images": 40, "steps": 5, "epochs": 1}
    assert m.extra["augment_preset"] == "grayscale"  # auto: the tiny images are mode L
    assert {"knn_start.stripe", "knn.stripe", "images_per_s", "loader_wait_frac", "final_loss"} <= set(m.metrics)
    assert 0.0 <= m.metrics["loader_wait_frac"] < 1.0 and m.metrics["images_per_s"] > 0
    folder = out / "pretrain"
    metrics = read_metrics(folder, "train/loss_ibot")
    assert len(metrics) == 5
    assert read_metrics(folder, "sched/teacher_temp") and read_metrics(folder, "perf/images_per_s")
    for name in ("diag/teacher_entropy", "diag/teacher_batch_entropy"):  # the collapse signals
        values = list(read_metrics(folder, name).values())
        assert len(values) == 5 and all(0.0 <= v <= 1.0 for v in values), (name, values)
    assert "collapse" in m.extra

    export = folder / "export"
    cfg_json = json.loads((export / "config.json").read_text())
    assert cfg_json["architecture"] == "vit_tiny_patch16_224"
    assert cfg_json["model_kwargs"]["patch_size"] == 8 and cfg_json["model_kwargs"]["img_size"] == 16
    model = create_backbone(BackboneConfig(cfg_json["architecture"], weights=str(export)))
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 32)
    assert cfg_json["onnx"]["file"] == "backbone.onnx" and m.extra["onnx"] == cfg_json["onnx"]
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    assert np.abs(onnx_features(export / "backbone.onnx", x.numpy()) - ref).max() < 1e-4
    assert "export/backbone.onnx" in m.files  # the skip-on-rerun check covers it

    again = stage.run(cfg)  # same config: skipped, same manifest
    assert again.created == m.created


@pytest.mark.parametrize("method", ["dino", "simclr"])
def test_other_methods_run(tmp_path: Path, method: str) -> None:
    make_output_dir(tmp_path)
    cfg = compose(
        tmp_path,
        f"pretrain/method={method}",
        "pretrain.trainer.max_steps=2",
        "pretrain.monitor.knn_every_n_epochs=-1",
        "pretrain.method.out_dim=64",
        "pretrain.method.hidden_dim=32",
    )
    m = stage.run(cfg)
    assert m.counts["steps"] == 2 and (tmp_path / "elpv_demo" / "pretrain" / "export" / "model.safetensors").is_file()
    key = "train/loss_ntxent" if method == "simclr" else "train/loss_dino"
    assert len(read_metrics(tmp_path / "elpv_demo" / "pretrain", key)) == 2


def test_step_budget_without_epoch_limit(tmp_path: Path) -> None:
    # The curation ablation fixes compute by steps (max_epochs=-1, max_steps=N); Lightning then
    # never sets the loader up before configure_optimizers unless the module asks for it.
    make_output_dir(tmp_path)
    cfg = compose(
        tmp_path,
        "pretrain.trainer.max_epochs=-1",
        "pretrain.trainer.max_steps=3",
        "pretrain.monitor.knn_every_n_epochs=-1",
        "pretrain.method.out_dim=64",
        "pretrain.method.hidden_dim=32",
    )
    assert stage.run(cfg).counts["steps"] == 3


def test_missing_curated_shards_name_the_fix(tmp_path: Path) -> None:
    make_output_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="stage=curate"):
        stage.run(compose(tmp_path, "pretrain.data.source=curate"))


def _teacher_export(tmp_path: Path) -> Path:
    """A random test_efficientnet exported as this stage does: the teacher a test can name."""
    torch.manual_seed(1)
    teacher = timm.create_model("test_efficientnet", num_classes=0)
    return export_backbone(teacher, tmp_path / "teacher", "test_efficientnet", {}, 64, (0.5,) * 3, (0.5,) * 3)


DISTILL = (
    "pretrain/method=distillation",
    "pretrain.augment.global_size=64",  # test_efficientnet has stride 32: a 2x2 map
    "pretrain.augment.local_crops=0",
    "pretrain.trainer.max_steps=3",
    "pretrain.monitor.knn_every_n_epochs=-1",
)


@pytest.mark.parametrize("student", ["cnn", "vit"])
def test_distillation_from_a_frozen_teacher(tmp_path: Path, student: str) -> None:
    make_output_dir(tmp_path)
    teacher = _teacher_export(tmp_path)
    cnn = (
        "pretrain.model.name=test_efficientnet",
        "pretrain.model.patch_size=null",
        *(f"~pretrain.model.kwargs.{k}" for k in ("depth", "embed_dim", "num_heads")),  # the tiny ViT's
    )
    cfg = compose(
        tmp_path,
        *DISTILL,
        "pretrain.method.teacher.name=test_efficientnet",
        f"pretrain.method.teacher.weights={teacher}",
        *(cnn if student == "cnn" else ()),
    )
    m = stage.run(cfg)
    assert m.counts["steps"] == 3
    folder = tmp_path / "elpv_demo" / "pretrain"
    assert len(read_metrics(folder, "train/loss_global")) == 3 and read_metrics(folder, "train/loss_dense")
    export = folder / "export"
    exported = json.loads((export / "config.json").read_text())
    assert exported["method"] == "distillation" and exported["teacher"]["weights"] == str(teacher)
    arch = "test_efficientnet" if student == "cnn" else "vit_tiny_patch16_224"
    assert exported["architecture"] == arch
    # the export is a plain backbone that the curate and eval stages load
    model = create_backbone(BackboneConfig(arch, weights=str(export))).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, exported["num_features"])


def test_distillation_pairs_that_cannot_be_matched_name_the_key(tmp_path: Path) -> None:
    make_output_dir(tmp_path)
    aug = AugmentConfig(global_size=16, local_size=8)
    student = tiny_vit()
    cfg = compose(tmp_path, "pretrain/method=distillation", "pretrain.method.teacher.weights=null")
    with pytest.raises(ValueError, match=r"pretrain\.method\.teacher\.weights is null"):
        build_distillation(OmegaConf.to_object(cfg.pretrain.method), student, aug, 40)
    cfg = compose(  # the default teacher, ImageNet EfficientNet-Lite0, has one position at 16 px
        tmp_path, "pretrain/method=distillation"
    )
    with pytest.raises(ValueError, match=r"16 px crops.*pretrain\.augment\.global_size"):
        build_distillation(OmegaConf.to_object(cfg.pretrain.method), student, aug, 40)
    cfg = compose(tmp_path, "pretrain.method.kind=distillation")  # the kind without its settings
    with pytest.raises(ValueError, match=r"pretrain/method=distillation"):
        stage.build_method(OmegaConf.to_object(cfg.pretrain.method), student)
