r"""Adaptive-step flows (post 2): RMSprop (per-coordinate and global), Adam, and the sign flow."""

from typing import ClassVar, NamedTuple, Self

import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Params, Scalar, ScalarLike
from .._discretization import widest_dtype
from .._maps.adaptive import Adam, GlobalRMSProp, RMSProp, Sign
from .._problem import Problem
from .._transforms.adaptive import tree_norm, tree_sum
from .._validation import hyperparameter, is_traced
from .base import AbstractMappedFlow


class RMSPropState(NamedTuple):
    """State of `RMSPropFlow`/`GlobalRMSPropFlow`: parameters and the second moment $G$."""

    params: Params
    G: Params | Array


class AbstractRMSPropFlow(AbstractMappedFlow):
    """What the two RMSprop flows share: the state `RMSPropState(θ, G)` and `from_hyperparams`,
    the inverse of the flow's `default_map` (fields stay on the final classes, as equinox's
    abstract/final pattern asks)."""

    def params(self, state: RMSPropState) -> Params:
        return state.params

    @classmethod
    def from_hyperparams(
        cls, learning_rate, decay, eps=1e-8, *, initial_scale=0.0
    ) -> tuple[Self, Array]:
        r"""Inverse map: `optax.rmsprop(γ, decay=λ, eps=ε, eps_in_sqrt=True)` follows
        `RMSPropFlow(κ=(1-λ)/γ, ε)` with $dt = \gamma$, and
        `dynopt.transforms.global_rmsprop(γ, λ, ε)` follows `GlobalRMSPropFlow` likewise.
        Returns `(flow, dt)`."""
        return cls.default_map().inverse(learning_rate, decay, eps, initial_scale)


class RMSPropFlow(AbstractRMSPropFlow):
    r"""The RMSprop flow (post 2, eq. 15):

    $$\dot\theta = -\frac{g}{\sqrt{G + \epsilon}},\qquad \dot G = \kappa\,(g\odot g - G),
      \qquad g = \nabla L(\theta),$$

    per coordinate ($G$ is a pytree like $\theta$), $G(0) = G_0$ (`initial_scale`). The global
    form (eq. 14) is `GlobalRMSPropFlow`.

    **Discretization** (`dynopt.maps.RMSProp`): $\gamma = h$, $\lambda = 1 - \kappa h$, $t = kh$,
    $G_{k+1} = \lambda G_k + (1-\lambda) g_k\odot g_k$,
    $\theta_{k+1} = \theta_k - \gamma\,g_k/\sqrt{G_{k+1} + \epsilon}$ — exactly
    `optax.rmsprop(h, decay=1-κh, eps=ε, eps_in_sqrt=True, initial_scale=G0)`. The step uses
    $G_{k+1}$, which already contains $g_k$ (semi-implicit Euler, still first order).

    With $G_0 = 0$ and $\epsilon \ll \kappa h g^2$, the first step has length
    $\approx\sqrt{h/\kappa}$ while the flow moves $2\sqrt{h/\kappa}$ by $t = h$: an $O(\sqrt h)$
    start-up error until $\kappa h g^2 \lesssim \epsilon$. Starting from $G_0 \approx g_0^2$
    removes it.

    **Limits:** $\kappa\to\infty$ gives $G = g\odot g$ and the sign-like flow
    $\dot\theta = -g/\sqrt{g\odot g + \epsilon}$ (= `SignFlow(width=√ε)`), with an $O(1/\kappa)$
    lag. **Lyapunov:** $\dot L = -\sum_i g_i^2/\sqrt{G_i+\epsilon} \le 0$.

    **Arguments:** `kappa` $\kappa > 0$, `eps` $\epsilon \ge 0$, `initial_scale` $G_0 \ge 0$
    (optax's default is 0).
    """

    default_map: ClassVar[type] = RMSProp

    kappa: Array = hyperparameter("kappa", lower=0.0, lower_open=True)
    eps: Array = hyperparameter("eps", default=1e-8, lower=0.0)
    initial_scale: Array = hyperparameter("initial_scale", default=0.0, lower=0.0)

    def init(self, params: Params) -> RMSPropState:
        G = jax.tree.map(lambda x: jnp.full_like(x, self.initial_scale), params)
        return RMSPropState(params, G)

    def vector_field(self, t: ScalarLike, state: RMSPropState, problem: Problem) -> RMSPropState:
        del t
        g = problem.grad(state.params)
        dtheta = jax.tree.map(lambda gi, Gi: -gi * jax.lax.rsqrt(Gi + self.eps), g, state.G)
        dG = jax.tree.map(lambda gi, Gi: self.kappa * (gi * gi - Gi), g, state.G)
        return RMSPropState(dtheta, dG)

    def loss_rate(self, t: ScalarLike, state: RMSPropState, problem: Problem) -> Scalar:
        r"""$-\sum_i g_i^2/\sqrt{G_i+\epsilon}$."""
        del t
        g = problem.grad(state.params)
        return -tree_sum(
            jax.tree.map(lambda gi, Gi: gi * gi * jax.lax.rsqrt(Gi + self.eps), g, state.G)
        )


class GlobalRMSPropFlow(AbstractRMSPropFlow):
    r"""RMSprop with one scalar second moment (post 2, eq. 14):

    $$\dot\theta = -\frac{g}{\sqrt{G + \epsilon}},\qquad \dot G = \kappa\,(\|g\|^2 - G):$$

    the direction stays $-\nabla L$, only the speed adapts. **Discretization:**
    `dynopt.maps.GlobalRMSProp` (`dynopt.transforms.global_rmsprop`), first order.
    **Lyapunov:** $\dot L = -\|g\|^2/\sqrt{G+\epsilon}$.

    **Arguments:** as `RMSPropFlow`.
    """

    default_map: ClassVar[type] = GlobalRMSProp

    kappa: Array = hyperparameter("kappa", lower=0.0, lower_open=True)
    eps: Array = hyperparameter("eps", default=1e-8, lower=0.0)
    initial_scale: Array = hyperparameter("initial_scale", default=0.0, lower=0.0)

    def init(self, params: Params) -> RMSPropState:
        # `optax.tree.dtype(params, "highest")` refuses a mixed float32/float64 tree under
        # strict promotion; `widest_dtype` promotes under standard rules.
        return RMSPropState(params, jnp.asarray(self.initial_scale, widest_dtype(params)))

    def vector_field(self, t: ScalarLike, state: RMSPropState, problem: Problem) -> RMSPropState:
        del t
        g = problem.grad(state.params)
        # In G's dtype, the widest: optax's norm adds a float32 and a float64 leaf's squares,
        # which strict promotion refuses (a mixed tree's field failed).
        gsq = tree_norm(g, squared=True)
        scale = jax.lax.rsqrt(state.G + self.eps)
        # G has the parameters' highest dtype: cast the speed to each leaf's (a float32 leaf of a
        # mixed pytree keeps its dtype, as it does in the discretization).
        dtheta = jax.tree.map(lambda gi: -scale.astype(gi.dtype) * gi, g)
        return RMSPropState(dtheta, self.kappa * (gsq - state.G))

    def loss_rate(self, t: ScalarLike, state: RMSPropState, problem: Problem) -> Scalar:
        r"""$-\|g\|^2/\sqrt{G+\epsilon}$."""
        del t
        gsq = tree_norm(problem.grad(state.params), squared=True)
        return -gsq * jax.lax.rsqrt(state.G + self.eps)


class AdamState(NamedTuple):
    """State of `AdamFlow` (and `AdamWFlow`): parameters and the raw moments $m, v$."""

    params: Params
    m: Params
    v: Params


def corrected_moments(a1, a2, t: ScalarLike, m: Params, v: Params, g: Params):
    r"""Adam's bias-corrected moments at time $t$, shared by `AdamFlow` and `AdamWFlow`:

    $$\hat m = \frac{m}{1 - e^{-a_1t}},\qquad \hat v = \frac{v}{1 - e^{-a_2t}},$$

    with their $t \to 0$ limits $g, g\odot g$ at $t = 0$ (from $m(0) = v(0) = 0$); $1 - e^{-at}$
    is `-expm1(-a t)`, accurate for small $t$.

    **Arguments:**

    - `a1`, `a2`: the moment rates $a_1, a_2 > 0$.
    - `t`: the time $t \ge 0$, a scalar.
    - `m`, `v`: the first and second moments, pytrees like the parameters.
    - `g`: the gradient at the current parameters (for the $t = 0$ limits), a pytree like `m`.

    **Returns:** `(mhat, vhat)`, pytrees like `m` and `v`.
    """
    t = jnp.asarray(t)
    started = t > 0

    def corrected(rate, moment, limit):
        c = -jnp.expm1(-rate * t)
        return jnp.where(started, moment / jnp.where(started, c, 1.0), limit)

    mhat = jax.tree.map(lambda mi, gi: corrected(a1, mi, gi), m, g)
    vhat = jax.tree.map(lambda vi, gi: corrected(a2, vi, gi * gi), v, g)
    return mhat, vhat


def adam_field(a1, a2, eps, t: ScalarLike, state: AdamState, g: Params) -> AdamState:
    r"""The Adam drift $(-\hat m/(\sqrt{\hat v}+\epsilon),\ a_1(g - m),\ a_2(g\odot g - v))$."""
    mhat, vhat = corrected_moments(a1, a2, t, state.m, state.v, g)
    dtheta = jax.tree.map(lambda a, b: -a / (jnp.sqrt(b) + eps), mhat, vhat)
    dm = jax.tree.map(lambda gi, m: a1 * (gi - m), g, state.m)
    dv = jax.tree.map(lambda gi, v: a2 * (gi * gi - v), g, state.v)
    return AdamState(dtheta, dm, dv)


class AdamFlow(AbstractMappedFlow):
    r"""The Adam flow with exact bias corrections:

    $$\dot m = a_1(g - m),\quad \dot v = a_2(g\odot g - v),\quad
      \dot\theta = -\frac{\hat m}{\sqrt{\hat v} + \epsilon},\quad
      \hat m = \frac{m}{1 - e^{-a_1 t}},\ \hat v = \frac{v}{1 - e^{-a_2 t}},$$

    from $m(0) = v(0) = 0$. The corrections make the field time-dependent and $0/0$ at $t = 0$;
    their limits $\hat m \to g(\theta_0)$, $\hat v \to g(\theta_0)^2$ are used there
    (`corrected_moments`), so the flow starts with $\dot\theta(0) = -g_0/(|g_0| + \epsilon)$.
    $\hat m(t)$ is the $e^{-a_1(t-s)}$-weighted mean of $g$ over $[0, t]$.

    **Discretization** (`dynopt.maps.Adam`): `optax.adam(h, b1=1-a₁h, b2=1-a₂h, eps=ε)`,
    $t = kh$, first order. Requires $a_i h < 1$.

    **Loss rate:** $-\langle g, \hat m/(\sqrt{\hat v}+\epsilon)\rangle$ (not sign-definite).

    **Arguments:** `a1`, `a2` $> 0$ (the moment rates), `eps` $\ge 0$ (outside the root).
    """

    default_map: ClassVar[type] = Adam

    a1: Array = hyperparameter("a1", lower=0.0, lower_open=True)
    a2: Array = hyperparameter("a2", lower=0.0, lower_open=True)
    eps: Array = hyperparameter("eps", default=1e-8, lower=0.0)

    def init(self, params: Params) -> AdamState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamState(params, zeros, zeros)

    def vector_field(self, t: ScalarLike, state: AdamState, problem: Problem) -> AdamState:
        return adam_field(self.a1, self.a2, self.eps, t, state, problem.grad(state.params))

    def params(self, state: AdamState) -> Params:
        return state.params

    @classmethod
    def from_hyperparams(cls, learning_rate, b1, b2, eps=1e-8) -> tuple["AdamFlow", Array]:
        r"""Inverse map: `optax.adam(η, b1, b2, eps)` follows `AdamFlow((1-b1)/η, (1-b2)/η, eps)`
        with $dt = \eta$. Returns `(flow, dt)`."""
        return Adam().inverse(learning_rate, b1, b2, eps)


def regularized_sign(g: Array, width: Array) -> Array:
    r"""The regularized sign $\operatorname{sign}_w(g) = g/\sqrt{g^2 + w^2}$, elementwise; the exact
    sign (with $\operatorname{sign} 0 = 0$) for $w = 0$.

    **Arguments:**

    - `g`: an array.
    - `width`: the width $w \ge 0$, a scalar (cast to `g`'s dtype).

    **Returns:** an array like `g`, entries in $[-1, 1]$.
    """
    den = jnp.sqrt(g * g + jnp.asarray(width, g.dtype) ** 2)
    return jnp.where(den > 0, g / jnp.where(den > 0, den, 1.0), 0.0)


class SignFlow(AbstractMappedFlow):
    r"""The sign flow $\dot\theta = -\operatorname{sign}(\nabla L)$ (post 2 eq. 11, post 3 eq. 4),
    with $\dot L = -\|\nabla L\|_1$.

    **How it is solved.** The right-hand side is discontinuous where a gradient component
    vanishes; there the exact flow slides along $\{g_i = 0\}$ (Filippov). `vector_field` uses the
    regularized sign of width $w$ (`regularized_sign`), $\operatorname{sign}_w(g) =
    g/\sqrt{g^2 + w^2}$, which is smooth (so diffrax's error control applies) and equals the
    $\kappa\to\infty$ limit of `RMSPropFlow` with $\epsilon = w^2$. It moves at speed
    $|g|/\sqrt{g^2+w^2}$, so it deviates from the exact flow by $O(w)$ (a delay $\sim w/\lambda$
    on reaching a surface $g_i = 0$ with curvature $\lambda$, then an $O(w/\lambda)$-thick
    boundary layer around it); its Lyapunov rate is $-\sum_i g_i^2/\sqrt{g_i^2+w^2}$, within
    $0.3003\,w$ per coordinate of $-\|g\|_1$ (the maximum of $x - x^2/\sqrt{1+x^2}$, at
    $x = |g|/w \approx 0.79$). Inside the layer the field is stiff (Jacobian $\sim\lambda/w$):
    pass `solver="implicit"` to `solve` for small $w$. `width=0` evaluates the
    exact sign (fine until a component of $g$ first vanishes).

    **Discretization** (`dynopt.maps.Sign`): `optax.sign_sgd(h)`, $t = kh$, first order against
    the exact flow. `width` does not enter the discretization.

    **Arguments:** `width` $w \ge 0$ (default $10^{-3}$).
    """

    default_map: ClassVar[type] = Sign

    width: Array = hyperparameter("width", default=1e-3, lower=0.0)

    def init(self, params: Params) -> Params:
        return params

    def vector_field(self, t: ScalarLike, state: Params, problem: Problem) -> Params:
        del t
        return jax.tree.map(lambda g: -regularized_sign(g, self.width), problem.grad(state))

    def params(self, state: Params) -> Params:
        return state

    @classmethod
    def from_hyperparams(cls, learning_rate, width=1e-3) -> tuple["SignFlow", Array]:
        """Inverse map: `optax.sign_sgd(η)` follows `SignFlow(width)` with $dt = \\eta$."""
        return Sign().inverse(learning_rate, width)

    def closed_form(self, problem: Problem):
        r"""The exact (Filippov) flow for `width=0` on a quadratic with diagonal Hessian
        $\mathrm{diag}(\lambda)$, per coordinate with $d = \theta_0 - \theta^*$:
        $\theta_i(t) = \theta^*_i + \operatorname{sign}(d_i)\max(|d_i| - t, 0)$ where
        $\lambda_i > 0$ (it slides on its minimum once it arrives), $\theta_i(t) = \theta_{0,i}$
        where $\lambda_i = 0$ (no gradient: it does not move) and
        $\theta_i(t) = \theta^*_i + \operatorname{sign}(d_i)(|d_i| + t)$ where $\lambda_i < 0$
        (it leaves at unit speed; $d_i = 0$ stays). `None` otherwise."""
        # A traced or batched width is not the one exact-sign flow this solves.
        if problem.hessian is None or problem.minimizer is None or is_traced(self.width):
            return None
        if np.ndim(self.width) != 0:
            return None
        hess = np.asarray(problem.hessian)
        if float(self.width) != 0.0 or np.any(hess != np.diag(np.diag(hess))):
            return None
        # The Hessian acts on the raveled parameters: its diagonal as a tree like them (a flat
        # or an ascending coordinate was sent to the minimizer like a descending one).
        leaves, treedef = jax.tree.flatten(problem.params0)
        cuts = np.cumsum([np.size(x) for x in leaves])[:-1]
        parts = np.split(np.diag(hess), cuts)
        lam = jax.tree.unflatten(treedef, [p.reshape(np.shape(x)) for p, x in zip(parts, leaves)])
        d = jax.tree.map(jnp.subtract, problem.params0, problem.minimizer)

        def solution(t):
            def move(di, si, li):
                size = jnp.where(li > 0, jnp.maximum(jnp.abs(di) - t, 0.0), jnp.abs(di))
                size = jnp.where(li < 0, jnp.abs(di) + t, size)
                return si + jnp.sign(di) * size

            return jax.tree.map(move, d, problem.minimizer, lam)

        return solution

    def loss_rate(self, t: ScalarLike, state: Params, problem: Problem) -> Scalar:
        r"""$-\sum_i g_i\operatorname{sign}_w(g_i)$ ($= -\|\nabla L\|_1$ for $w = 0$)."""
        del t
        g = problem.grad(state)
        return -tree_sum(jax.tree.map(lambda gi: gi * regularized_sign(gi, self.width), g))
