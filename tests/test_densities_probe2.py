"""dynopt.densities on flows a user writes (`AbstractFlow` / `AbstractSDE` subclasses with their
own `diffusion`), found by probing: which noise the routes may take.

References are independent of dynopt: the Gaussian of an OU process with the variance rate the
user wrote down."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import densities as D, sde
from dynopt.flows import AbstractFlow


_WELL = dynopt.Problem(lambda x: 0.5 * jnp.sum(x * x), jnp.zeros(1))
_GRID = np.linspace(-3.0, 3.0, 61)


class _OU:
    # dx = -x dt + g(x) dW on `_WELL`: the flow methods both models share (each writes its g).
    def init(self, params):
        return params

    def vector_field(self, t, state, problem):
        return -problem.grad(state)

    def params(self, state):
        return state

    def discretize(self, step_size):
        raise NotImplementedError


class _Flat(_OU, AbstractFlow):
    # g(x) = s (1 + c x^2): additive only for c = 0. No `additive` declaration (a plain
    # AbstractFlow), so the routes must find out from the noise itself.
    s: float
    c: float

    def diffusion(self, t, state, problem):
        return jnp.reshape(self.s * (1.0 + self.c * state**2), (1, 1))


class _Declared(_OU, sde.AbstractSDE):
    # The same noise, declared additive by mistake.
    additive: ClassVar[bool] = True

    def diffusion(self, t, state, problem):
        return jnp.reshape(0.4 * (1.0 + state**2), (1, 1))

    def check(self, problem):
        del problem


@pytest.mark.parametrize("flow", [_Flat(0.4, 1.0), _Declared()], ids=["plain", "declared"])
@pytest.mark.parametrize(
    "route",
    [
        lambda f: D.stationary_density(f, _GRID, problem=_WELL),
        lambda f: D.path_integral(f, 0.0, 1.0, _GRID, 8, problem=_WELL),
        lambda f: D.short_time_density(f, 0.0, 0.05, _GRID, problem=_WELL),
        lambda f: D.monte_carlo_samples(f, 0.0, 1.0, jax.random.key(0), 4, dt=0.1, problem=_WELL),
    ],
    ids=["stationary", "path_integral", "short_time", "monte_carlo"],
)
def test_noise_flat_only_at_params0_is_refused(flow, route):
    # g = 0.4 (1 + x^2) has g' = 0 at params0 = 0: the routes took alpha = 0.16 everywhere and
    # returned the OU law N(0, 0.08) as the stationary density of an SDE whose noise grows as x^4.
    with pytest.raises(ValueError, match=r"diffusion depends on the state.*dynopt\.sde\.simulate"):
        route(flow)


def test_constant_noise_of_a_plain_flow_is_still_a_density_model():
    # c = 0: dx = -x dt + 0.4 dW, the OU law N(0, 0.16 / 2) at stationarity.
    dens = D.stationary_density(_Flat(0.4, 0.0), _GRID, problem=_WELL)
    var = 0.16 / 2
    exact = np.exp(-0.5 * _GRID**2 / var)
    exact /= exact.sum() * (_GRID[1] - _GRID[0])
    np.testing.assert_allclose(dens, exact, rtol=1e-12, atol=1e-15)


def test_a_pytree_start_is_a_value_error_naming_x0():
    # The routes act on the raveled state: a dict of arrays (a flow's params) was a bare
    # `TypeError: float() argument ... not 'dict'` from inside numpy.
    vec = D.linear_vector_sde(-jnp.eye(2), 1.0)
    axes = (np.linspace(-3.0, 3.0, 31),) * 2
    x0 = {"a": jnp.array(0.1), "b": jnp.array(0.2)}
    routes = {
        "path_integral_nd": lambda: D.path_integral_nd(vec, x0, 0.5, axes, 4),
        "random_walk_nd": lambda: D.random_walk_nd(vec, x0, 0.5, 0.05, [(-3, 3)] * 2),
        "monte_carlo_samples_nd": lambda: D.monte_carlo_samples_nd(
            vec, x0, 0.5, jax.random.key(0), 16, dt=0.05
        ),
        "path_integral": lambda: D.path_integral(
            D.linear_sde(-1.0, 1.0), {"a": jnp.array(0.1)}, 0.5, axes[0], 4
        ),
    }
    for route in routes.values():
        with pytest.raises(ValueError, match=r"x0 must be an array .*ravel_pytree"):
            route()
