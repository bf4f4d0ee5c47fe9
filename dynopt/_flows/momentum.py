r"""Heavy ball as second-order dynamics (Su, post 1), its closed form on quadratics, the momentum
tuning rule, and the fixed-momentum small-step limit. The maps to optax (leapfrog, naive Euler,
conformal, the Nesterov variants) are `dynopt.maps` modules."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Params, ScalarLike
from .._maps.momentum import FixedMomentum, Leapfrog
from .._problem import Problem
from .._transforms.adaptive import tree_norm
from .._validation import decay, hyperparameter, interval, is_traced, positive
from .base import AbstractMappedFlow


_OSC_HINT = "oscillator_solution is the underdamped form; damped_mode takes every regime."


def oscillator_solution(t, damping: float, x0: float = 1.0) -> np.ndarray:
    r"""$\theta'' + a\theta' + \theta = 0$, $\theta(0) = x_0$, $\theta'(0) = 0$, for
    $0 \le a < 2$ (underdamped), in float64 numpy:
    $\theta = x_0e^{-at/2}(\cos\omega t + \tfrac{a}{2\omega}\sin\omega t)$,
    $\omega = \sqrt{1 - a^2/4}$.

    **Arguments:**

    - `t`: the time(s), any shape.
    - `damping`: $a \in [0, 2)$.
    - `x0`: the initial position $x_0$ (default 1).

    **Raises:** `ValueError` unless `damping` ∈ [0, 2) (`damped_mode` takes every regime)."""
    # a >= 2 made ω zero or NaN: the result was NaN without a word.
    interval("damping", damping, lower=0.0, upper=2.0, upper_open=True, hint=_OSC_HINT)
    w = np.sqrt(1.0 - damping**2 / 4)
    t = np.asarray(t)
    return x0 * np.exp(-damping * t / 2) * (np.cos(w * t) + damping / (2 * w) * np.sin(w * t))


def damped_mode(t: ScalarLike, damping: ScalarLike, stiffness: Array, x0: Array):
    r"""$x'' + ax' + \lambda x = 0$ from $x(0) = x_0$, $x'(0) = 0$, for every regime:
    with $\omega = \sqrt{a^2/4 - \lambda}$ (complex when underdamped) and
    $S = \sinh(\omega t)/(\omega t)$,
    $x = x_0e^{-at/2}(\cosh\omega t + \tfrac a2 tS)$, $x' = -\lambda x_0 e^{-at/2}\,tS$.

    Evaluated as $e^{-at/2}\cosh\omega t = e^{(\omega - a/2)t}(1 + e^{-2\omega t})/2$ and
    $e^{-at/2}S = e^{(\omega - a/2)t}\,(1 - e^{-2\omega t})/(2\omega t)$, with the slow rate
    $\omega - a/2 = -\lambda/(\omega + a/2)$: no factor overflows (an over-damped mode's
    $\cosh\omega t$ does once $\omega t > 710$, and $0\cdot\infty$ was NaN), and the slow rate
    of a soft mode ($\lambda \ll a^2$) has no cancellation.

    Near critical damping ($|\omega t|^2 < 10^{-2}$, where $\sqrt{\cdot}$ has no derivative at
    0) $\cosh\omega t$ and $S$ are their Taylor series in $z = \omega^2t^2$ (five terms:
    relative truncation $< z^5/10! \approx 3\times10^{-17}$), so `jax.grad` in the damping
    (the optimal $a = 2\sqrt\lambda$ included) and the stiffness is finite there.

    **Arguments:**

    - `t`: the time $t$.
    - `damping`: the friction $a$ (not validated).
    - `stiffness`: the mode's curvature(s) $\lambda$, an array.
    - `x0`: the initial position(s) $x_0$, broadcast with `stiffness`.

    **Returns:** `(x, x')`, elementwise in `stiffness` and `x0`."""
    c128 = jnp.complex128
    t = jnp.asarray(t, jnp.float64)
    a = jnp.asarray(damping, jnp.float64)
    stiffness = jnp.asarray(stiffness, jnp.float64)
    omega2 = a**2 / 4 - stiffness
    z = omega2 * t**2
    near = jnp.abs(z) < 1e-2
    # The general branch sees a safe ω² where the series is used (both branches are
    # differentiated under `where`: a NaN cotangent of sqrt(0) would leak through).
    half = (a / 2).astype(c128)
    omega = jnp.sqrt(jnp.where(near, 1.0, omega2).astype(c128))
    tc = t.astype(c128)
    # omega + a/2 = 0 only for a = 0 and stiffness = 0, where the slow rate is 0.
    den = omega + half
    zero = den == 0
    slow = jnp.where(zero, 0.0, -stiffness.astype(c128) / jnp.where(zero, 1.0, den))
    u = 2 * omega * tc
    small = jnp.abs(u) < 1e-4  # (1 - e^{-u})/u = 1 - u/2 + u²/6 - u³/24 + O(u⁴): avoid 0/0
    e = jnp.where(
        small, 1 - u / 2 + u**2 / 6 - u**3 / 24, -jnp.expm1(-u) / jnp.where(small, 1.0, u)
    )
    growth = jnp.exp(slow * tc)
    ts = growth * tc * e  # e^{-at/2} t S
    x = x0 * jnp.real(growth * (1 + jnp.exp(-u)) / 2 + half * ts)
    v = -stiffness * x0 * jnp.real(ts)
    zs = jnp.where(near, z, 0.0)
    cosh = 1 + zs / 2 * (1 + zs / 12 * (1 + zs / 30 * (1 + zs / 56)))
    sinhc = 1 + zs / 6 * (1 + zs / 20 * (1 + zs / 42 * (1 + zs / 72)))
    decay = jnp.exp(-a * t / 2)
    x = jnp.where(near, x0 * decay * (cosh + a / 2 * t * sinhc), x)
    v = jnp.where(near, -stiffness * x0 * decay * t * sinhc, v)
    return x, v


class HeavyBall(AbstractMappedFlow):
    r"""Heavy ball: $\ddot\theta + a\dot\theta + \nabla L(\theta) = 0$, as the first-order system

    $$\dot\theta = v,\qquad \dot v = -a v - \nabla L(\theta),\qquad
      \theta(0) = \theta_0,\ v(0) = 0.$$

    **Discretizations** (`dynopt.maps`, each `map(flow, h)`; step $k$ at $t = kh$):
    `Leapfrog()` (the default of `discretize`, Su's eq. 15, **second order** with the half-step
    start; `Leapfrog(half_step=False)`: first order), `NaiveEuler()`, `ConformalEuler()`,
    `Lookahead(1.0)` (Nesterov), `Lookahead(0.5)` (Su's midpoint look-ahead),
    `ImplicitMidpoint()`: first order. Each map holds its stability limit on quadratics.

    **Closed form** on quadratics (`closed_form`): per Hessian eigenmode, `damped_mode`.

    **Inverse map:** `HeavyBall.from_hyperparams(learning_rate, momentum)` (leapfrog);
    `dynopt.maps.NaiveEuler().inverse(...)` etc. for the others.

    **Arguments:** `damping` $a \ge 0$.
    """

    default_map: ClassVar[type] = Leapfrog

    damping: Array = hyperparameter("damping", lower=0.0)

    def init(self, params: Params):
        return params, jax.tree.map(jnp.zeros_like, params)

    def vector_field(self, t: ScalarLike, state, problem: Problem):
        del t
        theta, v = state
        g = problem.grad(theta)
        return v, jax.tree.map(lambda vi, gi: -self.damping * vi - gi, v, g)

    def params(self, state) -> Params:
        return state[0]

    @classmethod
    def from_hyperparams(
        cls, learning_rate: ScalarLike, momentum: ScalarLike
    ) -> tuple["HeavyBall", Array]:
        r"""The exact inverse of the leapfrog map: `(flow, dt)` with `flow.discretize(dt)` giving
        `optax.sgd(learning_rate, momentum)`: $h = \sqrt{2\alpha/(1+\beta)}$,
        $a = \frac2h\,\frac{1-\beta}{1+\beta}$.

        **Raises:** `ValueError` unless `learning_rate` > 0 and `momentum` ∈ [0, 1).
        """
        return Leapfrog().inverse(learning_rate, momentum)

    def closed_form(self, problem: Problem):
        """`t -> (θ(t), v(t))` on a quadratic problem (one with `hessian` and `minimizer`)."""
        if problem.hessian is None or problem.minimizer is None:
            return None
        # In float64 (as damped_mode), returned in the parameters' dtype.
        f64 = jnp.float64
        lam, q = jnp.linalg.eigh(jnp.asarray(problem.hessian, f64))
        # Raveled under standard promotion: a mixed float32/float64 tree ravels to float64 and
        # unravels to each leaf's dtype (strict promotion refused it, as `quadratic` accepts it).
        with jax.numpy_dtype_promotion("standard"):
            flat0, unravel = ravel_pytree(problem.params0)
            xstar = ravel_pytree(problem.minimizer)[0].astype(f64)
        c0 = q.T @ (flat0.astype(f64) - xstar)

        def solution(t):
            x, v = damped_mode(t, self.damping, lam, c0)
            # In the parameters' dtype, as `GradientFlow`'s closed form (damped_mode works in
            # float64).
            return unravel((xstar + q @ x).astype(flat0.dtype)), unravel(
                (q @ v).astype(flat0.dtype)
            )

        return solution


def rescale_momentum(momentum: ScalarLike, lr_ratio: ScalarLike) -> Array:
    r"""Su's tuning rule: when the learning rate goes $\alpha \to r\alpha$, keep the damping by
    $\beta \to 1 - (1-\beta)\sqrt r$.

    From $\beta \approx 1 - a\sqrt\alpha$: exact for the Euler map ($a = (1-\beta)/\sqrt\alpha$ is
    unchanged), and for the leapfrog map the damping changes by the factor
    $\sqrt{(1+\beta)/(1+\beta')} = 1 + O(ah)$.

    **Arguments:**

    - `momentum`: the current $\beta \in [0, 1)$.
    - `lr_ratio`: $r > 0$, the factor on the learning rate.

    **Raises:** `ValueError` unless `momentum` ∈ [0, 1) and `lr_ratio` > 0, and unless the
    result stays >= 0 (i.e. $(1-\beta)\sqrt r \le 1$).
    """
    momentum = decay("momentum", jnp.asarray(momentum))
    lr_ratio = positive("lr_ratio", jnp.asarray(lr_ratio))
    new = 1 - (1 - momentum) * jnp.sqrt(lr_ratio)
    # Name the values only where they are known (a traced value prints as a tracer).
    values = "" if is_traced((momentum, lr_ratio)) else f"={lr_ratio}"
    too_large = f"lr_ratio{values} is too large for momentum"
    too_large += "" if not values else f"={momentum}"
    return decay(
        "the rescaled momentum 1 - (1 - momentum) * sqrt(lr_ratio)",
        new,
        hint=f"{too_large}; keep (1 - momentum) * sqrt(lr_ratio) <= 1.",
    )


class RescaledGradientFlow(AbstractMappedFlow):
    r"""The fixed-momentum limit of heavy ball: $\dot\theta = -\nabla L(\theta)/(1-\beta)$.

    With $\beta$ fixed and $\eta \to 0$, `optax.sgd(η, momentum=β)` follows this flow at
    $t = k\eta$ to first order (Kovachki & Stuart 2021) — the other scaling regime beside
    `HeavyBall` ($h \to 0$ at fixed damping, where $\beta \to 1$). `discretize(η)`
    (`dynopt.maps.FixedMomentum`) starts the trace on the slow manifold, so there is no initial
    layer.

    **Lyapunov:** $\dot L = -\|\nabla L\|^2/(1-\beta)$.

    **Arguments:** `momentum` $\beta \in [0, 1)$.
    """

    default_map: ClassVar[type] = FixedMomentum

    momentum: Array = hyperparameter("momentum", lower=0.0, upper=1.0, upper_open=True)

    def init(self, params: Params) -> Params:
        return params

    def vector_field(self, t: ScalarLike, state: Params, problem: Problem) -> Params:
        del t
        return jax.tree.map(lambda g: -g / (1 - self.momentum), problem.grad(state))

    def params(self, state: Params) -> Params:
        return state

    @classmethod
    def from_hyperparams(
        cls, learning_rate: ScalarLike, momentum: ScalarLike
    ) -> tuple["RescaledGradientFlow", Array]:
        """`optax.sgd(η, momentum=β)` at fixed β follows `RescaledGradientFlow(β)`, $dt = \\eta$."""
        return FixedMomentum().inverse(learning_rate, momentum)

    def loss_rate(self, t: ScalarLike, state: Params, problem: Problem):
        r"""$-\|\nabla L\|^2/(1-\beta)$."""
        del t
        g = problem.grad(state)
        return -tree_norm(g, squared=True) / (1 - self.momentum)
