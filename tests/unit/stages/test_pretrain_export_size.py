"""The input size a pretrain export records: a warm-started CNN keeps its start's."""

from __future__ import annotations

import json
from pathlib import Path

import timm

from pipeline.stages.pretrain import export_input_size
from tests.unit.pretrain_tiny import tiny_vit


def test_a_warm_started_cnn_records_its_starting_size() -> None:
    lite0 = timm.create_model("tf_efficientnet_lite0", num_classes=0)  # pretrained_cfg: 224 px
    lite2 = timm.create_model("tf_efficientnet_lite2", num_classes=0)  # 260 px
    assert export_input_size(lite0, "efficientnet_lite0_pypi", 128) == 224
    assert export_input_size(lite2, "efficientnet_lite2_pypi", 128) == 260


def test_random_init_and_vits_record_the_crop_size() -> None:
    lite0 = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    assert export_input_size(lite0, None, 128) == 128
    assert export_input_size(tiny_vit(depth=1), "some/export", 96) == 96


def test_a_start_from_an_export_records_the_size_the_export_records(tmp_path: Path) -> None:
    lite0 = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    cfg = {"architecture": "tf_efficientnet_lite0", "pretrained_cfg": {"input_size": [3, 160, 160]}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert export_input_size(lite0, str(tmp_path), 128) == 160
