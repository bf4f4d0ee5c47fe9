r"""Post 8's stock model: geometric Brownian motion, its log-normal law, and Black–Scholes.

$dS = S(\mu\,dt + \sigma\,dW)$ (eq. 70). By Itô's lemma $x = \ln S$ obeys
$dx = (\mu - \tfrac12\sigma^2)dt + \sigma\,dW$ (eq. 71): eq. (48) with constant drift
$b = \mu - \sigma^2/2$ and **variance rate $\alpha = \sigma^2$**, hence (corrected eq. 77)
$$P(S_T\mid S_0) = \frac{1}{S_T\sqrt{2\pi\sigma^2T}}
  \exp\Big\{-\frac{[\ln(S_T/S_0) - (\mu-\tfrac12\sigma^2)T]^2}{2\sigma^2T}\Big\}.$$
The post prints $\sigma$ where $\alpha = \sigma^2$ belongs (`printed=True` reproduces that form,
for the measurement that rules it out).
"""

from typing import ClassVar

import jax
import jax.numpy as jnp

from .._custom_types import Array, Float, ScalarLike
from .._discretization import widest_dtype
from .._sde.base import AbstractSDE, not_an_optimizer
from .._validation import hyperparameter, interval, positive
from .base import Polynomial, ScalarSDE


def _check_s0(s0):
    return positive("S0", s0, hint="ln S needs a price S > 0.")


def _in_one_dtype(*values) -> tuple[Array, ...]:
    # The widest of the values' dtypes and the default float's (float64 under x64): mixed
    # precisions have no implicit promotion under strict promotion, and sigma^2 formed in a
    # float32 sigma's precision rounded the variance rate (1e-7 relative) of a float64 model.
    # (A value already in it is kept as it is, weakly typed where it was.)
    dtype = widest_dtype([jnp.result_type(float), *values])
    arrays = (jnp.asarray(v) for v in values)
    return tuple(v if v.dtype == dtype else v.astype(dtype) for v in arrays)


class GBM(AbstractSDE):
    r"""$dS = S(\mu\,dt + \sigma\,dW)$, Itô, multiplicative noise: a flow with noise on the
    price (no problem: `dynopt.sde.simulate(gbm, None, ts, key, n, x0=S0)`, Euler–Maruyama).

    **Raises:** `ValueError` for $\sigma \le 0$ (at construction) or $S_0 \le 0$ (in `init`).
    """

    mu: Float[Array, ""] = hyperparameter("mu")
    sigma: Float[Array, ""] = hyperparameter("sigma", lower=0.0, lower_open=True)
    additive: ClassVar[bool] = False

    def init(self, params) -> Float[Array, " 1"]:
        return jnp.atleast_1d(jnp.asarray(_check_s0(params), dtype=float)).reshape(1)

    def check(self, problem) -> None:
        del problem  # the model is self-contained

    def vector_field(self, t, state, problem):
        del t, problem
        return self.mu.astype(state.dtype) * state

    def diffusion(self, t, state, problem):
        del t, problem
        return (self.sigma.astype(state.dtype) * state).reshape(1, 1)

    def params(self, state):
        return state[..., 0]

    def discretize(self, step_size):
        del step_size
        not_an_optimizer("GBM")

    def log_sde(self) -> ScalarSDE:
        r"""$x = \ln S$: $dx = (\mu-\sigma^2/2)dt + \sigma dW$, a `ScalarSDE`, $\alpha=\sigma^2$."""
        mu, sigma = _in_one_dtype(self.mu, self.sigma)
        b = mu - 0.5 * sigma**2
        z = jnp.zeros((), b.dtype)
        return ScalarSDE(Polynomial(jnp.stack([b, z, z, z])), sigma**2)


def lognormal_density(
    s: Float[Array, "..."],
    T: ScalarLike,
    s0: ScalarLike,
    *,
    mu: ScalarLike,
    sigma: ScalarLike,
    printed: bool = False,
) -> Float[Array, "..."]:
    r"""The law of $S_T$ (corrected eq. 77, variance $\sigma^2T$); `printed=True` uses the
    post's printed variance $\sigma T$ (the σ-vs-σ² slip), keeping the drift $\mu - \sigma^2/2$.

    **Arguments:**

    - `s`: the prices at which to evaluate the density, any shape.
    - `T`: the time $T > 0$.
    - `s0`: the start $S_0 > 0$.
    - `mu`: the drift $\mu$, finite.
    - `sigma`: the volatility $\sigma > 0$.
    - `printed`: use the post's printed variance $\sigma T$ (default `False`).

    **Raises:** `ValueError` for $S_0 \le 0$, $\sigma \le 0$, $T \le 0$ or $\mu$ not finite
    (an `eqx.error_if` error under `jit`/`vmap`).
    """
    # The checked values (under jit/vmap each carries its check).
    s0, sigma, T = _check_s0(s0), positive("sigma", sigma), positive("T", T)
    mu = interval("mu", mu)
    s0, sigma, T, mu = _in_one_dtype(s0, sigma, T, mu)
    var = (sigma if printed else sigma**2) * T
    b = mu - 0.5 * sigma**2
    return _lognormal(jnp.asarray(s, dtype=b.dtype), s0, b, T, var)


@jax.jit
def _lognormal(s, s0, b, T, var):
    # Jitted: run eagerly, each size of `s` compiled every primitive on its own.
    pos = jnp.where(s > 0, s, 1.0)
    z = jnp.log(pos / s0) - b * T
    d = jnp.exp(-0.5 * z**2 / var) / (pos * jnp.sqrt(2 * jnp.pi * var))
    return jnp.where(s > 0, d, 0.0)


def black_scholes_call(
    s0: ScalarLike, strike: ScalarLike, rate: ScalarLike, sigma: ScalarLike, T: ScalarLike
) -> Float[Array, ""]:
    r"""$C = S_0\Phi(d_1) - Ke^{-rT}\Phi(d_2)$, $d_{1,2} = [\ln(S_0/K) + (r \pm \sigma^2/2)T]
    /(\sigma\sqrt T)$: the price $e^{-rT}\mathbb E[(S_T - K)^+]$ under $\mu = r$.

    **Arguments:**

    - `s0`: the spot price $S_0 > 0$.
    - `strike`: $K > 0$.
    - `rate`: the interest rate $r$, finite.
    - `sigma`: the volatility $\sigma > 0$.
    - `T`: the maturity $T > 0$.

    **Raises:** `ValueError` for $S_0 \le 0$, strike $\le 0$, $\sigma \le 0$, $T \le 0$ or a
    rate that is not finite (an `eqx.error_if` error under `jit`/`vmap`).
    """
    # The checked values (under jit/vmap each carries its check: a negative sigma priced a
    # negative call).
    s0, strike = _check_s0(s0), positive("strike", strike)
    sigma, T, rate = positive("sigma", sigma), positive("T", T), interval("rate", rate)
    s0, strike, rate, sigma, T = _in_one_dtype(s0, strike, rate, sigma, T)
    norm = jax.scipy.stats.norm.cdf
    sq = sigma * jnp.sqrt(T)
    d1 = (jnp.log(s0 / strike) + (rate + 0.5 * sigma**2) * T) / sq
    return s0 * norm(d1) - strike * jnp.exp(-rate * T) * norm(d1 - sq)


def discounted_payoff(
    s_T: Float[Array, " N"], strike: ScalarLike, rate: ScalarLike, T: ScalarLike
) -> Float[Array, " N"]:
    """$e^{-rT}(S_T - K)^+$ per path (its mean ± standard error is the Monte-Carlo price).

    **Arguments:**

    - `s_T`: the simulated prices $S_T$, shape $(N,)$.
    - `strike`: $K > 0$.
    - `rate`: the interest rate $r$, finite.
    - `T`: the maturity $T > 0$.

    **Raises:** `ValueError` unless `strike` $> 0$, `rate` finite and `T` $> 0$, as
    `black_scholes_call` (inside `jit` when traced)."""
    strike, rate, T = positive("strike", strike), interval("rate", rate), positive("T", T)
    s_T, strike, rate, T = _in_one_dtype(s_T, strike, rate, T)
    return jnp.exp(-rate * T) * jnp.maximum(s_T - strike, 0.0)
