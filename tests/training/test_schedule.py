"""Google's warmup + linear decay, by steps and by a wall-clock budget."""

from __future__ import annotations

import pytest
import torch

from bertkit.errors import BertkitError
from bertkit.training.args import OptimizerArgs
from bertkit.training.schedule import LinearSchedule


def schedule(**kw) -> LinearSchedule:
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.0)
    return LinearSchedule(opt, peak_lr=1.0, **kw)


def test_steps_follow_googles_formula():
    s = schedule(warmup_steps=10, max_steps=100)
    # warmup from 0; after it Google's polynomial decay from step 0 takes over: 1 - step/100
    assert [s.lr(k) for k in (0, 5, 9, 10, 50, 99, 100, 150)] == pytest.approx(
        [0.0, 0.5, 0.9, 0.9, 0.5, 0.01, 0.0, 0.0])


def test_time_budget_decays_with_elapsed_time():
    s = schedule(warmup_steps=0, max_time=100.0)
    assert s.lr(step=1000, elapsed=25.0) == pytest.approx(0.75)
    assert s.lr(step=3, elapsed=100.0) == 0.0


def test_steps_and_budget_take_the_further():
    s = schedule(warmup_steps=2, max_steps=100, max_time=10.0)
    assert s.lr(step=10, elapsed=5.0) == pytest.approx(0.5)  # time is further along
    assert s.lr(step=80, elapsed=1.0) == pytest.approx(0.2)  # steps are


def test_apply_sets_every_group():
    s = schedule(warmup_steps=4, max_steps=8)
    assert s.apply(2) == 0.5
    assert [g["lr"] for g in s.optimizer.param_groups] == [0.5, 0.5]


def test_warmup_resolution():
    assert OptimizerArgs().resolved_warmup(1000) == 100
    assert OptimizerArgs(warmup_steps=0).resolved_warmup(None) == 0
    with pytest.raises(BertkitError, match="needs --warmup-steps"):
        OptimizerArgs().resolved_warmup(None)
    with pytest.raises(BertkitError, match="less than --max-steps"):
        OptimizerArgs(warmup_steps=10).resolved_warmup(10)
