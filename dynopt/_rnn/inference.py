r"""ODE parameter inference from sparse, noisy observations with a masked least-squares loss.

$$L(\theta) = \sum_{j}\sum_{i} m_{ji}\,\big(\hat y_i(t_j;\theta) - y_{ji}\big)^2,\qquad
  m_{ji}\in\{0,1\}\ \text{(observed or not)},$$

with the prediction $\hat y(t_j;\theta)$ from one of two routes:

- `unrolled_model`: post 5's route, the `ODECell` unrolled on its (coarse) grid; the loss is
  the post's masked loss on the output sequence. Its minimiser fits the *discrete* map, so a coarse
  step biases $\hat\theta$ by $O(h^p)$ for a method of order $p$.
- `diffrax_model`: an adaptive diffrax solve (Tsit5 + PID by default) saved at the observation
  times and differentiated by `RecursiveCheckpointAdjoint` (discretise-then-optimise with
  checkpointing); its bias is set by the tolerances, not by a step.

Both give an `ObservationModel`, which is a callable loss, so `model.problem()` is a
`dynopt.Problem` that `dynopt.run(optax.adam(...), ...)` trains as one jitted scan; `fit` also
accepts an `optimistix` least-squares solver (Gauss–Newton / Levenberg–Marquardt on the residuals).
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, ArrayLike, Bool, Float, Int, PyTree, ScalarLike
from .._problem import Problem
from .._run import run
from .._saving import SaveAtTimes, saved
from .._solve import integrate
from .._validation import increasing, interval, is_traced, positive_int, solver_options
from .cell import as_array, ODECell


class Observations(eqx.Module):
    r"""Sparse observations $y_{ji} \approx y_i(t_j)$ with a mask of which entries were observed.

    **Arguments:**

    - `ts`: strictly increasing, finite observation times, shape `(m,)`.
    - `ys`: the observed states, shape `(m, *state_shape)`; unobserved entries may be NaN.
    - `mask`: `None` (observed = finite entries of `ys`) or a boolean/0-1 array of `ys`'s shape.

    **Raises:** `ValueError` for non-increasing or non-finite times, `ys` that are not real,
    mismatched shapes, or a non-finite value in an observed entry.
    """

    ts: Float[Array, " m"]
    ys: Float[Array, "m ..."]
    mask: Float[Array, "m ..."]

    def __init__(self, ts: ArrayLike, ys: ArrayLike, mask: ArrayLike | None = None):
        ts_np, ys_np = increasing("ts", ts), np.asarray(ys)
        if ys_np.dtype.kind not in "biuf":  # complex lost its imaginary part with a warning
            raise ValueError(f"ys must be an array of real numbers, got dtype {ys_np.dtype}.")
        ys_np = ys_np.astype(np.float64)
        if ys_np.ndim < 1 or ys_np.shape[0] != ts_np.size:
            raise ValueError(
                f"ys must have shape (len(ts), *state_shape) = ({ts_np.size}, ...), got shape "
                f"{ys_np.shape}."
            )
        if mask is None:
            mask_np = np.isfinite(ys_np)
        else:
            mask_np = np.asarray(mask)
            if mask_np.shape != ys_np.shape:
                raise ValueError(
                    f"mask must have the shape of ys {ys_np.shape}, got {mask_np.shape}."
                )
            if not np.all((mask_np == 0) | (mask_np == 1)):
                raise ValueError("mask must be boolean (or 0/1).")
            mask_np = mask_np.astype(bool)
            if not np.all(np.isfinite(ys_np[mask_np])):
                raise ValueError("ys must be finite wherever mask is True.")
        if not mask_np.any():
            raise ValueError("no observed entry: mask is all False (or ys all NaN).")
        self.ts = as_array(ts_np)
        self.ys = as_array(np.where(mask_np, ys_np, 0.0))
        self.mask = as_array(mask_np.astype(np.float64))

    @property
    def num_observed(self) -> int:
        """The number of observed scalar entries (the rows of the sensitivity matrix)."""
        return int(np.sum(np.asarray(self.mask)))


def _vector_field(t, y, cell: ODECell):
    return cell.field(t, y)


class ObservationModel(eqx.Module):
    r"""$\theta \mapsto \hat y(t_j; \theta)$ and the masked loss; build it with `unrolled_model`
    or `diffrax_model`. Calling it on the cell's trainable leaves returns $L(\theta)$.

    Methods take `raw`: the cell's trainable leaves (log-parameters for a `log_params` cell).
    """

    cell: ODECell
    y0: Array
    obs: Observations
    t0: Float[Array, ""]
    route: str = eqx.field(static=True)
    num_steps: int | None = eqx.field(static=True, default=None)
    indices: Int[Array, " m"] | None = None
    solver: diffrax.AbstractSolver | None = None
    controller: diffrax.AbstractStepSizeController | None = None
    adjoint: diffrax.AbstractAdjoint | None = None
    max_steps: int = eqx.field(static=True, default=4096)

    def predict(self, raw: PyTree) -> Float[Array, "m ..."]:
        """The predicted states at the observation times."""
        cell = self.cell.with_params(raw)
        if self.route == "unrolled":
            return cell(self.y0, self.num_steps, t0=self.t0)[self.indices]
        # Times in the state's dtype, as the unrolled cell's grid: diffrax's stages would
        # otherwise promote a float32 state with float64 times.
        ts = self.obs.ts.astype(self.y0.dtype)
        # The solver saves at the observation times (checked by `Observations` and
        # `diffrax_model`): diffrax's own checks of traced `SaveAt(ts=...)` are host callbacks,
        # which keep every program holding this loss out of JAX's persistent cache. The
        # backsolve adjoint differentiates no solver step: diffrax saves for it.
        backsolve = isinstance(self.adjoint, diffrax.BacksolveAdjoint)
        if backsolve:
            solver, saveat = self.solver, diffrax.SaveAt(ts=ts)
        else:
            solver = SaveAtTimes(self.solver, ts)
            saveat = diffrax.SaveAt(t1=True, solver_state=True)
        sol = integrate(
            diffrax.ODETerm(_vector_field),
            solver,
            self.t0,
            ts[-1],
            self.y0,
            args=cell,
            saveat=saveat,
            controller=self.controller,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
        )
        ys = sol.ys if backsolve else saved(sol, ts, self.t0, self.y0)
        # A failed solve (blow-up, step budget) must read as a non-finite loss, not as the
        # partial trajectory diffrax returns: `run` then flags the step as diverged.
        ok = diffrax.is_successful(sol.result)
        return jnp.where(ok, ys, jnp.nan)

    def residuals(self, raw: PyTree) -> Float[Array, "m ..."]:
        """Masked residuals $m_{ji}(\\hat y_i(t_j) - y_{ji})$, in the prediction's dtype (the
        observations are stored in float64: a float32 cell fits in float32)."""
        return _residuals(self, self.predict(raw))

    def loss(self, raw: PyTree) -> Float[Array, ""]:
        """$L(\\theta) = \\sum m_{ji}(\\hat y_i(t_j) - y_{ji})^2$ (post 5's masked loss)."""
        return _loss(self, self.predict(raw))

    def __call__(self, raw: PyTree) -> Float[Array, ""]:
        return self.loss(raw)

    def problem(self, name: str | None = None) -> Problem:
        """This loss as a `dynopt.Problem` starting from the cell's current parameters."""
        return Problem(self, self.cell.params, name=name or f"ode_inference_{self.route}")


def _residuals(model: ObservationModel, pred: Array) -> Array:
    return model.obs.mask.astype(pred.dtype) * (pred - model.obs.ys.astype(pred.dtype))


def _loss(model: ObservationModel, pred: Array) -> Array:
    return jnp.sum(_residuals(model, pred) ** 2)


def _shared_fields(cell: ODECell, y0: ArrayLike, obs: Observations, t0: ScalarLike) -> dict:
    """The fields every route stores, with `y0` and `t0` checked against `cell` and `obs`."""
    # NaN compares False with every time: the horizon check would pass. (`float` of a string
    # was Python's ValueError, not naming t0.)
    t0 = float(interval("t0", t0))
    if not is_traced(y0):  # a NaN start fitted a NaN loss
        interval("y0", y0)
    if obs.ys.shape[1:] != np.shape(y0):
        raise ValueError(
            f"observations have state shape {obs.ys.shape[1:]} but y0 has shape {np.shape(y0)}."
        )
    # The state the cell unrolls (the promoted dtype of y0 and θ; shape and dtype of the field
    # checked): the diffrax route solves in the same dtype as the unrolled one.
    y0 = cell._initial_state(y0, t0)
    ts0 = float(np.asarray(obs.ts)[0])  # on the host: indexing the array is a program
    if ts0 < t0:
        raise ValueError(
            f"observation times must lie in the horizon [t0, ...] with t0={t0}, got ts[0]={ts0}."
        )
    return dict(cell=cell, y0=y0, obs=obs, t0=as_array(np.asarray(t0, y0.dtype)))


def unrolled_model(
    cell: ODECell,
    y0: ArrayLike,
    obs: Observations,
    *,
    t0: ScalarLike = 0.0,
    num_steps: int | None = None,
) -> ObservationModel:
    r"""Post 5's route: unroll `cell` for `num_steps` steps from $(t_0, y_0)$ and read the
    outputs at the observation times, which must lie on the grid $t_0 + nh$, $0 \le n \le N$.

    `num_steps=None` unrolls just far enough to reach the last observation.

    **Arguments:**

    - `cell`: the `ODECell` to unroll (its step $h$ and method).
    - `y0`: the initial state.
    - `obs`: the `Observations`, at times on the grid $t_0 + nh$.
    - `t0`: the start time (default 0).
    - `num_steps`: $N$, or `None` (just far enough to reach the last observation).

    **Returns:** an `ObservationModel`.

    **Raises:** `ValueError` for observation times off the grid or outside $[t_0, t_0 + Nh]$,
    or mismatched shapes.
    """
    shared, t0 = _shared_fields(cell, y0, obs, t0), float(t0)
    h = float(cell.step_size)
    k = (np.asarray(obs.ts) - t0) / h
    idx = np.rint(k).astype(int)
    # A float32 step is 0.1 only to float32's precision (0.10000000149): t = 0.3 lies on its grid
    # to a relative ~eps32/2, which the float64 tolerance 1e-9 refused.
    h_dtype = cell.step_size.dtype  # an integer step is exact
    rel = (
        1e-9 if not jnp.issubdtype(h_dtype, jnp.floating) else max(1e-9, 8 * jnp.finfo(h_dtype).eps)
    )
    if not np.allclose(k, idx, rtol=0.0, atol=rel * max(1.0, float(np.max(np.abs(k))))):
        raise ValueError(
            f"observation times must lie on the cell's grid t0 + n*h (t0={t0}, h={h}); got "
            f"ts={np.asarray(obs.ts).tolist()}. Choose h dividing the time gaps, or use "
            "diffrax_model."
        )
    n_last = int(idx.max())
    if num_steps is None:
        num_steps = max(n_last, 1)
    num_steps = positive_int("num_steps", num_steps)
    if n_last > num_steps:
        raise ValueError(
            f"observation time {float(obs.ts[-1])} is outside the horizon "
            f"[t0, t0 + num_steps*h] = [{t0}, {t0 + num_steps * h}]."
        )
    return ObservationModel(
        **shared, route="unrolled", num_steps=int(num_steps), indices=as_array(idx)
    )


def diffrax_model(
    cell: ODECell,
    y0: ArrayLike,
    obs: Observations,
    *,
    t0: ScalarLike = 0.0,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    adjoint: diffrax.AbstractAdjoint | None = None,
    max_steps: int = 4096,
) -> ObservationModel:
    r"""The modern route: solve $\dot y = \tilde f(t, y;\theta)$ (the cell's clipped field; the
    cell's step and method are not used) with an adaptive diffrax solver from $(t_0, y_0)$ to the
    last observation, saving at the observation times.

    Defaults: `diffrax.Tsit5()`, `PIDController(rtol, atol)`, and
    `RecursiveCheckpointAdjoint()` for reverse-mode gradients (`identifiability` switches to
    `ForwardMode` itself for `jax.jacfwd`).

    **Arguments:**

    - `cell`: the `ODECell` whose (clipped) field is solved.
    - `y0`: the initial state.
    - `obs`: the `Observations` (times after $t_0$, values of the state's shape).
    - `t0`: the start time (default 0).
    - `solver`: an adaptive diffrax solver (`None`: `Tsit5()`).
    - `rtol`, `atol`: the step-size controller's tolerances, $> 0$.
    - `adjoint`: a `diffrax.AbstractAdjoint` (`None`: `RecursiveCheckpointAdjoint()`).
    - `max_steps`: the solve's step budget.

    **Returns:** an `ObservationModel`.

    **Raises:** `ValueError` for observation times before $t_0$, mismatched shapes,
    non-positive tolerances, a `solver` that is not an adaptive diffrax solver (one with an
    error estimate, `diffrax.AbstractAdaptiveSolver`) or an `adjoint` that is not a
    `diffrax.AbstractAdjoint`.
    """
    shared = _shared_fields(cell, y0, obs, t0)
    rtol, atol, max_steps = solver_options(rtol, atol, max_steps)
    # Checked here: a wrong one failed only when the loss was first evaluated (an
    # AttributeError, or diffrax's RuntimeError for a solver with no error estimate).
    if solver is not None and not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        raise ValueError(
            "solver must be an adaptive diffrax solver (diffrax.AbstractAdaptiveSolver: it "
            f"provides the error estimate the PIDController needs), got {solver!r}. "
            "diffrax.HalfSolver(solver) gives any solver an error estimate."
        )
    if adjoint is not None and not isinstance(adjoint, diffrax.AbstractAdjoint):
        raise ValueError(f"adjoint must be a diffrax.AbstractAdjoint, got {adjoint!r}.")
    return ObservationModel(
        **shared,
        route="diffrax",
        solver=diffrax.Tsit5() if solver is None else solver,
        # The tolerances as arrays in the state's dtype, traced: as Python floats they were
        # static, and each new value compiled every fit, sensitivity and profile again.
        controller=diffrax.PIDController(
            rtol=as_array(np.asarray(rtol, shared["y0"].dtype)),
            atol=as_array(np.asarray(atol, shared["y0"].dtype)),
        ),
        adjoint=diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
        max_steps=max_steps,
    )


class Fit(eqx.Module):
    """The result of `fit`.

    **Fields:** `cell` (with the fitted parameters; `cell.parameters` in natural units), `losses`
    and `iterations` (the loss history: every `every`-th optax step, or the initial and final loss
    of a least-squares solve), `loss` (final), `num_iterations` (steps taken), `ok` (optax: no
    non-finite step; optimistix: converged).
    """

    cell: ODECell
    losses: Float[Array, " k"]
    iterations: Int[Array, " k"]
    loss: Float[Array, ""]
    num_iterations: Int[Array, ""]
    ok: Bool[Array, ""]


@eqx.filter_jit
def _least_squares(model: ObservationModel, solver, max_steps: int):
    raw0 = model.cell.params
    # The solver's algebra in the default float (float64 under x64), the model in its own dtype:
    # optimistix's Levenberg–Marquardt and Dogleg fail on float32 parameters under x64 (their
    # damping term is float64: lineax's "Vector and operator structures do not match", lax's
    # "cond branches must have equal output types"). A no-op for float64 parameters.
    wide = jnp.dtype(jnp.result_type(float))

    def widen(tree):
        def one(a):
            narrower = jnp.issubdtype(a.dtype, jnp.floating) and a.dtype.itemsize < wide.itemsize
            return a.astype(wide) if narrower else a

        return jax.tree.map(one, tree)

    def narrow(raw):
        return jax.tree.map(lambda a, ref: a.astype(ref.dtype), raw, raw0)

    sol = optx.least_squares(
        lambda raw, _: widen(model.residuals(narrow(raw))),
        solver,
        widen(raw0),
        # reverse-mode Jacobian: RecursiveCheckpointAdjoint cannot be forward-differentiated.
        options={"jac": "bwd"},
        max_steps=max_steps,
        throw=False,
    )
    sol = eqx.tree_at(lambda x: x.value, sol, narrow(sol.value))
    # The predictions at the start and at the solution from the same program (computed apart,
    # they were one more compiled program: diffrax's solve, or the unrolled scan), one solve
    # in a loop of two (written twice, XLA compiled the solve twice).
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), raw0, sol.value)
    preds = jax.lax.map(model.predict, both)
    preds = (preds[0], preds[1])
    steps = sol.stats["num_steps"]
    iterations = jnp.stack([jnp.zeros_like(steps), steps])
    return sol.value, steps, iterations, sol.result == optx.RESULTS.successful, preds


@eqx.filter_jit
def _optax_fit(cell: ODECell, traj, num_iterations: Int[Array, ""]) -> Fit:
    # One program for the epilogue: eagerly, each index and comparison compiled one of its own.
    return Fit(
        cell=cell.with_params(jax.tree.map(lambda x: x[-1], traj.params)),
        losses=traj.loss,
        iterations=traj.steps,
        loss=traj.loss[-1],
        num_iterations=num_iterations,
        ok=traj.diverged_at < 0,
    )


def check_raw(model: ObservationModel, raw: PyTree) -> PyTree:
    """`raw` checked against `model`'s cell: the tree structure and leaf shapes of its trainable
    leaves (another tree was a `KeyError` or a shape error inside the vector field) and, where
    concrete, finite (a NaN one gave NaN sensitivities, read as infinite standard errors)."""
    ref = model.cell.params
    shapes = jax.tree.map(np.shape, ref)
    flat_ref, unravel = ravel_pytree(ref)
    if (
        jax.tree.structure(raw) != jax.tree.structure(ref)
        and eqx.is_array_like(raw)
        and np.shape(raw) == flat_ref.shape
    ):
        # The parameters raveled (`ravel_pytree(cell.params)[0]`, the order of the Jacobian's
        # columns and of `loss_profile`'s direction): taken in that order
        raw = unravel(jnp.asarray(raw, flat_ref.dtype))
    if jax.tree.structure(raw) != jax.tree.structure(ref) or jax.tree.leaves(
        jax.tree.map(np.shape, raw)
    ) != jax.tree.leaves(shapes):
        raise ValueError(
            "raw must have the tree structure and leaf shapes of the cell's trainable leaves "
            f"(model.cell.params: {shapes}) or be them raveled (shape {flat_ref.shape}), got "
            f"{jax.tree.map(np.shape, raw)}."
        )
    for path, leaf in jax.tree_util.tree_leaves_with_path(raw):
        if not is_traced(leaf):
            interval(f"raw{jax.tree_util.keystr(path)}", leaf)
    return raw


def check_model(model) -> None:
    """`ValueError` unless `model` is an `ObservationModel` (anything else was an
    `AttributeError` naming a field of the model)."""
    if not isinstance(model, ObservationModel):
        raise ValueError(
            "model must be an ObservationModel (from dynopt.rnn.unrolled_model or "
            f"diffrax_model), got {type(model).__name__}."
        )


def fit(
    model: ObservationModel,
    optimizer: optax.GradientTransformation | optx.AbstractLeastSquaresSolver,
    num_iterations: int,
    *,
    every: int = 1,
) -> Fit:
    r"""Fit the cell's parameters to the observations, starting from `model.cell.params`.

    - An optax transform runs `num_iterations` steps on `model.problem()` through `dynopt.run`
      (one jitted `lax.scan`; gradients by reverse mode through the unrolled cell, or through
      diffrax's adjoint); the history is saved every `every` steps.
    - An `optimistix` least-squares solver (e.g. `optx.LevenbergMarquardt(rtol, atol)`) minimises
      $\|r(\theta)\|^2$ with at most `num_iterations` steps.

    **Arguments:**

    - `model`: the `ObservationModel` to fit.
    - `optimizer`: an optax `GradientTransformation` or an optimistix least-squares solver.
    - `num_iterations`: the number of steps (at most, for a least-squares solver), a positive
      integer.
    - `every`: the history's saving interval, in steps (optax only).

    **Returns:** a `Fit` (the cell with the fitted parameters, the loss history).

    **Raises:** `ValueError` for a `model` that is not an `ObservationModel`, a `num_iterations`
    that is not a positive (Python or NumPy) integer, or an unknown optimizer.
    """
    check_model(model)
    # A NumPy integer counts, as for `ODECell.__call__`'s num_steps; a bool does not.
    num_iterations = positive_int("num_iterations", num_iterations)
    if isinstance(optimizer, optax.GradientTransformation):
        traj = run(optimizer, model.problem(), num_iterations, every=every)
        return _optax_fit(model.cell, traj, as_array(num_iterations))
    if isinstance(optimizer, optx.AbstractLeastSquaresSolver):
        raw, steps, iterations, ok, preds = _least_squares(model, optimizer, num_iterations)
        # The loss around the predictions as `loss` computes it, outside the solver's program:
        # inside, XLA fuses the sum of squares and rounds it otherwise (1 ulp off `loss`).
        loss0, loss1 = (_loss(model, pred) for pred in preds)
        return Fit(
            cell=model.cell.with_params(raw),
            losses=jnp.stack([loss0, loss1]),
            iterations=iterations,
            loss=loss1,
            num_iterations=steps,
            ok=ok,
        )
    raise ValueError(
        "optimizer must be an optax.GradientTransformation or an optimistix least-squares solver "
        f"(e.g. optx.LevenbergMarquardt), got {type(optimizer).__name__}."
    )
