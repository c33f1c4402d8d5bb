"""The input size a pretrain export records: a warm-started CNN keeps its start's."""

from __future__ import annotations

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
