"""`run`: a discrete optimizer as one jitted `lax.scan`, with divergence detection."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._custom_types import Key, Params
from ._discretization import Discretization
from ._problem import Problem
from ._sharding import sweep_map
from ._trajectory import Trajectory


def tree_all_finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _floating_dtype(params: Params):
    return jnp.result_type(*jax.tree.leaves(params))


def make_step(tx: optax.GradientTransformation, problem: Problem, key: Key | None):
    """One guarded optimizer step: `(params, opt_state, diverged_at, k) -> same`.

    A step whose loss (deterministic runs) or new iterate is non-finite is not applied; the first
    such step index is recorded once and the state is frozen from then on.
    """
    extra = isinstance(tx, optax.GradientTransformationExtraArgs)

    def step(carry):
        params, opt_state, diverged_at, k = carry
        if key is None:
            value_fn = problem.loss
        else:
            batch_key = jax.random.fold_in(key, k)

            def value_fn(p):
                return problem.stochastic_loss(p, batch_key)

        value, grad = jax.value_and_grad(value_fn)(params)
        kwargs = dict(value=value, grad=grad, value_fn=value_fn) if extra else {}
        updates, new_state = tx.update(grad, opt_state, params, **kwargs)
        new_params = optax.apply_updates(params, updates)
        value_ok = jnp.isfinite(value)
        params_ok = tree_all_finite(new_params)
        alive = diverged_at < 0
        diverged_at = jnp.where(
            alive & ~value_ok, k, jnp.where(alive & ~params_ok, k + 1, diverged_at)
        )
        keep = alive & value_ok & params_ok
        params = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_params, params)
        opt_state = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_state, opt_state)
        return params, opt_state, diverged_at, k + 1

    return step


def _run_one(tx, dt, problem: Problem, num_steps: int, every: int, key, opt_state0=None):
    params0 = problem.params0
    step = make_step(tx, problem, key)
    opt_state0 = tx.init(params0) if opt_state0 is None else opt_state0

    def block(carry, _):
        carry = jax.lax.fori_loop(0, every, lambda _, c: step(c), carry)
        return carry, carry[0]

    carry0 = (params0, opt_state0, jnp.asarray(-1), jnp.asarray(0))
    carry, saved = jax.lax.scan(block, carry0, None, length=num_steps // every)
    params = jax.tree.map(lambda x0, xs: jnp.concatenate([x0[None], xs]), params0, saved)
    loss = jax.vmap(problem.loss)(params)
    steps = jnp.arange(0, num_steps + 1, every)
    return Trajectory(
        ts=steps.astype(dt.dtype) * dt, params=params, loss=loss, diverged_at=carry[2], steps=steps
    )


@eqx.filter_jit
def _run_discretization(disc: Discretization, problem, num_steps, every, key):
    dtype = _floating_dtype(problem.params0)

    def one(d, k, prob):
        d = d.astype(dtype)
        state0 = d.init(prob.params0, prob)
        return _run_one(d.transform, d.dt, prob, num_steps, every, k, state0)

    seeds = key is not None and key.ndim == 1
    # The outer batch axis (step sizes, else seeds) is the sweep axis, split across devices.
    if disc.dt.ndim == 1:  # a batch of step sizes
        if seeds:
            one = jax.vmap(one, in_axes=(None, 0, None))
        return sweep_map(lambda d, s: one(d, *s), disc, (key, problem))
    if seeds:
        return sweep_map(lambda k, s: one(s[0], k, s[1]), key, (disc, problem))
    return one(disc, key, problem)


@eqx.filter_jit
def _run_transform(tx, problem, num_steps, every, key):
    def one(k, prob):
        return _run_one(tx, jnp.asarray(1.0), prob, num_steps, every, k)

    if key is not None and key.ndim == 1:  # a batch of seeds, split across devices
        return sweep_map(one, key, problem)
    return one(key, problem)


def _as_key(key):
    if key is None:
        return None
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.ndim > 1:
            raise ValueError(
                f"key must be one PRNG key or a 1-D batch of keys, got shape {key.shape}."
            )
        return key
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,) and key.ndim <= 2:
        return jax.random.wrap_key_data(key)
    raise ValueError(
        "key must be a jax.random.key (or a batch of them), got dtype "
        f"{key.dtype}, shape {key.shape}."
    )


def _batch_discretization(disc: Discretization) -> Discretization:
    """Broadcast scalar hyper-parameters against a batch of step sizes (or vice versa)."""
    leaves = [disc.dt, *disc.hyperparams.values()]
    ndims = {jnp.ndim(x) for x in leaves}
    if ndims <= {0}:
        return disc
    if not ndims <= {0, 1}:
        raise ValueError("a batched Discretization must have scalar or 1-D hyper-parameters.")
    sizes = {x.shape[0] for x in leaves if jnp.ndim(x) == 1}
    if len(sizes) != 1:
        raise ValueError(f"batched hyper-parameters must share one length, got {sorted(sizes)}.")
    (n,) = sizes
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,)), disc)


def run(
    transform: Discretization | optax.GradientTransformation,
    problem: Problem,
    num_steps: int,
    *,
    key: Key | None = None,
    every: int = 1,
) -> Trajectory:
    r"""Iterate an optax transform on `problem` for `num_steps` steps as one jitted `lax.scan`.

    $\theta_{k+1} = \theta_k + u_k$ with $(u_k, s_{k+1})$ = `transform.update(g_k, s_k, θ_k)` and
    $g_k = \nabla L(\theta_k)$, or the gradient of one minibatch (`problem.stochastic_loss` with key
    `fold_in(key, k)`) when `key` is given. The same key gives the same numbers.

    **Arguments:**

    - `transform`: a `Discretization` (saved times are $k\Delta t$; its hyper-parameters are traced,
      so new step sizes reuse the compiled program; a `Discretization` with a 1-D batch of step
      sizes runs all of them under one `vmap`), or any `optax.GradientTransformation` (times are
      step indices; a new transform object compiles anew).
    - `num_steps`: number of updates $N$; `every`: save every `every`-th iterate (must divide $N$).
    - `key`: `None` (full-batch gradients), one key, or a 1-D batch of keys (vmapped seeds).

    **Returns:** a `Trajectory` with $N/\text{every} + 1$ saved points (including $\theta_0$) and
    `diverged_at` = the first step whose loss or iterate was non-finite (then the run stops
    updating and keeps its last finite iterate), or $-1$. Extra leading axes for batches:
    step sizes first, then seeds. With several devices the outer batch axis is split across all
    of them (`NamedSharding` on a one-axis mesh; any batch size, padded and trimmed), so the
    outputs come back sharded along it; see `dynopt._sharding` for multi-host use.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    if not isinstance(every, int) or every < 1 or num_steps % every != 0:
        raise ValueError(
            f"every must be a positive integer dividing num_steps={num_steps}, got {every!r}."
        )
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a dynopt.Problem, got {type(problem).__name__}.")
    key = _as_key(key)
    if key is not None and problem.stochastic_loss_fn is None:
        raise ValueError(
            f"key was given but problem {problem.name!r} has no stochastic_loss_fn; pass key=None "
            "for full-batch gradients."
        )
    if isinstance(transform, Discretization):
        return _run_discretization(_batch_discretization(transform), problem, num_steps, every, key)
    if isinstance(transform, optax.GradientTransformation):
        return _run_transform(transform, problem, num_steps, every, key)
    raise ValueError(
        "transform must be a dynopt.Discretization or an optax.GradientTransformation, got "
        f"{type(transform).__name__}."
    )
