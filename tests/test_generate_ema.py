"""The moving average of the generative trainer's weights (what ``model.pt`` holds), checked by hand."""

from __future__ import annotations

import pytest
import torch

from localframe.errors import InputError
from localframe.generate.train import MovingAverage


def _module():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).double()
    module[1].running_mean.fill_(7.0)  # a buffer: saved as it is, never averaged
    return module


def test_average_follows_the_recursion_and_keeps_buffers():
    module = _module()
    average = MovingAverage(module, 0.9)
    weight = module[0].weight
    expected = weight.detach().clone()
    for k in range(3):
        with torch.no_grad():
            weight.add_(float(k + 1))
        average.update()
        expected = 0.9 * expected + 0.1 * weight.detach()
    state = average.state_dict()
    torch.testing.assert_close(state["0.weight"], expected, rtol=0, atol=1e-12)
    assert not torch.equal(state["0.weight"], weight.detach())  # not the live weight
    torch.testing.assert_close(state["1.running_mean"], torch.full((2,), 7.0, dtype=torch.float64))
    assert set(state) == set(module.state_dict())


def test_decay_zero_is_the_last_step_and_decay_one_is_refused():
    module = _module()
    average = MovingAverage(module, 0.0)
    with torch.no_grad():
        module[0].bias.add_(3.0)
    average.update()
    torch.testing.assert_close(average.state_dict()["0.bias"], module[0].bias.detach(), rtol=0, atol=0)
    with pytest.raises(InputError, match="ema_decay"):
        MovingAverage(module, 1.0)
