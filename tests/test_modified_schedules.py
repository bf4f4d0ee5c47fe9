"""`modified_flow` on a researcher's own optax chains: what it says of a warm-up schedule
from 0, optax's standard recipe."""

import optax
import pytest

import dynopt
from dynopt import problems


@pytest.mark.parametrize("momentum", [0.5, 0.9])
@pytest.mark.parametrize("init", [0.01, 0.0])
def test_warmup_from_zero_is_refused_for_its_decay_not_as_a_cycle(init, momentum):
    """`optax.warmup_cosine_decay_schedule(0.0, peak, warmup, decay_steps)` (end value 0) in
    steps decays to 0: no continuous model, and `modified_flow` says so for a warm-up from
    0.01. From 0 its first step does not move the parameters, every later one does, and the
    refusal claimed a step that moves only every N = 1-th step (optax.MultiSteps)."""
    unit = optax.warmup_cosine_decay_schedule(init, 1.0, 10, 1000)
    opt = lambda h: optax.sgd(lambda k: h * unit(k), momentum=momentum)
    with pytest.raises(ValueError) as info:
        dynopt.modified_flow(opt, 0.01, problem=problems.logcosh())
    assert "modulo" not in str(info.value)
    assert "decays to 0" in str(info.value)
