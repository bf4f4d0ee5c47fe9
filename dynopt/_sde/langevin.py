r"""Overdamped Langevin and the Kramers (underdamped Langevin) equation: gradient flow and heavy
ball with thermal noise, and their Gibbs laws."""

from typing import ClassVar

import jax.numpy as jnp
import lineax as lx
import optax
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Params, Scalar, ScalarLike
from .._discretization import widest_dtype
from .._flows.gradient import GradientFlow
from .._flows.momentum import HeavyBall
from .._problem import Problem
from .._validation import hyperparameter, interval
from .base import AbstractNoisyFlow


def _isotropic(state, scale: Array) -> lx.DiagonalLinearOperator:
    flat = ravel_pytree(state)[0]
    return lx.DiagonalLinearOperator(jnp.full(flat.shape, scale.astype(flat.dtype)))


def _noise_scale(state, *factors: Array) -> Array:
    r"""$\sqrt{2\prod \text{factors}}$ in the widest of their dtypes and the state's: a bfloat16
    $T$ on float64 parameters had $\sqrt{2T}$ rounded to bfloat16 (3.7e-4), and a float32
    damping with a float64 temperature raised a strict-promotion error."""
    dtype = widest_dtype([*(jnp.dtype(f.dtype) for f in factors), ravel_pytree(state)[0].dtype])
    product = 2.0
    for f in factors:
        product = product * f.astype(dtype)
    return jnp.sqrt(product)


class Langevin(AbstractNoisyFlow):
    r"""Overdamped Langevin dynamics at temperature $T$: gradient flow with thermal noise,

    $$d\theta = -\nabla L(\theta)\,dt + \sqrt{2T}\,dW,\qquad
      p_\infty(\theta) \propto e^{-L(\theta)/T}.$$

    The drift is `GradientFlow`'s vector field. With $\sigma = \sqrt{2T}$ this is post 1's
    eq. (8), whose Gibbs law is $\exp(-2L/\sigma^2)$ (not eq. (9)'s $\exp(-L/\sigma^2)$). SGD with
    isotropic gradient noise of variance $\sigma_g^2$ per sample, learning rate $\eta$ and batch
    $B$ is this SDE at $T = \eta\sigma_g^2/(2B)$ on the clock $t = k\eta$. Additive noise:
    `simulate` uses ShARK. `dynopt.solve` integrates the drift: the gradient flow.

    **Arguments:**

    - `temperature`: $T \ge 0$ ($T = 0$ is the gradient flow); an array leaf, so new values
      reuse compiled simulations.

    **Raises:** `ValueError` for a negative or non-finite temperature.
    """

    temperature: Array = hyperparameter("temperature", lower=0.0)
    additive: ClassVar[bool] = True

    @property
    def deterministic(self) -> GradientFlow:
        """The noiseless flow, `GradientFlow()`."""
        return GradientFlow()

    def diffusion(
        self, t: ScalarLike, state: Params, problem: Problem
    ) -> lx.DiagonalLinearOperator:
        r"""$\sqrt{2T}\,I$ on the raveled parameters."""
        del t, problem
        return _isotropic(state, _noise_scale(state, self.temperature))

    def log_stationary_density(self, state: Params, problem: Problem) -> Scalar:
        """Unnormalised $\\log p_\\infty = -L(\\theta)/T$, for $T > 0$ (`ValueError` at $T = 0$,
        where the law is a point mass: inside `jit` too)."""
        return -problem.loss(state) / _positive_temperature(self.temperature)


def _positive_temperature(temperature: Array) -> Array:
    # T = 0 is a valid flow (no noise) with no density: -L/0 gave -inf or NaN without a word.
    return interval(
        "temperature",
        temperature,
        lower=0.0,
        lower_open=True,
        hint="At T = 0 the stationary law is a point mass at the minimizers: no log-density.",
    )


class Kramers(AbstractNoisyFlow):
    r"""The Kramers equation (post 1, eq. 21): heavy ball with friction $\gamma$ and thermal noise,

    $$d\theta = v\,dt,\qquad dv = -\gamma v\,dt - \nabla L(\theta)\,dt + \sqrt{2\gamma T}\,dW,$$
    $$p_\infty(\theta, v) \propto \exp\!\Big(-\frac{\|v\|^2/2 + L(\theta)}{T}\Big)
      \quad(\gamma > 0).$$

    The drift is `HeavyBall(damping=γ)`'s vector field; the state is its `(θ, v)`, starting
    from rest. Written as post 1's $\ddot\theta + \gamma\dot\theta = -\nabla L + \sigma\xi$,
    $T = \sigma^2/(2\gamma)$: the law is $\exp(-\frac{2\gamma}{\sigma^2}(v^2/2 + L))$; post 1's
    eq. (22) is the case $\gamma = 1/2$. Its $\theta$-marginal is the overdamped Gibbs law
    $\propto e^{-L/T}$, for every $\gamma > 0$. At $\gamma = 0$ there is no normalisable
    stationary law (energy diffuses upward).

    The noise is written on the whole raveled phase space $[\theta, v]$ as
    $\mathrm{diag}(0, \sqrt{2\gamma T})$, driven by a $2d$-dimensional $W$ whose $\theta$ half is
    unused (a diagonal map; the draws match earlier releases bit for bit). Additive noise:
    `simulate` uses ShARK.

    **Arguments:** `damping` $\gamma \ge 0$, `temperature` $T \ge 0$ (array leaves).
    """

    damping: Array = hyperparameter("damping", lower=0.0)
    temperature: Array = hyperparameter("temperature", lower=0.0)
    additive: ClassVar[bool] = True

    @property
    def deterministic(self) -> HeavyBall:
        """The noiseless flow, `HeavyBall(damping)`."""
        return HeavyBall(self.damping)

    def velocity(self, state) -> Params:
        """The velocity part $v$ of a state."""
        return state[1]

    def diffusion(self, t: ScalarLike, state, problem: Problem) -> lx.DiagonalLinearOperator:
        r"""$\mathrm{diag}(0, \sqrt{2\gamma T})$ on the raveled $[\theta, v]$."""
        del t, problem
        theta = ravel_pytree(state[0])[0]
        v = ravel_pytree(state[1])[0]
        scale = _noise_scale(state[1], self.damping, self.temperature).astype(v.dtype)
        return lx.DiagonalLinearOperator(
            jnp.concatenate([jnp.zeros_like(theta), jnp.full(v.shape, scale)])
        )

    def log_stationary_density(self, state, problem: Problem) -> Scalar:
        """Unnormalised $\\log p_\\infty = -(\\|v\\|^2/2 + L(\\theta))/T$."""
        theta, v = state
        kinetic = 0.5 * optax.tree.vdot(v, v)
        return -(kinetic + problem.loss(theta)) / _positive_temperature(self.temperature)
