"""`run_game` and `compare_game`: game schemes as one jitted `lax.scan`, against reference flows."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .._compare import make_comparison, matched_steps
from .._custom_types import Array, ArrayLike, Float, Int, Key, PyTree
from .._discretization import Discretization
from .._flows.base import AbstractFlow
from .._run import _as_key, _batch_discretization, tree_all_finite
from .._solve import _pick_solver, _require_x64, dense_solve, raise_for_result
from .._trajectory import Comparison
from .flows import GameFlow, ModifiedGameFlow
from .game import Game


class GameTrajectory(eqx.Module):
    r"""A discrete game run $z_k = (\varphi_k, \theta_k)$ saved every `every` steps.

    **Fields:** `ts` ($k\Delta t$), `params` (`(phi, theta)`, leaves with a leading time axis),
    `hamiltonian` ($\frac12\|\xi(z_k)\|^2$; `None` for stochastic games), `diverged_at` (first
    step whose iterate was non-finite, or $-1$; the run keeps its last finite iterate),
    `steps`, `ema_decays` and `ema_theta`: the generator's weight averages
    $\Theta_{k+1} = \alpha\Theta_k + (1-\alpha)\theta_{k+1}$, $\Theta_0 = \theta_0$, one per decay
    $\alpha$ (leaves shaped `(..., n_saved, n_decays, *leaf)`), tracked beside the run without
    changing it. Batched step sizes add a leading axis everywhere.
    """

    ts: Float[Array, "*batch n"]
    params: PyTree
    hamiltonian: Float[Array, "*batch n"] | None
    diverged_at: Int[Array, "*batch"]
    steps: Int[Array, "*batch n"]
    ema_decays: Float[Array, " d"]
    ema_theta: PyTree

    @property
    def phi(self) -> PyTree:
        return self.params[0]

    @property
    def theta(self) -> PyTree:
        return self.params[1]


def _game_step(tx: optax.GradientTransformation, game: Game, key, decays):
    """One guarded step: `(z, opt_state, ema, diverged_at, k) -> same` (as `dynopt.run`'s)."""
    extra = isinstance(tx, optax.GradientTransformationExtraArgs)

    def step(carry):
        z, opt_state, ema, diverged_at, k = carry
        step_key = None if key is None else jax.random.fold_in(key, k)
        grad_fn = lambda x: game.gradient(x, step_key)
        xi = grad_fn(z)
        kwargs = {"grad_fn": grad_fn} if extra else {}
        updates, new_state = tx.update(xi, opt_state, z, **kwargs)
        new_z = optax.apply_updates(z, updates)

        def average(e, th):
            a = decays.reshape((-1,) + (1,) * th.ndim).astype(th.dtype)
            return a * e + (1 - a) * th[None]

        new_ema = jax.tree.map(average, ema, new_z[1])
        alive = diverged_at < 0
        keep = alive & tree_all_finite(new_z)
        diverged_at = jnp.where(alive & ~keep, k + 1, diverged_at)
        select = lambda new, old: jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)
        return (
            select(new_z, z),
            select(new_state, opt_state),
            select(new_ema, ema),
            diverged_at,
            k + 1,
        )

    return step


def _run_one(tx, opt_state0, dt, game: Game, num_steps, every, key, decays):
    z0 = game.params0
    step = _game_step(tx, game, key, decays)
    ema0 = jax.tree.map(lambda th: jnp.broadcast_to(th[None], decays.shape + th.shape), z0[1])

    def block(carry, _):
        carry = jax.lax.fori_loop(0, every, lambda _, c: step(c), carry)
        return carry, (carry[0], carry[2])

    carry0 = (z0, opt_state0, ema0, jnp.asarray(-1), jnp.asarray(0))
    carry, (zs, emas) = jax.lax.scan(block, carry0, None, length=num_steps // every)
    prepend = lambda x0, xs: jnp.concatenate([x0[None], xs])
    params = jax.tree.map(prepend, z0, zs)
    ema = jax.tree.map(prepend, ema0, emas)
    ham = None if game.stochastic else jax.vmap(game.hamiltonian)(params)
    steps = jnp.arange(0, num_steps + 1, every)
    return GameTrajectory(
        ts=steps.astype(dt.dtype) * dt,
        params=params,
        hamiltonian=ham,
        diverged_at=carry[3],
        steps=steps,
        ema_decays=decays,
        ema_theta=ema,
    )


@eqx.filter_jit
def _run_jit(transform, game, num_steps, every, key, decays):
    if isinstance(transform, Discretization):
        dtype = jnp.result_type(*jax.tree.leaves(game.params0))

        def one(d):
            d = d.astype(dtype)
            state0 = d.transform.init(game.params0)
            return _run_one(d.transform, state0, d.dt, game, num_steps, every, key, decays)

        return (jax.vmap(one) if transform.dt.ndim == 1 else one)(transform)
    state0 = transform.init(game.params0)
    return _run_one(transform, state0, jnp.asarray(1.0), game, num_steps, every, key, decays)


def run_game(
    transform: Discretization | optax.GradientTransformation,
    game: Game,
    num_steps: int,
    *,
    key: Key | None = None,
    every: int = 1,
    ema_decays: ArrayLike = (),
) -> GameTrajectory:
    r"""Iterate a game scheme for `num_steps` steps as one jitted `lax.scan`:
    $z_{k+1} = z_k + u_k$, $(u_k, s_{k+1})$ = `transform.update(ξ(z_k), s_k, z_k, grad_fn=ξ)`
    (`grad_fn` only for `GradientTransformationExtraArgs`). Stochastic games draw their
    minibatch with `fold_in(key, k)`, the same one for every evaluation inside step $k$.

    **Arguments:** `transform` (a `Discretization`, e.g. `GameFlow(game, scheme).discretize(h)`,
    whose 1-D batch of step sizes runs under one `vmap` without recompiling; or any optax
    transform, times = step indices), `num_steps`, `key` (required iff `game.stochastic`),
    `every` (must divide `num_steps`), `ema_decays` (decays $\alpha \in [0, 1)$ of the
    generator EMAs to track).

    **Returns:** a `GameTrajectory`.
    """
    if not isinstance(game, Game):
        raise ValueError(f"game must be a dynopt.games.Game, got {type(game).__name__}.")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    if not isinstance(every, int) or every < 1 or num_steps % every != 0:
        raise ValueError(
            f"every must be a positive integer dividing num_steps={num_steps}, got {every!r}."
        )
    key = _as_key(key)
    if game.stochastic != (key is not None):
        raise ValueError(
            f"key must be given iff the game is stochastic; game {game.name!r} has "
            f"stochastic={game.stochastic}."
        )
    if key is not None and key.ndim != 0:
        raise ValueError("run_game takes one key (vmap over run_game for several seeds).")
    decays = np.asarray(ema_decays, dtype=float).reshape(-1)
    if np.any(~((decays >= 0) & (decays < 1))):
        raise ValueError(f"ema_decays must lie in [0, 1), got {decays.tolist()}.")
    if isinstance(transform, Discretization):
        transform = _batch_discretization(transform)
    elif not isinstance(transform, optax.GradientTransformation):
        raise ValueError(
            "transform must be a dynopt.Discretization or an optax.GradientTransformation, got "
            f"{type(transform).__name__}."
        )
    return _run_jit(transform, game, num_steps, every, key, jnp.asarray(decays))


def _error_run(flow: AbstractFlow, ref_flow, interp, h, n):
    game = flow.game
    disc = flow.discretize(h)
    tx = disc.transform
    step = _game_step(tx, game, None, jnp.zeros((0,)))
    ravel = lambda p: ravel_pytree(p)[0]

    def cond(c):
        (_, _, _, diverged_at, k), _, _ = c
        return (k < n) & (diverged_at < 0)

    def body(c):
        inner, err_max, _ = c
        inner = step(inner)
        z, _, _, _, k = inner
        t = jnp.minimum(k.astype(disc.dt.dtype) * disc.dt, interp.t1)
        err = jnp.linalg.norm(ravel(z) - ravel(ref_flow.params(interp.evaluate(t))))
        return inner, jnp.maximum(err_max, err), err

    z0 = game.params0
    ema0 = jax.tree.map(lambda th: jnp.zeros((0, *th.shape), th.dtype), z0[1])
    zero = jnp.zeros((), jnp.float64)
    init = ((z0, tx.init(z0), ema0, jnp.asarray(-1), jnp.asarray(0)), zero, zero)
    (_, _, _, diverged_at, _), err_max, err_last = jax.lax.while_loop(cond, body, init)
    inf = jnp.asarray(jnp.inf, jnp.float64)
    diverged = diverged_at >= 0
    return jnp.where(diverged, inf, err_max), jnp.where(diverged, inf, err_last), diverged_at


@eqx.filter_jit
def _compare_jit(flow, reference, per_step, hs, ns, t1, solver, rtol, atol, max_steps):
    problem = flow.game.problem
    ts = jnp.asarray([t1])

    def one(h, n):
        ref = reference(h) if per_step else reference
        sol = dense_solve(ref, problem, solver, 0.0, t1, ts, rtol, atol, max_steps)
        return (*_error_run(flow, ref, sol.interpolation, h, n), sol.result)

    return jax.vmap(one)(hs, ns)


def compare_game(
    flow: GameFlow,
    step_sizes: ArrayLike,
    t1: float,
    *,
    reference: AbstractFlow | Callable[[Array], AbstractFlow] | str | None = None,
    solver="tsit5",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 16_384,
) -> Comparison:
    r"""`dynopt.compare` for games: `flow.discretize(h)` against a reference flow at matched
    times $t = kh$ for each step size (one compiled program, `vmap` over $h$), with the fitted
    order. `reference`: `None` (the flow itself: order 1), a flow, a callable `h -> flow`, or
    `"modified"` (the scheme's `ModifiedGameFlow` at each $h$: order 2)."""
    _require_x64()
    if not isinstance(flow, GameFlow):
        raise ValueError(f"flow must be a dynopt.games.GameFlow, got {type(flow).__name__}.")
    hs, ns, t1 = matched_steps(step_sizes, t1, lambda h: h)  # game schemes step t = k h
    if isinstance(reference, str):
        if reference != "modified":
            raise ValueError(
                f"reference must be None, a flow, a callable or 'modified', got {reference!r}."
            )
        reference = _ModifiedFor(flow)
    per_step = reference is not None and not isinstance(reference, AbstractFlow)
    ref = flow if reference is None else reference
    # No stiffness estimate for games (no scalar loss): None means the explicit default.
    solver_obj, name, _ = _pick_solver("tsit5" if solver is None else solver, None, None, t1)
    errs, finals, div, result = _compare_jit(
        flow,
        ref,
        per_step,
        jnp.asarray(hs),
        jnp.asarray(ns, dtype=int),
        t1,
        solver_obj,
        rtol,
        atol,
        int(max_steps),
    )
    raise_for_result(
        result,
        what=f"compare_game: reference solve({name})",
        max_steps=int(max_steps),
        rtol=rtol,
        atol=atol,
    )
    return make_comparison(hs, ns, errs, finals, div, t1, name)


class _ModifiedFor(eqx.Module):
    flow: GameFlow

    def __call__(self, h):
        return ModifiedGameFlow(self.flow.game, self.flow.scheme, h)
