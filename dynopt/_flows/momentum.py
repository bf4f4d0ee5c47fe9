r"""Heavy ball as second-order dynamics (Su, post 1): the flow, its maps to `optax.sgd` with
momentum (leapfrog, naive Euler, conformal-symplectic) and to the Nesterov variants, the inverse
map, the momentum tuning rule, and the fixed-momentum small-step limit."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._custom_types import Params, ScalarLike
from .._discretization import check_positive, Discretization
from .._problem import Problem
from .._transforms.nesterov import implicit_midpoint_momentum, nesterov_momentum
from .base import AbstractFlow


SCHEMES = (
    "leapfrog",
    "euler",
    "conformal",
    "nesterov",
    "nesterov_midpoint",
    "implicit_midpoint",
)
# The Nesterov variants use Su's map (post 1, eq. 18): beta = 1 - a h, alpha = h^2.
_LOOKAHEAD = {"nesterov": 1.0, "nesterov_midpoint": 0.5}
_EQ18 = ("euler", "nesterov", "nesterov_midpoint", "implicit_midpoint")


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {list(SCHEMES)}, got {scheme!r}.")


def _check_nonnegative(name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}.")


def _check_momentum(momentum, *, positive: bool = False) -> None:
    if isinstance(momentum, jax.core.Tracer):
        return
    arr = np.asarray(momentum, dtype=float)
    low_ok = np.all(arr > 0) if positive else np.all(arr >= 0)
    if not (np.all(np.isfinite(arr)) and low_ok and np.all(arr < 1)):
        valid = "(0, 1)" if positive else "[0, 1)"
        raise ValueError(f"momentum must lie in {valid}, got {momentum}.")


def _sgd_state_with_trace(disc: Discretization, params: Params, trace: Params):
    state = disc.transform.init(params)
    return (optax.TraceState(trace=trace), *state[1:])


def half_step_start(disc: Discretization, params: Params, problem: Problem):
    r"""optax's momentum state for a second-order start from rest ($\dot\theta(0) = 0$).

    The position update is $\theta_{n+1} - \theta_n = v_{n+1} = h\,\eta_{n+1/2}$, so the first
    step must use the half-step velocity $\eta_{1/2} = \dot\theta(h/2) + O(h^2) = -\tfrac h2\nabla
    L(\theta_0) + O(h^2)$, i.e. $v_1 = -\tfrac{h^2}{2}\nabla L(\theta_0)$. optax's zero trace gives
    $v_1 = -\alpha\nabla L(\theta_0)$ instead, an $O(h)$ velocity error that makes the global error
    first order. With $v_1 = -\alpha(g_0 + \beta\,\text{trace}_{-1})$ the trace must start at
    $\text{trace}_{-1} = (h^2/(2\alpha) - 1)\,g_0/\beta$; for the leapfrog map this is
    $-g_0/(1+\beta)$ (Su's $\eta_{-1/2} = \tfrac h2 g_0$, which makes $\eta_{1/2} = -\eta_{-1/2}$
    exactly).
    """
    g = problem.grad(params)
    alpha, beta = disc.hyperparams["learning_rate"], disc.hyperparams["momentum"]
    c = jnp.asarray(disc.dt, alpha.dtype) ** 2 / (2 * alpha)
    # beta = 0 only for the leapfrog map at a h = 2, where c = 1 and any trace works.
    coef = jnp.where(beta > 0, (c - 1) / jnp.where(beta > 0, beta, 1.0), 0.0)
    trace = jax.tree.map(lambda gi: (coef * gi).astype(gi.dtype), g)
    return _sgd_state_with_trace(disc, params, trace)


def slow_manifold_start(disc: Discretization, params: Params, problem: Problem):
    r"""optax's momentum state on the slow manifold:
    $\text{trace}_{-1} = \nabla L(\theta_0)/(1-\beta)$, the fixed point of the trace for a
    constant gradient (Kovachki & Stuart), so that heavy ball starts with the velocity of
    $\dot\theta = -\nabla L/(1-\beta)$ and no initial layer."""
    g = problem.grad(params)
    beta = disc.hyperparams["momentum"]
    trace = jax.tree.map(lambda gi: (gi / (1 - beta)).astype(gi.dtype), g)
    return _sgd_state_with_trace(disc, params, trace)


class HeavyBall(AbstractFlow):
    r"""Heavy ball: $\ddot\theta + a\dot\theta + \nabla L(\theta) = 0$, as the first-order system

    $$\dot\theta = v,\qquad \dot v = -a v - \nabla L(\theta),\qquad
      \theta(0) = \theta_0,\ v(0) = 0.$$

    **Discretizations** (`discretize(h)`, step $k$ at $t = kh$; `scheme` picks the map):

    - `"leapfrog"` (default; Su, post 1, eq. 15): `optax.sgd(α, momentum=β)` with
      $\beta = \frac{1 - ah/2}{1 + ah/2}$, $\alpha = \frac{h^2}{1 + ah/2}$: $\theta$ on integer
      steps, the velocity on half steps, central differences and the trapezoidal friction
      $-a(\eta_{n+1/2}+\eta_{n-1/2})/2$. **Second order**, given the half-step initial velocity
      (`half_step_start`, the `Discretization`'s `init_fn`); with optax's zero trace
      (`half_step=False`) the start costs one order.
    - `"euler"` (naive): $\beta = 1 - ah$, $\alpha = h^2$. First order.
    - `"conformal"`: $\beta = e^{-ah}$, $\alpha = h^2$: optax's update is then *exactly*
      conformal-symplectic Euler $p^+ = e^{-ah}p - h\nabla L(q)$, $q^+ = q + hp^+$ with
      $p = -\sqrt\alpha\,\text{trace}$ (França et al. 2020); it is a Lie splitting of friction and
      force, so first order with respect to the damped ODE.
    - `"nesterov"`, `"nesterov_midpoint"`, `"implicit_midpoint"`: the transforms of
      `dynopt.transforms` (look-ahead $\theta + \beta v$, $\theta + \tfrac\beta2 v$, and eq. 19)
      with Su's map $\beta = 1 - ah$, $\alpha = h^2$ (eq. 18). All first order (their look-ahead
      adds $O(h)\,\nabla^2L\,\dot\theta$ to the truncation error); their $\theta$-iterates are
      held, with the extra gradients taken through `value_fn`.

    **Stability** on $\tfrac12\theta^\top H\theta$: see `stability_limit`; the leapfrog map is
    stable iff $h\sqrt{\lambda_{\max}} < 2$, for every damping.

    **Inverse map:** `HeavyBall.from_hyperparams(learning_rate, momentum)`.

    **Arguments:**

    - `damping`: $a \ge 0$.
    - `scheme`: the default map used by `discretize` (and hence by `compare`).
    - `half_step`: use `half_step_start` for the sgd-type maps (default `True`).
    """

    damping: ScalarLike = eqx.field(converter=jnp.asarray)
    scheme: str = eqx.field(static=True, default="leapfrog")
    half_step: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        _check_nonnegative("damping", self.damping)
        _check_scheme(self.scheme)

    def init(self, params: Params):
        return params, jax.tree.map(jnp.zeros_like, params)

    def vector_field(self, t: ScalarLike, state, problem: Problem):
        del t
        theta, v = state
        g = problem.grad(theta)
        return v, jax.tree.map(lambda vi, gi: -self.damping * vi - gi, v, g)

    def params(self, state) -> Params:
        return state[0]

    def hyperparams(self, step_size: ScalarLike, scheme: str | None = None) -> dict:
        """`{"learning_rate": α, "momentum": β}` of the map `scheme` (default `self.scheme`)."""
        scheme = self.scheme if scheme is None else scheme
        _check_scheme(scheme)
        check_positive("step_size", step_size)
        h = jnp.asarray(step_size)
        ah = self.damping * h
        if scheme == "leapfrog":
            _limit_step("leapfrog", step_size, self.damping, 2.0)
            return {"learning_rate": h**2 / (1 + ah / 2), "momentum": (1 - ah / 2) / (1 + ah / 2)}
        if scheme == "conformal":
            return {"learning_rate": h**2, "momentum": jnp.exp(-ah)}
        _limit_step(scheme, step_size, self.damping, 1.0)
        return {"learning_rate": h**2, "momentum": 1 - ah}

    def discretize(self, step_size: ScalarLike, scheme: str | None = None) -> Discretization:
        scheme = self.scheme if scheme is None else scheme
        hp = self.hyperparams(step_size, scheme)
        if scheme in ("leapfrog", "euler", "conformal"):
            init_fn = half_step_start if self.half_step and scheme != "euler" else None
            return Discretization(optax.sgd, hp, dt=step_size, init_fn=init_fn)
        if scheme == "implicit_midpoint":
            return Discretization(implicit_midpoint_momentum, hp, dt=step_size)
        hp["lookahead"] = _LOOKAHEAD[scheme]
        return Discretization(
            nesterov_momentum, hp, dt=step_size, options=(("reparametrize", False),)
        )

    @staticmethod
    def from_hyperparams(
        learning_rate: ScalarLike, momentum: ScalarLike, scheme: str = "leapfrog"
    ) -> tuple["HeavyBall", ScalarLike]:
        r"""The exact inverse of the map: `(flow, dt)` with `flow.discretize(dt)` giving
        `optax.sgd(learning_rate, momentum)` (or the `scheme`'s transform).

        Leapfrog: $h = \sqrt{2\alpha/(1+\beta)}$, $a = \frac2h\,\frac{1-\beta}{1+\beta}$;
        Euler-type maps: $h = \sqrt\alpha$, $a = (1-\beta)/h$; conformal: $h = \sqrt\alpha$,
        $a = -\ln\beta/h$.

        **Raises:** `ValueError` unless `learning_rate` > 0 and `momentum` ∈ [0, 1)
        ((0, 1) for `"conformal"`).
        """
        _check_scheme(scheme)
        check_positive("learning_rate", learning_rate)
        _check_momentum(momentum, positive=scheme == "conformal")
        alpha, beta = jnp.asarray(learning_rate), jnp.asarray(momentum)
        if scheme == "leapfrog":
            h = jnp.sqrt(2 * alpha / (1 + beta))
            a = (2 / h) * (1 - beta) / (1 + beta)
        elif scheme == "conformal":
            h = jnp.sqrt(alpha)
            a = -jnp.log(beta) / h
        else:
            h = jnp.sqrt(alpha)
            a = (1 - beta) / h
        return HeavyBall(a, scheme=scheme), h

    def stability_limit(self, lambda_max: float, scheme: str | None = None) -> float:
        r"""Predicted largest stable $h\sqrt{\lambda_{\max}}$ on a quadratic with top Hessian
        eigenvalue $\lambda_{\max}$ (the mode that goes unstable first).

        Per mode, each scheme is a two-term recurrence $x_{n+1} = T x_n - D x_{n-1}$, stable iff
        $|D| < 1$ and $|T| < 1 + D$ (Schur–Cohn), with $z = h\sqrt\lambda$, $\alpha\lambda$ and
        $\beta$ from the map:

        - sgd maps: $D = \beta$, $T = 1 + \beta - \alpha\lambda$, i.e. $\alpha\lambda < 2(1+\beta)$;
          leapfrog: exactly $z < 2$ for every damping.
        - look-ahead $c$: $D = \beta(1 - c\alpha\lambda)$, $T = 1 + D - \alpha\lambda$, i.e.
          $\alpha\lambda < 2(1+\beta)/(1+2c\beta)$; midpoint ($c = \tfrac12$) with eq. 18:
          $z < \sqrt2$.
        - implicit midpoint: unconditionally stable as a scheme, but its fixed-point solve converges
          iff $\alpha\lambda < 2$: $z < \sqrt2$.
        """
        scheme = self.scheme if scheme is None else scheme
        _check_scheme(scheme)
        check_positive("lambda_max", lambda_max)
        a, lam = float(self.damping), float(lambda_max)

        def stable(z: float) -> bool:
            h = z / math.sqrt(lam)
            ah = a * h
            if scheme == "leapfrog":
                beta, al = (1 - ah / 2) / (1 + ah / 2), z**2 / (1 + ah / 2)
            elif scheme == "conformal":
                beta, al = math.exp(-ah), z**2
            else:
                beta, al = 1 - ah, z**2
            if scheme in _LOOKAHEAD:
                d = beta * (1 - _LOOKAHEAD[scheme] * al)
                t = 1 + d - al
            elif scheme == "implicit_midpoint":
                return al < 2
            else:
                d, t = beta, 1 + beta - al
            return abs(d) <= 1 and abs(t) < 1 + d  # |D| = 1: undamped, marginally stable

        lo, hi = 1e-3, 1e-3  # every scheme is stable for small z
        while stable(hi) and hi < 1e6:
            lo, hi = hi, 2 * hi
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if stable(mid) else (lo, mid)
        return lo


def _limit_step(scheme: str, step_size, damping, factor: float) -> None:
    """Momentum $\\ge 0$ needs $a h \\le$ `factor` (1 for $\\beta = 1-ah$, 2 for leapfrog)."""
    if isinstance(step_size, jax.core.Tracer) or isinstance(damping, jax.core.Tracer):
        return
    ah = np.asarray(step_size, dtype=float) * np.asarray(damping, dtype=float)
    if np.any(ah > factor):
        raise ValueError(
            f"step_size must be <= {factor:g}/damping for scheme {scheme!r} (so that the "
            f"momentum stays >= 0), got step_size={step_size} with damping={damping}."
        )


def rescale_momentum(momentum: ScalarLike, lr_ratio: ScalarLike):
    r"""Su's tuning rule: when the learning rate goes $\alpha \to r\alpha$, keep the damping by
    $\beta \to 1 - (1-\beta)\sqrt r$.

    From $\beta \approx 1 - a\sqrt\alpha$: exact for the Euler map ($a = (1-\beta)/\sqrt\alpha$ is
    unchanged), and for the leapfrog map the damping changes by the factor
    $\sqrt{(1+\beta)/(1+\beta')} = 1 + O(ah)$.

    **Raises:** `ValueError` unless `momentum` ∈ [0, 1) and `lr_ratio` > 0; the result can leave
    [0, 1) when $(1-\beta)\sqrt r > 1$, which also raises.
    """
    _check_momentum(momentum)
    check_positive("lr_ratio", lr_ratio)
    new = 1 - (1 - jnp.asarray(momentum)) * jnp.sqrt(jnp.asarray(lr_ratio))
    if not isinstance(new, jax.core.Tracer) and np.any(np.asarray(new) < 0):
        raise ValueError(
            f"lr_ratio={lr_ratio} is too large for momentum={momentum}: the rule gives "
            f"{np.asarray(new)} < 0; keep (1 - momentum) * sqrt(lr_ratio) <= 1."
        )
    return new


class RescaledGradientFlow(AbstractFlow):
    r"""The fixed-momentum limit of heavy ball: $\dot\theta = -\nabla L(\theta)/(1-\beta)$.

    With $\beta$ fixed and $\eta \to 0$, `optax.sgd(η, momentum=β)` follows this flow at
    $t = k\eta$ to first order (Kovachki & Stuart 2021) — the other scaling regime beside
    `HeavyBall` ($h \to 0$ at fixed damping, where $\beta \to 1$). `discretize(η)` starts the
    trace on the slow manifold (`slow_manifold_start`), so there is no initial layer.

    **Arguments:** `momentum` $\beta \in [0, 1)$.
    """

    momentum: ScalarLike = eqx.field(converter=jnp.asarray)

    def __check_init__(self):
        _check_momentum(self.momentum)

    def init(self, params: Params) -> Params:
        return params

    def vector_field(self, t: ScalarLike, state: Params, problem: Problem) -> Params:
        del t
        return jax.tree.map(lambda g: -g / (1 - self.momentum), problem.grad(state))

    def params(self, state: Params) -> Params:
        return state

    def discretize(self, step_size: ScalarLike) -> Discretization:
        check_positive("step_size", step_size)
        hp = {"learning_rate": step_size, "momentum": self.momentum}
        return Discretization(optax.sgd, hp, dt=step_size, init_fn=slow_manifold_start)
