r"""Maps of heavy ball $\ddot\theta + a\dot\theta + \nabla L = 0$ (Su, post 1) to momentum methods:
leapfrog (second order), naive Euler, conformal-symplectic Euler, the Nesterov look-ahead
variants and the implicit midpoint scheme (first order); and the fixed-momentum map of
`RescaledGradientFlow`.

Stability limits are on $\tfrac\lambda2\theta^2$, where every scheme is a two-term recurrence
$x_{n+1} = T x_n - D x_{n-1}$, stable iff $|D| \le 1$ and $|T| < 1 + D$ (Schur–Cohn). With
$z = h\sqrt\lambda$ and $b = a/\sqrt\lambda$ these are polynomial in $z$ for the maps with
$\beta = 1 - ah$, so the limit is the smallest positive root of three polynomials (closed form,
`numpy.roots`); the conformal map's $\beta = e^{-ah}$ is solved with `optimistix`.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx

from .._custom_types import Array, Params, ScalarLike
from .._discretization import Discretization
from .._problem import Problem
from .._transforms.nesterov import implicit_midpoint_momentum, nesterov_momentum
from .._validation import as_hyperparameter, flag, interval, nonnegative, positive
from .base import AbstractMap, concrete_scalar


def _sgd_state_with_trace(disc: Discretization, params: Params, trace: Params):
    state = disc.transform.init(params)
    return (optax.TraceState(trace=trace), *state[1:])


def _scaled_like(coef: Array, tree: Params) -> Params:
    """`coef * leaf` in each leaf's dtype. The hyper-parameters carry the widest leaf dtype, so
    on a mixed tree (bfloat16 weights, float32 biases) the product is formed under standard
    promotion and rounded back: every leaf keeps its dtype."""
    with jax.numpy_dtype_promotion("standard"):
        return jax.tree.map(lambda x: (coef * x).astype(x.dtype), tree)


def half_step_start(disc: Discretization, params: Params, problem: Problem):
    r"""optax's momentum state for a second-order start from rest ($\dot\theta(0) = 0$).

    The position update is $\theta_{n+1} - \theta_n = v_{n+1} = h\,\eta_{n+1/2}$, so the first
    step must use the half-step velocity $\eta_{1/2} = \dot\theta(h/2) + O(h^2) = -\tfrac
    h2\nabla L(\theta_0) + O(h^2)$, i.e. $v_1 = -\tfrac{h^2}{2}\nabla L(\theta_0)$. optax's zero
    trace gives $v_1 = -\alpha\nabla L(\theta_0)$ instead, an $O(h)$ velocity error that makes
    the global error first order. With $v_1 = -\alpha(g_0 + \beta\,\text{trace}_{-1})$ the trace
    must start at

    $$\text{trace}_{-1} = (h^2/(2\alpha) - 1)\,g_0/\beta;$$

    for the leapfrog map this is $-g_0/(1+\beta)$ (Su's $\eta_{-1/2} = \tfrac h2 g_0$, which
    makes $\eta_{1/2} = -\eta_{-1/2}$ exactly). Where $\beta = 0$ the trace is zero (any works
    there).

    **Arguments:**

    - `disc`: the momentum `Discretization` (its `dt` $h$ and its `learning_rate` $\alpha$ and
      `momentum` $\beta$ hyper-parameters).
    - `params`: the initial parameters $\theta_0$.
    - `problem`: the problem, for $g_0 = \nabla L(\theta_0)$.

    **Returns:** the transform's state with the `optax.TraceState` set to $\text{trace}_{-1}$
    (each leaf in its own dtype).
    """
    g = problem.grad(params)
    alpha, beta = disc.hyperparams["learning_rate"], disc.hyperparams["momentum"]
    c = jnp.asarray(disc.dt, alpha.dtype) ** 2 / (2 * alpha)
    # beta = 0 only for the leapfrog map at a h = 2, where c = 1 and any trace works.
    coef = jnp.where(beta > 0, (c - 1) / jnp.where(beta > 0, beta, 1.0), 0.0)
    trace = _scaled_like(coef, g)
    return _sgd_state_with_trace(disc, params, trace)


def slow_manifold_start(disc: Discretization, params: Params, problem: Problem):
    r"""optax's momentum state on the slow manifold:

    $$\text{trace}_{-1} = \nabla L(\theta_0)/(1-\beta),$$

    the fixed point of the trace for a constant gradient (Kovachki & Stuart), so that heavy ball
    starts with the velocity of $\dot\theta = -\nabla L/(1-\beta)$ and no initial layer.

    **Arguments:**

    - `disc`: the momentum `Discretization` (its `momentum` hyper-parameter $\beta$).
    - `params`: the initial parameters $\theta_0$.
    - `problem`: the problem, for $\nabla L(\theta_0)$.

    **Returns:** the transform's state with the `optax.TraceState` set to $\text{trace}_{-1}$
    (each leaf in its own dtype).
    """
    g = problem.grad(params)
    beta = disc.hyperparams["momentum"]
    trace = _scaled_like(1 / (1 - beta), g)
    return _sgd_state_with_trace(disc, params, trace)


def _damping_step(flow, h: Array, limit: float) -> Array:
    """$a h$, validated $\\le$ `limit` (the momentum would be negative beyond it)."""
    return interval(
        "damping * step_size",
        flow.damping * h,
        upper=limit,
        hint=f"Take step_size <= {limit:g}/damping (so that the momentum stays >= 0).",
    )


def _sgd_hyperparams(learning_rate, momentum, **open_end) -> tuple[Array, Array]:
    r"""`optax.sgd`'s $\alpha > 0$ and $\beta \in [0, 1]$ as an inverse map reads them, validated;
    `open_end` (`lower_open=True` or `upper_open=True`) excludes the end of $[0, 1]$ that the
    map's $\beta(ah)$ never reaches."""
    alpha = as_hyperparameter("learning_rate", learning_rate, lower=0.0, lower_open=True)
    beta = as_hyperparameter("momentum", momentum, lower=0.0, upper=1.0, **open_end)
    return alpha, beta


def _euler_inverse(learning_rate, momentum):
    from .._flows.momentum import HeavyBall

    alpha, beta = _sgd_hyperparams(learning_rate, momentum, upper_open=True)
    h = jnp.sqrt(alpha)
    return HeavyBall((1 - beta) / h), h


def _sqrt_lambda(lambda_max: ScalarLike) -> float:
    r"""$\sqrt{\lambda_{\max}}$ of one concrete `lambda_max` > 0 (`ValueError` otherwise)."""
    return float(np.sqrt(concrete_scalar("lambda_max", lambda_max, lower=0.0, lower_open=True)))


def _field(flow, name: str) -> float:
    """`flow.<name>` as one Python number (`ValueError` for a batch, a tracer, or a flow
    without that field: the limits are for `HeavyBall` and `RescaledGradientFlow`)."""
    try:
        value = getattr(flow, name)
    except AttributeError as e:
        raise ValueError(
            f"this stability limit reads the flow's `{name}`, which a {type(flow).__name__} "
            "does not have."
        ) from e
    return concrete_scalar(f"{type(flow).__name__}.{name}", value, lower=0.0)


def _damping(flow) -> float:
    """The flow's damping $a$ as one Python number (see `_field`)."""
    return _field(flow, "damping")


def _first_positive_root(*polys) -> float:
    """The smallest positive real root of any of the polynomials (coefficients, highest first)."""
    roots = np.concatenate([np.roots(np.trim_zeros(np.asarray(p, float), "f")) for p in polys])
    real = roots[np.abs(roots.imag) <= 1e-9 * np.maximum(1.0, np.abs(roots.real))].real
    return float(np.min(real[real > 1e-12], initial=np.inf))


def _lookahead_limit(b: float, c: float) -> float:
    r"""Largest stable $z$ for $\beta = 1 - bz$, $\alpha\lambda = z^2$ and look-ahead $c$:
    $D = \beta(1 - cz^2)$, $T = 1 + D - z^2$; $|T| < 1 + D \iff
    q(z) = 2cbz^3 - (1+2c)z^2 - 2bz + 4 > 0$, and $D = \pm1$ are cubics too."""
    q = [2 * c * b, -(1 + 2 * c), -2 * b, 4.0]
    d_plus = [b * c, -c, -b, 0.0]  # D - 1
    d_minus = [b * c, -c, -b, 2.0]  # D + 1
    return _first_positive_root(q, d_plus, d_minus)


class Leapfrog(AbstractMap):
    r"""Su's leapfrog map (post 1, eq. 15): `optax.sgd(α, momentum=β)` with
    $\beta = \frac{1 - ah/2}{1 + ah/2}$, $\alpha = \frac{h^2}{1 + ah/2}$, $t = kh$: $\theta$ on
    integer steps, the velocity on half steps, central differences and the trapezoidal friction.
    **Second order**, given the half-step initial velocity (`half_step_start`); with optax's zero
    trace (`half_step=False`) the start costs one order. Requires $ah \le 2$.

    **Inverse:** $h = \sqrt{2\alpha/(1+\beta)}$, $a = \frac2h\,\frac{1-\beta}{1+\beta}$.
    **Stability:** $h\sqrt{\lambda_{\max}} < 2$ for every damping ($D = \beta$,
    $T = 1 + \beta - \alpha\lambda$).
    """

    half_step: bool = eqx.field(default=True, converter=lambda v: flag("half_step", v))

    @property
    def order(self) -> float:  # pyright: ignore
        return 2.0 if self.half_step else 1.0

    factory: ClassVar = staticmethod(optax.sgd)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        ah = _damping_step(flow, step_size, 2.0)
        return {
            "learning_rate": step_size**2 / (1 + ah / 2),
            "momentum": (1 - ah / 2) / (1 + ah / 2),
        }

    @property
    def init_fn(self):
        return half_step_start if self.half_step else None

    def inverse(self, learning_rate: ScalarLike, momentum: ScalarLike):
        from .._flows.momentum import HeavyBall

        alpha, beta = _sgd_hyperparams(learning_rate, momentum, upper_open=True)
        h = jnp.sqrt(2 * alpha / (1 + beta))
        return HeavyBall((2 / h) * (1 - beta) / (1 + beta)), h

    def stability_limit(self, flow, lambda_max: ScalarLike) -> float:
        del flow
        return 2.0 / _sqrt_lambda(lambda_max)


class NaiveEuler(AbstractMap):
    r"""The naive map $\beta = 1 - ah$, $\alpha = h^2$ (post 1, eq. 18) to `optax.sgd(α,
    momentum=β)`, optax's zero trace: first order. Requires $ah \le 1$.

    **Inverse:** $h = \sqrt\alpha$, $a = (1-\beta)/h$.
    **Stability:** $z^2 < 2(1+\beta)$, i.e. $z < \sqrt{b^2+4} - b$.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(optax.sgd)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return {"learning_rate": step_size**2, "momentum": 1 - _damping_step(flow, step_size, 1.0)}

    def inverse(self, learning_rate: ScalarLike, momentum: ScalarLike):
        return _euler_inverse(learning_rate, momentum)

    def stability_limit(self, flow, lambda_max: ScalarLike) -> float:
        sq = _sqrt_lambda(lambda_max)
        return _lookahead_limit(_damping(flow) / sq, 0.0) / sq


class ConformalEuler(AbstractMap):
    r"""$\beta = e^{-ah}$, $\alpha = h^2$: optax's heavy ball is then *exactly*
    conformal-symplectic Euler $p^+ = e^{-ah}p - h\nabla L(q)$, $q^+ = q + hp^+$ with
    $p = -\sqrt\alpha\,\text{trace}$ (França et al. 2020), a Lie splitting of friction and force:
    first order against the damped ODE. Half-step start as `Leapfrog`.

    **Inverse:** $h = \sqrt\alpha$, $a = -\ln\beta/h$ ($\beta \in (0, 1]$; $\beta = 1$ is the
    undamped $a = 0$).
    **Stability:** $z^2 < 2(1 + e^{-bz})$ (root by `optimistix.Bisection` on $[0, 2]$).
    """

    half_step: bool = eqx.field(default=True, converter=lambda v: flag("half_step", v))
    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(optax.sgd)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return {"learning_rate": step_size**2, "momentum": jnp.exp(-flow.damping * step_size)}

    @property
    def init_fn(self):
        return half_step_start if self.half_step else None

    def inverse(self, learning_rate: ScalarLike, momentum: ScalarLike):
        from .._flows.momentum import HeavyBall

        alpha, beta = _sgd_hyperparams(learning_rate, momentum, lower_open=True)
        h = jnp.sqrt(alpha)
        return HeavyBall(-jnp.log(beta) / h), h

    def stability_limit(self, flow, lambda_max: ScalarLike) -> float:
        sq = _sqrt_lambda(lambda_max)
        dtype = jnp.result_type(float)  # float64 under x64, else float32
        b = jnp.asarray(_damping(flow) / sq, dtype)

        def excess(z, _):
            return z**2 - 2 * (1 + jnp.exp(-b * z))  # < 0: stable; increasing in z

        tol = 4 * float(jnp.finfo(dtype).eps)
        solver = optx.Bisection(rtol=tol, atol=tol)
        z0 = jnp.asarray(1.0, dtype)
        sol = optx.root_find(excess, solver, z0, options={"lower": 0.0, "upper": 2.0})
        return float(sol.value) / sq


class Lookahead(AbstractMap):
    r"""Nesterov-type look-ahead $v_{n+1} = \beta v_n - \alpha\nabla L(\theta_n + c\beta v_n)$
    (`dynopt.transforms.nesterov_momentum`, holding $\theta_n$, the extra gradient through
    `grad_fn`) with Su's map $\beta = 1 - ah$, $\alpha = h^2$: $c = 1$ standard Nesterov,
    $c = \tfrac12$ Su's midpoint look-ahead. First order (the look-ahead adds
    $O(h)\nabla^2L\dot\theta$ to the truncation error). Requires $ah \le 1$.

    **Stability:** $D = \beta(1 - cz^2)$, $T = 1 + D - z^2$; for $c = \tfrac12$ exactly
    $z < \sqrt2$.
    """

    # Validated here, not only when the transform is built at the first step (a negative or
    # NaN look-ahead made a Discretization and a stability limit without complaint).
    lookahead: float = eqx.field(default=1.0, converter=lambda c: nonnegative("lookahead", c))
    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(nesterov_momentum)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        beta = 1 - _damping_step(flow, step_size, 1.0)
        return {
            "learning_rate": step_size**2,
            "momentum": beta,
            "lookahead": jnp.asarray(self.lookahead),
        }

    def options(self, flow):
        del flow
        return (("reparametrize", False),)

    def inverse(self, learning_rate: ScalarLike, momentum: ScalarLike):
        return _euler_inverse(learning_rate, momentum)

    def stability_limit(self, flow, lambda_max: ScalarLike) -> float:
        sq = _sqrt_lambda(lambda_max)
        c = concrete_scalar("lookahead", self.lookahead, lower=0.0)
        return _lookahead_limit(_damping(flow) / sq, c) / sq


class ImplicitMidpoint(AbstractMap):
    r"""Su's implicit momentum scheme (post 1, eq. 19, `dynopt.transforms.
    implicit_midpoint_momentum`) with $\beta = 1 - ah$, $\alpha = h^2$: first order.

    **Stability:** the exact scheme is stable on every convex quadratic, but its fixed-point
    solve converges iff $\alpha\lambda < 2$: $z < \sqrt2$.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(implicit_midpoint_momentum)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        beta = 1 - _damping_step(flow, step_size, 1.0)
        return {"learning_rate": step_size**2, "momentum": beta}

    def inverse(self, learning_rate: ScalarLike, momentum: ScalarLike):
        return _euler_inverse(learning_rate, momentum)

    def stability_limit(self, flow, lambda_max: ScalarLike) -> float:
        del flow
        return float(np.sqrt(2.0)) / _sqrt_lambda(lambda_max)


class FixedMomentum(AbstractMap):
    r"""The fixed-momentum scaling of `optax.sgd(η, momentum=β)`: $\beta$ fixed, $\eta = h \to 0$,
    $t = k\eta$, following `RescaledGradientFlow(β)` $\dot\theta = -\nabla L/(1-\beta)$ to first
    order (Kovachki & Stuart 2021), from the slow-manifold trace (`slow_manifold_start`).

    **Inverse:** `(RescaledGradientFlow(momentum), learning_rate)`.
    **Stability:** $\eta\lambda < 2(1+\beta)$.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(optax.sgd)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return {"learning_rate": step_size, "momentum": flow.momentum}

    @property
    def init_fn(self):
        return slow_manifold_start

    def inverse(self, learning_rate: ScalarLike, momentum: ScalarLike):
        from .._flows.momentum import RescaledGradientFlow

        return RescaledGradientFlow(momentum), positive("learning_rate", learning_rate)

    def stability_limit(self, flow, lambda_max: ScalarLike) -> float:
        beta = _field(flow, "momentum")
        lam = concrete_scalar("lambda_max", lambda_max, lower=0.0, lower_open=True)
        return 2 * (1 + beta) / lam
