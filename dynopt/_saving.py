r"""Saving a vmapped diffrax solve at traced times without diffrax's runtime checks.

diffrax's `SaveAt(ts=...)` checks traced save times with `eqx.error_if`, a host callback, and
JAX's persistent compilation cache refuses every program that holds one (most of an
experiment's time is compilation). `solve` and `compare` read their save times off the dense
output instead, but dense output preallocates `max_steps` steps per solve: gigabytes for the
thousands of characteristics (or density samples) solved here at once. So the solver itself
writes the solution at the save times into its state, evaluating each step's interpolating
polynomial at the times the step covers, the same evaluation `SaveAt(ts=...)` makes; the
callers check the times on the host (`increasing`, `check_times`, `Observations`). Used by the
characteristics, density transport, the ODE-RNN observation model (`dynopt.rnn`) and the SDE paths
of `dynopt.sde.simulate` (its Itô or Stratonovich solver stays marked as such: diffrax forwards
`isinstance` through a wrapped solver).
"""

import functools as ft

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import Array, PyTree


class SaveAtTimes(diffrax.AbstractWrappedSolver):
    r"""`solver`, also writing $y(t)$ for every save time $t$ in `ts` into its state (read it
    with `saved`). Forward solves only; `ts` strictly increasing within $[t_0, t_1]$ (checked
    by the caller).

    Every step writes the times it covers, $t_0 < t \le t_1$ (a step diffrax then rejects
    too: the accepted step from the same $t_0$ rewrites them, and nothing later does), so what
    stays is what `SaveAt(ts=...)` saves. Needs an adjoint that differentiates through the
    solver's steps (`RecursiveCheckpointAdjoint`, `ForwardMode`, `DirectAdjoint`), not
    `BacksolveAdjoint`.

    With `loop`, a step writes only the times it covers, $i$ from the first $t_i > t_0$ to the
    last $t_i \le t_1$ (`searchsorted`: `ts` non-decreasing, repeats allowed, times past the
    solve's end never written: padding): $O(\text{covered})$ work a step instead of
    $O(\text{len}(ts))$, for many save times of a large state (`compare`'s reference at every
    step of the runs), but not reverse-differentiable (a `while_loop`), and under `vmap` the
    loop runs to the batch's longest. (diffrax still selects the whole state between an
    accepted and a rejected step: one pass over the rows a step.)"""

    solver: diffrax.AbstractSolver
    ts: Array
    loop: bool = eqx.field(static=True, default=False)

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    # diffrax sets these on the solver it is given: an implicit solver's Newton tolerances
    # (from the controller's) and a Runge-Kutta solver's stage loop (for forward mode).
    @property
    def root_finder(self):
        return self.solver.root_finder

    @property
    def scan_kind(self):
        return self.solver.scan_kind

    def order(self, terms):
        return self.solver.order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)

    def init(self, terms, t0, t1, y0, args):
        empty = lambda y: jnp.full((self.ts.shape[0], *jnp.shape(y)), jnp.inf, jnp.result_type(y))
        return self.solver.init(terms, t0, t1, y0, args), jax.tree.map(empty, y0)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        state, saved = solver_state
        y1, y_error, dense_info, state, result = self.solver.step(
            terms, t0, t1, y0, args, state, made_jump
        )
        interp = self.solver.interpolation_cls(t0=t0, t1=t1, **dense_info)
        if self.loop:
            first = jnp.searchsorted(self.ts, t0, side="right")
            last = jnp.searchsorted(self.ts, t1, side="right")

            def write(i, saved):
                at = interp.evaluate(self.ts[i])
                return jax.tree.map(lambda s, y: s.at[i].set(y.astype(s.dtype)), saved, at)

            saved = jax.lax.fori_loop(first, last, write, saved)
            return y1, y_error, dense_info, (state, saved), result
        covered = (self.ts > t0) & (self.ts <= t1)
        # Evaluated at every save time and kept where covered: no loop, so reverse mode works.
        at = jax.vmap(interp.evaluate)(jnp.clip(self.ts, t0, t1))
        saved = jax.tree.map(ft.partial(_where_rows, covered), at, saved)
        return y1, y_error, dense_info, (state, saved), result


def _where_rows(mask: Array, new: Array, old: Array) -> Array:
    """`new` where `mask` (along the leading axis, the save times), else `old`."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (jnp.ndim(old) - 1)), new, old)


def saved(sol: diffrax.Solution, ts: Array, t0, y0: PyTree) -> PyTree:
    """The solution at `ts` from a `SaveAtTimes(solver, ts)` solve from `(t0, y0)` with
    `SaveAt(t1=True, solver_state=True)`: `y0` at `t0` (no step covers it; from `y0` itself, so
    derivatives reach it: diffrax does not differentiate its initial solver state), and `inf`
    past the time the solve reached (`sol.ts[-1]`: the horizon, an event's time, or where it
    failed), as diffrax's `SaveAt(ts=...)` leaves them."""
    _, ys = sol.solver_state
    start, past = ts == t0, ts > sol.ts[-1]
    ys = jax.tree.map(lambda y, y0: _where_rows(start, jnp.asarray(y0, y.dtype)[None], y), ys, y0)
    return jax.tree.map(lambda y: _where_rows(past, jnp.asarray(jnp.inf, y.dtype), y), ys)


__all__ = ["SaveAtTimes", "saved"]
