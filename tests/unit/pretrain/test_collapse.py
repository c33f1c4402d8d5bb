"""CollapseMonitor and the teacher-target entropy it reads."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch

from pipeline.pretrain.collapse import CollapseMonitor
from pipeline.pretrain.methods.self_distillation import target_entropy


def test_target_entropy_tells_uniform_dominant_and_healthy_apart() -> None:
    k, n = 64, 8
    center = torch.zeros(1, 1, k)
    same = torch.randn(1, k).repeat(n, 1)
    # every image gives the same output and the center equals it: uniform targets
    per, batch = target_entropy(same, same[:1].reshape(1, 1, k), temp=0.04)
    assert per.item() == pytest.approx(1.0, abs=1e-6) and batch.item() == pytest.approx(1.0, abs=1e-6)
    dominant = torch.zeros(n, k)
    dominant[:, 3] = 10.0  # one prototype for every image
    per, batch = target_entropy(dominant, center, temp=0.04)
    assert per.item() < 1e-3 and batch.item() < 1e-3
    healthy = torch.zeros(n, k)
    healthy[torch.arange(n), torch.arange(n)] = 10.0  # sharp, and a different prototype per image
    per, batch = target_entropy(healthy, center, temp=0.04)
    assert per.item() < 1e-3 and batch.item() == pytest.approx(1.0, abs=1e-3)  # log(8) of log(min(8, 64))
    x = torch.randn(n, k)
    mid, sharp = target_entropy(x, center, 1.0)[0].item(), target_entropy(x, center, 0.1)[0].item()
    assert 0.0 < sharp < mid < 1.0
    p = torch.softmax(x, -1)
    assert mid == pytest.approx((-(p * p.log()).sum(-1).mean() / math.log(k)).item(), rel=1e-5)


def _feed(mon: CollapseMonitor, values: list[float], start: int = 0, batch: float = 0.8) -> None:
    for i, v in enumerate(values):
        diag = {"teacher_entropy": torch.tensor(v), "teacher_batch_entropy": torch.tensor(batch)}
        method = SimpleNamespace(diagnostics=lambda d=diag: d)
        mon.on_train_batch_end(SimpleNamespace(global_step=start + i), SimpleNamespace(method=method), None, None, i)


def test_warns_once_after_patience_at_uniform(caplog: pytest.LogCaptureFixture) -> None:
    mon = CollapseMonitor(start_step=2, every=1, patience=3)
    with caplog.at_level(logging.WARNING, logger="pipeline.pretrain.collapse"):
        _feed(mon, [0.999, 0.999])  # warm-up steps are ignored
        _feed(mon, [0.99, 0.99, 0.5, 0.99, 0.99], start=2)  # a healthy reading resets the streak
        assert mon.warned is None and not caplog.records
        _feed(mon, [0.99, 0.995, 0.999], start=7)
    assert mon.warned == "uniform" and mon.last == pytest.approx(0.999)
    assert len(caplog.records) == 1 and "pretrain.optim.lr" in caplog.records[0].getMessage()


def test_dominant_prototype_and_reading_interval() -> None:
    mon = CollapseMonitor(start_step=0, every=5, patience=2)
    _feed(mon, [0.01] * 6, batch=0.8)  # sharp but different targets per image: healthy
    assert mon.warned is None
    _feed(mon, [0.01] * 6, batch=0.02)  # steps 0..5: read at 0 and 5 only
    assert mon.warned == "dominant"
    mon = CollapseMonitor(start_step=0, every=5, patience=2)
    _feed(mon, [0.01] * 5, batch=0.02)  # one read (step 0) is below the patience
    assert mon.warned is None


def test_start_step_from_the_module_schedules() -> None:
    mon = CollapseMonitor()
    sched = SimpleNamespace(warmup_epochs=0.3, freeze_last_layer_epochs=1.0, steps_per_epoch=40)
    mon.on_train_start(SimpleNamespace(), SimpleNamespace(schedules=sched))
    assert mon.start_step == 40
