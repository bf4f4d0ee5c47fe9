r"""The correspondence battery as public checks: one function per check of a `Correspondence`
(or an `AutomaticCorrespondence`), each returning what it measures, and `verify`, which runs
them all and says which pass at the battery's tolerances. `tests/test_correspondences.py` runs
the same functions on every row of the registry; a row written outside the package gets the
same battery.

The checks of a `Correspondence` (float64, `jax_enable_x64`):

- `baseline_identity`: `run(map(flow, h))` against a hand-written `lax.scan` of the raw optax
  baseline, from the map's initial state, at two step sizes: max $|\Delta\theta|$ $\le$ 1e-12;
- `initial_state`: where the map declares an initial state (`init_fn`), its tree structure,
  leaf shapes and dtypes are optax's `init`'s and its leaves finite, on the measurements'
  problems and on a pytree in float64 and float32;
- `fitted_orders`: on each of at least two measurements, the slope of $\log e$ against
  $\log\Delta t$ within $\pm$0.1 of the claimed order (errors finite and positive, and the
  verdict of `dynopt.assess_order` `"asymptotic"`, against the closed form as against
  `compare`'s reference: a fit of pre-asymptotic errors is no order);
- `closed_form_deviation`: where the flow declares a `closed_form` on a measurement's problem
  (the order is then fitted against it), its relative deviation from the diffrax solution of
  the flow's own vector field $<$ 1e-6;
- `optax_conformance`: float32 parameters kept, finite losses, no recompilation for a new step
  size, and the same iterates inside `optax.chain` under `optax.inject_hyperparams` (to 1e-12);
- `inverse_round_trip`: the inverse map recovers $h$ and $\Delta t$ to a relative 1e-12 and the
  hyper-parameters to a relative 1e-10 (absolute 1e-15 for a zero), at the row's flow and step
  and away from them;
- `stability_limit_check`: where the map declares a `stability_limit` $h^*$ (not `None`), runs on
  $\tfrac\lambda2x^2$ (two curvatures) stay bounded at $0.98h^*$ and grow at $1.02h^*$;
- `lyapunov_residual`: where the flow declares a closed-form `loss_rate`, its relative
  deviation from $dL/dt$ along the diffrax solution $<$ 1e-6;
- `flow_retraces`: new values of the flow's hyper-parameters trace nothing anew (0 retraces).

Of an `AutomaticCorrespondence`: `automatic_identity` (its `discretize(h)` is the user's
optimizer to 1e-13) and `automatic_order` (on each measurement and order $p$: verdict
`"asymptotic"`, every local order and the fit within 0.15 of $p$).
"""

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from ._compare import _past_stability_limit, compare, matched_steps
from ._correspondences import AutomaticCorrespondence, Correspondence, Measurement
from ._custom_types import Float, Params, ScalarLike
from ._discretization import Discretization
from ._flows.base import AbstractFlow, AbstractMappedFlow
from ._lyapunov import identity_deviation
from ._maps.base import AbstractMap
from ._order import assess_order, local_orders
from ._problem import Problem
from ._problems.quadratic import quadratic
from ._run import run
from ._solve import solve, top_eigenvalue


# The battery's tolerances (those of tests/test_correspondences.py).
IDENTITY_TOLERANCE = 1e-12
AUTOMATIC_IDENTITY_TOLERANCE = 1e-13
ORDER_TOLERANCE = 0.1
AUTOMATIC_ORDER_TOLERANCE = 0.15
CONFORMANCE_TOLERANCE = 1e-12
STEP_SIZE_ROUND_TRIP_TOLERANCE = 1e-12
HYPERPARAMETER_ROUND_TRIP_TOLERANCE = 1e-10
# |a' - a| / (|a| + floor) <= 1e-10 is |a' - a| <= 1e-10 |a| + 1e-15: relative, and absolute
# to 1e-15 for an entry 0 (a weight decay of 0).
_ROUND_TRIP_FLOOR = 1e-5
LYAPUNOV_TOLERANCE = 1e-6
# solve runs at rtol 1e-10: a right closed form agrees to ~1e-10, a wrong one is off by O(1)
# times the rate it gets wrong.
CLOSED_FORM_TOLERANCE = 1e-6


def _require_x64(who: str) -> None:
    if not jax.config.jax_enable_x64:
        raise ValueError(
            f"{who} measures in float64 (its tolerances are 1e-12 and below): call "
            "jax.config.update('jax_enable_x64', True) at the start of your program."
        )


def _tree_max_abs_diff(x: Params, y: Params) -> float:
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True)
    )


def _scan_baseline(tx, problem: Problem, state, num_steps: int):
    """The loop a user writes around a raw optax transform (value and loss passed for Polyak,
    the gradient function for USAM); the iterates after each step."""

    def step(carry, _):
        params, state = carry
        value, grad = jax.value_and_grad(problem.loss)(params)
        updates, state = tx.update(
            grad, state, params, value=value, value_fn=problem.loss, grad_fn=problem.grad
        )
        params = optax.apply_updates(params, updates)
        return (params, state), params

    _, params = jax.lax.scan(step, (problem.params0, state), None, length=num_steps)
    return params


def _against_raw_optax(disc: Discretization, tx, problem: Problem, state, num_steps) -> float:
    """Max $|\\Delta\\theta|$ between `run(disc)` and the hand-written loop of `tx` from `state`."""
    ours = run(disc, problem, num_steps).params
    tx = optax.with_extra_args_support(tx)
    with jax.numpy_dtype_promotion("standard"):  # raw optax (Adam's bias correction) needs it
        theirs = eqx.filter_jit(lambda s: _scan_baseline(tx, problem, s, num_steps))(state)
    return _tree_max_abs_diff(jax.tree.map(lambda x: x[1:], ours), theirs)


def baseline_identity(row: Correspondence, num_steps: int = 40) -> float | None:
    r"""Identity of the row's map with its raw optax baseline.

    On the first measurement's problem at its smallest and its largest step size $h$:
    `run(map(flow, h))` against a hand-written `lax.scan` of `baseline(h)` (the loop a user
    writes), both from the map's initial state where it declares one (`init_fn`: a half-step
    trace, a slow manifold), else from the transform's own `init`. Two step sizes: the claim is
    an identity of functions of $h$, and a map whose hyper-parameters hold the row's step
    as a constant (`eps / 0.025**2` for `eps / h**2`) agrees with the baseline at that step
    alone.

    **Arguments:** `row`; `num_steps` (default 40).

    **Returns:** the max $|\Delta\theta|$ over the iterates and both step sizes (the battery
    asks $\le$ 1e-12), or `None` where the row has no baseline.
    """
    _require_x64("baseline_identity")
    if row.baseline is None:
        return None
    m = row.measurements[0]
    problem = m.problem()
    diffs = []
    for h in sorted({m.step_sizes[-1], m.step_sizes[0]}):
        disc = row.discretization(h)
        tx = optax.with_extra_args_support(row.baseline(h))
        state = disc.init(problem.params0, problem) if row.map.init_fn else tx.init(problem.params0)
        diffs.append(_against_raw_optax(disc, tx, problem, state, num_steps))
    return max(diffs)


class OrderFit(NamedTuple):
    r"""A fitted order on one measurement.

    **Fields:** `problem` (the measurement's label); `claimed` (the order asked); `dts` and
    `errors` (max error over the horizon per time step); `order` (least-squares slope of
    $\log e$ against $\log\Delta t$; `nan` unless every error is finite and positive);
    `local_orders` (between consecutive step sizes); `verdict` and `reason`
    (`dynopt.assess_order`'s, as `compare` reports them: the slope is an order only where the
    verdict is `"asymptotic"`).
    """

    problem: str
    claimed: float
    dts: Float[np.ndarray, " k"]
    errors: Float[np.ndarray, " k"]
    order: float
    local_orders: Float[np.ndarray, " k-1"]
    verdict: str | None
    reason: str


def _errors_against_closed_form(row: Correspondence, flow, problem, exact, m: Measurement):
    """Max error over the run against the closed form `exact(t)` (a state), and the distance
    the exact solution travels over the same points (`compare`'s scale): one batched run and one
    compiled comparison for all step sizes (each run's points past its horizon masked)."""
    # Validated as `compare` validates its sweep: t1/dt an integer for every step size.
    hs, _, ns, _ = matched_steps(m.step_sizes, m.t1, lambda h: row.map(flow, h).dt)
    disc = row.map(flow, jnp.asarray(hs))
    dts = np.asarray(disc.dt)
    ns = ns.astype(int)
    traj = run(disc, problem, int(ns.max()))
    flat = lambda p: jax.flatten_util.ravel_pytree(p)[0]

    @jax.jit
    def max_errors(params, dts, ns):
        k = jnp.arange(jax.tree.leaves(params)[0].shape[1])[None, :]  # saved points
        ts = dts[:, None] * k.astype(dts.dtype)  # t = k dt, as the run's own times
        ref = jax.vmap(jax.vmap(lambda t: flat(flow.params(exact(t)))))(ts)
        err = jnp.linalg.norm(jax.vmap(jax.vmap(flat))(params) - ref, axis=-1)
        travel = jnp.linalg.norm(ref - ref[:, :1], axis=-1)
        inside = k <= ns[:, None]
        return jnp.max(jnp.where(inside, err, 0.0), axis=1), jnp.max(
            jnp.where(inside, travel, 0.0), axis=1
        )

    errors, scales = max_errors(traj.params, jnp.asarray(dts), jnp.asarray(ns))
    diverged = np.asarray(traj.diverged_at) >= 0
    return dts, np.asarray(errors), np.asarray(scales), diverged


def _slope(dts, errors) -> float:
    if not (np.all(np.isfinite(errors)) and np.all(errors > 0)):
        return float("nan")
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


def fitted_orders(row: Correspondence) -> tuple[OrderFit, ...]:
    r"""The row's global order, fitted on each of its measurements.

    Against the flow's closed form where it has one (and the row follows the flow itself): one
    batched run of all step sizes, the errors judged as `compare` judges its own
    (`dynopt.assess_order`: local orders agreeing within 0.2, errors below 1/4 of the distance
    the solution travels, no run diverged or at the map's stability limit); else
    `dynopt.compare` with the row's map and reference. Either way the `verdict` says whether
    the step sizes are in the asymptotic regime, where alone a fitted slope is an order.

    **Arguments:** `row`.

    **Returns:** one `OrderFit` per measurement (the battery asks at least two, errors finite
    and positive, the verdict `"asymptotic"`, and every `order` within $\pm$0.1 of
    `row.order`).
    """
    _require_x64("fitted_orders")
    fits = []
    for m in row.measurements:
        problem, flow = m.problem(), row.flow()
        exact = flow.closed_form(problem) if row.reference is None else None
        if exact is not None:
            dts, errors, scales, diverged = _errors_against_closed_form(
                row, flow, problem, exact, m
            )
            hs = np.asarray(m.step_sizes, dtype=np.float64)
            unstable = _past_stability_limit(flow, problem, row.map, hs)
            a = assess_order(dts, errors, scales=scales, diverged=diverged, unstable=unstable)
            verdict, reason = a.verdict, a.reason
        else:
            c = compare(flow, problem, m.step_sizes, m.t1, map=row.map, reference=row.reference)
            dts, errors = np.asarray(c.dts), np.asarray(c.errors)
            verdict, reason = c.verdict, c.reason
        slopes = local_orders(dts, errors)
        fit = OrderFit(
            m.label, row.order, dts, errors, _slope(dts, errors), slopes, verdict, reason
        )
        fits.append(fit)
    return tuple(fits)


def closed_form_deviation(row: Correspondence) -> float | None:
    r"""The flow's declared `closed_form` against the diffrax solution of its own vector field,
    on each measurement whose problem it has one for, over the first quarter of the horizon
    (21 points; as `lyapunov_residual`: a switching field, sign descent at width 0, cannot be
    integrated past its arrival at the minimum).

    `fitted_orders` fits against the closed form where there is one: a closed form that is not
    the solution of `vector_field` (a rate dropped from the field, or from the formula) made the
    order check measure the map against the formula while `solve`, `compare` and the Lyapunov
    checks use the field, and the row passed.

    **Arguments:** `row`.

    **Returns:** the max over those measurements of
    $\max_t\|\theta_c(t) - \theta_s(t)\| / \max_t\|\theta_c(t)\|$ ($\theta_c$ the closed
    form, $\theta_s$ the solve; the battery asks $<$ 1e-6), or `None` where the flow
    declares no closed form on any of them.
    """
    _require_x64("closed_form_deviation")
    flat = lambda p: jax.flatten_util.ravel_pytree(p)[0]
    deviations = []
    for m in row.measurements:
        problem, flow = m.problem(), row.flow()
        exact = flow.closed_form(problem)
        if exact is None:
            continue
        ts = jnp.linspace(0.0, m.t1 / 4, 21)
        ref = solve(flow, problem, ts)
        # One compiled program: run eagerly, the closed form compiled each of its operations
        # apart (~50 programs for HeavyBall's).
        closed = jax.jit(jax.vmap(lambda t, f=flow, x=exact: flat(f.params(x(t)))))(ts)
        solved = jax.vmap(flat)(ref.params)
        norm = lambda x: np.linalg.norm(np.asarray(x, dtype=np.float64), axis=-1)
        scale = max(float(np.max(norm(closed))), np.finfo(np.float64).tiny)
        deviations.append(float(np.max(norm(closed - solved))) / scale)
    return max(deviations) if deviations else None


class Conformance(NamedTuple):
    """How the row's optax transform behaves as optax transforms do.

    **Fields:** `retraces` (calls of the loss while running a new step size after a first:
    0 when the compiled program is reused); `float32_kept` (float32 parameters stay float32);
    `finite` (the float32 run's losses are finite); `chain_error` (max $|\\Delta\\theta|$
    between the transform alone and inside `optax.chain` under `optax.inject_hyperparams`).
    """

    retraces: int
    float32_kept: bool
    finite: bool
    chain_error: float


class _CallCounter:
    """A loss that counts its calls: JAX calls it once per trace, a compiled program never."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.count = 0

    def __call__(self, *args):
        self.count += 1
        return self.fn(*args)


def _bowl(p):
    return jnp.sum((p["a"] - 1.0) ** 2) + 2.0 * jnp.sum(p["b"] ** 2) + 0.1


def optax_conformance(row: Correspondence) -> Conformance:
    r"""The row's discretization as an optax citizen, on a quadratic bowl over pytree
    parameters (a dict of a matrix and a vector), at the first measurement's largest step size.

    **Arguments:** `row`.

    **Returns:** a `Conformance` (the battery asks 0 `retraces`, `float32_kept`, `finite` and
    `chain_error` $\le$ 1e-12).
    """
    _require_x64("optax_conformance")
    h = row.measurements[0].step_sizes[0]
    counter = _CallCounter(_bowl)
    p32 = Problem(counter, {"a": jnp.zeros((2, 2), jnp.float32), "b": jnp.ones(3, jnp.float32)})
    traj = run(row.discretization(h), p32, 20, every=20)
    first = counter.count
    run(row.discretization(0.9 * h), p32, 20, every=20)
    retraces = counter.count - first
    kept = all(x.dtype == jnp.float32 for x in jax.tree.leaves(traj.params))
    finite = bool(np.all(np.isfinite(np.asarray(traj.loss))))
    p64 = Problem(_bowl, {"a": jnp.zeros((2, 2)), "b": jnp.ones(3)})
    d = row.discretization(h)
    # From the transform's own initial state on both sides (a declared init_fn is the map's).
    disc = Discretization(d.factory, d.hyperparams, d.dt, d.options)
    a = run(disc, p64, 5).final_params
    kwargs = {**disc.hyperparams, **dict(disc.options)}
    # Injected: the map's numeric hyper-parameters; static: the factory's other arguments.
    names = inspect.signature(disc.factory).parameters
    static = tuple(k for k in names if k not in disc.hyperparams)
    injected = optax.inject_hyperparams(disc.factory, static_args=static)(**kwargs)
    b = run(optax.chain(optax.identity(), injected), p64, 5).final_params
    return Conformance(retraces, kept, finite, _tree_max_abs_diff(a, b))


def _state_mismatches(ours, theirs) -> list[str]:
    """How `ours` (a map's initial state) differs from `theirs` (optax's) in tree structure,
    leaf shapes and dtypes, and where a leaf of `ours` is not finite."""
    if jax.tree.structure(ours) != jax.tree.structure(theirs):
        return [f"structure {jax.tree.structure(ours)}, optax's {jax.tree.structure(theirs)}"]
    out = []
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(ours)[0], jax.tree.leaves(theirs), strict=True
    ):
        name = jax.tree_util.keystr(path)
        sa, sb = (jnp.shape(a), jnp.result_type(a)), (jnp.shape(b), jnp.result_type(b))
        if sa != sb:
            out.append(f"{name} {sa[1]}{list(sa[0])}, optax's {sb[1]}{list(sb[0])}")
        elif jnp.issubdtype(sa[1], jnp.inexact) and not np.all(np.isfinite(np.asarray(a))):
            out.append(f"{name} not finite")
    return out


def initial_state(row: Correspondence) -> tuple[str, ...] | None:
    r"""The map's declared initial state (`init_fn`) against optax's own `init`: the same tree
    structure, leaf shapes and dtypes, and finite. Run on each measurement's problem and on a
    pytree bowl (a dict of a matrix and a vector) in float64 and in float32, at the first
    measurement's largest and smallest step size. The other checks start both sides from the
    map's state (`baseline_identity`) on the measurements' float64 problems, or read only the
    parameters (`optax_conformance`'s float32 run: `optax.apply_updates` casts the updates to
    the parameters' dtype): an `init_fn` that widens a float32 model's state to float64 passed
    them all, and one that builds the state for one array raised a pytree error of JAX's on the
    conformance pytree, naming no `init_fn`.

    **Arguments:** `row`.

    **Returns:** the mismatches found, one string each (empty: none; the battery asks none),
    or `None` where the map declares no `init_fn`.
    """
    _require_x64("initial_state")
    if row.map.init_fn is None:
        return None
    m0 = row.measurements[0]
    problems = [m.problem() for m in row.measurements] + [
        Problem(_bowl, {"a": jnp.zeros((2, 2), dtype), "b": jnp.ones(3, dtype)}, name=f"bowl {n}")
        for n, dtype in (("float64", jnp.float64), ("float32", jnp.float32))
    ]
    found = []
    for h in sorted({m0.step_sizes[0], m0.step_sizes[-1]}):
        disc = row.discretization(h)
        for problem in problems:
            where = f"{problem.name} at h = {h:g}: "
            with jax.numpy_dtype_promotion("standard"):
                theirs = disc.transform.init(problem.params0)
                try:
                    # The raw init_fn (`disc.init` refuses a wrong structure or shape itself):
                    # every mismatch below is named, dtypes included.
                    ours = disc.init_fn(disc, problem.params0, problem)
                except (TypeError, ValueError) as e:  # built for one structure, not this one
                    found.append(f"{where}init_fn raised {type(e).__name__}: {str(e)[:120]}")
                    continue
            found += [where + x for x in _state_mismatches(ours, theirs)]
    return tuple(found)


def _is_float_leaf(x) -> bool:
    return isinstance(x, float) or (eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.inexact))


def _scaled_static(module: Any, factor: float) -> Any:
    """`module` (and the modules it holds) with each static float field multiplied by
    `factor`, rebuilt by `dataclasses.replace` (so validated anew)."""
    if not (isinstance(module, eqx.Module) and dataclasses.is_dataclass(module)):
        return module
    changes = {}
    for f in dataclasses.fields(module):
        if not f.init or not hasattr(module, f.name):
            continue
        value = getattr(module, f.name)
        if f.metadata.get("static") and isinstance(value, float):
            changes[f.name] = value * factor
        elif isinstance(value, eqx.Module) and (new := _scaled_static(value, factor)) is not value:
            changes[f.name] = new
    return dataclasses.replace(module, **changes) if changes else module


def _scaled(flow: AbstractFlow, factor: float) -> AbstractFlow:
    """The flow with every floating hyper-parameter multiplied by `factor` (validated anew): the
    leaves that are Python floats or inexact arrays, and the static float fields (which
    `filter_jit` compiles in: a new value must show as a retrace, not go unseen). Other leaves
    (a function held as a field, an int, a bool) stay as they are."""
    leaves, treedef = jax.tree.flatten(flow)
    scaled = [x * factor if _is_float_leaf(x) else x for x in leaves]
    return _scaled_static(jax.tree.unflatten(treedef, scaled), factor)


class InverseRoundTrip(NamedTuple):
    r"""Relative errors of `map(*map.inverse(map(flow, h).hyperparams))` against `map(flow, h)`.

    **Fields:** `step_size_error` ($|h' - h|/h$); `dt_error` ($|\Delta t' - \Delta t|/\Delta t$);
    `hyperparameter_error` (max over hyper-parameters and entries of $|a' - a|/(|a| + 10^{-5})$:
    relative, and absolute to $10^{-15}$ for an entry 0 at the battery's 1e-10).
    """

    step_size_error: float
    dt_error: float
    hyperparameter_error: float


def _relative(recovered, value) -> float:
    value = np.asarray(value, dtype=np.float64)
    error = np.abs(np.asarray(recovered, dtype=np.float64) - value)
    return float(np.max(error / (np.abs(value) + _ROUND_TRIP_FLOOR)))


def inverse_round_trip(
    row: Correspondence, step_size: ScalarLike | None = None, scale: float = 1.0
) -> InverseRoundTrip | None:
    r"""The inverse map's round trip: optax hyper-parameters $\mapsto$ (flow, $h$) $\mapsto$ the
    same hyper-parameters.

    **Arguments:** `row`; `step_size` (default: the first measurement's largest); `scale`
    (every hyper-parameter of `row.flow()` multiplied by it; default 1).

    The inverse must recover the flow and $h$, not merely some pair with the same optax
    hyper-parameters: a map that is not injective (e.g. a flow $\dot\theta = -c\,e^{-rt}\nabla L$
    discretized as `sgd(c h)` with decay $e^{-rh}$, where $(c, r, h)$ and $(1, r/c, ch)$ give
    one optimizer) has no inverse; declare none, or drop the redundant field.

    Where the row's map is its flow's default map (`default_map`) and the flow declares
    `from_hyperparams` (the inverse `AbstractFlow` names), that is checked too, and the worse
    of the two reported: a flow's `from_hyperparams` that disagreed with its map's `inverse`,
    or was declared without one, passed unchecked.

    **Returns:** an `InverseRoundTrip` (the battery asks $h$ and $\Delta t$ to 1e-12, the
    hyper-parameters to 1e-10), or `None` where neither is declared.
    """
    _require_x64("inverse_round_trip")
    flow = _scaled(row.flow(), scale)
    inverses = []
    if type(row.map).inverse is not AbstractMap.inverse:
        inverses.append(row.map.inverse)
    if _declares_from_hyperparams(flow, row.map):
        inverses.append(type(flow).from_hyperparams)
    if not inverses:
        return None
    h = jnp.asarray(row.measurements[0].step_sizes[0] if step_size is None else step_size)
    disc = row.map(flow, h)
    kwargs = {**disc.hyperparams, **dict(disc.options)}
    trips = []
    for inverse in inverses:
        accepted = inspect.signature(inverse).parameters
        flow2, h2 = inverse(**{k: v for k, v in kwargs.items() if k in accepted})
        disc2 = row.map(flow2, h2)
        hyper = max(
            (_relative(disc2.hyperparams[k], v) for k, v in disc.hyperparams.items()),
            default=0.0,
        )
        trips.append(
            InverseRoundTrip(
                abs(float(h2) - float(h)) / abs(float(h)),
                abs(float(disc2.dt) - float(disc.dt)) / abs(float(disc.dt)),
                hyper,
            )
        )
    return InverseRoundTrip(*np.max(np.asarray(trips), axis=0))


def _declares_from_hyperparams(flow: AbstractFlow, map_: AbstractMap) -> bool:
    """Whether `flow` declares `from_hyperparams` as the inverse of `map_`: its own class
    method, and `map_` its default map (a row with another map, e.g. heavy ball's naive Euler,
    is not what the flow's inverse inverts)."""
    return (
        isinstance(flow, AbstractMappedFlow)
        and type(map_) is type(flow).default_map
        and type(flow).from_hyperparams.__func__ is not AbstractFlow.from_hyperparams.__func__
    )


class StabilityCheck(NamedTuple):
    r"""The map's declared stability limit $h^*$ on $\tfrac\lambda2x^2$ against two runs
    from $x_0 = 1$, at $(1 - \delta)h^*$ and $(1 + \delta)h^*$.

    **Fields:** `lambda_max` ($\lambda$); `limit` ($h^*$, `map.stability_limit(flow, λ)`);
    `below` and `above` ($|x_N|$ after the runs' `num_steps` steps; `inf` where a run
    diverged). The limit is right when `below` $\le 1$ and `above` $> 1$ (the criterion of
    `dynopt.maps.measure_stability_limit`); `refused` names a step size the map does not
    admit at this $\lambda$ (its `ValueError`), and then nothing was run.
    """

    lambda_max: float
    limit: float
    below: float
    above: float
    refused: str = ""

    @property
    def passed(self) -> bool | None:
        if self.refused:
            return None
        return bool(self.below <= 1.0 < self.above)


def stability_limit_check(
    row: Correspondence, margin: float = 0.02, num_steps: int = 4000
) -> tuple[StabilityCheck, ...] | None:
    r"""The map's declared `stability_limit` against the runs it predicts, on the quadratics
    $\tfrac\lambda2x^2$ with $\lambda = \lambda_0$ and $100\lambda_0$, $\lambda_0$ the top
    Hessian eigenvalue of the first measurement's problem at $\theta_0$ (1 where that is not
    positive or not known): two curvatures, so a limit with the wrong dependence on
    $\lambda$ (e.g. $2/\lambda$ where the flow's own decay adds to $\lambda$, or $h\sqrt\lambda$
    held fixed where the damping enters as $a/\sqrt\lambda$) is seen.

    At each $\lambda$ one batched `run` of `map(flow, [(1-δ)h*, (1+δ)h*])` for `num_steps`
    steps (from the map's initial state): the first must stay within $|x_0|$, the second
    leave it. With $\delta = 0.02$ and 4000 steps, a root crossing the unit circle at speed
    $c$ per unit $\delta$ grows or decays by $e^{\pm 80c}$.

    **Arguments:** `row`; `margin` ($\delta$, default 0.02); `num_steps` (default 4000).

    **Returns:** one `StabilityCheck` per $\lambda$ (the battery asks each that ran to pass;
    where the map refuses the steps at both, the check does not apply and `verify` shows the
    refusal), or `None` where the map declares no limit (also where its `stability_limit`
    returns `None` or infinity at both curvatures).
    """
    _require_x64("stability_limit_check")
    if type(row.map).stability_limit is AbstractMap.stability_limit:
        return None
    if not 0 < margin < 1 or num_steps < 1:
        raise ValueError(
            f"margin must be in (0, 1) and num_steps >= 1, got {margin!r}, {num_steps!r}."
        )
    flow = row.flow()
    problem = row.measurements[0].problem()
    lam0 = top_eigenvalue(problem, problem.params0)
    lam0 = lam0 if lam0 is not None and lam0 > 0 else 1.0
    checks = []
    for lam in (lam0, 100.0 * lam0):
        limit = row.map.stability_limit(flow, lam)
        if limit is None or not np.isfinite(limit):
            continue
        hs = jnp.asarray([(1 - margin) * limit, (1 + margin) * limit])
        try:
            disc = row.map(flow, hs)
        except ValueError as e:
            checks.append(StabilityCheck(lam, float(limit), np.nan, np.nan, str(e)))
            continue
        traj = run(disc, quadratic(jnp.asarray([lam])), num_steps, every=num_steps)
        final = np.abs(np.asarray(traj.final_params)[:, 0])
        final = np.where(np.asarray(traj.diverged_at) >= 0, np.inf, final)
        checks.append(StabilityCheck(lam, float(limit), float(final[0]), float(final[1])))
    # A map that overrides `stability_limit` to say "not known" (None, or inf: stable at every
    # h) declares none: the check does not apply (an empty tuple read as "()" in the report).
    return tuple(checks) or None


def _declares_loss_rate(flow: AbstractFlow) -> bool:
    return type(flow).loss_rate is not AbstractFlow.loss_rate


def lyapunov_residual(row: Correspondence) -> float | None:
    r"""The flow's declared closed-form $dL/dt$ (`loss_rate`) against the derivative of $L$
    along the diffrax solution, on the first measurement's problem over its first quarter
    horizon (21 points): `dynopt.lyapunov.identity_deviation`.

    **Arguments:** `row`.

    **Returns:** the max relative deviation (the battery asks $<$ 1e-6), or `None` where the
    flow declares no `loss_rate`.
    """
    _require_x64("lyapunov_residual")
    m = row.measurements[0]
    flow = row.flow()
    if not _declares_loss_rate(flow):
        return None
    problem = m.problem()
    ts = jnp.linspace(0.0, m.t1 / 4, 21)
    return float(identity_deviation(solve(flow, problem, ts), problem, ts))


def flow_retraces(row: Correspondence, factors: Sequence[float] = (1.0, 0.9, 0.8)) -> int:
    r"""Retraces of one jitted function of the flow (its vector field and one step of its
    discretization) called with the flow's hyper-parameters scaled by each of `factors`: the
    hyper-parameters are array leaves, so new values should reuse the compiled program.

    **Arguments:** `row`; `factors` (default 1, 0.9, 0.8).

    **Returns:** the traces after the first (the battery asks 0).
    """
    problem = row.measurements[0].problem()
    h = row.measurements[0].step_sizes[0]
    traces = []

    @eqx.filter_jit
    def field_and_step(flow, state):
        traces.append(1)  # runs at trace time only
        disc = row.map(flow, h)
        g = problem.grad(problem.params0)
        opt_state = disc.transform.init(problem.params0)
        updates, _ = disc.transform.update(
            g,
            opt_state,
            problem.params0,
            value=problem.loss(problem.params0),
            value_fn=problem.loss,
            grad_fn=problem.grad,
        )
        return flow.vector_field(0.1, state, problem), updates

    flow = row.flow()
    state = flow.init(problem.params0)
    for factor in factors:
        field_and_step(_scaled(flow, factor), state)
    return len(traces) - 1


def automatic_identity(row: AutomaticCorrespondence, num_steps: int = 30) -> float:
    r"""Identity of an automatic row's `flow.discretize(h)` with the optimizer as the user
    wrote it: on the first measurement's problem at its smallest step size and highest order,
    both from the discretization's initial state (the slow manifold in the fast regime), the
    run against a hand-written `lax.scan` of the raw transform.

    **Arguments:** `row`; `num_steps` (default 30).

    **Returns:** the max $|\Delta\theta|$ (the battery asks $\le$ 1e-13).
    """
    _require_x64("automatic_identity")
    m = row.measurements[0]
    problem, h = m.problem(), m.step_sizes[-1]
    disc = row.discretization(h, max(m.orders))
    tx = optax.with_extra_args_support(row.optimizer(h))
    return _against_raw_optax(disc, tx, problem, disc.init(problem.params0, problem), num_steps)


def automatic_order(row: AutomaticCorrespondence, index: int, order: int) -> OrderFit:
    r"""The optimizer against its order-`order` automatic flow on `row.measurements[index]`
    (`AutomaticCorrespondence.compare`, Tsit5 reference).

    **Arguments:** `row`; `index` (which measurement); `order` ($p$).

    **Returns:** an `OrderFit` whose `order` is `compare`'s fit (`nan` unless asymptotic); the
    battery asks verdict `"asymptotic"` and every local order and the fit within 0.15 of $p$.
    """
    _require_x64("automatic_order")
    m = row.measurements[index]
    c = row.compare(m, order)
    return OrderFit(
        m.label,
        float(order),
        np.asarray(c.dts),
        np.asarray(c.errors),
        float(c.order),
        np.asarray(c.local_orders),
        c.verdict,
        c.reason,
    )


class Check(NamedTuple):
    """One check of `verify`: its `name`, whether it `passed` (`None`: it does not apply to the
    row, e.g. no baseline), what it `measured` (the check function's result) and the
    `criterion` it was held to, in words."""

    name: str
    passed: bool | None
    measured: Any
    criterion: str


class Verification(NamedTuple):
    """What `verify` found: the row's `name` and its `checks` by name, in the battery's order.

    `passed` is `True` when no check failed; `failed` names those that did. `str()` gives
    one line per check."""

    name: str
    checks: dict[str, Check]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(name for name, c in self.checks.items() if c.passed is False)

    def __str__(self) -> str:
        word = {True: "ok", False: "FAIL", None: "n/a"}
        lines = [f"{self.name}: {'passed' if self.passed else 'FAILED ' + ', '.join(self.failed)}"]
        for c in self.checks.values():
            lines.append(f"  {c.name:<12} {word[c.passed]:<4} {c.criterion}: {_show(c.measured)}")
        return "\n".join(lines)


def _show(measured: Any) -> str:
    if isinstance(measured, float):
        return f"{measured:.3g}"
    if measured is None:
        return "does not apply"
    if isinstance(measured, tuple) and measured and isinstance(measured[0], OrderFit):
        return ", ".join(
            f"{f.problem} {f.order:.3f}"
            + ("" if f.verdict == "asymptotic" else f" ({f.verdict}: {f.reason})")
            for f in measured
        )
    if isinstance(measured, tuple) and measured and isinstance(measured[0], StabilityCheck):
        return ", ".join(
            f"λ={c.lambda_max:.3g}: h*={c.limit:.4g} refused ({c.refused})"
            if c.refused
            else f"λ={c.lambda_max:.3g}: h*={c.limit:.4g}, |x_N| {c.below:.2g} below, "
            f"{c.above:.2g} above"
            for c in measured
        )
    if isinstance(measured, Conformance | InverseRoundTrip):
        return ", ".join(f"{k}={_show(v)}" for k, v in measured._asdict().items())
    return str(measured)


def _orders_pass(fits: tuple[OrderFit, ...]) -> bool:
    return len(fits) >= 2 and all(
        np.all(np.isfinite(f.errors))
        and np.all(f.errors > 0)
        and f.verdict == "asymptotic"
        and abs(f.order - f.claimed) <= ORDER_TOLERANCE
        for f in fits
    )


def _automatic_orders_pass(fits: tuple[OrderFit, ...]) -> bool:
    return all(
        f.verdict == "asymptotic"
        and np.all(np.abs(f.local_orders - f.claimed) <= AUTOMATIC_ORDER_TOLERANCE)
        and abs(f.order - f.claimed) < AUTOMATIC_ORDER_TOLERANCE
        for f in fits
    )


def _optional(value, ok: Callable[[Any], bool]) -> bool | None:
    return None if value is None else bool(ok(value))


# (step size factor, hyper-parameter scale) at which `verify` runs the inverse round trip.
_INVERSE_POINTS = ((1.0, 1.0), (0.5, 0.9), (0.25, 0.8))


def _hand_checks(row: Correspondence) -> dict[str, Callable[[], Check]]:
    def identity():
        d = baseline_identity(row)
        ok = _optional(d, lambda d: d <= IDENTITY_TOLERANCE)
        return Check(
            "identity", ok, d, f"max |Δθ| against the optax baseline <= {IDENTITY_TOLERANCE:g}"
        )

    def order():
        fits = fitted_orders(row)
        criterion = f"at least two problems, each fit within ±{ORDER_TOLERANCE:g} of {row.order:g}"
        return Check("order", _orders_pass(fits), fits, criterion)

    def closed_form():
        d = closed_form_deviation(row)
        ok = _optional(d, lambda d: d < CLOSED_FORM_TOLERANCE)
        criterion = f"closed_form against the solve of vector_field < {CLOSED_FORM_TOLERANCE:g}"
        return Check("closed_form", ok, d, criterion)

    def init():
        found = initial_state(row)
        ok = _optional(found, lambda f: not f)
        criterion = "init_fn's state has optax's structure, shapes and dtypes, finite"
        return Check("init", ok, None if found is None else "; ".join(found) or "none", criterion)

    def conformance():
        c = optax_conformance(row)
        ok = c.retraces == 0 and c.float32_kept and c.finite
        ok = ok and c.chain_error <= CONFORMANCE_TOLERANCE
        criterion = f"no retrace, float32 kept, finite, chain/inject <= {CONFORMANCE_TOLERANCE:g}"
        return Check("conformance", ok, c, criterion)

    def inverse():
        # At the row's flow and step, and away from them: an inverse that holds the row's
        # own hyper-parameters or step as constants round-trips at that one point only.
        h0 = row.measurements[0].step_sizes[0]
        trips = [inverse_round_trip(row, h0 * f, scale=s) for f, s in _INVERSE_POINTS]
        r = None if trips[0] is None else InverseRoundTrip(*np.max(np.asarray(trips), axis=0))
        ok = _optional(
            r,
            lambda r: (
                max(r.step_size_error, r.dt_error) <= STEP_SIZE_ROUND_TRIP_TOLERANCE
                and r.hyperparameter_error <= HYPERPARAMETER_ROUND_TRIP_TOLERANCE
            ),
        )
        criterion = (
            f"h, dt to {STEP_SIZE_ROUND_TRIP_TOLERANCE:g}, hyper-parameters to "
            f"{HYPERPARAMETER_ROUND_TRIP_TOLERANCE:g} (relative)"
        )
        return Check("inverse", ok, r, criterion)

    def stability():
        checks = stability_limit_check(row)
        ran = [c for c in (checks or ()) if c.passed is not None]
        ok = None if not ran else all(c.passed for c in ran)
        criterion = "stable at 0.98 h*, unstable at 1.02 h* (declared limit h*, two curvatures)"
        return Check("stability", ok, checks, criterion)

    def lyapunov():
        r = lyapunov_residual(row)
        ok = _optional(r, lambda r: r < LYAPUNOV_TOLERANCE)
        return Check("lyapunov", ok, r, f"loss_rate against dL/dt < {LYAPUNOV_TOLERANCE:g}")

    def retrace():
        n = flow_retraces(row)
        return Check("retrace", n == 0, n, "retraces for new flow hyper-parameters == 0")

    return {
        "identity": identity,
        "init": init,
        "order": order,
        "closed_form": closed_form,
        "conformance": conformance,
        "inverse": inverse,
        "stability": stability,
        "lyapunov": lyapunov,
        "retrace": retrace,
    }


def _automatic_checks(row: AutomaticCorrespondence) -> dict[str, Callable[[], Check]]:
    def identity():
        d = automatic_identity(row)
        tol = AUTOMATIC_IDENTITY_TOLERANCE
        return Check("identity", d <= tol, d, f"max |Δθ| against the optimizer <= {tol:g}")

    def order():
        fits = tuple(
            automatic_order(row, i, p) for i, m in enumerate(row.measurements) for p in m.orders
        )
        criterion = f"asymptotic, local orders and fit within {AUTOMATIC_ORDER_TOLERANCE:g} of p"
        return Check("order", _automatic_orders_pass(fits), fits, criterion)

    return {"identity": identity, "order": order}


def verify(
    row: Correspondence | AutomaticCorrespondence, checks: Sequence[str] | None = None
) -> Verification:
    r"""Run the battery on `row` and say which checks pass at its tolerances.

    A `Correspondence`: `"identity"` (`baseline_identity` $\le$ 1e-12), `"init"`
    (`initial_state`: a declared `init_fn`'s state has optax's structure, shapes and dtypes,
    finite, on every measurement's problem and a float64 and a float32 pytree), `"order"`
    (`fitted_orders`: at least two measurements, errors finite and positive, `compare`'s
    verdict asymptotic where it ran, each fit within $\pm$0.1 of the claimed order),
    `"closed_form"` (`closed_form_deviation` $<$ 1e-6),
    `"conformance"` (`optax_conformance`: no retrace, float32 kept, finite losses, chain and
    inject to 1e-12), `"inverse"` (`inverse_round_trip`, through the map's `inverse` and the
    flow's `from_hyperparams` where declared, at the first measurement's largest
    step size $h_0$ and the row's flow, at $h_0/2$ with every hyper-parameter scaled by 0.9 and
    at $h_0/4$ scaled by 0.8: $h$ and $\Delta t$ to a relative 1e-12, hyper-parameters to
    1e-10, the worst of the three reported), `"stability"` (`stability_limit_check`: stable
    at $0.98h^*$, unstable at $1.02h^*$ at each curvature the map admits), `"lyapunov"`
    (`lyapunov_residual` $<$ 1e-6) and `"retrace"` (`flow_retraces` $= 0$). A check that does
    not apply (no baseline, no `init_fn`, no closed form, no inverse, no stability limit, no
    `loss_rate`) has `passed = None`.

    An `AutomaticCorrespondence`: `"identity"` (`automatic_identity` $\le$ 1e-13) and
    `"order"` (`automatic_order` on every measurement and order: asymptotic, local orders and
    fit within 0.15 of $p$).

    An exception inside a check (a map that refuses its own hyper-parameters, a solve that
    fails) propagates: it says more than a failed check would.

    **Arguments:** `row`; `checks` (names to run, in the battery's order; default all).

    **Returns:** a `Verification` (`passed`, `failed`, `checks` by name; `str()` one line per
    check).

    **Raises:** `ValueError` for a `row` that is no correspondence (a row's name: look it up in
    `BY_NAME`) or an unknown check name.
    """
    _require_x64("verify")
    if isinstance(row, AutomaticCorrespondence):
        available = _automatic_checks(row)
    elif isinstance(row, Correspondence):
        available = _hand_checks(row)
    else:
        raise ValueError(
            "row must be a dynopt.correspondences.Correspondence or AutomaticCorrespondence "
            f"(e.g. correspondences.BY_NAME[name]), got {type(row).__name__}."
        )
    names = list(available) if checks is None else list(checks)
    unknown = [n for n in names if n not in available]
    if isinstance(checks, str) or unknown:
        raise ValueError(
            f"checks must be a sequence of names from {list(available)}, got {checks!r}."
        )
    return Verification(row.name, {n: available[n]() for n in available if n in names})
