"""`sde.simulate`'s default step on a drift whose rate changes with time: the step resolves the
fastest rate over the simulated interval, not the rate at its start."""

from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import dynopt
from dynopt import sde
from dynopt._sde import simulate as sde_simulate


QUAD = dynopt.Problem(lambda x: 0.5 * jnp.sum(x * x), jnp.array([0.0]))


class _AbstractUserSDE(sde.AbstractSDE):
    """A user's flow with noise on the parameters themselves, declared additive."""

    additive: ClassVar[bool] = True

    def init(self, params):
        return params

    def params(self, state):
        return state

    def discretize(self, h):
        raise NotImplementedError

    def check(self, problem):
        pass


class Stiffening(_AbstractUserSDE):
    r"""$d\theta = -(1 + r t)\nabla L\,dt + dW$: a user's flow whose drift rate grows with $t$."""

    rate: float

    def vector_field(self, t, state, problem):
        return -(1.0 + self.rate * t) * problem.grad(state)

    def diffusion(self, t, state, problem):
        return jnp.ones((1, 1))


def _exact_variance(rate: float) -> float:
    # v' = -2(1 + r t) v + 1, v(0) = 0: the variance of the linear SDE at t = 1
    sol = solve_ivp(lambda t, v: -2 * (1 + rate * t) * v + 1, (0, 1), [0.0], rtol=1e-12, atol=1e-14)
    return float(sol.y[0, -1])


@pytest.mark.parametrize("rate", [30.0])
def test_default_step_resolves_a_drift_that_stiffens_with_time(rate):
    num_paths = 4_000
    paths = sde.simulate(
        Stiffening(rate), QUAD, jnp.array([0.0, 1.0]), jax.random.key(0), num_paths
    )
    # The fastest rate on [0, 1] is 1 + r at t = 1 (at t = 0 it is 1: a step of 0.05)
    assert float(paths.dt) == pytest.approx(0.05 / (1.0 + rate), rel=1e-12)
    y = np.asarray(paths.ys[:, -1, 0])
    exact = _exact_variance(rate)
    # The sample variance of P Gaussian draws has relative standard error sqrt(2/P); ShARK's
    # weak error at h*rho = 0.05 is far below it; 4 standard errors: a false alarm 1 in 15,000 (the
    # step at the start, 0.05, gave 0.37 and 560 times the exact variance).
    assert abs(y.var() / exact - 1) < 4 * np.sqrt(2 / num_paths)


def test_drift_rate_over_an_interval():
    langevin = sde.Langevin(0.5)
    quad = dynopt.problems.quadratic(jnp.array([1.0, 4.0]))
    # A drift that does not depend on t: the same rate at t0 and over [0, 3]
    assert sde_simulate.drift_rate(langevin, quad, quad.params0, 0.0, 3.0) == pytest.approx(
        4.0, 1e-12
    )
    stiff = Stiffening(30.0)
    assert sde_simulate.drift_rate(stiff, QUAD, QUAD.params0, 0.0) == pytest.approx(1.0, 1e-12)
    assert sde_simulate.drift_rate(stiff, QUAD, QUAD.params0, 0.0, 1.0) == pytest.approx(
        31.0, 1e-12
    )


def test_drift_rate_over_an_interval_above_the_dense_size():
    # 600 state entries: power iterations, at every time since the products depend on t
    big = dynopt.Problem(lambda x: 0.5 * jnp.sum(x * x), jnp.zeros(600))
    stiff = Stiffening(30.0)
    assert sde_simulate.drift_rate(stiff, big, big.params0, 0.0) == pytest.approx(1.0, 1e-9)
    assert sde_simulate.drift_rate(stiff, big, big.params0, 0.0, 1.0) == pytest.approx(31.0, 1e-9)


class _DeclaredAdditive(_AbstractUserSDE):
    r"""$d\theta = -\nabla L\,dt + 0.4(1 + \theta^2)\,dW$, declared additive by mistake."""

    def vector_field(self, t, state, problem):
        return -problem.grad(state)

    def diffusion(self, t, state, problem):
        return jnp.diag(0.4 * (1.0 + state**2))


def test_noise_declared_additive_but_state_dependent_is_refused_for_additive_solvers():
    # ShARK drops the dg/dx terms: the paths would be another SDE's. The noise is flat at
    # x0 = 0 (its derivative is 0 there): only its values elsewhere show it.
    flow, ts = _DeclaredAdditive(), jnp.array([0.0, 0.5])
    with pytest.raises(ValueError, match=r"declares additive noise.*depends on the state"):
        sde.simulate(flow, QUAD, ts, jax.random.key(0), 8)
    with pytest.raises(ValueError, match=r"declares additive noise.*depends on the state"):
        sde.first_passage(flow, QUAD, lambda y: y[0] > 1.0, 1.0, jax.random.key(0), 8, dt=0.1)
    # Euler-Maruyama is right for any noise: asked for, it runs
    paths = sde.simulate(flow, QUAD, ts, jax.random.key(0), 8, solver=diffrax.Euler())
    assert paths.solver == "Euler"
