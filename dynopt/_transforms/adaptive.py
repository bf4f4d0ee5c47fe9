r"""Transforms for adaptive flows that optax lacks: RMSprop with one global second moment, the
truncated Polyak step of Su's post 3, and gradient descent with a user preconditioner; and Adam
and the Polyak step as optax computes them, with the per-step scalars hoisted out of the
per-coordinate arithmetic. (optax's `scale_by_polyak` is not strict-promotion clean in float32;
`dynopt.maps` runs every factory under `standard_promotion`.)

Why the hoisting: with hyper-parameters closed over as Python floats (what a user writes), XLA
folds `x / c` into `x * (1/c)` at compile time; with traced hyper-parameters (what makes a sweep
compile once) `m / (1 - b1**t)` stays a division per coordinate. Dividing is several times
dearer than multiplying, so at 1e6 parameters traced `optax.adam` ran 1.2-1.5x slower than
optax with constants. Computing the scalar reciprocals once per step gives XLA the program it
builds from constants.

Each returns the unscaled direction from a `scale_by_*` block; the `*_sgd`/`*_rmsprop` recipes
chain it with `optax.scale_by_learning_rate`, as optax's `alias.py` does.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._custom_types import Array, Params, ScalarLike
from .._discretization import widest_dtype
from .._validation import function
from .hyper import decay as _decay, interval, nonnegative, positive


def _learning_rate(learning_rate, name: str = "learning_rate"):
    """A learning rate or schedule: a number (or traced value) must be finite and >= 0
    (`ValueError` at construction, `eqx.error_if` inside `jit`); a callable is a schedule."""
    if callable(learning_rate):
        return learning_rate
    return nonnegative(name, learning_rate)


def _scale_by_learning_rate(learning_rate) -> optax.GradientTransformation:
    """`optax.scale_by_learning_rate(learning_rate)`, each update in its own dtype: a float64
    array rate (a NumPy scalar, a `vmap`-ped sweep) on float32 parameters has no strict
    promotion path (a Python float, weakly typed, is optax's arithmetic either way)."""
    tx = optax.scale_by_learning_rate(learning_rate)

    def update_fn(updates, state, params=None):
        with jax.numpy_dtype_promotion("standard"):
            new, state = tx.update(updates, state, params)
        return optax.tree.cast_like(new, updates), state

    return optax.GradientTransformation(tx.init, update_fn)


def _dtype(tree) -> Any:
    # The parameters' widest dtype (a mixed float32/float64 tree too, also under strict
    # promotion); the default float for an empty tree (no leaves to read it from).
    return widest_dtype(tree) if jax.tree.leaves(tree) else jnp.result_type(float)


def tree_norm(tree, squared: bool = False) -> Array:
    """`optax.tree.norm` in the tree's widest dtype (each leaf cast to it first: the sum of a
    float32 and a float64 leaf's squares has no promotion path under strict promotion)."""
    dtype = _dtype(tree)
    return optax.tree.norm(jax.tree.map(lambda x: x.astype(dtype), tree), squared=squared)


def tree_sum(tree) -> Array:
    """`optax.tree.sum` in the tree's widest dtype (as `tree_norm`)."""
    dtype = _dtype(tree)
    return optax.tree.sum(jax.tree.map(lambda x: x.astype(dtype), tree))


def tree_vdot(a, b) -> Array:
    """`optax.tree.vdot` in the widest dtype of both trees (as `tree_norm`)."""
    dtype = _dtype((a, b))
    cast = lambda t: jax.tree.map(lambda x: x.astype(dtype), t)
    return optax.tree.vdot(cast(a), cast(b))


def _scale(scalar, tree):
    """`optax.tree.scale` with the scalar cast to each leaf's dtype (each leaf keeps its own)."""
    return jax.tree.map(lambda x: jnp.asarray(scalar, x.dtype) * x, tree)


class ScaleByGlobalRmsState(NamedTuple):
    """State of `scale_by_global_rms`: one scalar moving average of $\\|g\\|^2$."""

    nu: Array


def scale_by_global_rms(
    decay: ScalarLike = 0.9, eps: ScalarLike = 1e-8, initial_scale: ScalarLike = 0.0
) -> optax.GradientTransformationExtraArgs:
    r"""Divide the whole gradient by the root of one moving average of its squared norm
    (post 2, eq. 14):

    $$G_{k+1} = \lambda G_k + (1-\lambda)\|g_k\|^2,\qquad u_k = g_k/\sqrt{G_{k+1} + \epsilon}.$$

    The update uses $G_{k+1}$ (already containing $g_k$), the ordering of `optax.scale_by_rms`.
    For a single scalar parameter this is `optax.scale_by_rms(decay, eps, initial_scale)`.
    Hyper-parameters are cast to the gradient's dtype (strict-promotion clean).

    **Arguments:** `decay` $\lambda \in [0, 1)$, `eps` $\epsilon \ge 0$ (inside the root),
    `initial_scale` $G_0 \ge 0$.
    """
    decay = _decay("decay", decay)
    eps = nonnegative("eps", eps)
    initial_scale = nonnegative("initial_scale", initial_scale)

    def init_fn(params):
        return ScaleByGlobalRmsState(nu=jnp.asarray(initial_scale, _dtype(params)))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        dtype = state.nu.dtype
        lam = jnp.asarray(decay, dtype)
        sq = jnp.asarray(tree_norm(updates, squared=True), dtype)
        nu = lam * state.nu + (1 - lam) * sq
        scale = jax.lax.rsqrt(nu + jnp.asarray(eps, dtype))
        return _scale(scale, updates), ScaleByGlobalRmsState(nu=nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def global_rmsprop(
    learning_rate: ScalarLike,
    decay: ScalarLike = 0.9,
    eps: ScalarLike = 1e-8,
    initial_scale: ScalarLike = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""RMSprop with a scalar second moment (post 2, eq. 14):

    $$\theta_{k+1} = \theta_k - \gamma\, g_k/\sqrt{G_{k+1}+\epsilon},\qquad
    G_{k+1} = \lambda G_k + (1-\lambda)\|g_k\|^2.$$

    The step keeps the direction of $-g_k$: `chain(scale_by_global_rms(decay, eps,
    initial_scale), scale_by_learning_rate(learning_rate))`.

    **Arguments:**

    - `learning_rate`: $\gamma \ge 0$, or an optax schedule.
    - `decay`: $\lambda \in [0, 1)$.
    - `eps`: $\epsilon \ge 0$ (inside the root).
    - `initial_scale`: $G_0 \ge 0$.

    **Returns:** an `optax.GradientTransformationExtraArgs` (state: `ScaleByGlobalRmsState`, one
    scalar $G$, then the learning rate's).

    **Raises:** `ValueError` for a concrete hyper-parameter out of range (traced: inside `jit`).
    """
    return optax.chain(
        scale_by_global_rms(decay, eps, initial_scale),
        _scale_by_learning_rate(_learning_rate(learning_rate)),
    )


def scale_by_truncated_polyak(
    max_scale: ScalarLike, f_min: ScalarLike = 0.0
) -> optax.GradientTransformationExtraArgs:
    r"""The truncated Polyak direction of post 3, eq. 11:

    $$u = \frac{g}{\|g\|}\,(L - L^*)\,\min\!\Big(\frac{1}{\|g\|}, M\Big),$$

    of length $(L-L^*)\min(1/\|g\|, M) \le M(L-L^*)$. It needs the loss:
    `update(..., value=L)` (`dynopt.run` passes it). $u = 0$ where $g = 0$.

    **Arguments:** `max_scale` $M > 0$; `f_min` the known minimum $L^*$ (finite).
    """
    max_scale = positive("max_scale", max_scale)
    f_min = interval("f_min", f_min)

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        _needs_value(value, "scale_by_truncated_polyak")
        norm = tree_norm(updates)
        gap = jnp.asarray(value, norm.dtype) - jnp.asarray(f_min, norm.dtype)
        return _scale(_truncated_polyak_scale(max_scale)(norm, gap), updates), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def truncated_polyak_sgd(
    learning_rate: ScalarLike, max_scale: ScalarLike, f_min: ScalarLike = 0.0
) -> optax.GradientTransformationExtraArgs:
    r"""Explicit Euler for the truncated Polyak flow (post 3, eq. 11):

    $$\theta_{k+1} = \theta_k - h\,(L-L^*)\min(1/\|g\|, M)\,g/\|g\|,$$

    and no step where $g = 0$. Su's 1-D code (`x += -h * sign(g) * min(|g|/g**2, M) * f(x)`) is
    this with $L^* = 0$. The iterates of `chain(scale_by_truncated_polyak(M, f_min),
    optax.scale_by_learning_rate(h))`, with the scalar $-h\,\cdot$step formed once. It needs the
    loss: `update(grads, state, params, value=L)` (`dynopt.run` passes it).

    **Arguments:**

    - `learning_rate`: the step $h \ge 0$ (finite; traced values are checked inside `jit`).
    - `max_scale`: $M > 0$, the cap on the step's $1/\|g\|$.
    - `f_min`: the known minimum $L^*$ (finite; default 0).

    **Returns:** a stateless `optax.GradientTransformationExtraArgs`.

    **Raises:** `ValueError` for a hyper-parameter out of range, or at `update` without `value`.
    """
    return _scaled_by_scalar_step(
        learning_rate,
        interval("f_min", f_min),
        tree_norm,
        _truncated_polyak_scale(positive("max_scale", max_scale)),
    )


def polyak_sgd(
    learning_rate: ScalarLike, f_min: ScalarLike = 0.0, max_learning_rate: ScalarLike = jnp.inf
) -> optax.GradientTransformationExtraArgs:
    r"""Explicit Euler for the Polyak flow $\dot\theta = -(L-L^*)\nabla L/\|\nabla L\|^2$:

    $$\theta_{k+1} = \theta_k - h\min\big((L-L^*)/\|g\|^2, \eta_{\max}\big)\,g,$$

    the iterates of `chain(optax.scale_by_polyak(f_min, max_learning_rate),
    optax.scale_by_learning_rate(h))`, the scalar step formed once (`scale_by_polyak_step`). It
    needs the loss: `update(grads, state, params, value=L)` (`dynopt.run` passes it).

    Not `optax.polyak_sgd(scaling=h)`: in optax 0.2.8 that chains `sgd(scaling)` *before*
    `scale_by_polyak`, which then divides by $\|h\,g\|^2$, so its step is $(L-L^*)g/(h\|g\|^2)$
    (scaling acts as $1/h$; identical only for $h = 1$).

    **Arguments:**

    - `learning_rate`: the step $h \ge 0$ (finite; traced values are checked inside `jit`).
    - `f_min`: the known minimum $L^*$ (finite; default 0).
    - `max_learning_rate`: $\eta_{\max} > 0$, the cap on the Polyak step (default $\infty$:
      none).

    **Returns:** a stateless `optax.GradientTransformationExtraArgs`.

    **Raises:** `ValueError` for a hyper-parameter out of range, or at `update` without `value`.
    """
    return scale_by_polyak_step(learning_rate, f_min, max_learning_rate)


def scale_by_adam(
    b1: ScalarLike = 0.9,
    b2: ScalarLike = 0.999,
    eps: ScalarLike = 1e-8,
    eps_root: ScalarLike = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""`optax.scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)` with the bias
    corrections computed once per step:

    $$m_{k+1} = \beta_1 m_k + (1-\beta_1)g_k,\qquad v_{k+1} = \beta_2 v_k + (1-\beta_2)g_k^2,$$
    $$u_k = \frac{\hat m_{k+1}}{\sqrt{c_2\,v_{k+1} + \epsilon_{\rm root}} + \epsilon},\qquad
    c_i(k) = \frac{1}{1-\beta_i^{k}},$$

    $\hat m_{k+1} = c_1(k+1)\,m_{k+1}$, or with `nesterov=True` (optax's NAdam)
    $\hat m_{k+1} = \beta_1 c_1(k+2)\,m_{k+1} + (1-\beta_1)c_1(k+1)\,g_k$.

    The same state (`optax.ScaleByAdamState`, the first moment stored in `mu_dtype`) and the
    same arithmetic as optax, except that $m/(1-\beta^t)$ is $m\cdot c$ with the scalar $c$
    formed once (one rounding apart, as optax itself compiles with constant $\beta$s); the
    moments are updated by optax's own `optax.tree.update_moment*`. $c_i$ is
    `optax.tree.bias_correction` of the scalar 1: $1 - \beta_i^k$ in $\beta_i$'s own precision
    as optax computes it, inverted in the moments' widest dtype, then cast to each moment's
    dtype. Updates come back in the gradient's dtype.

    **Arguments:** `b1`, `b2` $\in [0, 1)$; `eps`, `eps_root` $\ge 0$; `mu_dtype` (`None`: the
    parameters' dtype; else a floating dtype, or a `ValueError`); `nesterov`.
    """
    b1 = _decay("b1", b1)
    b2 = _decay("b2", b2)
    eps = nonnegative("eps", eps)
    eps_root = nonnegative("eps_root", eps_root)
    if mu_dtype is not None:
        mu_dtype = _mu_dtype(mu_dtype)

    def init_fn(params):
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params, dtype=mu_dtype),
            nu=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        if mu_dtype is None:
            # optax's update; a decay that is a float64 array (a NumPy scalar, a `vmap`-ped
            # sweep) on float32 parameters has no strict promotion path: standard promotion,
            # then the moment in its own dtype again (a Python float, weakly typed, gives
            # optax's float32 arithmetic either way).
            with jax.numpy_dtype_promotion("standard"):
                mu = optax.tree.update_moment(updates, state.mu, b1, 1)
            mu = optax.tree.cast_like(mu, state.mu)
        else:
            # A first moment stored in another dtype: optax's update under the promotion rules
            # optax runs with (b1 m in m's dtype, the sum in the wider one), then stored in
            # mu_dtype below; the bias-corrected step is formed in the wider dtype.
            with jax.numpy_dtype_promotion("standard"):
                mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        g_mu = optax.tree.cast_like(updates, mu)
        with jax.numpy_dtype_promotion("standard"):  # (as mu's)
            nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        nu = optax.tree.cast_like(nu, state.nu)
        count = optax.safe_increment(state.count)
        wide = _dtype((updates, mu))

        def correction(b, k):
            # optax's own correction of the scalar 1 (the function `modified_flow` reads a
            # counter through): 1 - b**k in b's own precision, each b apart (a float32 b1 must
            # not round b2's), inverted in the moments' widest dtype, where optax divides.
            # (The count as a float: strict-promotion clean.)
            precision = jnp.result_type(b, float)
            with jax.numpy_dtype_promotion("standard"):  # (float32 b, float64 moments)
                one_ = jnp.ones((), jnp.promote_types(precision, wide))
            return optax.tree.bias_correction(one_, b, k.astype(precision))

        c1 = correction(b1, count)
        c2 = correction(b2, count)
        if nesterov:
            c1_next = correction(b1, optax.safe_increment(count))

        def one(g, m, v):
            if nesterov:
                b = jnp.asarray(b1, m.dtype)
                m_hat = b * (m * c1_next.astype(m.dtype)) + (1 - b) * (g * c1.astype(g.dtype))
            else:
                m_hat = m * c1.astype(m.dtype)
            root = jnp.sqrt(v * c2.astype(v.dtype) + jnp.asarray(eps_root, v.dtype))
            # Divided in the wider of the moments' dtypes, as optax promotes: a float32 first
            # moment (mu_dtype) over a float64 second one rounded the denominator to float32.
            wide = widest_dtype([m_hat.dtype, v.dtype])
            return m_hat.astype(wide) / (root + jnp.asarray(eps, v.dtype)).astype(wide)

        new = jax.tree.map(one, g_mu, mu, nu)
        new = optax.tree.cast_like(new, updates)
        state = optax.ScaleByAdamState(
            count=count,
            mu=optax.tree.cast_like(mu, state.mu),
            nu=optax.tree.cast_like(nu, state.nu),
        )
        return new, state

    return optax.GradientTransformation(init_fn, update_fn)


def _mu_dtype(mu_dtype) -> Any:
    """`mu_dtype` canonicalized, or a `ValueError` unless it names a floating dtype (an integer
    first moment would truncate every update; optax casts to it silently)."""
    try:
        dtype = jax.dtypes.canonicalize_dtype(mu_dtype)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            "mu_dtype must be None (the parameters' dtype) or a floating dtype (e.g. "
            f"jnp.float32, jnp.bfloat16), got {mu_dtype!r}."
        )
    return dtype


def adam(
    learning_rate: ScalarLike | optax.Schedule,
    b1: ScalarLike = 0.9,
    b2: ScalarLike = 0.999,
    eps: ScalarLike = 1e-8,
    eps_root: ScalarLike = 0.0,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""`optax.adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)` (the same
    signature, state and iterates, equal to rounding) with the bias corrections hoisted
    (`scale_by_adam`): $\theta_{k+1} = \theta_k - \eta\,u_k$, $u_k$ as in `scale_by_adam`. As
    fast with traced hyper-parameters as optax with constants.

    **Arguments:**

    - `learning_rate`: $\eta \ge 0$, or an optax schedule.
    - `b1`, `b2`: the moments' decays $\beta_1, \beta_2 \in [0, 1)$.
    - `eps`, `eps_root`: $\epsilon, \epsilon_{\rm root} \ge 0$ (outside and inside the root).
    - `mu_dtype`: the first moment's dtype (`None`: the parameters'; else a floating dtype).
    - `nesterov`: optax's NAdam correction of the first moment.

    **Returns:** an `optax.GradientTransformation` with optax's state (`ScaleByAdamState`, then
    the learning rate's).

    **Raises:** `ValueError` for a hyper-parameter out of range or a `mu_dtype` that is not a
    floating dtype.
    """
    return optax.chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        _scale_by_learning_rate(_learning_rate(learning_rate)),
    )


def adamw(
    learning_rate: ScalarLike | optax.Schedule,
    b1: ScalarLike = 0.9,
    b2: ScalarLike = 0.999,
    eps: ScalarLike = 1e-8,
    eps_root: ScalarLike = 0.0,
    mu_dtype: Any | None = None,
    weight_decay: ScalarLike | optax.Schedule = 1e-4,
    mask: Any | Callable[[Params], Any] | None = None,
    *,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""`optax.adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask,
    nesterov=nesterov)` (the same signature, state and iterates, equal to rounding) with the
    bias corrections hoisted (`scale_by_adam`):

    $$\theta_{k+1} = \theta_k - \eta\,(u_k + \lambda\theta_k),$$

    the decay applied where `mask` is true.

    **Arguments:**

    - `learning_rate`: $\eta \ge 0$, or an optax schedule.
    - `b1`, `b2`, `eps`, `eps_root`, `mu_dtype`, `nesterov`: as `adam`.
    - `weight_decay`: $\lambda \ge 0$, or a schedule.
    - `mask`: a pytree of bools like the parameters, or a function of the parameters returning
      one (`None`: decay everywhere).

    **Returns:** an `optax.GradientTransformation` with optax's state.

    **Raises:** `ValueError` for a hyper-parameter out of range or a `mu_dtype` that is not a
    floating dtype, or at `update` without `params`.
    """
    return optax.chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        _add_decayed_weights(_learning_rate(weight_decay, "weight_decay"), mask),
        _scale_by_learning_rate(_learning_rate(learning_rate)),
    )


def _add_decayed_weights(weight_decay, mask) -> optax.GradientTransformation:
    r"""`optax.add_decayed_weights(weight_decay, mask)` (its state and arithmetic),
    $u + \lambda\theta$ with $\lambda$ (a number or a schedule's value) cast to each leaf's
    dtype: strict-promotion clean also for a schedule (optax's `linear_schedule` returns float32
    under x64) and for float32 parameters with a float64 $\lambda$."""
    init_fn = optax.add_decayed_weights(weight_decay).init  # optax's state (a count if callable)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("adamw: update needs params (the weight decay adds λ θ).")
        if callable(weight_decay):
            s = weight_decay(state.count)
            state = state._replace(count=optax.safe_increment(state.count))
        else:
            s = weight_decay
        new = jax.tree.map(
            lambda g, p: None if g is None else g + jnp.asarray(s, g.dtype) * p.astype(g.dtype),
            updates,
            params,
            is_leaf=lambda x: x is None,
        )
        return new, state

    tx = optax.GradientTransformation(init_fn, update_fn)
    return tx if mask is None else optax.masked(tx, mask)


def scale_by_polyak_step(
    learning_rate: ScalarLike, f_min: ScalarLike = 0.0, max_learning_rate: ScalarLike = jnp.inf
) -> optax.GradientTransformationExtraArgs:
    r"""`chain(optax.scale_by_polyak(f_min, max_learning_rate), optax.scale_by_learning_rate(h))`
    with one scalar per step:

    $$u = -h\min\big((L-L^*)/\|g\|^2, \eta_{\max}\big)\,g,$$

    and $u = 0$ where $\|g\|^2 \le 2.2\cdot10^{-16}$ (optax's guard): one multiply per
    coordinate instead of two. It needs the loss: `update(grads, state, params, value=L)`
    (`dynopt.run` passes it).

    **Arguments:**

    - `learning_rate`: the step $h \ge 0$ (finite; traced values are checked inside `jit`).
    - `f_min`: the known minimum $L^*$ (finite; default 0).
    - `max_learning_rate`: $\eta_{\max} > 0$, may be $\infty$ (the default: no cap).

    **Returns:** a stateless `optax.GradientTransformationExtraArgs`.

    **Raises:** `ValueError` for a hyper-parameter out of range, or at `update` without `value`.
    """
    f_min = interval("f_min", f_min)
    max_learning_rate = interval(
        "max_learning_rate", max_learning_rate, lower=0.0, lower_open=True, allow_inf=True
    )

    def step(sq, gap):
        s = jnp.minimum(gap / sq, jnp.asarray(max_learning_rate, sq.dtype))
        # optax compares against float64's epsilon (`jnp.finfo(float).eps`); so does this.
        return jnp.where(sq <= float(jnp.finfo(float).eps), jnp.zeros_like(s), s)

    return _scaled_by_scalar_step(learning_rate, f_min, lambda g: tree_norm(g, squared=True), step)


def _scaled_by_scalar_step(learning_rate, f_min, norm_fn, step_fn):
    r"""$u = -h\,s(\|g\|, L - L^*)\,g$: the scalar $-h s$ formed once, one multiply per
    coordinate (a chain with `scale_by_learning_rate` multiplies every coordinate twice)."""

    learning_rate = nonnegative("learning_rate", learning_rate)

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        _needs_value(value, "polyak_sgd/truncated_polyak_sgd")
        norm = jnp.asarray(norm_fn(updates), _dtype(updates))
        gap = jnp.asarray(value - f_min).astype(norm.dtype)
        scale = -jnp.asarray(learning_rate, norm.dtype) * step_fn(norm, gap)
        return _scale(scale, updates), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def _needs_value(value, name: str) -> None:
    if value is None:
        raise ValueError(
            f"{name}: update needs the loss, update(grads, state, params, value=L) (the Polyak "
            "step reads L - f_min); dynopt.run passes it."
        )


def _truncated_polyak_scale(max_scale):
    def step(norm, gap):
        safe = jnp.where(norm > 0, norm, jnp.ones_like(norm))
        s = gap * jnp.minimum(1 / safe, jnp.asarray(max_scale, norm.dtype)) / safe
        return jnp.where(norm > 0, s, jnp.zeros_like(s))

    return step


Preconditioner = Callable[[Params, Params, Callable[[Params], Array] | None], Params]


def scale_by_preconditioner(precondition: Preconditioner) -> optax.GradientTransformationExtraArgs:
    r"""$u = P(\theta)\,g$ for a preconditioner `precondition(params, v, loss_fn) -> P(θ) v`.

    `loss_fn` is the `value_fn` extra argument (`dynopt.run` passes the loss, or the minibatch
    loss in stochastic runs): Newton-type preconditioners build Hessian-vector products from it.
    `precondition` is closed over: its array leaves (a `NewtonPreconditioner`'s damping) are
    traced where the transform is built inside `jit` (as a `Discretization` builds it), the
    rest is part of the compiled program.

    **Raises:** `ValueError` for a `precondition` that is not callable.
    """
    function("precondition", precondition, "a callable (params, v, loss_fn) -> P(params) v")

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("scale_by_preconditioner needs params: call update(g, state, params).")
        return precondition(params, updates, value_fn), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def preconditioned_sgd(
    learning_rate: ScalarLike, precondition: Preconditioner
) -> optax.GradientTransformationExtraArgs:
    r"""Preconditioned gradient descent, explicit Euler for $\dot\theta = -P(\theta)\nabla L$:

    $$\theta_{k+1} = \theta_k - h\,P(\theta_k)\nabla L(\theta_k).$$

    **Arguments:**

    - `learning_rate`: $h \ge 0$, or an optax schedule.
    - `precondition`: a callable `(params, v, loss_fn) -> P(params) v` (see
      `scale_by_preconditioner`; `loss_fn` is the `value_fn` extra argument).

    **Returns:** an `optax.GradientTransformationExtraArgs`; `update` needs `params`.

    **Raises:** `ValueError` for a `precondition` that is not callable, a `learning_rate` out of
    range, or at `update` without `params`.
    """
    return optax.chain(
        scale_by_preconditioner(precondition),
        _scale_by_learning_rate(_learning_rate(learning_rate)),
    )
