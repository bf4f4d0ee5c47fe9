r"""Overdamped Langevin and the Kramers (underdamped Langevin) equation, with their Gibbs laws."""

from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Float, Params, Scalar, ScalarLike
from .._problem import Problem
from .base import AbstractSDE, check_scalar_potential


def _check_nonnegative(name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    arr = np.asarray(value, dtype=float)
    if arr.shape != () or not np.isfinite(arr) or arr < 0:
        raise ValueError(f"{name} must be a finite scalar >= 0, got {value}.")


def _flat_potential(potential: Callable | Problem, x: Float[Array, " d"]) -> Scalar:
    if isinstance(potential, Problem):
        return potential.loss(ravel_pytree(potential.params0)[1](x))
    return potential(x)


def _as_vector(potential: Callable | Problem, x0: Params) -> Float[Array, " d"]:
    if isinstance(potential, Problem):
        if x0 is None:
            x0 = potential.params0
        return ravel_pytree(x0)[0]
    if x0 is None:
        raise ValueError("x0 is required when the potential is a plain callable.")
    return jnp.atleast_1d(jnp.asarray(x0, dtype=float))


def _unravel(potential: Callable | Problem, x: Float[Array, " d"]) -> Params:
    if isinstance(potential, Problem):
        return ravel_pytree(potential.params0)[1](x)
    return x


class Langevin(AbstractSDE):
    r"""Overdamped Langevin dynamics at temperature $T$:

    $$d\theta = -\nabla L(\theta)\,dt + \sqrt{2T}\,dW,\qquad
      p_\infty(\theta) \propto e^{-L(\theta)/T}.$$

    With $\sigma = \sqrt{2T}$ this is post 1's eq. (8), whose Gibbs law is
    $\exp(-2L/\sigma^2)$ (not eq. (9)'s $\exp(-L/\sigma^2)$). SGD with isotropic gradient noise of
    variance $\sigma_g^2$ per sample, learning rate $\eta$ and batch $B$ is this SDE at
    $T = \eta\sigma_g^2/(2B)$ on the clock $t = k\eta$. Additive noise: `simulate` uses ShARK.

    **Arguments:**

    - `potential`: $L$, a callable on 1-D arrays returning a scalar, or a `dynopt.Problem`
      (its `loss`, on the raveled parameters).
    - `temperature`: $T \ge 0$ ($T = 0$ is the gradient flow).

    **Raises:** `ValueError` for a negative temperature, a non-callable potential, or (in
    `simulate`) a potential that is not scalar-valued.
    """

    potential: Callable | Problem
    temperature: Array
    additive: ClassVar[bool] = True

    def __init__(self, potential: Callable | Problem, temperature: ScalarLike):
        if not (isinstance(potential, Problem) or callable(potential)):
            raise ValueError(
                f"potential must be callable x -> scalar or a dynopt.Problem, got "
                f"{type(potential).__name__}."
            )
        _check_nonnegative("temperature", temperature)
        self.potential = potential
        self.temperature = jnp.asarray(temperature, dtype=float)

    def init(self, x0: Params = None) -> Float[Array, " d"]:
        return _as_vector(self.potential, x0)

    def check(self, y0: Float[Array, " d"]) -> None:
        check_scalar_potential("potential", lambda x: _flat_potential(self.potential, x), y0)

    def loss(self, x: Float[Array, " d"]) -> Scalar:
        """$L$ on the flat state."""
        return _flat_potential(self.potential, x)

    def drift(self, t, y, args):
        del t, args
        return -jax.grad(self.loss)(y)

    def diffusion(self, t, y, args):
        del t, args
        scale = jnp.sqrt(2.0 * self.temperature).astype(y.dtype)
        return lx.DiagonalLinearOperator(jnp.full(y.shape, scale))

    def noise_dim(self, y0):
        return y0.shape[0]

    def params(self, y):
        return _unravel(self.potential, y)

    def log_stationary_density(self, y: Float[Array, " d"]) -> Scalar:
        """Unnormalised $\\log p_\\infty = -L(\\theta)/T$."""
        return -self.loss(y) / self.temperature


class Kramers(AbstractSDE):
    r"""The Kramers equation (post 1, eq. 21): heavy-ball dynamics with friction $\gamma$ and noise,

    $$d\theta = v\,dt,\qquad dv = -\gamma v\,dt - \nabla L(\theta)\,dt + \sqrt{2\gamma T}\,dW,$$
    $$p_\infty(\theta, v) \propto \exp\!\Big(-\frac{\|v\|^2/2 + L(\theta)}{T}\Big)
      \quad(\gamma > 0).$$

    Written as post 1's $\ddot\theta + \gamma\dot\theta = -\nabla L + \sigma\xi$,
    $T = \sigma^2/(2\gamma)$: the law is $\exp(-\frac{2\gamma}{\sigma^2}(v^2/2 + L))$; post 1's
    eq. (22) is the case $\gamma = 1/2$. Its $\theta$-marginal is the overdamped Gibbs law
    $\propto e^{-L/T}$, for every $\gamma > 0$. At $\gamma = 0$ there is no normalisable
    stationary law (energy diffuses upward).

    The state is the flat vector $[\theta, v]$, starting from $v = 0$; `params(y)` is $\theta$.
    Additive noise: `simulate` uses ShARK.

    **Arguments:**

    - `potential`: $L$, as for `Langevin`.
    - `damping`: $\gamma \ge 0$.
    - `temperature`: $T \ge 0$.
    """

    potential: Callable | Problem
    damping: Array
    temperature: Array
    additive: ClassVar[bool] = True

    def __init__(self, potential: Callable | Problem, damping: ScalarLike, temperature: ScalarLike):
        if not (isinstance(potential, Problem) or callable(potential)):
            raise ValueError(
                f"potential must be callable x -> scalar or a dynopt.Problem, got "
                f"{type(potential).__name__}."
            )
        _check_nonnegative("damping", damping)
        _check_nonnegative("temperature", temperature)
        self.potential = potential
        self.damping = jnp.asarray(damping, dtype=float)
        self.temperature = jnp.asarray(temperature, dtype=float)

    def init(self, x0: Params = None) -> Float[Array, " 2d"]:
        x = _as_vector(self.potential, x0)
        return jnp.concatenate([x, jnp.zeros_like(x)])

    def _split(self, y):
        d = y.shape[0] // 2
        return y[:d], y[d:]

    def check(self, y0):
        x0, _ = self._split(y0)
        check_scalar_potential("potential", lambda x: _flat_potential(self.potential, x), x0)

    def loss(self, x: Float[Array, " d"]) -> Scalar:
        return _flat_potential(self.potential, x)

    def drift(self, t, y, args):
        del t, args
        x, v = self._split(y)
        gamma = self.damping.astype(y.dtype)
        return jnp.concatenate([v, -gamma * v - jax.grad(self.loss)(x)])

    def diffusion(self, t, y, args):
        del t, args
        d = y.shape[0] // 2
        scale = jnp.sqrt(2.0 * self.damping * self.temperature).astype(y.dtype)
        # Noise only on the velocity; the Brownian motion is 2d-dimensional for a diagonal map.
        return lx.DiagonalLinearOperator(
            jnp.concatenate([jnp.zeros(d, y.dtype), jnp.full(d, scale)])
        )

    def noise_dim(self, y0):
        return y0.shape[0]

    def params(self, y):
        return _unravel(self.potential, self._split(y)[0])

    def velocity(self, y: Float[Array, " 2d"]) -> Float[Array, " d"]:
        """The velocity part $v$ of a state."""
        return self._split(y)[1]

    def log_stationary_density(self, y: Float[Array, " 2d"]) -> Scalar:
        """Unnormalised $\\log p_\\infty = -(\\|v\\|^2/2 + L(\\theta))/T$."""
        x, v = self._split(y)
        return -(0.5 * jnp.sum(v * v) + self.loss(x)) / self.temperature
