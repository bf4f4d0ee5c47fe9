r"""`SGDNoise`: the stochastic modified equation of minibatch SGD (Li, Tai & E 2017)."""

import dataclasses
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Float, Params, ScalarLike
from .._discretization import Discretization, widest_dtype
from .._flows.gradient import GradientFlow
from .._problem import Problem
from .._problems.finite_sum import _batch_loss, _minibatch_loss, data_like_params
from .._validation import choice, flag, hyperparameter, is_traced, positive_int
from .base import AbstractSDE


_COVARIANCES = ("auto", "full", "samples", "diagonal", "lowrank")

# `covariance="auto"`: the exact factor of fewer flops per step, with the cost of a standard
# normal counted as this many flops (`_exact_factor`).
_NORMAL_FLOPS = 16


def _exact_factor(n: int, d: int) -> str:
    r"""`"full"` or `"samples"`, whichever costs fewer flops per diffusion evaluation: the full
    factor forms $\Sigma$ ($nd^2$) and its `eigh` (~$10d^3$) and draws $d$ normals; the samples
    factor multiplies an $n$-vector of normals ($nd$) and draws $n$. Both are exact (the same
    law); the per-sample gradients, common to both, are not counted."""
    full = n * d * d + 10 * d**3 + _NORMAL_FLOPS * d
    samples = n * d + _NORMAL_FLOPS * n
    return "full" if full <= samples else "samples"


def _num_samples(problem: Problem) -> int:
    return jax.tree.leaves(problem.data)[0].shape[0]


def _samples_with_replacement(problem: Problem) -> bool | None:
    """How `problem.stochastic_loss` draws its minibatch: `True` with replacement, `False`
    without, `None` if it was not built by `problems.finite_sum`."""
    fn = problem.stochastic_loss_fn
    if isinstance(fn, eqx.Partial) and fn.func is _minibatch_loss:
        return bool(fn.keywords.get("replace", False))
    return None


def _without_replacement(n: int, b: Array) -> Array:
    """$c = (n-B)/(n-1)$ for a batch drawn without replacement from $n$ samples."""
    return (n - b) / (n - 1) if n > 1 else jnp.zeros_like(b)


def _factor_dtype(learning_rate: Array):
    """The dtype of $c$ and $\\kappa = \\eta c/B$: the learning rate's, widened to at least the
    default float's (float64 under x64). $c = (n-B)/(n-1)$ and $B$ are exact integers' ratios,
    whatever precision $\\eta$ was given in: a bfloat16 $\\eta$ rounded $c = 7/9$ by 5.6e-4."""
    return widest_dtype([jnp.dtype(learning_rate.dtype), jnp.result_type(float)])


def _batch_size(batch_size) -> Array:
    """`batch_size` as an integer array leaf: a concrete one checked now (`positive_int`), a
    traced one (built inside `jit`/`vmap`, a sweep over $B$) an integer scalar checked $\\ge 1$
    when the program runs (`eqx.error_if`)."""
    if not is_traced(batch_size):
        return jnp.asarray(positive_int("batch_size", batch_size))
    b = jnp.asarray(batch_size)
    if b.ndim != 0 or not jnp.issubdtype(b.dtype, jnp.integer):
        raise ValueError(
            f"batch_size must be a positive integer, got a traced {b.dtype} of shape {b.shape}."
        )
    return eqx.error_if(b, b < 1, "batch_size must be a positive integer.")


class SGDNoise(AbstractSDE):
    r"""The SDE of minibatch SGD with learning rate $\eta$ and batch size $B$ (SME-1): gradient
    flow with the minibatch's noise,

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

    The drift is `GradientFlow`'s vector field; the state is the parameters. The noise is
    state-dependent (multiplicative): Itô, so `simulate` uses Euler–Maruyama by default. The
    problem is an argument (as for every flow): a finite-sum `Problem` with `data` and
    `sample_loss_fn` (e.g. `problems.linear_regression` or `problems.finite_sum`), checked by
    `check(problem)` wherever the model meets it.

    **Arguments:**

    - `learning_rate`: $\eta > 0$ (an array leaf).
    - `batch_size`: $1 \le B \le n$, or any $B \ge 1$ with `replace=True` (an integer array
      leaf: a sweep over $B$ reuses compiled programs; independent of `problem.batch_size`:
      `sgd_problem(problem)` samples this $B$).
    - `replace`: `False` (default, as `problems.finite_sum`) or `True` (with replacement, as
      `problems.finite_sum(..., replace=True)`); nothing else (a NumPy bool is taken).
      (Per-epoch random reshuffling draws each step's batch as a uniform $B$-subset too: its
      one-step covariance is the `False` one, while the batches of one epoch are negatively
      correlated, which this SDE ignores.)
    - `covariance`: how the diffusion factor $G$ with $GG^\top = \eta c\Sigma/B$ is formed:
      `"auto"` (default: the cheaper exact one of the next two for the problem's $n$ samples
      and $d$ parameters, by flops per step: `"full"` up to $d = 4$ from $n = 256$ on, up to
      $d = 2$ at $n = 16$, `"samples"` above; at $d = 1210$, $n = 1797$, the digits MLP, one
      `"full"` factor took 0.53 s of CPU, a `"samples"` one 0.030 s; the choice changes the
      Brownian path's dimension, so the same key draws other paths of the same law),
      `"full"` ($d\times d$ symmetric square root by `eigh`; exact; $O(d^3)$ per step),
      `"samples"` ($G = \sqrt{\eta c/(nB)}\,(g_i - \bar g)_i^\top$, $d\times n$, driven by an
      $n$-dimensional $W$; exact and root-free, the choice for large $d$ and moderate $n$),
      `"diagonal"` (only $\mathrm{diag}\,\Sigma$; drops correlations, $O(nd)$), or
      `"lowrank"` (the top-`rank` principal directions of $\Sigma$, from an SVD of the centred
      per-sample gradients; drops the rest of the spectrum; the SVD is $O(nd\min(n, d))$ at
      every step, more than `"samples"`, which is exact: 10.8 s against a few hundredths at
      $n = 1797$, $d = 1210$ on a loaded 2-core CPU; a choice for a smaller Brownian
      dimension, not for speed).
    - `rank`: for `"lowrank"`, $1 \le r \le \min(n, d)$.

    **Raises:** `ValueError` naming the argument for a non-positive learning rate, a batch size
    that is not a positive integer, a `replace` that is not a bool, or a bad covariance/rank;
    `check(problem)` for a problem without `data`/`sample_loss_fn`, $B > n$ without
    replacement or a rank above
    $\min(n, d)$, wherever the model meets a problem (also `finite_population_factor`,
    `noise_scale`, `minibatch_covariance` and `diffusion` called directly; $B$ is checked where
    it is concrete).
    """

    learning_rate: Array = hyperparameter("learning_rate", lower=0.0, lower_open=True)
    batch_size: Array  # an integer array leaf: a sweep over B reuses compiled programs
    replace: bool = eqx.field(static=True)
    covariance: str = eqx.field(static=True)
    rank: int | None = eqx.field(static=True)
    additive: ClassVar[bool] = False

    def __init__(
        self,
        learning_rate: ScalarLike,
        batch_size: int,
        *,
        replace: bool = False,
        covariance: Literal["auto", "full", "samples", "diagonal", "lowrank"] = "auto",
        rank: int | None = None,
    ):
        self.learning_rate = learning_rate
        self.batch_size = _batch_size(batch_size)
        self.replace = flag("replace", replace)
        self.covariance = choice("covariance", covariance, _COVARIANCES)
        if covariance == "lowrank":
            self.rank = positive_int("rank", rank)
        elif rank is not None:
            raise ValueError("rank is only used with covariance='lowrank'.")
        else:
            self.rank = None

    def check(self, problem: Problem) -> None:
        """`ValueError` unless `problem` is a finite sum this model applies to."""
        if (
            not isinstance(problem, Problem)
            or problem.data is None
            or problem.sample_loss_fn is None
        ):
            raise ValueError(
                "problem must be a finite-sum dynopt.Problem with data and sample_loss_fn "
                "(e.g. problems.linear_regression or problems.finite_sum)."
            )
        n, b = _num_samples(problem), self.batch_size
        # c = (n - B)/(n - 1) without replacement needs B <= n; with replacement c = 1, any B.
        if not self.replace and not is_traced(b) and int(b) > n:
            raise ValueError(
                f"batch_size must be an integer in [1, {n}] (n samples) without replacement, "
                f"got {int(b)}; replace=True models any B."
            )
        if self.rank is not None and self.rank > min(n, problem.num_params):
            raise ValueError(
                f"rank must be an integer in [1, {min(n, problem.num_params)}] for "
                f"covariance='lowrank', got {self.rank}."
            )

    # --- the noise model -------------------------------------------------------------------------

    def finite_population_factor(self, problem: Problem) -> Array:
        r"""$c$: $(n-B)/(n-1)$ without replacement, $1$ with ($\mathrm{Cov}\,g_B = c\Sigma/B$).
        `ValueError` (`check`) for $B > n$ without replacement, where $c$ would be negative."""
        self.check(problem)
        n = _num_samples(problem)
        # No runtime check of B <= n here: B is an array leaf, traced in every compiled program,
        # and a host callback would cost each step and keep its program out of JAX's cache.
        b = self.batch_size.astype(_factor_dtype(self.learning_rate))
        if self.replace:
            return jnp.ones_like(b)
        return _without_replacement(n, b)

    def noise_scale(self, problem: Problem) -> Array:
        r"""$\kappa = \eta c/B$: the diffusion matrix is $\kappa\,\Sigma(\theta)$."""
        dtype = _factor_dtype(self.learning_rate)
        b = self.batch_size.astype(dtype)
        return self.learning_rate.astype(dtype) * self.finite_population_factor(problem) / b

    def per_sample_gradients(self, params: Params, problem: Problem) -> Float[Array, "n d"]:
        """$g_i = \\nabla\\ell(\\theta; x_i)$ per sample, raveled: `vmap(grad)` over the data."""
        grad = jax.grad(problem.sample_loss_fn)
        g = jax.vmap(grad, in_axes=(None, 0))(params, data_like_params(problem.data, params))
        return jax.vmap(lambda tree: ravel_pytree(tree)[0])(g)

    def gradient_covariance(self, params: Params, problem: Problem) -> Float[Array, "d d"]:
        r"""$\Sigma(\theta) = \frac1n\sum_i (g_i-\bar g)(g_i-\bar g)^\top$."""
        c = self._centred(params, problem)
        return c.T @ c / c.shape[0]

    def minibatch_covariance(self, params: Params, problem: Problem) -> Float[Array, "d d"]:
        r"""The exact covariance $c\,\Sigma(\theta)/B$ of one minibatch gradient."""
        cov = self.gradient_covariance(params, problem)
        b = self.batch_size.astype(cov.dtype)
        return cov * (self.finite_population_factor(problem).astype(cov.dtype) / b)

    def _centred(self, params, problem):
        g = self.per_sample_gradients(params, problem)
        return g - jnp.mean(g, axis=0, keepdims=True)

    # --- the flow ---------------------------------------------------------------------------------

    def init(self, params: Params) -> Params:
        return GradientFlow().init(params)

    def vector_field(self, t: ScalarLike, state: Params, problem: Problem) -> Params:
        return GradientFlow().vector_field(t, state, problem)

    def params(self, state: Params) -> Params:
        return state

    def diffusion(self, t: ScalarLike, state: Params, problem: Problem):
        r"""A factor $G$ of $\eta c\Sigma(\theta)/B$ on the raveled parameters (`covariance`)."""
        del t
        kappa = self.noise_scale(problem).astype(ravel_pytree(state)[0].dtype)
        c = self._centred(state, problem)
        n = c.shape[0]
        covariance = self.covariance
        if covariance == "auto":
            covariance = _exact_factor(n, c.shape[1])
        if covariance == "samples":
            return jnp.sqrt(kappa / n) * c.T
        if covariance == "diagonal":
            return lx.DiagonalLinearOperator(jnp.sqrt(kappa * jnp.mean(c * c, axis=0)))
        if covariance == "lowrank":
            _, s, vt = jnp.linalg.svd(c, full_matrices=False)
            r = self.rank
            return jnp.sqrt(kappa / n) * (vt[:r].T * s[None, :r])
        w, v = jnp.linalg.eigh(c.T @ c / n)
        return jnp.sqrt(kappa) * (v * jnp.sqrt(jnp.clip(w, 0.0))[None, :]) @ v.T

    # --- the discrete SGD it models --------------------------------------------------------------

    def discretize(self, step_size: ScalarLike | None = None) -> Discretization:
        r"""SGD on the clock $t = k\eta$ (`optax.sgd(η)`), with $\eta$ = `step_size` (default the
        model's learning rate); run it with
        `dynopt.run(model.discretize(), model.sgd_problem(problem), n, key=keys)`."""
        return GradientFlow().discretize(self.learning_rate if step_size is None else step_size)

    def sgd_problem(self, problem: Problem) -> Problem:
        """`problem` whose `stochastic_loss` draws batches of `batch_size` samples, with or
        without replacement as this model assumes (the same problem when nothing changes)."""
        self.check(problem)
        if is_traced(self.batch_size):
            raise ValueError(
                "sgd_problem needs a concrete batch_size (it sets the shape of each minibatch); "
                "build this SGDNoise outside jit/vmap to sample its batches."
            )
        batch_size = int(self.batch_size)
        if problem.batch_size == batch_size and _samples_with_replacement(problem) == self.replace:
            return problem
        fn = problem.loss_fn
        if not (isinstance(fn, eqx.Partial) and fn.func is _batch_loss):
            raise ValueError(
                "sgd_problem() can only resample problems built by problems.finite_sum; build "
                f"yours with batch_size={batch_size} directly."
            )
        stochastic = eqx.Partial(
            _minibatch_loss, **fn.keywords, batch_size=batch_size, replace=self.replace
        )
        return dataclasses.replace(problem, stochastic_loss_fn=stochastic, batch_size=batch_size)
