r"""`SGDNoise`: the stochastic modified equation of minibatch SGD (Li, Tai & E 2017)."""

import dataclasses
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Float, Key, Params, Scalar, ScalarLike
from .._discretization import check_positive, Discretization
from .._flows.gradient import GradientFlow
from .._problem import Problem
from .._problems.finite_sum import _batch_loss, _minibatch_loss
from .base import AbstractSDE


_COVARIANCES = ("full", "samples", "diagonal", "lowrank")


def _num_samples(problem: Problem) -> int:
    return jax.tree.leaves(problem.data)[0].shape[0]


def _minibatch_loss_with_replacement(
    params: Params, key: Key, data: Params, sample_loss_fn, regularizer, batch_size: int
) -> Scalar:
    n = jax.tree.leaves(data)[0].shape[0]
    idx = jax.random.randint(key, (batch_size,), 0, n)
    batch = jax.tree.map(lambda x: x[idx], data)
    return _batch_loss(params, batch, sample_loss_fn, regularizer)


class SGDNoise(AbstractSDE):
    r"""The SDE of minibatch SGD with learning rate $\eta$ and batch size $B$ (SME-1):

    $$d\theta = -\nabla L(\theta)\,dt + \sqrt{\eta\,c\,\Sigma(\theta)/B}\;dW,\qquad t = k\eta,$$

    where $\Sigma(\theta) = \frac1n\sum_i (g_i - \bar g)(g_i - \bar g)^\top$ is the per-sample
    gradient covariance, $g_i = \nabla\ell(\theta; x_i)$ computed by `vmap(grad)` over
    `problem.data`, and $c$ makes $c\Sigma/B$ the *exact* covariance of one minibatch gradient:
    $c = (n-B)/(n-1)$ for sampling without replacement (what `problems.finite_sum` does; the
    finite-population correction, $c = 0$ at $B = n$: full-batch GD is noiseless), $c = 1$ with
    replacement. SGD $\theta_{k+1} = \theta_k - \eta\nabla L_B(\theta_k)$ is Euler–Maruyama of
    this SDE with step $\eta$ and non-Gaussian noise; it is a weak order-1 approximation on
    $[0, T]$ (Li, Tai & E). On $L = \frac12\lambda\theta^2$ with per-sample gradient variance
    $\sigma^2$ the stationary variances are $\eta c\sigma^2/(B\lambda(2-\eta\lambda))$ (SGD) and
    $\eta c\sigma^2/(2B\lambda)$ (SDE): an $O(\eta)$ relative gap (`quadratic_moments`).

    State-dependent (multiplicative) noise: Itô, so `simulate` uses Euler–Maruyama by default.
    The state is the raveled parameter vector; `params(y)` unravels it.

    **Arguments:**

    - `problem`: a finite-sum `Problem` (with `data` and `sample_loss_fn`, e.g.
      `problems.linear_regression` or `problems.finite_sum`).
    - `learning_rate`: $\eta > 0$.
    - `batch_size`: $1 \le B \le n$ (independent of `problem.batch_size`; `sgd_problem()`
      returns the problem whose `stochastic_loss` samples this $B$).
    - `replace`: `False` (default, matches `problems.finite_sum`) or `True` (with replacement).
    - `covariance`: how the diffusion factor $G$ with $GG^\top = \eta c\Sigma/B$ is formed:
      `"full"` ($d\times d$ symmetric square root by `eigh`; exact; $O(d^3)$ per step),
      `"samples"` ($G = \sqrt{\eta c/(nB)}\,(g_i - \bar g)_i^\top$, $d\times n$, driven by an
      $n$-dimensional $W$; exact and root-free, the choice for large $d$ and moderate $n$),
      `"diagonal"` (only $\mathrm{diag}\,\Sigma$; drops correlations, $O(nd)$), or
      `"lowrank"` (the top-`rank` principal directions of $\Sigma$, from an SVD of the centred
      per-sample gradients; drops the rest of the spectrum).
    - `rank`: for `"lowrank"`, $1 \le r \le \min(n, d)$.

    **Raises:** `ValueError` naming the argument for a problem without `data`/`sample_loss_fn`,
    a batch size outside $[1, n]$, a non-positive learning rate, or a bad covariance/rank.
    """

    problem: Problem
    learning_rate: Array
    batch_size: Array  # an integer array leaf: a sweep over B reuses the compiled simulation
    replace: bool = eqx.field(static=True)
    covariance: str = eqx.field(static=True)
    rank: int | None = eqx.field(static=True)
    additive: ClassVar[bool] = False

    def __init__(
        self,
        problem: Problem,
        learning_rate: ScalarLike,
        batch_size: int,
        *,
        replace: bool = False,
        covariance: Literal["full", "samples", "diagonal", "lowrank"] = "full",
        rank: int | None = None,
    ):
        if (
            not isinstance(problem, Problem)
            or problem.data is None
            or problem.sample_loss_fn is None
        ):
            raise ValueError(
                "problem must be a finite-sum dynopt.Problem with data and sample_loss_fn "
                "(e.g. problems.linear_regression or problems.finite_sum)."
            )
        n = _num_samples(problem)
        if not isinstance(batch_size, int | np.integer) or not 1 <= batch_size <= n:
            raise ValueError(
                f"batch_size must be an integer in [1, {n}] (n samples), got {batch_size!r}."
            )
        check_positive("learning_rate", learning_rate)
        if covariance not in _COVARIANCES:
            raise ValueError(f"covariance must be one of {_COVARIANCES}, got {covariance!r}.")
        d = problem.num_params
        if covariance == "lowrank":
            if not isinstance(rank, int | np.integer) or not 1 <= rank <= min(n, d):
                raise ValueError(
                    f"rank must be an integer in [1, {min(n, d)}] for covariance='lowrank', "
                    f"got {rank!r}."
                )
        elif rank is not None:
            raise ValueError("rank is only used with covariance='lowrank'.")
        self.problem = problem
        self.learning_rate = jnp.asarray(learning_rate, dtype=float)
        self.batch_size = jnp.asarray(int(batch_size))
        self.replace = bool(replace)
        self.covariance = covariance
        self.rank = None if rank is None else int(rank)

    # --- the noise model -------------------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        return _num_samples(self.problem)

    @property
    def finite_population_factor(self) -> Array:
        r"""$c$: $(n-B)/(n-1)$ without replacement, $1$ with ($\mathrm{Cov}\,g_B = c\Sigma/B$)."""
        n = self.num_samples
        b = self.batch_size.astype(self.learning_rate.dtype)
        if self.replace:
            return jnp.ones_like(b)
        return (n - b) / (n - 1) if n > 1 else jnp.zeros_like(b)

    @property
    def noise_scale(self) -> Array:
        r"""$\kappa = \eta c/B$: the diffusion matrix is $\kappa\,\Sigma(\theta)$."""
        b = self.batch_size.astype(self.learning_rate.dtype)
        return self.learning_rate * self.finite_population_factor / b

    def _unravel(self, y):
        return ravel_pytree(self.problem.params0)[1](y)

    def per_sample_gradients(self, y: Float[Array, " d"]) -> Float[Array, "n d"]:
        """$g_i = \\nabla\\ell(\\theta; x_i)$ per sample, raveled: `vmap(grad)` over the data."""
        grad = jax.grad(self.problem.sample_loss_fn)
        params = self._unravel(y)
        g = jax.vmap(grad, in_axes=(None, 0))(params, self.problem.data)
        return jax.vmap(lambda tree: ravel_pytree(tree)[0])(g)

    def gradient_covariance(self, y: Float[Array, " d"]) -> Float[Array, "d d"]:
        r"""$\Sigma(\theta) = \frac1n\sum_i (g_i-\bar g)(g_i-\bar g)^\top$."""
        c = self._centred(y)
        return c.T @ c / c.shape[0]

    def minibatch_covariance(self, y: Float[Array, " d"]) -> Float[Array, "d d"]:
        r"""The exact covariance $c\,\Sigma(\theta)/B$ of one minibatch gradient."""
        b = self.batch_size.astype(y.dtype)
        return self.gradient_covariance(y) * (self.finite_population_factor.astype(y.dtype) / b)

    def _centred(self, y):
        g = self.per_sample_gradients(y)
        return g - jnp.mean(g, axis=0, keepdims=True)

    # --- AbstractSDE -----------------------------------------------------------------------------

    def init(self, x0: Params = None) -> Float[Array, " d"]:
        return ravel_pytree(self.problem.params0 if x0 is None else x0)[0]

    def drift(self, t, y, args):
        del t, args
        return -ravel_pytree(self.problem.grad(self._unravel(y)))[0]

    def diffusion(self, t, y, args):
        del t, args
        kappa = self.noise_scale.astype(y.dtype)
        c = self._centred(y)
        n = c.shape[0]
        if self.covariance == "samples":
            return jnp.sqrt(kappa / n) * c.T
        if self.covariance == "diagonal":
            return lx.DiagonalLinearOperator(jnp.sqrt(kappa * jnp.mean(c * c, axis=0)))
        if self.covariance == "lowrank":
            _, s, vt = jnp.linalg.svd(c, full_matrices=False)
            r = self.rank
            return jnp.sqrt(kappa / n) * (vt[:r].T * s[None, :r])
        w, v = jnp.linalg.eigh(c.T @ c / n)
        return jnp.sqrt(kappa) * (v * jnp.sqrt(jnp.clip(w, 0.0))[None, :]) @ v.T

    def noise_dim(self, y0):
        if self.covariance == "samples":
            return self.num_samples
        if self.covariance == "lowrank":
            return self.rank
        return y0.shape[0]

    def params(self, y):
        return self._unravel(y)

    # --- the discrete SGD it models --------------------------------------------------------------

    def discretize(self) -> Discretization:
        r"""SGD with learning rate $\eta$ on the clock $t = k\eta$ (`optax.sgd(η)`); run it with
        `dynopt.run(sde.discretize(), sde.sgd_problem(), n, key=keys)`."""
        return GradientFlow().discretize(self.learning_rate)

    def sgd_problem(self) -> Problem:
        """`problem` whose `stochastic_loss` draws batches of `batch_size` samples, with or
        without replacement as this model assumes (the same problem when nothing changes)."""
        p, batch_size = self.problem, int(self.batch_size)
        if not self.replace and p.batch_size == batch_size:
            return p
        fn = p.loss_fn
        if not (isinstance(fn, eqx.Partial) and fn.func is _batch_loss):
            raise ValueError(
                "sgd_problem() can only resample problems built by problems.finite_sum; build "
                f"yours with batch_size={batch_size} directly."
            )
        sampler = _minibatch_loss_with_replacement if self.replace else _minibatch_loss
        stochastic = eqx.Partial(sampler, **fn.keywords, batch_size=batch_size)
        return dataclasses.replace(p, stochastic_loss_fn=stochastic, batch_size=batch_size)
