r"""Density transport: the continuity equation $\partial_t\rho + \nabla\cdot(\rho f) = 0$ of any
dynopt flow, solved along its characteristics (the flow's own trajectories)."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._batching import map_batch
from .._custom_types import Array, ArrayLike, Float, Key, Params, ScalarLike
from .._flows.base import AbstractFlow
from .._problem import Problem
from .._saving import SaveAtTimes, saved
from .._solve import _check_times, _pick_solver, _require_x64, integrate, raise_for_result
from .._validation import host_validated, interval, positive_int, solver_options


class DensityTransport(eqx.Module):
    r"""Samples of a density carried by a flow: `m` characteristics saved at `T` times.

    - `ts`: `(T,)`; `states`: `(m, T, d)`, the raveled flow states $y(t)$.
    - `params`: the parameter part of each state, a pytree with leading axes `(m, T)`.
    - `log_density`: `(m, T)`, $\log\rho(t, y(t))$.
    - `trace`: `"exact"` or `"hutchinson"`; `solver`: the diffrax solver's name.
    """

    ts: Float[Array, " T"]
    states: Float[Array, "m T d"]
    params: Params
    log_density: Float[Array, "m T"]
    trace: str = eqx.field(static=True)
    solver: str = eqx.field(static=True)

    @property
    def density(self) -> Float[Array, "m T"]:
        return jnp.exp(self.log_density)


def _divergence_exact(g, y, probes):
    del probes
    return jnp.trace(jax.jacfwd(g)(y))


def _divergence_hutchinson(g, y, probes):
    # E[v^T J v] = tr J for Rademacher v; one jvp per probe, no d x d Jacobian.
    return jnp.mean(jax.vmap(lambda v: jnp.dot(v, jax.jvp(g, (y,), (v,))[1]))(probes))


def _vector_field(t, state, args):
    flow, problem, unravel, probes, divergence = args
    y, _ = state

    def g(z):
        return ravel_pytree(flow.vector_field(t, unravel(z), problem))[0]

    return g(y), -divergence(g, y, probes)


@eqx.filter_jit
def _transport(flow, problem, params0, logp0, probes, ts, t0, solver, rtol, atol, max_steps, hutch):
    _, unravel = ravel_pytree(flow.init(problem.params0))
    y0s = jax.vmap(lambda p: ravel_pytree(flow.init(p))[0].astype(jnp.float64))(params0)
    divergence = _divergence_hutchinson if hutch else _divergence_exact

    def one(y0, lp0, pr):
        # Saved at `ts` by the solver (no diffrax checks of traced `ts`: checked on the host).
        sol = integrate(
            diffrax.ODETerm(_vector_field),
            SaveAtTimes(solver, ts),
            t0,
            ts[-1],
            (y0, lp0),
            args=(flow, problem, unravel, pr, divergence),
            saveat=diffrax.SaveAt(t1=True, solver_state=True),
            controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
        )
        return saved(sol, ts, t0, (y0, lp0)), sol.result

    (ys, logp), result = map_batch(one, y0s, logp0, probes)
    params = jax.vmap(jax.vmap(lambda z: flow.params(unravel(z))))(ys)
    return ys, logp, params, result


def transport_density(
    flow: AbstractFlow,
    problem: Problem,
    params0: Params,
    log_density0,
    ts: ArrayLike,
    *,
    t0: ScalarLike = 0.0,
    trace: str = "exact",
    num_probes: int = 16,
    key: Key | None = None,
    solver=None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 16_384,
) -> DensityTransport:
    r"""Carry a density through `flow` on `problem`: the continuity equation
    $\partial_t\rho + \nabla\cdot(\rho f) = 0$ for the flow's vector field $f$ is, along the
    characteristics $\dot y = f(t, y)$ (the flow's trajectories),

    $$\frac{d}{dt}\log\rho(t, y(t)) = -\nabla\cdot f(t, y(t)) = -\operatorname{tr}
      \frac{\partial f}{\partial y},$$

    integrated jointly with $y$ by diffrax for every sample (one after another on a CPU, at once
    on an accelerator). The trace is exact (`jax.jacfwd`, $d$ Jacobian-vector products) or
    Hutchinson's estimate $\frac1K\sum_k v_k^\top (\partial f/\partial y)\,v_k$ with $K$ fixed
    Rademacher probes per sample (unbiased; cost $K$ products, for large $d$). For gradient flow
    $f = -\nabla L$, so $\log\rho$ grows at the rate $\Delta L$: mass piles up in minima, thins
    over maxima.

    The density lives on the flow's state space; `params0` are mapped by `flow.init`, so for flows
    with auxiliary state (momenta) `log_density0` must be the initial state's log density.

    **Arguments:**

    - `params0`: `m` initial parameters, a pytree like `problem.params0` with a leading axis `m`.
    - `log_density0`: `(m,)` initial log densities, or a function `params -> scalar` (vmapped).
    - `ts`: strictly increasing save times with `ts[0] >= t0`.
    - `trace`: `"exact"` or `"hutchinson"` (needs `key`; `num_probes` probes per sample).
    - `solver`, `rtol`, `atol`, `max_steps`: as `dynopt.solve` (automatic Tsit5/Kvaerno5).

    **Returns:** `DensityTransport`.

    **Raises:** `ValueError` for mismatched shapes, bad options, a `t0` or `params0` entry
    that is not finite; `dynopt.SolveError` if diffrax fails.
    """
    _require_x64()
    if not isinstance(flow, AbstractFlow):
        raise ValueError(f"flow must be a dynopt flow (AbstractFlow), got {type(flow).__name__}.")
    if trace not in ("exact", "hutchinson"):
        raise ValueError(f"trace must be 'exact' or 'hutchinson', got {trace!r}.")
    if trace == "hutchinson":
        if key is None:
            raise ValueError(
                "trace='hutchinson' draws random probes: pass key=jax.random.key(...)."
            )
        # An integer (2.5 was read as 2 probes).
        num_probes = positive_int("num_probes", num_probes)
    rtol, atol, max_steps = solver_options(rtol, atol, max_steps)
    # A NaN t0 compares False with every time: the horizon checks passed it.
    t0 = float(interval("t0", t0))
    times = _check_times(ts, t0)
    ts = jax.device_put(times)  # moved, not `jnp.asarray`: no program per shape
    ref, leaves = jax.tree.leaves(problem.params0), jax.tree.leaves(params0)
    if jax.tree.structure(params0) != jax.tree.structure(problem.params0):
        raise ValueError("params0 must have the tree structure of problem.params0 (batched).")
    m = int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 0
    for a, b in zip(ref, leaves):
        if np.shape(b) != (m, *np.shape(a)) or m == 0:
            raise ValueError(
                f"params0 leaves must have shape (m, *problem.params0 leaf shape) with one m >= 1; "
                f"got {np.shape(b)} for a leaf of shape {np.shape(a)}."
            )
    for path, leaf in jax.tree_util.tree_leaves_with_path(params0):
        # A NaN sample was a SolveError after every solve had run to its step budget.
        interval(f"params0{jax.tree_util.keystr(path)}", leaf)
    params0 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params0)
    if callable(log_density0):
        logp0 = jax.vmap(log_density0)(params0)
        what = "log_density0(params)"
    else:
        logp0 = jnp.asarray(log_density0, jnp.float64)
        what = "log_density0"
    if logp0.shape != (m,):
        raise ValueError(f"{what} must give one value per sample, shape ({m},), got {logp0.shape}.")
    if not np.all(np.isfinite(np.asarray(logp0))):
        raise ValueError("log_density0 must be finite at every initial sample.")
    d = ravel_pytree(flow.init(problem.params0))[0].shape[0]
    hutch = trace == "hutchinson"
    k = int(num_probes) if hutch else 1
    probes = (
        jax.random.rademacher(key, (m, k, d), dtype=jnp.float64) if hutch else np.zeros((m, 1, 1))
    )
    solver_obj, name, ratio = _pick_solver(
        solver, problem, problem.params0, float(times[-1]) - t0, flow=flow, t0=t0
    )
    # t0 and the tolerances as float64 arrays, traced (as `quasilinear`'s): as Python floats
    # they were static, and each new value compiled the whole transport again.
    t0_traced, rtol_traced, atol_traced = (np.float64(v) for v in (t0, rtol, atol))
    options = (solver_obj, rtol_traced, atol_traced, max_steps, hutch)
    with host_validated():  # flow, problem, samples and times checked above
        ys, logp, params, result = _transport(
            flow, problem, params0, logp0, probes, ts, t0_traced, *options
        )
    what = f"density transport ({name})"
    raise_for_result(result, what=what, max_steps=max_steps, rtol=rtol, atol=atol, stiffness=ratio)
    return DensityTransport(
        ts=ts, states=ys, params=params, log_density=logp, trace=trace, solver=name
    )
