r"""Nesterov-type momentum transforms optax lacks: a general look-ahead (standard Nesterov and Su's
midpoint look-ahead), the implicit midpoint momentum scheme, and Su–Boyd–Candès NAG with momentum
$(k-1)/(k+r-1)$.

Velocities are kept in parameter units, $v_n = \theta_n - \theta_{n-1}$ (optax's `trace` is
$-v/\alpha$). Every look-ahead method exists in two forms:

- `reparametrize=True`, the framework form: the held parameters *are* the look-ahead point
  $\Theta_n = \theta_n + c\beta v_n$, so the gradient `run` (or any training loop) passes in is the
  one the method needs: one gradient per step, a plain `GradientTransformation`.
- `reparametrize=False`: the held parameters are $\theta_n$ and the gradient at the look-ahead
  point is evaluated through the extra argument `grad_fn` (the gradient oracle of the current
  step or minibatch; a `GradientTransformationExtraArgs`, the way optax's line searches take
  `value_fn`, and `jax.grad(value_fn)` when only `value_fn` is given); the gradient passed in is
  unused. These are the iterates a continuous-time comparison needs.

The two forms give the same iterates: $\Theta_n - c\beta v_n = \theta_n$ (tested).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optimistix as optx

from .._custom_types import Array, ScalarLike
from .._discretization import widest_dtype
from .._validation import flag, positive_int
from .hyper import interval, nonnegative, positive


def _like(x: Any, leaf: Array) -> Array:
    """A hyper-parameter in the dtype of a parameter leaf (strict promotion, dtype kept)."""
    return jnp.asarray(x, dtype=jnp.result_type(leaf))


def _gradient_oracle(extra_args: dict, name: str):
    """`grad_fn` from the extra arguments (or `jax.grad(value_fn)`, optax's line-search name)."""
    grad_fn = extra_args.get("grad_fn")
    if grad_fn is not None:
        return grad_fn
    value_fn = extra_args.get("value_fn")
    if value_fn is not None:
        return jax.grad(value_fn)
    raise ValueError(
        f"{name} evaluates gradients at other points and needs update(..., grad_fn=...) (or "
        "value_fn=loss_fn); dynopt.run passes them. Use reparametrize=True for a "
        "one-gradient-per-step transform."
    )


class MomentumState(NamedTuple):
    """`velocity`: $v_n = \\theta_n - \\theta_{n-1}$ (zero at the start)."""

    velocity: optax.Updates


def nesterov_momentum(
    learning_rate: ScalarLike,
    momentum: ScalarLike,
    lookahead: ScalarLike = 1.0,
    *,
    reparametrize: bool = True,
) -> optax.GradientTransformation:
    r"""Momentum with the gradient at a look-ahead point (Su, post 1, eq. 20 and standard Nesterov):

    $$v_{n+1} = \beta v_n - \alpha\nabla L(\theta_n + c\,\beta v_n),\qquad
      \theta_{n+1} = \theta_n + v_{n+1}.$$

    `lookahead` $c = 1$ is standard Nesterov (with `reparametrize=True` it equals
    `optax.sgd(α, momentum=β, nesterov=True)`); $c = 1/2$ is Su's midpoint look-ahead
    $\theta_n + \tfrac\beta2 v_n$, an explicit approximation of the implicit midpoint scheme;
    $c = 0$ is heavy ball.

    Framework form (`reparametrize=True`), with $\Theta_n = \theta_n + c\beta v_n$ held:
    $\Theta_{n+1} = \Theta_n + (1 + c\beta)v_{n+1} - c\beta v_n$ with the gradient at $\Theta_n$.

    **Continuous time:** with $\beta = 1 - ah$, $\alpha = h^2$ (post 1, eq. 18) the
    $\theta$-iterates follow $\ddot\theta + a\dot\theta + \nabla L = 0$ at $t = nh$ to
    **first order** only: the look-ahead adds $c\,h\,\nabla^2L\,\dot\theta$ to the local
    truncation error (the "gradient correction" of high-resolution ODEs), which no choice of
    $(\alpha, \beta)$ cancels.
    On $\tfrac\lambda2\theta^2$ the scheme is stable iff $\alpha\lambda < 2(1+\beta)/(1+2c\beta)$.

    **Arguments:** `learning_rate` $\alpha$, `momentum` $\beta$, `lookahead` $c$;
    `reparametrize` as above. `learning_rate` $\ge 0$, `momentum` $\in [0, 1]$ (1: undamped),
    `lookahead` $\ge 0$ (`ValueError` otherwise; inside `jit` for traced values).
    """
    learning_rate = nonnegative("learning_rate", learning_rate)
    momentum = _momentum(momentum)
    lookahead = nonnegative("lookahead", lookahead)
    reparametrize = flag("reparametrize", reparametrize)

    def init_fn(params):
        return MomentumState(velocity=optax.tree.zeros_like(params))

    def velocity(g, v):
        return _like(momentum, v) * v - _like(learning_rate, v) * g

    def update_fn(updates, state, params=None, **extra_args):
        v = state.velocity
        if reparametrize:
            new_v = jax.tree.map(velocity, updates, v)

            def step(nv, ov):
                cb = _like(lookahead, ov) * _like(momentum, ov)
                return (1 + cb) * nv - cb * ov

            return jax.tree.map(step, new_v, v), MomentumState(new_v)
        point = jax.tree.map(
            lambda p, ov: p + _like(lookahead, ov) * _like(momentum, ov) * ov, params, v
        )
        g = _gradient_oracle(extra_args, "nesterov_momentum(..., reparametrize=False)")(point)
        new_v = jax.tree.map(velocity, g, v)
        return new_v, MomentumState(new_v)

    if reparametrize:
        return optax.GradientTransformation(init_fn, update_fn)
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _momentum(momentum: Any) -> Any:
    r"""`momentum` in [0, 1]: 1 is the undamped limit (`HeavyBall(0.0)`: $\beta = 1 - ah = 1$),
    which the maps build from a valid flow, and which `optax.sgd` runs as well."""
    return interval("momentum", momentum, lower=0.0, upper=1.0)


def _max_norm(tree) -> Array:
    # In the default float dtype: optimistix 0.1.0 starts FixedPointIteration's error as
    # `jnp.array(inf)` (default dtype), and the loop needs one dtype for float32 parameters too.
    return optx.max_norm(tree).astype(jnp.result_type(float))


class ImplicitMomentumState(NamedTuple):
    """`velocity` $v_n$; `iterations`: fixed-point iterations used by the last step (diagnostic)."""

    velocity: optax.Updates
    iterations: Array


def implicit_midpoint_momentum(
    learning_rate: ScalarLike,
    momentum: ScalarLike,
    tol: ScalarLike | None = None,
    max_iter: int = 100,
) -> optax.GradientTransformationExtraArgs:
    r"""Su's implicit momentum scheme (post 1, eq. 19), the gradient at the midpoint of the step:

    $$v_{n+1} = \beta v_n - \alpha\nabla L\!\left(\theta_n + \tfrac12 v_{n+1}\right),\qquad
      \theta_{n+1} = \theta_n + v_{n+1},$$

    solved by the fixed-point iteration $v^{(j+1)} = \beta v_n - \alpha\nabla L(\theta_n +
    v^{(j)}/2)$ from the explicit predictor $v^{(0)} = \beta v_n - \alpha\nabla L(\theta_n)$ (the
    gradient passed in), stopping when $\|v^{(j+1)} - v^{(j)}\|_\infty \le
    \text{tol}\,\|v^{(j+1)}\|_\infty$ or after `max_iter` iterations. The iteration contracts with
    factor $q = \alpha\lambda_{\max}/2$ ($\lambda_{\max}$ the largest Hessian eigenvalue along the
    step), so on convergence the solve error is at most
    $\tfrac{q}{1-q}\,\text{tol}\,\|v\|_\infty$; for $q \ge 1$ it diverges (the transform's
    practical stability limit $\alpha\lambda_{\max} < 2$, although the exact implicit scheme is
    stable on every convex quadratic). Stopped by `max_iter` instead (it needs about
    $\log(\text{tol})/\log q$ iterations: ~1,600 at $q = 0.98$), the step takes the last iterate,
    whose error is up to $q^{\text{max\_iter}}$ of the predictor's, not the implicit scheme's
    step: `state.iterations == max_iter` says so, and near $q = 1$ raise `max_iter`. Rounding
    puts a floor under the attainable tolerance that grows like $1/(1-q)$: at $q = 0.99$ in
    float64 the iterates settle ~9e-15 from the solution, above the default 16 machine
    epsilons (3.6e-15), so every step runs `max_iter` iterations (accurate, but at that
    cost; measured on $\tfrac\lambda2\theta^2$); pass a `tol` above the floor there, e.g.
    1e-13.

    The held parameters are $\theta_n$; the extra gradients come from `grad_fn` (required; or
    `value_fn`). The iteration is `optimistix.fixed_point` (`FixedPointIteration`, sup norm).
    First order against $\ddot\theta + a\dot\theta + \nabla L = 0$ with $\beta = 1 - ah$,
    $\alpha = h^2$ (eq. 18), like the look-ahead methods.

    **Arguments:** `learning_rate` $\alpha$, `momentum` $\beta$, `tol` (default: 16 machine
    epsilons of the parameters' dtype, the coarsest leaf's in a mixed tree; $> 0$), `max_iter`
    (a positive integer).
    """
    learning_rate = nonnegative("learning_rate", learning_rate)
    momentum = _momentum(momentum)
    if tol is not None:
        tol = positive("tol", tol)
    max_iter = positive_int("max_iter", max_iter)

    def init_fn(params):
        return ImplicitMomentumState(
            velocity=optax.tree.zeros_like(params), iterations=jnp.zeros([], jnp.int32)
        )

    def update_fn(updates, state, params=None, **extra_args):
        grad_fn = _gradient_oracle(extra_args, "implicit_midpoint_momentum")
        v = state.velocity
        leaves = jax.tree.leaves(params)
        dtype = widest_dtype(params) if leaves else jnp.result_type(float)
        # The default tolerance is the coarsest leaf's: a float32 leaf of a mixed tree never
        # meets 16 float64 epsilons, and every step would run max_iter iterations.
        eps = max(float(jnp.finfo(x.dtype).eps) for x in (leaves or [jnp.zeros((), dtype)]))
        rtol = jnp.asarray(16 * eps if tol is None else tol, dtype)

        def velocity(g, ov):
            return _like(momentum, ov) * ov - _like(learning_rate, ov) * g

        def picard(w, _):
            point = jax.tree.map(lambda p, wi: p + wi / 2, params, w)
            return jax.tree.map(velocity, grad_fn(point), v)

        w0 = jax.tree.map(velocity, updates, v)
        # optimistix stops on |w+ - w|_i < atol + rtol |w+_i| for every component; atol on the
        # predictor's scale makes that the sup-norm test |w+ - w|_inf <~ tol |w|_inf.
        # (In the widest dtype: a mixed float32/float64 tree has no strict promotion path.)
        scale = optax.tree.max(jax.tree.map(lambda x: jnp.abs(x).astype(dtype), w0))
        solver = optx.FixedPointIteration(rtol=rtol, atol=rtol * scale, norm=_max_norm)
        # throw=False: a diverging iteration (alpha lambda >= 2) gives non-finite iterates, which
        # `run` reports as divergence.
        sol = optx.fixed_point(picard, solver, w0, max_steps=max_iter, throw=False)
        iters = jnp.asarray(sol.stats["num_steps"], jnp.int32)
        return sol.value, ImplicitMomentumState(sol.value, iters)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class NagState(NamedTuple):
    """`count` $k$ (steps taken, int32); `previous`: $x_k$ (framework form) or $x_{k-1}$."""

    count: Array
    previous: optax.Params


def nag(
    learning_rate: ScalarLike, r: ScalarLike = 3.0, *, reparametrize: bool = True
) -> optax.GradientTransformation:
    r"""Nesterov's accelerated gradient with momentum $(k-1)/(k+r-1)$ (Su, Boyd & Candès 2016):

    $$x_k = y_{k-1} - s\nabla f(y_{k-1}),\qquad
      y_k = x_k + \frac{k-1}{k+r-1}(x_k - x_{k-1}),\qquad x_0 = y_0.$$

    With step $s$ = `learning_rate` and $t = k\sqrt s$, $x_k$ follows the Nesterov ODE
    $\ddot X + \tfrac rt\dot X + \nabla f(X) = 0$, $X(0) = x_0$, $\dot X(0) = 0$
    (`dynopt.flows.NesterovODE`); $r = 3$ is Nesterov's original method. optax has no such
    schedule (its `nesterov=True` uses a constant momentum).

    **Arguments:**

    - `learning_rate`: the step $s \ge 0$.
    - `r`: the friction constant $r > 0$ (default 3).
    - `reparametrize`: `True` holds $y_k$ as the parameters (the gradient passed in, one per
      step); `False` holds $x_k$ and takes $\nabla f(y_{k-1})$ through the `grad_fn` (or
      `value_fn`) extra argument.

    **Returns:** an `optax.GradientTransformation` (`GradientTransformationExtraArgs` for
    `reparametrize=False`) with state `NagState(count, previous)`.

    **Raises:** `ValueError` for `learning_rate` or `r` out of range, or, with
    `reparametrize=False`, at `update` without `grad_fn`/`value_fn`.
    """
    learning_rate = nonnegative("learning_rate", learning_rate)
    r = positive("r", r)
    reparametrize = flag("reparametrize", reparametrize)

    def init_fn(params):
        return NagState(count=jnp.zeros([], jnp.int32), previous=params)

    def coefficient(k, leaf):
        # (k-1)/(k+r-1), and 0 for k <= 1 (no momentum before two iterates exist; avoids 0/0).
        kf = jnp.maximum(k, 1).astype(jnp.result_type(leaf))
        return jnp.where(k > 1, (kf - 1) / (kf + _like(r, leaf) - 1), jnp.zeros_like(kf))

    def update_fn(updates, state, params=None, **extra_args):
        k = optax.safe_increment(state.count)
        if reparametrize:  # params = y_{k-1}, previous = x_{k-1}
            x = jax.tree.map(lambda y, g: y - _like(learning_rate, y) * g, params, updates)
            y = jax.tree.map(lambda xk, xp: xk + coefficient(k, xk) * (xk - xp), x, state.previous)
            return jax.tree.map(jnp.subtract, y, params), NagState(k, x)
        # params = x_{k-1}, previous = x_{k-2} (x_{-1} = x_0, so y_0 = x_0)
        y = jax.tree.map(
            lambda xk, xp: xk + coefficient(k - 1, xk) * (xk - xp), params, state.previous
        )
        g = _gradient_oracle(extra_args, "nag(..., reparametrize=False)")(y)
        x = jax.tree.map(lambda yk, gk: yk - _like(learning_rate, yk) * gk, y, g)
        return jax.tree.map(jnp.subtract, x, params), NagState(k, params)

    if reparametrize:
        return optax.GradientTransformation(init_fn, update_fn)
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
