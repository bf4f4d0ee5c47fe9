"""Result containers: `Trajectory` (one run or one reference solve) and `Comparison`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, Bool, Float, Int, Params, PyTree, ScalarLike
from ._validation import check, interval, is_traced


class Trajectory(eqx.Module):
    r"""A trajectory $\theta(t)$ saved at times `ts`.

    **Fields:**

    - `ts`: the save times. For a discrete run these are $k\,\Delta t$ at the saved steps, or
      the step indices $k$ for a raw optax transform run without `dt` (see `ts_unit`).
    - `params`: the parameters at `ts`, a pytree whose leaves have a leading time axis.
    - `loss`: $L(\theta)$ at `ts`.
    - `diverged_at`: the first step $k$ whose iterate $\theta_k$ is non-finite or whose loss
      $L(\theta_k)$ is non-finite or past `run`'s growth criterion $L_0 + 10^8\max(|L_0|, 1)$
      (`dynopt._run.divergence_limit`), or $-1$; the same at every `every` for a run that stays
      diverged (`run`). From that step on the run is frozen instead of flooding with NaNs: it
      keeps $\theta_k$ when only its loss failed (a finite iterate whose saved loss may be
      `inf` or past the limit), else the last iterate that passed; `valid` masks those points.
    - `steps`: the discrete step index of each saved point (`None` for reference solves).
    - `interpolation`: the dense output of a reference solve (`None` for runs), used by
      `evaluate`: a `diffrax.AbstractPath` in the flow's time (diffrax's interpolation of the
      solve in unit time, see `dynopt._solve.UnitTimeInterpolation`), with `t0`, `t1`, `ts`,
      `evaluate` and `derivative`.
    - `flow`: the flow a reference solve integrated (maps a state to parameters in `evaluate`).
    - `solver`: the diffrax solver's name for reference solves, else `None`.
    - `stats`: solver statistics (`num_steps`, `num_accepted_steps`, ...) or `{}`.
    - `ts_unit`: what `ts` counts: `"time"` (continuous time $t$, comparable with a reference
      solve) or `"steps"` (step indices of a raw optax transform run without `dt`).
    - `observations`: what `run(..., observe=...)` recorded at the saved points (a pytree whose
      leaves have the time axis after the batch axes), else `None`.

    For a game (`dynopt.games.Game`) `params` is the pair `(phi, theta)` and `loss` the
    Hamiltonian $\frac12\|\xi\|^2$. Batched runs (a vector of step sizes or of keys) carry
    leading batch axes on every array.
    """

    ts: Float[Array, "*batch n"]
    params: PyTree
    loss: Float[Array, "*batch n"]
    diverged_at: Int[Array, "*batch"]
    steps: Int[Array, "*batch n"] | None = None
    interpolation: PyTree | None = None
    flow: PyTree | None = None
    solver: str | None = eqx.field(static=True, default=None)
    stats: dict = eqx.field(default_factory=dict)
    observations: PyTree | None = None
    ts_unit: str = eqx.field(static=True, default="time")

    def evaluate(self, t: ScalarLike) -> Params:
        r"""Parameters at any time `t` in the solve's interval $[t_0, t_1]$ (dense output of a
        reference); for a 1-D array of times, stacked along a leading axis.

        **Raises:** `ValueError` for `t` outside $[t_0, t_1]$ (concrete `t`; inside `jit` an
        `eqx.error_if` with the same message): diffrax would extrapolate its last polynomial
        piece, or return NaN, rather than the flow.
        """
        if self.interpolation is None or self.flow is None:
            if self.steps is None:  # a reference solve without its dense output
                raise ValueError(
                    "evaluate() needs the dense output of the reference solve: this one was "
                    "solved with dense=False (solve again with dense=True, the default), or "
                    "read the saved points (.params at .ts)."
                )
            raise ValueError(
                "evaluate() needs the dense output of a reference solve (dynopt.solve); a "
                "discrete run is only defined at its saved steps (use .params)."
            )
        interp = self.interpolation
        if is_traced((interp.t0, interp.t1)):
            bad = (jnp.asarray(t) < interp.t0) | (jnp.asarray(t) > interp.t1)
            t = check(t, jnp.any(bad), "t must be in the solve's interval [t0, t1].")
        else:
            t0, t1 = float(interp.t0), float(interp.t1)
            try:  # before the interval: the hint points the other way
                early = bool(np.any(np.asarray(t, dtype=np.float64) < t0))
            except (TypeError, ValueError):  # not a number: `interval` says so
                early = False
            hint = "The reference solve covers only this interval; " + (
                "solve from an earlier start (t0) to evaluate there."
                if early
                else "solve to a later horizon (ts[-1]) to evaluate there."
            )
            t = interval("t", t, lower=t0, upper=t1, hint=hint)
        if jnp.ndim(t) > 1:
            raise ValueError(f"t must be a time or a 1-D array of times, got shape {jnp.shape(t)}.")
        if jnp.ndim(t) == 1:
            return jax.vmap(lambda s: self.flow.params(interp.evaluate(s)))(jnp.asarray(t))
        return self.flow.params(interp.evaluate(t))

    @property
    def diverged(self) -> Bool[Array, "*batch"]:
        return self.diverged_at >= 0

    @property
    def final_params(self) -> Params:
        """The last saved parameters (per batch entry)."""
        index = (slice(None),) * jnp.ndim(self.diverged_at) + (-1,)
        return jax.tree.map(lambda x: x[index], self.params)

    @property
    def valid(self) -> Bool[Array, "*batch n"]:
        """Mask of saved points taken before divergence."""
        if self.steps is None:
            return jnp.isfinite(self.loss)
        div = self.diverged_at[..., None]
        return (div < 0) | (self.steps < div)


class Comparison(eqx.Module):
    r"""Discrete runs against a reference flow, one entry per step size $h$.

    Read `verdict` before `order`: an order is a number only when the errors are in the
    asymptotic regime (`dynopt.assess_order`: local orders agreeing within 0.2, errors
    decreasing and below 1/4 of the solution's scale, no run diverged or past a known
    stability limit). The repr says which.

    **Fields:**

    - `step_sizes`: the $h$ of each run (the argument of the discretization map).
    - `dts`: the time step $\Delta t$ of each run (`map(flow, h).dt`; $= h$ for most maps).
    - `errors`: $\max_{k \le N_h} \|\theta_k - \theta(k\,\Delta t)\|_2$, the largest error over the
      horizon at matched times (Euclidean norm over all parameters); `inf` if the run diverged.
    - `final_errors`: the same error at $t_1$.
    - `local_orders`: $\log(e_i/e_{i+1})/\log(\Delta t_i/\Delta t_{i+1})$ between consecutive
      step sizes (as given when they are monotone, else from the largest to the smallest;
      `nan` next to a diverged run).
    - `verdict`: `"asymptotic"`, `"pre-asymptotic"`, `"unstable"` or `"too few step sizes"`;
      `reason`: why, in words (which test failed, which step sizes diverged).
    - `order`: when `verdict == "asymptotic"`, the least-squares slope of $\log$ `errors`
      against $\log \Delta t$: the order in the time step, whatever the map from $h$ to
      $\Delta t$ (e.g. $\Delta t = \sqrt\alpha$ for momentum maps); else `nan`.
    - `final_order`, `final_verdict`: the same for `final_errors`.
    - `diverged_at`: first diverged step of each run (non-finite, or past `run`'s growth
      criterion), or $-1$.
    - `num_steps`: $N_h = t_1/\Delta t$.
    - `scales`: the solution's scale per run, $\max_k\|\theta(k\Delta t) - \theta(0)\|$.
    - `t1`, `solver`: the horizon and the reference solver's name.
    - `start`: where the discrete runs started (`compare`'s `start`): `"map"`, the map's own
      initial state, or `"optax"`, the transform's `init`.
    - `reference`: the reference solve, a `Trajectory` as `solve` returns it, with
      `compare(..., keep_reference=True)`; else `None`.
    """

    step_sizes: Float[Array, " k"]
    dts: Float[Array, " k"]
    errors: Float[Array, " k"]
    final_errors: Float[Array, " k"]
    order: Float[Array, ""]
    final_order: Float[Array, ""]
    diverged_at: Int[Array, " k"]
    num_steps: Int[Array, " k"]
    t1: float = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    local_orders: Float[Array, " k-1"] | None = None
    verdict: str = eqx.field(static=True, default="too few step sizes")
    reason: str = eqx.field(static=True, default="")
    final_verdict: str = eqx.field(static=True, default="too few step sizes")
    scales: Float[Array, " k"] | None = None
    start: str = eqx.field(static=True, default="map")
    reference: Trajectory | None = None

    @property
    def diverged(self) -> Bool[Array, " k"]:
        return self.diverged_at >= 0

    def __repr__(self) -> str:
        def fmt(x):
            arr = np.atleast_1d(np.asarray(x, dtype=np.float64))
            return "[" + ", ".join(f"{v:.3g}" for v in arr) + "]"

        if self.verdict == "asymptotic":
            order = f"order={float(self.order):.3f} (asymptotic: {self.reason})"
        else:
            order = f"order=nan ({self.verdict}: {self.reason})"
        lo = "None" if self.local_orders is None else fmt(self.local_orders)
        return (
            f"Comparison({order}, step_sizes={fmt(self.step_sizes)}, dts={fmt(self.dts)}, "
            f"errors={fmt(self.errors)}, local_orders={lo}, "
            f"diverged_at={np.asarray(self.diverged_at).tolist()}, "
            f"final_order={float(self.final_order):.3g} ({self.final_verdict}), t1={self.t1:g}, "
            f"solver={self.solver!r}, start={self.start!r})"
        )

    __str__ = __repr__
