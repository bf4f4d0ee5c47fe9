"""The continuum of any optax optimizer: automatic modified flows of orders 1-3, measured."""

import concurrent.futures
import dataclasses
import multiprocessing
import os
import signal
import threading
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import dynopt
from dynopt import flows, plotting, problems
from dynopt._modified import modified_flow
from dynopt.correspondences import AUTOMATIC, BY_NAME
from dynopt.transforms import modifying, usam

from ._card import Array, by_mode
from ._headline import Headline
from ._xla import flag_known, use_elemental_emitter


@dataclasses.dataclass(frozen=True)
class Config:
    """Run card. `python -m experiments run continuum [--quick]`.

    For each automatic row of the registry (`dynopt.correspondences.AUTOMATIC`: sgd, heavy ball
    β=0.5, Nesterov, rmsprop, adam, adamw, USAM ρ=0.05, the chain add_decayed_weights(0.1) + sgd
    momentum, rmsprop with decay 1-2h in the slow regime, rmsprop with momentum (a state of
    step-scaled updates: orders 1-2 only), AdaBelief, and heavy ball in √α time as a slow
    state), `dynopt.modified_flow` derives
    the order-p modified flow by automatic backward error analysis; the discrete run
    (fast-regime optimizers started on their slow manifold) is compared with the order-1, 2, 3
    flows on a non-quadratic 5-parameter loss (`problems.logcosh`) and on a tanh MLP (pytree
    params): fitted orders ≈ 1, 2, 3. Then the agreement with the hand-derived rows (GD's
    modified flow, Ghosh's heavy ball, RMSPropFlow, AdamFlow from slow Adam with its counter
    as time, HeavyBall(a) from heavy ball in velocity units, the Adam/RMSprop O(h) term
    derived here),
    the implicit regulariser, the modifying optimizer's order gain, and the cost of optax's zero
    start (the boundary layer).
    Runtime: dominated by compilation, one compare program (discrete runs + diffrax reference)
    per optimizer, problem and order, 3-35 s of CPU each (fast-regime p = 3 the largest).
    Quick mode (heavy ball p = 2 on log-cosh, the rows in one compiled program, modifying(sgd))
    ≈ 15 s of CPU; full mode 595 s of CPU, 9 min 57 s wall with the compilation cache off
    (2026-12-04; 70 order cells, 528 s of them; every fitted order within 0.15 of p, the
    farthest the fast-regime rmsprop/adam/adamw on log-cosh at p = 1, 2: 0.93, 1.88, a ladder
    still pre-asymptotic there), over the issue's 3 min. With the order cells two at a time in
    threads: 334 s wall, 560 s CPU, the cells 280 s (2026-12-05, cache off). Now in `workers`
    spawned processes compiling as the test suite does (`orders`): 162 s wall, 260 s CPU, the
    cells 120 s (2026-12-05, cache off; quick mode keeps one in-process cell).
    Headline: heavy ball orders 1, 2, 3 within
    0.15 (2 in quick mode); hand rows to 1e-12; modifying(sgd) order 2; zero start order 1.
    """

    quick: bool = False
    step_sizes: tuple[float, ...] = (0.02, 0.01, 0.005)
    t1: float = 0.4
    optimizers: tuple[str, ...] = by_mode(
        (
            "sgd",
            "heavy_ball",
            "nesterov",
            "rmsprop",
            "adam",
            "adamw",
            "usam",
            "chain_wd_momentum",
            "rmsprop_slow",
            "rmsprop_momentum",
            "adabelief",
            "heavy_ball_velocity",
        ),
        quick=("heavy_ball",),
    )
    problems: tuple[str, ...] = by_mode(("logcosh", "mlp"), quick=("logcosh",))
    orders: tuple[int, ...] = by_mode((1, 2, 3), quick=(2,))
    modifying_step_sizes: tuple[float, ...] = (0.04, 0.02, 0.01)
    modifying_t1: float = 0.8
    # processes measuring the order cells (0: one after another, in-process)
    workers: int = by_mode(2, quick=0)


def _row(name: str):
    """The registry's automatic row for `name` (`dynopt.correspondences.AUTOMATIC`)."""
    return BY_NAME[f"auto_{name}"]


def _optimizer(name: str):
    return _row(name).optimizer


@dataclasses.dataclass
class Case:
    """One optimizer on one problem: the discrete run against the order-p automatic flows."""

    optimizer: str
    problem: str
    regime: str
    fitted_orders: list[float]  # p = 1, 2, 3 (nan when not asymptotic or not run)
    verdicts: list[str]
    errors: Array  # (3, step sizes), nan rows for orders not run
    seconds: list[float]  # wall seconds per order (compile + run; nan when not run)
    step_sizes: list[float]


def _builders() -> dict:
    return {m.label: m.problem for row in AUTOMATIC for m in row.measurements}


def _measure(
    case: tuple[str, str, tuple[int, ...]],
) -> list[tuple[str, float, str, np.ndarray, float]]:
    """One optimizer on one problem at `orders` (one task, so that its cells share one
    process's caches): for each p, the row's discrete run against its order-p automatic flow,
    `(regime, fitted order, verdict, errors, wall seconds)`."""
    name, pname, orders_ = case
    row = _row(name)
    m = dataclasses.replace(row.measurements[0], problem=_builders()[pname])
    regime = row.flow(m.step_sizes[0]).spec.regime
    out = []
    for p in orders_:
        start = time.perf_counter()
        cmp = row.compare(m, p)
        result = float(cmp.order), str(cmp.verdict), np.asarray(cmp.errors)
        out.append((regime, *result, time.perf_counter() - start))
    return out


def map_in_workers(fn, tasks: list, workers: int, initializer, initargs: tuple) -> list:
    """`[fn(task) for task in tasks]` in `min(workers, len(tasks))` spawned processes (JAX is not
    fork-safe), each set up by `initializer(*initargs)`. The workers ignore Ctrl-C: the parent
    alone receives it, cancels what has not started and kills the workers at once (a pool left
    to its `with` block waited for every running cell, minutes in full mode, and each worker
    printed its own traceback), then raises it.

    The parent waits in short slices and checks a flag its own SIGINT handler sets: a
    KeyboardInterrupt that Python raises inside a garbage-collector callback (JAX registers
    one) is printed and dropped, and the pool then ran every cell to its end (seen in the test
    suite: a Ctrl-C that did nothing)."""
    interrupted = threading.Event()

    def on_interrupt(signum, frame):
        interrupted.set()
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_interrupt)
    except ValueError:  # not the main thread: Ctrl-C is not ours to catch
        previous = None
    others = set(multiprocessing.active_children())  # (this process's children, not the pool's)
    pool = concurrent.futures.ProcessPoolExecutor(
        min(workers, len(tasks)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_ignoring_interrupts,
        initargs=(initializer, initargs),
    )
    processes = {}
    try:
        futures = [pool.submit(fn, task) for task in tasks]
        pending = set(futures)
        while pending:
            processes.update(getattr(pool, "_processes", None) or {})
            _, pending = concurrent.futures.wait(pending, timeout=0.25)
            if interrupted.is_set():
                raise KeyboardInterrupt
        results = [f.result() for f in futures]
    except BaseException:
        processes.update(getattr(pool, "_processes", None) or {})
        manager = getattr(pool, "_executor_manager_thread", None)  # (shutdown forgets it)
        pool.shutdown(wait=False, cancel_futures=True)
        # The pool's workers, also any its manager thread started that its table no longer holds.
        doomed = set(processes.values()) | (set(multiprocessing.active_children()) - others)
        for process in doomed:
            process.kill()
        # The manager thread sees the pool broken and reaps the workers too. Where it reaps one
        # first, `join` here returns at once (waitpid: no such child) with the exit code not yet
        # recorded, and the worker reads as alive (CI, 2026-12-06): wait for that thread, then for
        # every exit code. Killed, only the reaping is left (slow on a loaded machine).
        if manager is not None:
            manager.join(30)
        deadline = time.monotonic() + 30
        for process in doomed:
            while process.exitcode is None and time.monotonic() < deadline:
                process.join(0.1)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    pool.shutdown(wait=True)
    return results


def _ignoring_interrupts(initializer, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initializer(*initargs)


def _cheap_worker(cache: dict) -> None:
    """A spawned cell worker, before its first JAX computation: float64 as its parent, the
    parent's compilation cache settings (`cache`: jax config names and values), and XLA:CPU's
    cheaper compilation (the test suite's: the elemental emitter, no LLVM optimization), each
    unless the caller's environment chooses (`XLA_FLAGS=--xla_cpu_use_fusion_emitters=...`,
    `JAX_DISABLE_MOST_OPTIMIZATIONS`)."""
    use_elemental_emitter()  # where this jaxlib knows the flag (asked once, by the parent)
    jax.config.update("jax_enable_x64", True)
    if "JAX_DISABLE_MOST_OPTIMIZATIONS" not in os.environ:
        jax.config.update("jax_disable_most_optimizations", True)
    for name, value in cache.items():
        jax.config.update(name, value)


def orders(config: Config) -> dict[str, Case]:
    """Every automatic row in `config.optimizers` on every problem of `config.problems` at every
    order of `config.orders` (the registry pins a subset of these cells in CI), on the row's own
    step sizes and horizon.

    The cells are compile-bound (one program each, run once, 3-35 s of compilation against
    milliseconds of running): with `config.workers` > 0 they run in that many spawned processes
    that compile as the test suite does (`_cheap_worker`; the full run's cells 280 s in two
    threads with XLA's defaults -> 120 s, 2026-12-05, every error within 6.5e-6 relative of the
    default compilation's, every fitted order within 6e-6, the same verdicts), each cell's numbers
    its own program's, whichever worker runs it; with 0, one after another in this process,
    compiled as everything else."""
    out, tasks = {}, []
    for pname in config.problems:
        for name in config.optimizers:
            row = _row(name)
            hs = row.measurements[0].step_sizes
            case = Case(
                name,
                pname,
                regime="",
                fitted_orders=[float("nan")] * 3,
                verdicts=["not run"] * 3,
                errors=np.full((3, len(hs)), np.nan),
                seconds=[float("nan")] * 3,
                step_sizes=list(hs),
            )
            lag = row.flow(hs[0]).spec.lag
            run = []
            for p in config.orders:
                if lag and p > 2:  # refused by modified_flow: one manifold term per order
                    case.verdicts[p - 1] = "orders 1-2 only (a state of step-scaled updates)"
                else:
                    run.append(p)
            if run:
                tasks.append((case, (name, pname, tuple(run))))
            out[f"{name}.{pname}"] = case
    # The MLP's first (its cells compile longest), so that no worker is left compiling a large
    # cell alone at the end.
    tasks.sort(key=lambda task: task[1][1] != "mlp")
    todo = [task for _, task in tasks]
    if config.workers > 0 and todo:
        names = (
            "jax_enable_compilation_cache",
            "jax_compilation_cache_dir",
            "jax_persistent_cache_min_compile_time_secs",
        )
        cache = {name: getattr(jax.config, name) for name in names}
        flag_known()  # asked here once: the spawned workers inherit the answer
        measured = map_in_workers(_measure, todo, config.workers, _cheap_worker, (cache,))
    else:
        measured = [_measure(task) for task in todo]
    for (case, (_, _, run)), results in zip(tasks, measured):
        for p, (regime, order, verdict, errors, seconds) in zip(run, results):
            case.regime = regime
            case.seconds[p - 1] = seconds
            case.fitted_orders[p - 1] = order
            case.verdicts[p - 1] = verdict
            case.errors[p - 1] = errors
    return out


@dataclasses.dataclass
class Equation:
    """The leading equation at θ₀ of the log-cosh problem, and the implicit regulariser."""

    optimizer: str
    regime: str
    equation: str
    rate: float  # c in f1 ≈ -c∇L (least squares)
    rate_residual: float  # relative remainder: 0 when f1 is along ∇L
    regularizer: float  # λ in f2 ≈ -cλ∇‖∇L‖²
    regularizer_residual: float


def equations(config: Config) -> dict[str, Equation]:
    problem = problems.logcosh()
    h = config.step_sizes[0]
    out = {}
    for name in config.optimizers:
        flow = modified_flow(_optimizer(name), h, order=2)
        state = flow.init(problem.params0)
        terms = eqx.filter_jit(flow.terms)(state, problem)
        c, lam = float(terms.rate), float(terms.regularizer)
        r1, r2 = (float(x) for x in terms.residuals)
        if flow.spec.regime == "slow" and jax.tree.leaves(state.state):
            eq = "ODE on (θ, optimizer state): θ' = f1(θ, s), s' = ...  (slow state)"
        elif r1 < 1e-10 and r2 < 1e-8:
            eq = f"θ' = -{c:.4g} ∇[L + {lam:.4g}·h·‖∇L‖²]"
        elif r1 < 1e-10:
            eq = f"θ' = -{c:.4g} ∇L + h·f2 (f2 off -∇‖∇L‖² by {r2:.2g} rel.)"
        else:
            # Adam/RMSprop (coordinate-wise), weight decay (a θ term), USAM (∇L at a shifted
            # point): f1 itself is no multiple of ∇L.
            eq = f"θ' = f1(θ) + h·f2, f1 not along ∇L (off -{c:.3g}∇L by {r1:.2g} rel.)"
        out[name] = Equation(name, flow.spec.regime, eq, c, r1, lam, r2)
    return out


@dataclasses.dataclass
class Rows:
    """Max vector-field deviations of the automatic flow from the hand-derived rows at θ₀ (and a
    random slow state), log-cosh problem."""

    gd_order2_vs_modified_gradient_flow: float
    heavy_ball_order2_vs_ghosh: float
    rmsprop_slow_vs_rmspropflow: float
    adam_slow_vs_adamflow: float  # bias corrections as products, at t = 0.7
    heavy_ball_velocity_vs_heavyball: float  # sgd(τ², 1 - aτ) in velocity units vs HeavyBall(a)
    adam_fast_f2_vs_closed_form: float
    rmsprop_fast_f2_vs_closed_form: float
    usam_regularizer: float  # μ in f1 + h f2 ≈ -∇[L + μ‖∇L‖²] (least squares), small ρ
    usam_regularizer_predicted: float  # h/4 + ρ/2


def _max_dev(a, b):
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return jnp.max(jnp.stack([jnp.max(jnp.abs(x - y)) for x, y in pairs]))


def adaptive_f2(problem, params, b1, b2, eps, eps_inside):
    r"""The derived O(h) field of Adam/RMSprop with fixed β (fast regime, on the slow manifold):

    $f_2 = -\frac{H P_0}{D}\odot\big[(B_1 + \tfrac12) - (B_2 + \tfrac12)\frac{u}{D}\big]$
    with $B_i = \beta_i/(1-\beta_i)$, $P_0 = g/D$; Adam: $D = |g| + \epsilon$, $u = |g|$;
    optax.rmsprop (ε inside the root): $D = \sqrt{g^2+\epsilon}$, $u = g^2/D$."""
    g = problem.grad(params)

    def P0(x):
        gx = problem.grad(x)
        return jax.tree.map(lambda gi: gi / _denom(gi, eps, eps_inside), gx)

    HP = jax.jvp(problem.grad, (params,), (P0(params),))[1]
    B1, B2 = b1 / (1 - b1), b2 / (1 - b2)

    def one(hp, gi):
        d = _denom(gi, eps, eps_inside)
        u = gi**2 / d if eps_inside else jnp.abs(gi)
        return -hp / d * ((B1 + 0.5) - (B2 + 0.5) * u / d)

    return jax.tree.map(one, HP, g)


def _denom(g, eps, eps_inside):
    return jnp.sqrt(g**2 + eps) if eps_inside else jnp.abs(g) + eps


_SLOW_ADAM = (2.0, 3.0)  # a1, a2
_HB_DAMPING = 1.5  # `heavy_ball_velocity`'s default damping a


def _slow_adam(h):
    a1, a2 = _SLOW_ADAM
    return optax.adam(h, b1=1 - a1 * h, b2=1 - a2 * h, eps=0.1)


def rows(config: Config) -> Rows:
    del config
    problem = problems.logcosh()
    p0, h = problem.params0, 0.03
    # The registry rows' hyper-parameters: heavy ball β = 0.5; slow RMSprop decay 1 - 2h,
    # ε = 0.5; USAM here at a small ρ (the limit μ = h/4 + ρ/2 is first order in ρ).
    beta, kappa, eps, rho = 0.5, 2.0, 0.5, 1e-4
    flows_ = {
        "sgd": modified_flow(_optimizer("sgd"), h, order=2),
        "heavy_ball": modified_flow(_optimizer("heavy_ball"), h, order=2),
        # RMSprop, slow regime decay 1 - κh: the ODE on (θ, ν) is RMSPropFlow(κ, ε).
        "rmsprop_slow": modified_flow(_optimizer("rmsprop_slow"), h),
        "adam": modified_flow(_optimizer("adam"), h, order=2),
        "rmsprop": modified_flow(_optimizer("rmsprop"), h, order=2),
        "usam": modified_flow(lambda h: usam(h, rho), h, order=2),
        # Adam, slow regime b_i = 1 - a_i h: the counter is time (corrections as products).
        "adam_slow": modified_flow(_slow_adam, h),
        # Heavy ball in √α time (τ per step): θ' = v, v' = -a v - ∇L with v = -trace.
        "heavy_ball_velocity": modified_flow(_optimizer("heavy_ball_velocity"), h),
    }
    from dynopt._flows.adaptive import AdamState, RMSPropState

    # One compiled program for every row (one compile, not one per flow).
    @eqx.filter_jit
    def devs(flows_):
        g = problem.grad(p0)
        sgd2 = flows_["sgd"]
        gd = sgd2.vector_field(0.0, sgd2.init(p0), problem).params
        mg = flows.ModifiedGradientFlow(h).vector_field(0.0, p0, problem)
        hb = flows_["heavy_ball"].vector_field(0.0, p0, problem)
        sq = jax.grad(lambda x: optax.tree.norm(problem.grad(x), squared=True))(p0)
        lam = h * (1 + beta) / (4 * (1 - beta) ** 2)
        ghosh = jax.tree.map(lambda a, s: -(a + lam * s) / (1 - beta), g, sq)
        flow = flows_["rmsprop_slow"]
        y = flow.init(p0)
        nu = jax.tree.map(lambda x: 0.2 + x**2, g)
        y = y._replace(state=(y.state[0]._replace(nu=nu), *y.state[1:]))
        auto = flow.vector_field(0.0, y, problem)
        ref = flows.RMSPropFlow(kappa, eps).vector_field(0.0, RMSPropState(p0, nu), problem)
        # Slow Adam at t = 0.7 (products c_i = e^{-a_i t}) against AdamFlow's exact corrections.
        flow, t = flows_["adam_slow"], 0.7
        y = flow.init(p0)
        m = jax.tree.map(lambda x: 0.3 * jnp.sin(x + 1.0), p0)
        (adam, rest), _ = y.state
        y = y._replace(
            state=y.state._replace(
                state=(adam._replace(mu=m, nu=nu), rest),
                products=tuple(jnp.exp(-a * t) for a in _SLOW_ADAM),
            )
        )
        auto_a = flow.vector_field(0.0, y, problem)
        ref_a = flows.AdamFlow(*_SLOW_ADAM, 0.1).vector_field(t, AdamState(p0, m, nu), problem)
        dev_a = jnp.maximum(
            _max_dev(auto_a.params, ref_a.params),
            _max_dev((auto_a.state.state[0].mu, auto_a.state.state[0].nu), (ref_a.m, ref_a.v)),
        )
        # Heavy ball in velocity units at a random trace, against HeavyBall(a)'s (θ', v').
        flow = flows_["heavy_ball_velocity"]
        y = flow.init(p0)
        trace = jax.tree.map(lambda x: 0.4 * jnp.cos(2.0 * x), p0)
        y = y._replace(state=(y.state[0], optax.TraceState(trace), y.state[2]))
        auto_v = flow.vector_field(0.0, y, problem)
        v = jax.tree.map(jnp.negative, trace)
        ref_v = flows.HeavyBall(_HB_DAMPING).vector_field(0.0, (p0, v), problem)
        dev_v = jnp.maximum(
            _max_dev(auto_v.params, ref_v[0]),
            _max_dev(jax.tree.map(jnp.negative, auto_v.state[1].trace), ref_v[1]),
        )
        # Adam / RMSprop with fixed β: f2 against the closed form derived here.
        f2a = flows_["adam"].field_values(p0, problem)[1]
        f2r = flows_["rmsprop"].field_values(p0, problem)[1]
        # USAM at small ρ: f1 + h f2 ≈ -∇[L + μ‖∇L‖²], μ = h/4 + ρ/2 + O(ρ², ρh).
        flow = flows_["usam"]
        v = flow.vector_field(0.0, flow.init(p0), problem).params
        sq2 = jax.tree.map(lambda a, b: a + b, v, g)  # v + ∇L ≈ -μ ∇‖∇L‖²
        return (
            _max_dev(gd, mg),
            _max_dev(hb, ghosh),
            jnp.maximum(_max_dev(auto.params, ref.params), _max_dev(auto.state[0].nu, ref.G)),
            dev_a,
            dev_v,
            _max_dev(f2a, adaptive_f2(problem, p0, 0.5, 0.6, 0.3, False)),
            _max_dev(f2r, adaptive_f2(problem, p0, 0.0, 0.6, 0.3, True)),
            -optax.tree.vdot(sq2, sq) / optax.tree.norm(sq, squared=True),
        )

    return Rows(*(float(x) for x in devs(flows_)), h / 4 + rho / 2)


@dataclasses.dataclass
class Modifying:
    """The modifying optimizer (`dynopt.transforms.modifying`, order 2) against the plain one,
    both against the continuum limit θ' = -r∇L (order-1 automatic flow)."""

    optimizer: str
    order_plain: float
    order_modifying: float
    # compare's verdicts: an order is a number only when "asymptotic"
    verdict_plain: str
    verdict_modifying: str
    errors_plain: Array
    errors_modifying: Array
    step_sizes: Array


def modifying_gain(config: Config) -> dict[str, Modifying]:
    problem = problems.logcosh()
    hs, t1 = config.modifying_step_sizes, config.modifying_t1
    out = {}
    for name in ("sgd",) if config.quick else ("sgd", "heavy_ball"):
        opt = _optimizer(name)
        res = []
        # quick: the modifying run only (plain sgd's order 1 is experiment gd_flow's).
        for o in (opt, modifying(opt, order=2))[1 if config.quick else 0 :]:
            flow = modified_flow(o, hs[0], order=1)
            res.append(dynopt.compare(flow, problem, hs, t1, solver="tsit5"))
        plain, mod = (None, res[0]) if config.quick else res
        out[name] = Modifying(
            name,
            float("nan") if plain is None else float(plain.order),
            float(mod.order),
            "not run" if plain is None else str(plain.verdict),
            str(mod.verdict),
            np.full(len(hs), np.nan) if plain is None else np.asarray(plain.errors),
            np.asarray(mod.errors),
            np.asarray(hs),
        )
    return out


@dataclasses.dataclass
class BoundaryLayer:
    """optax's zero start against the slow-manifold start, both against the order-2 flow."""

    optimizer: str
    order_manifold_start: float
    order_zero_start: float
    # compare's verdicts: an order is a number only when "asymptotic"
    verdict_manifold_start: str
    verdict_zero_start: str
    errors_manifold_start: Array
    errors_zero_start: Array
    step_sizes: Array


def _zero_start(flow, h):
    """The optimizer as optax starts it (zero state), not on its slow manifold."""
    h = jnp.asarray(h)
    return dynopt.Discretization(flow.spec, {"step_size": h}, dt=h)


def boundary_layer(config: Config) -> dict[str, BoundaryLayer] | None:
    if config.quick:
        return None
    problem = problems.logcosh()
    hs, t1 = config.step_sizes, config.t1
    out = {}
    for name in ("heavy_ball", "adam"):
        opt = _optimizer(name)
        flow = modified_flow(opt, hs[0], order=2)

        def ref(h, opt=opt):
            return modified_flow(opt, h, order=2)

        on = dynopt.compare(flow, problem, hs, t1, reference=ref, solver="tsit5")
        off = dynopt.compare(flow, problem, hs, t1, reference=ref, solver="tsit5", map=_zero_start)
        out[name] = BoundaryLayer(
            name,
            float(on.order),
            float(off.order),
            str(on.verdict),
            str(off.verdict),
            np.asarray(on.errors),
            np.asarray(off.errors),
            np.asarray(hs),
        )
    return out


SECTIONS = {
    "equations": equations,
    "orders": orders,
    "rows": rows,
    "modifying": modifying_gain,
    "boundary_layer": boundary_layer,
}

HEADLINES = (
    *(
        Headline(f"orders/{o}.{pr}/fitted_orders/{i}", f"{o} on {pr}: order vs order-{i + 1} flow",
                 float(i + 1), 0.15, full_only=i != 1, verdict=f"orders/{o}.{pr}/verdicts/{i}")
        for o in ("heavy_ball",)
        for pr in ("logcosh",)
        for i in range(3)
    ),
    Headline("rows/gd_order2_vs_modified_gradient_flow", "GD order 2 vs ModifiedGradientFlow",
             high=1e-12),
    Headline("rows/heavy_ball_order2_vs_ghosh", "heavy ball order 2 vs Ghosh et al.", high=1e-12),
    Headline("rows/rmsprop_slow_vs_rmspropflow", "rmsprop (slow) vs RMSPropFlow", high=1e-12),
    Headline("rows/adam_slow_vs_adamflow", "adam (slow, counter as time) vs AdamFlow", high=1e-12),
    Headline("rows/heavy_ball_velocity_vs_heavyball", "heavy ball (√α time) vs HeavyBall",
             high=1e-12),
    Headline("rows/adam_fast_f2_vs_closed_form", "Adam O(h) term vs closed form", high=1e-12),
    Headline("modifying/sgd/order_modifying", "order of modifying(sgd) vs gradient flow",
             2.0, 0.15, verdict="modifying/sgd/verdict_modifying"),
    Headline("boundary_layer/heavy_ball/order_zero_start",
             "order of heavy ball from zero trace (full)", 1.0, 0.15, full_only=True,
             verdict="boundary_layer/heavy_ball/verdict_zero_start"),
)  # fmt: skip


def draw_orders(r):
    cases = list(r.orders.values())
    fig, axes = plotting.panels(len(cases), ncols=min(4, len(cases)), width=3.6, height=3.0)
    for ax, case in zip(axes, cases):
        hs = np.asarray(case.step_sizes)
        run = [i for i in range(3) if np.all(np.isfinite(case.errors[i]))]
        series = [(case.errors[i], f"vs order-{i + 1} flow", case.fitted_orders[i]) for i in run]
        guides, title = tuple(float(i + 1) for i in run), f"{case.optimizer} / {case.problem}"
        plotting.plot_orders(ax, hs, series, guides=guides, title=title)
    return fig


def draw_modifying(r):
    items = list(r.modifying.values()) + list((r.boundary_layer or {}).values())
    fig, axes = plotting.panels(len(items), width=4.0, height=3.2)
    for ax, m in zip(axes, items):
        if isinstance(m, Modifying):
            series = [
                (m.errors_plain, f"{m.optimizer}", m.order_plain),
                (m.errors_modifying, f"modifying({m.optimizer})", m.order_modifying),
            ]
            title = f"{m.optimizer} vs its continuum limit"
        else:
            series = [
                (m.errors_manifold_start, "slow-manifold start", m.order_manifold_start),
                (m.errors_zero_start, "optax zero start", m.order_zero_start),
            ]
            title = f"{m.optimizer} vs order-2 flow"
        series = [x for x in series if np.any(np.isfinite(x[0]))]  # quick: no plain run
        plotting.plot_orders(ax, m.step_sizes, series, title=title)
    return fig


FIGURES = {"orders.png": draw_orders, "modifying.png": draw_modifying}


def _orders_cell(case: Case | None) -> str:
    if case is None:
        return "–"
    return "/".join(
        "–" if not np.isfinite(o) else f"{o:.2f}" for o in map(float, case.fitted_orders)
    )


def table_equations(r):
    """Per optimizer: its regime, the leading equation of its order-2 automatic flow at θ₀ of the
    log-cosh problem, and the fitted orders against the order-1/2/3 flows on both problems."""
    problems_ = sorted({c.problem for c in r.orders.values()})
    columns = ["optimizer", "regime", "order-2 equation at θ₀ (log-cosh)"]
    columns += [f"orders p = 1/2/3, {p}" for p in problems_]
    rows = [
        [
            name,
            eq.regime,
            eq.equation,
            *(_orders_cell(r.orders.get(f"{name}.{p}")) for p in problems_),
        ]
        for name, eq in r.equations.items()
    ]
    return columns, rows


TABLES = {"Equations and fitted orders": table_equations}
