"""`dynopt.modified_flow` on optimizers from outside dynopt's registry, checked against
optimizers they are identical to (probe of session 48)."""

import jax.numpy as jnp
import optax
import optax.contrib
import pytest

import dynopt
from dynopt._modified import modified_flow

from .helpers import tree_max_abs_diff


def _logcosh() -> dynopt.Problem:
    def loss(p):
        return jnp.sum(jnp.log(jnp.cosh(p["w"] - 1.0))) + 0.5 * jnp.sum(
            (p["b"] - jnp.tanh(p["w"][:2])) ** 2
        )

    # Negative parameters: ⟨m, θ⟩ < 0 for a positive state m (what put Momo's cap at 0).
    return dynopt.Problem(loss, {"w": jnp.zeros(4), "b": -jnp.ones(2)})


@pytest.mark.parametrize("beta", [0.9, 0.95])
def test_momo_is_ema_momentum_where_its_polyak_cap_is_inactive(beta):
    """Momo (optax.contrib.momo, lower bound 0, no weight decay) steps by
    min(h, (f̄ - γ + ⟨m, θ⟩)/‖m‖²)·m with m an EMA of gradients; on its slow manifold the cap
    is L/‖∇L‖² ≫ h, so it is the EMA heavy ball optax.sgd(h(1 - β), momentum=β), and the two
    modified flows are equal. Its counter is read only as a first-step flag: it was refused as
    "a schedule in steps that decays to 0", because from dynopt's generic test state its loss
    average sat below the lower bound, where Momo takes no step."""
    problem = _logcosh()
    h = 0.01
    momo = modified_flow(lambda h: optax.contrib.momo(h, beta=beta), h, order=2, problem=problem)
    ema = modified_flow(lambda h: optax.sgd(h * (1 - beta), momentum=beta), h, order=2)
    f_momo = momo.terms(momo.init(problem.params0), problem).fields
    f_ema = ema.terms(ema.init(problem.params0), problem).fields
    for a, b in zip(f_momo, f_ema, strict=True):
        scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in b.values())
        assert tree_max_abs_diff(a, b) <= 1e-13 * scale
    # A schedule that does decay to 0 is still refused, with its reason.
    with pytest.raises(ValueError, match="vanishes once the step counter is large"):
        modified_flow(lambda h: optax.adam(optax.exponential_decay(h, 10, 0.9)), 0.1)
