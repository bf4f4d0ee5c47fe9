r"""Adaptive-step flows (post 2): RMSprop (per-coordinate and global), Adam, and the sign flow."""

from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._custom_types import Array, Params, ScalarLike
from .._discretization import check_positive, Discretization
from .._problem import Problem
from .._transforms.adaptive import adam as _adam, global_rmsprop
from .base import AbstractFlow


def check_nonnegative(name: str, value) -> None:
    """`ValueError` unless a concrete `value` is finite and >= 0 (traced values pass)."""
    if isinstance(value, jax.core.Tracer):
        return
    arr = np.asarray(value, dtype=float)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or not np.all(arr >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}.")


def check_decay(name: str, value) -> None:
    """`ValueError` unless a concrete decay lies in [0, 1)."""
    if isinstance(value, jax.core.Tracer):
        return
    arr = np.asarray(value, dtype=float)
    if arr.size == 0 or not np.all((arr >= 0) & (arr < 1)):
        raise ValueError(f"{name} must lie in [0, 1), got {value}.")


def _rate_step(name: str, rate: ScalarLike, step_size: ScalarLike) -> Array:
    """The EMA decay $1 - a h$ of a rate $a$ discretized with step $h$; must lie in [0, 1)."""
    check_positive("step_size", step_size)
    decay = 1 - jnp.asarray(rate) * jnp.asarray(step_size)
    if not isinstance(decay, jax.core.Tracer) and not bool(jnp.all(decay >= 0)):
        raise ValueError(
            f"step_size={step_size} is too large for {name}={rate}: the decay 1 - {name}*h must "
            f"lie in [0, 1), i.e. step_size <= 1/{name}."
        )
    return decay


def _sq(tree) -> Params:
    return jax.tree.map(lambda x: x * x, tree)


class RMSPropState(NamedTuple):
    """State of `RMSPropFlow`: parameters and the second-moment estimate $G$."""

    params: Params
    G: Params | Array


class RMSPropFlow(AbstractFlow):
    r"""The RMSprop flow (post 2, eqs. 14-15):

    $$\dot\theta = -\frac{g}{\sqrt{G + \epsilon}},\qquad \dot G = \kappa\,(g\odot g - G),
      \qquad g = \nabla L(\theta),$$

    per coordinate (`norm="coordinate"`, eq. 15: $G$ is a pytree like $\theta$), or with one scalar
    $G$ tracking $\|g\|^2$ (`norm="global"`, eq. 14: the direction stays $-\nabla L$, only the
    speed adapts). $G(0) = G_0$ (`initial_scale`).

    **Discretization** (`discretize(h)`): $\gamma = h$, $\lambda = 1 - \kappa h$, $t = kh$,

    $$G_{k+1} = \lambda G_k + (1-\lambda) g_k\odot g_k,\qquad
      \theta_{k+1} = \theta_k - \gamma\,\frac{g_k}{\sqrt{G_{k+1} + \epsilon}}.$$

    Note the ordering: the step uses $G_{k+1}$, which already contains $g_k$ (explicit Euler for
    $G$, then the $\theta$ step with the updated $G$: a semi-implicit Euler, still first order).
    Coordinate form: exactly `optax.rmsprop(h, decay=1-κh, eps=ε, eps_in_sqrt=True,
    initial_scale=G0)`; global form: `dynopt.transforms.global_rmsprop`. Requires $\kappa h\le 1$.

    With $G_0 = 0$ and $\epsilon \ll \kappa h g^2$, the first step has length
    $\approx\sqrt{h/\kappa}$ while the flow moves $2\sqrt{h/\kappa}$ by $t = h$: an $O(\sqrt h)$
    start-up error until $\kappa h g^2 \lesssim \epsilon$. Starting from $G_0 \approx g_0^2$
    removes it.

    **Limits:** $\kappa\to\infty$ gives $G = g\odot g$ and the sign-like flow
    $\dot\theta = -g/\sqrt{g\odot g + \epsilon}$ (= `SignFlow(width=√ε)`), with an $O(1/\kappa)$
    lag. **Lyapunov:** $\dot L = -\sum_i g_i^2/\sqrt{G_i+\epsilon} \le 0$.

    **Arguments:** `kappa` $\kappa > 0$, `eps` $\epsilon \ge 0$, `norm`, `initial_scale`
    $G_0 \ge 0$ (optax's default is 0).
    """

    kappa: ScalarLike
    eps: ScalarLike = 1e-8
    norm: Literal["coordinate", "global"] = eqx.field(static=True, default="coordinate")
    initial_scale: ScalarLike = 0.0

    def __check_init__(self):
        check_positive("kappa", self.kappa)
        check_nonnegative("eps", self.eps)
        check_nonnegative("initial_scale", self.initial_scale)
        if self.norm not in ("coordinate", "global"):
            raise ValueError(f"norm must be 'coordinate' or 'global', got {self.norm!r}.")

    def init(self, params: Params) -> RMSPropState:
        if self.norm == "global":
            dtype = jnp.result_type(*jax.tree.leaves(params))
            return RMSPropState(params, jnp.asarray(self.initial_scale, dtype))
        return RMSPropState(
            params, jax.tree.map(lambda x: jnp.full_like(x, self.initial_scale), params)
        )

    def vector_field(self, t: ScalarLike, state: RMSPropState, problem: Problem) -> RMSPropState:
        del t
        g = problem.grad(state.params)
        if self.norm == "global":
            gsq = optax.tree.norm(g, squared=True)
            scale = jax.lax.rsqrt(state.G + self.eps)
            return RMSPropState(optax.tree.scale(-scale, g), self.kappa * (gsq - state.G))
        dtheta = jax.tree.map(lambda gi, Gi: -gi * jax.lax.rsqrt(Gi + self.eps), g, state.G)
        dG = jax.tree.map(lambda gi, Gi: self.kappa * (gi * gi - Gi), g, state.G)
        return RMSPropState(dtheta, dG)

    def params(self, state: RMSPropState) -> Params:
        return state.params

    def discretize(self, step_size: ScalarLike) -> Discretization:
        decay = _rate_step("kappa", self.kappa, step_size)
        hp = dict(
            learning_rate=step_size, decay=decay, eps=self.eps, initial_scale=self.initial_scale
        )
        if self.norm == "global":
            return Discretization(global_rmsprop, hp, dt=step_size)
        return Discretization(optax.rmsprop, hp, dt=step_size, options=(("eps_in_sqrt", True),))

    @staticmethod
    def from_hyperparams(
        learning_rate: ScalarLike,
        decay: ScalarLike,
        eps: ScalarLike = 1e-8,
        *,
        norm: Literal["coordinate", "global"] = "coordinate",
        initial_scale: ScalarLike = 0.0,
    ) -> tuple["RMSPropFlow", ScalarLike]:
        r"""Inverse map: `optax.rmsprop(γ, decay=λ, eps=ε, eps_in_sqrt=True)` follows
        `RMSPropFlow(κ=(1-λ)/γ, ε)` with $dt = \gamma$. Returns `(flow, dt)`."""
        check_positive("learning_rate", learning_rate)
        check_decay("decay", decay)
        check_nonnegative("eps", eps)
        kappa = (1 - jnp.asarray(decay)) / jnp.asarray(learning_rate)
        return RMSPropFlow(kappa, eps, norm, initial_scale), learning_rate


class AdamState(NamedTuple):
    """State of `AdamFlow`: parameters and the raw (uncorrected) moments $m, v$."""

    params: Params
    m: Params
    v: Params


class AdamFlow(AbstractFlow):
    r"""The Adam flow with exact bias corrections:

    $$\dot m = a_1(g - m),\quad \dot v = a_2(g\odot g - v),\quad
      \dot\theta = -\frac{\hat m}{\sqrt{\hat v} + \epsilon},\quad
      \hat m = \frac{m}{1 - e^{-a_1 t}},\ \hat v = \frac{v}{1 - e^{-a_2 t}},$$

    from $m(0) = v(0) = 0$. The corrections make the field time-dependent and $0/0$ at $t = 0$;
    their limits $\hat m \to g(\theta_0)$, $\hat v \to g(\theta_0)^2$ are used there, so the flow
    starts with $\dot\theta(0) = -g_0/(|g_0| + \epsilon)$ (for $t > 0$, $1 - e^{-at}$ is
    evaluated as `-expm1(-a t)`, accurate for small $t$). $\hat m(t)$ is the
    $e^{-a_1(t-s)}$-weighted mean of $g$ over $[0, t]$.

    **Discretization** (`discretize(h)`): `optax.adam(h, b1=1-a₁h, b2=1-a₂h, eps=ε)`, $t = kh$.
    Step $k \to k+1$ uses $m_{k+1}, v_{k+1}$ with the corrections $1-\beta_i^{k+1}$, i.e. the
    flow's $1-e^{-a_i t_{k+1}}$ up to $O(h)$; first order. Requires $a_i h \le 1$.
    (optax's bias correction is not strict-dtype-promotion clean with traced $\beta_i$; the
    transform runs it under standard promotion, same operations.)

    **Arguments:** `a1`, `a2` $> 0$ (the moment rates), `eps` $\ge 0$ (outside the root).
    """

    a1: ScalarLike
    a2: ScalarLike
    eps: ScalarLike = 1e-8

    def __check_init__(self):
        check_positive("a1", self.a1)
        check_positive("a2", self.a2)
        check_nonnegative("eps", self.eps)

    def init(self, params: Params) -> AdamState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamState(params, zeros, zeros)

    def corrected_moments(self, t: ScalarLike, state: AdamState, g: Params):
        r"""$(\hat m, \hat v)$ at time $t$ for the gradient $g$ at `state.params` (their
        $t \to 0$ limits $g, g\odot g$ at $t = 0$)."""
        t = jnp.asarray(t)
        started = t > 0

        def corrected(rate, moment, limit):
            c = -jnp.expm1(-rate * t)
            return jnp.where(started, moment / jnp.where(started, c, 1.0), limit)

        mhat = jax.tree.map(lambda m, gi: corrected(self.a1, m, gi), state.m, g)
        vhat = jax.tree.map(lambda v, gi: corrected(self.a2, v, gi * gi), state.v, g)
        return mhat, vhat

    def vector_field(self, t: ScalarLike, state: AdamState, problem: Problem) -> AdamState:
        g = problem.grad(state.params)
        mhat, vhat = self.corrected_moments(t, state, g)
        dtheta = jax.tree.map(lambda a, b: -a / (jnp.sqrt(b) + self.eps), mhat, vhat)
        dm = jax.tree.map(lambda gi, m: self.a1 * (gi - m), g, state.m)
        dv = jax.tree.map(lambda gi, v: self.a2 * (gi * gi - v), g, state.v)
        return AdamState(dtheta, dm, dv)

    def params(self, state: AdamState) -> Params:
        return state.params

    def discretize(self, step_size: ScalarLike) -> Discretization:
        b1 = _rate_step("a1", self.a1, step_size)
        b2 = _rate_step("a2", self.a2, step_size)
        hp = {"learning_rate": step_size, "b1": b1, "b2": b2, "eps": self.eps}
        return Discretization(_adam, hp, dt=step_size)

    @staticmethod
    def from_hyperparams(
        learning_rate: ScalarLike, b1: ScalarLike, b2: ScalarLike, eps: ScalarLike = 1e-8
    ) -> tuple["AdamFlow", ScalarLike]:
        r"""Inverse map: `optax.adam(η, b1, b2, eps)` follows `AdamFlow((1-b1)/η, (1-b2)/η, eps)`
        with $dt = \eta$. Returns `(flow, dt)`."""
        check_positive("learning_rate", learning_rate)
        check_decay("b1", b1)
        check_decay("b2", b2)
        check_nonnegative("eps", eps)
        lr = jnp.asarray(learning_rate)
        return AdamFlow((1 - jnp.asarray(b1)) / lr, (1 - jnp.asarray(b2)) / lr, eps), learning_rate


class SignFlow(AbstractFlow):
    r"""The sign flow $\dot\theta = -\operatorname{sign}(\nabla L)$ (post 2 eq. 11, post 3 eq. 4),
    with $\dot L = -\|\nabla L\|_1$.

    **How it is solved.** The right-hand side is discontinuous where a gradient component
    vanishes; there the exact flow slides along $\{g_i = 0\}$ (Filippov). `vector_field` uses the
    regularized sign of width $w$,
    $$\operatorname{sign}_w(g) = \frac{g}{\sqrt{g^2 + w^2}},$$
    which is smooth (so diffrax's error control applies) and equals the $\kappa\to\infty$ limit
    of `RMSPropFlow` with $\epsilon = w^2$. It moves at speed $|g|/\sqrt{g^2+w^2}$, so it deviates
    from the exact flow by $O(w)$ (a delay $\sim w/\lambda$ on reaching a surface $g_i = 0$ with
    curvature $\lambda$, then an $O(w/\lambda)$-thick boundary layer around it); its Lyapunov rate
    is $-\sum_i g_i^2/\sqrt{g_i^2+w^2}$, within $0.3\,w$ per coordinate of $-\|g\|_1$. Inside the
    layer the field is stiff (Jacobian $\sim\lambda/w$): pass `solver="implicit"` to `solve` for
    small $w$. `width=0` evaluates the exact sign (fine until a component of $g$ first vanishes;
    after that an adaptive solver chatters and exhausts `max_steps`).

    **Discretization:** `optax.sign_sgd(h)`, $\theta_{k+1} = \theta_k - h\operatorname{sign}(g_k)$,
    $t = kh$: it follows the exact flow to $O(h)$ and chatters with amplitude $\le h$ on the
    sliding surfaces. `width` does not enter the discretization.

    **Arguments:** `width` $w \ge 0$ (default $10^{-3}$).
    """

    width: ScalarLike = 1e-3

    def __check_init__(self):
        check_nonnegative("width", self.width)

    def init(self, params: Params) -> Params:
        return params

    def vector_field(self, t: ScalarLike, state: Params, problem: Problem) -> Params:
        del t
        w2 = jnp.asarray(self.width) ** 2

        def sign(g):
            # w = 0: the exact sign (sign(0) = 0); w > 0: g / sqrt(g^2 + w^2).
            den = jnp.sqrt(g * g + w2.astype(g.dtype))
            return -jnp.where(den > 0, g / jnp.where(den > 0, den, 1.0), 0.0)

        return jax.tree.map(sign, problem.grad(state))

    def params(self, state: Params) -> Params:
        return state

    def discretize(self, step_size: ScalarLike) -> Discretization:
        check_positive("step_size", step_size)
        return Discretization(optax.sign_sgd, {"learning_rate": step_size}, dt=step_size)

    @staticmethod
    def from_hyperparams(
        learning_rate: ScalarLike, width: ScalarLike = 1e-3
    ) -> tuple["SignFlow", ScalarLike]:
        """Inverse map: `optax.sign_sgd(η)` follows `SignFlow()` with $dt = \\eta$."""
        check_positive("learning_rate", learning_rate)
        return SignFlow(width), learning_rate
