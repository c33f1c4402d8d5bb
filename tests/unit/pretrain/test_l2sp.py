"""L2-SP: zero at the start, half the weighted squared distance after a move, gradient towards the start."""

from __future__ import annotations

import pytest
import torch

from pipeline.pretrain.l2sp import L2SP


def test_penalty_is_the_weighted_squared_distance_to_the_start() -> None:
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 3)
    pull = L2SP(m, weight=0.2)
    assert float(pull(m)) == 0.0
    start = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(0.5)  # 12 entries moved by 0.5
    got = pull(m)
    assert float(got) == pytest.approx(0.5 * 0.2 * 12 * 0.25)
    got.backward()
    torch.testing.assert_close(m.weight.grad, 0.2 * (m.weight.detach() - start))
    assert "anchor_0" not in pull.state_dict()  # not part of checkpoints: rebuilt from the starting weights
