import itertools
import math

import pytest

from pipeline.pretrain.schedules import Schedules, cosine, linear, warmup_cosine


def test_cosine_and_linear_end_points() -> None:
    assert cosine(0, 10, 1.0, 0.0) == pytest.approx(1.0)
    assert cosine(5, 10, 1.0, 0.0) == pytest.approx(0.5)
    assert cosine(10, 10, 1.0, 0.0) == pytest.approx(0.0)
    assert cosine(99, 10, 1.0, 0.0) == pytest.approx(0.0)
    assert linear(5, 10, 0.04, 0.07) == pytest.approx(0.055)
    assert linear(50, 10, 0.04, 0.07) == pytest.approx(0.07)


def test_warmup_then_cosine() -> None:
    vals = [warmup_cosine(s, 100, 10, 1.0, 0.0) for s in range(100)]
    assert vals[0] == pytest.approx(0.1) and vals[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(vals[10:]))  # non-increasing after warm-up
    assert vals[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_schedules_follow_dino_shapes() -> None:
    s = Schedules(
        total_steps=100,
        steps_per_epoch=10,
        lr=1e-3,
        warmup_epochs=1,
        momentum_start=0.99,
        warmup_teacher_temp=0.04,
        teacher_temp=0.07,
        warmup_teacher_temp_epochs=3,
        freeze_last_layer_epochs=1,
    )
    assert s.learning_rate(9) == pytest.approx(1e-3)
    assert s.wd(0) == pytest.approx(0.04) and s.wd(100) == pytest.approx(0.4)
    assert s.momentum(0) == pytest.approx(0.99) and s.momentum(100) == pytest.approx(1.0)
    assert s.teacher_temperature(0) == pytest.approx(0.04) and s.teacher_temperature(30) == pytest.approx(0.07)
    assert s.last_layer_frozen(9) and not s.last_layer_frozen(10)


def test_backbone_frozen_then_ramped() -> None:
    s = Schedules(total_steps=100, steps_per_epoch=10, lr=1.0, freeze_backbone_epochs=2, backbone_warmup_epochs=1)
    assert [s.backbone_frozen(i) for i in (0, 19, 20)] == [True, True, False]
    assert [s.backbone_factor(i) for i in (0, 19, 20, 24, 29, 30, 99)] == pytest.approx(
        [0.0, 0.0, 0.1, 0.5, 1.0, 1.0, 1.0]
    )
    assert Schedules(total_steps=10, steps_per_epoch=10, lr=1.0).backbone_factor(0) == 1.0  # defaults: off
