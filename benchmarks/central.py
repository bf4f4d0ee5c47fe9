"""Benchmark: sharpness tracking and the GD central flow, as multiples of a plain GD step.

The setting of the public central-flow reference code (issue 16's anchor): MLP 8 → 16 → 16 → 1,
swish, 128 standard-normal points and targets, MSE, GD η = 0.1, k = 5 tracked directions (float64).
Issue 16's unit is "a plain GD step in a jitted loop": here `_gd_steps`, N plain GD steps in one
`dynopt.run(optax.sgd(η), problem, N, every=N)` (no per-step loss record: the loop is a
hand-written `lax.scan` of the optax update, the same iterates bit for bit). Every time is CPU
seconds of this process (all its threads, not other processes' load), and every ratio is taken
call by call against that baseline timed in alternation with it (`paired`, `alternating`).

Rows: (1) a GD step with the top-5 eigenpairs updated at every step by 2, and by 1, warm-started
LOBPCG iterations, and by `matfree`'s Lanczos with 16 products from the warm start (`TRACK_ROWS`,
`sharpness.track_sharpness(method=…, max_iters=…)`), timed as 200 tracked steps with `every=200`
against 200 plain steps with `every=200`, in 11+ back-to-back pairs (goal ≤ 20×; the anchor's
240×); the note gives the largest relative deviation of the tracked eigenvalues from fully
converged ones over the run, from a separate untimed run that records them at every step.
(2) `central_solve` per unit of GD time (one step η) from the initialization, below the threshold
(Σ = 0 until the sharpness reaches 2/η): the *marginal* rate (T(2U) − T(U))/U over U and 2U GD
steps of flow time with the same number of saved times (so the per-call and per-save costs
cancel), against a GD step, each round of the three calls timed together (3 rounds, median of
the per-round ratios; goal ≤ 200×, the anchor's 2,600×). The note gives U, the saves, the
average rate at U and the fixed per-call cost 2T(U) − T(2U). (3), not in tiny mode: 8 tracked GD
runs over learning rates 0.06–0.14 as one vmapped program against the 8 runs one after another
(goal: the vmapped program faster), in back-to-back pairs. (4), not in tiny mode: row (2) at the
edge, on the anchor's own network and data (`_anchor_problem`) from the central flow's own state
at GD step 400 (η·λ_max = 2 from step 350 on), U = 100: the flow on the edge, Σ ≠ 0 throughout
(GD's iterate at step 400 is past it, η·λ₁/2 = 1.178). (5), not in tiny mode: the central flow
over the anchor's whole run (1000 GD steps of flow time from the initialization, one solve saved
every 10 steps, the sharpness reaching 2/η near step 350): its average cost per unit of GD time,
fixed costs included (3 rounds against the GD baseline), and in the note its prediction error
against the σ = 50-step smoothed GD loss on steps 350-900 (the anchor's window and statistic).
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import dynopt
from dynopt import flows, networks, sharpness
from dynopt._flows.central import central_solve, CentralFlow

from ._common import alternating, block, Config, cost_row, paired, row


ETA, K, TRACK_ITERS = 0.1, 5, 2
# (method, warm iterations, or the Krylov depth for Lanczos, per tracked step): cost against
# accuracy
TRACK_ROWS = (("lobpcg", 2), ("lobpcg", 1), ("lanczos", 16))


def _problem(tiny: bool) -> dynopt.Problem:
    n, width = (32, 8) if tiny else (128, 16)
    x, y = networks.gaussian_regression(n, 8, 1)
    model = networks.mlp(8, 1, width=width, depth=2, activation=jax.nn.swish, key=jax.random.key(0))
    return networks.network_problem(model, (x, y))


FLOW_ROUNDS = 3  # rounds of (GD, flow over U, flow over 2U) per central-flow row
GD_STEPS = 1000  # plain GD steps per baseline call of the central-flow rows


def _gd_steps(problem: dynopt.Problem, eta: float, n: int):
    """The unit of every row: `n` plain GD steps in one jitted run, no per-step loss record
    (`every=n`): issue 16's "plain GD step in a jitted loop" (one transform object, so one
    compiled program)."""
    tx = optax.sgd(eta)
    return lambda: dynopt.run(tx, problem, n, every=n).final_params


def _cpu_first(fn) -> float:
    """CPU seconds of one call (the first: trace, compile and run)."""
    start = time.process_time()
    block(fn())
    return time.process_time() - start


def run(config: Config) -> list[dict]:
    problem = _problem(config.tiny)
    d = problem.num_params
    k = 1 if config.tiny else K
    steps = 20 if config.tiny else 200
    plain = _gd_steps(problem, ETA, steps)
    obs = sharpness.sharpness
    converged_tx = sharpness.track_sharpness(
        optax.sgd(ETA), k, every=1, init_grad_fn=problem.grad, tol=1e-9
    )
    exact = np.asarray(dynopt.run(converged_tx, problem, steps, observe=obs).observations)
    rows = []
    for method, iters in TRACK_ROWS:
        tracked_tx = sharpness.track_sharpness(
            optax.sgd(ETA),
            k,
            every=1,
            init_grad_fn=problem.grad,
            max_iters=iters,
            tol=1e-9,
            method=method,
        )
        # Accuracy, untimed: the tracked eigenvalues recorded at every step.
        tracked = np.asarray(dynopt.run(tracked_tx, problem, steps, observe=obs).observations)
        deviation = float(np.max(np.abs(tracked - exact) / np.abs(exact)))
        # Cost: the same steps without the per-step record, as the plain baseline.
        tracked_run = lambda tx=tracked_tx: dynopt.run(tx, problem, steps, every=steps).final_params
        first = _cpu_first(tracked_run)
        if method == "lanczos":
            cpu_step_s, tracked_s, ratio, split = _split_cost(
                problem, tracked_tx, steps, config.repeats
            )
        else:
            cpu_step_s, tracked_s, ratio = paired(plain, tracked_run, config.repeats)
            split = ""
        rows.append(
            cost_row(
                "central",
                f"tracked GD step (k={k}, every step, "
                + (
                    f"{iters} warm LOBPCG iteration{'s' if iters > 1 else ''}"
                    if method == "lobpcg"
                    else f"Lanczos, {iters} products from the warm start"
                )
                + f"), MLP d={d}",
                dynopt_s=tracked_s / steps,
                baseline="one plain GD step (jitted loop)",
                baseline_s=cpu_step_s / steps,
                ratio=ratio,
                target=20.0,
                note=f"CPU-time multiple of a step: {steps} steps each side, every={steps} (no "
                f"per-step loss record), median over 11+ back-to-back pairs (times: minima); "
                f"tracked eigenvalues within {deviation:.1e} (relative) of converged ones over "
                f"the run (a separate untimed run recording them every step); first call "
                f"(compile) {first:.1f} s CPU{split}",
            )
        )
    if not config.tiny:  # its vmapped program alone compiles for ~15-50 s of CPU
        rows.append(_tracked_sweep(problem, k, steps, config.repeats))
    units = 10 if config.tiny else 50  # GD steps of flow time
    flow = CentralFlow(ETA, k=k)
    rows.append(
        _marginal_row(
            f"central flow per unit GD time (k={k}), MLP d={d}, from the initialization",
            flow,
            problem,
            ETA,
            units,
            saves=6,
            rounds=1 if config.tiny else FLOW_ROUNDS,
            gd_steps=100 if config.tiny else GD_STEPS,
            where="from the initialization (below the threshold until the sharpness reaches 2/η)",
        )
    )
    if not config.tiny:
        rows.append(_central_at_the_edge())
        rows.append(_central_over_the_anchor_run())
    return rows


def _split_cost(
    problem: dynopt.Problem, tracked_tx, steps: int, repeats: int
) -> tuple[float, float, float, str]:
    """The tracked row's figures as `paired` gives them (`(plain_s, tracked_s, ratio)`: minima
    over rounds of `steps`-step runs, the median per-round ratio), from 11+ rounds of 4 calls
    timed together (plain and tracked runs of `steps` and `2 steps`), and a note splitting each
    side into a marginal cost per step, (T(2N) − T(N))/N, and a fixed cost per call,
    2T(N) − T(2N): `run`'s own (dispatch, output assembly) on both sides, and the tracker's cold
    start at θ₀ (LOBPCG from a random block to `tol`), which the 200-step average spreads over
    the steps."""
    calls = [
        lambda tx=tx, n=n: dynopt.run(tx, problem, n, every=n).final_params
        for tx in (optax.sgd(ETA), tracked_tx)
        for n in (steps, 2 * steps)
    ]
    p1, p2, t1, t2 = (
        t.samples for t in alternating(calls, max(repeats, 11), 0.0, clock=time.process_time)
    )
    med = lambda xs: float(np.median(list(xs)))
    ratio = med(b / a for a, b in zip(p1, t1))
    plain_marginal = med((b - a) / steps for a, b in zip(p1, p2))
    tracked_marginal = med((b - a) / steps for a, b in zip(t1, t2))
    marginal_ratio = med((d - c) / (b - a) for a, b, c, d in zip(p1, p2, t1, t2))
    note = (
        f"; split, N = {steps} and 2N: marginal per step (T(2N) − T(N))/N "
        f"{tracked_marginal * 1e6:.0f} µs against a plain step's {plain_marginal * 1e6:.1f} µs "
        f"({marginal_ratio:.1f}×, median over rounds), fixed per call 2T(N) − T(2N) "
        f"{med(2 * a - b for a, b in zip(t1, t2)) * 1e3:.1f} ms (run's own and the cold start at "
        f"θ₀) against {med(2 * a - b for a, b in zip(p1, p2)) * 1e3:.1f} ms (run's own)"
    )
    return min(p1), min(t1), ratio, note


def _marginal_row(
    case: str,
    flow: CentralFlow,
    problem: dynopt.Problem,
    eta: float,
    units: int,
    *,
    saves: int,
    rounds: int,
    gd_steps: int,
    where: str,
    compiled_by: str | None = None,
) -> dict:
    """`central_solve`'s marginal cost per unit of GD time, (T(2U) − T(U))/U, as a multiple of a
    plain GD step (`_gd_steps`): the three calls (GD, the flow over U and over 2U GD steps of
    flow time, both with `saves` saved times: one compiled program) timed together in each of
    `rounds` rounds (CPU seconds), the ratio the median over rounds (goal ≤ 200×).
    `compiled_by`: what compiled that program before (the note's compile time then), if
    anything."""
    gd = _gd_steps(problem, eta, gd_steps)

    def solve(u):
        ts = eta * jnp.linspace(0.0, u, saves)
        return lambda: central_solve(flow, problem, ts)

    gd_t, one, two = alternating(
        [gd, solve(units), solve(2 * units)], rounds, 0.0, clock=time.process_time
    )
    step = [t / gd_steps for t in gd_t.samples]
    marginal = [(b - a) / units for a, b in zip(one.samples, two.samples)]
    ratio = float(np.median([m / g for m, g in zip(marginal, step)]))
    average = float(np.median([a / units / g for a, g in zip(one.samples, step)]))
    fixed = float(np.median([2 * a - b for a, b in zip(one.samples, two.samples)]))
    path = two.result
    top = eta * np.asarray(path.eigenvalues)[:, 0] / 2
    solver_steps = (
        int(np.sum(np.asarray(one.result.num_steps))),
        int(np.sum(np.asarray(path.num_steps))),
    )
    return cost_row(
        "central",
        case,
        dynopt_s=float(np.median(marginal)),
        baseline="one plain GD step (jitted loop)",
        baseline_s=float(np.median(step)),
        ratio=ratio,
        target=200.0,
        note=f"marginal rate (T(2U) − T(U))/U, U = {units} GD steps, {saves} saved times each; "
        f"{where}; CPU time, median over {rounds} rounds of (GD {gd_steps} steps every="
        f"{gd_steps}, flow U, flow 2U); average at U {average:.0f}× (fixed per-call cost "
        f"2T(U) − T(2U) = {fixed:.2f} s CPU); Bosh3 steps {solver_steps[0]} (U) and "
        f"{solver_steps[1]} (2U); η·λ₁/2 {top[0]:.3f} at the start, median {np.median(top):.3f} "
        f"over the 2U run; "
        + (
            f"first call (compile) {one.first - one.median:.1f} s CPU"
            if compiled_by is None
            else f"compiled by {compiled_by}"
        ),
        units=units,
        saves=saves,
        average_ratio=average,
        fixed_cost_s=fixed,
    )


def _anchor_problem() -> dynopt.Problem:
    """The anchor's own network, data and initial weights (`networks.central_flows_example`:
    the notebook's `nnx.Rngs(0)` stream rebuilt), its MSE without the ½ (so its η = 0.1 is
    η = 0.2 on dynopt's ½-MSE)."""
    return networks.central_flows_example()


def _central_at_the_edge() -> dict:
    """The central flow where it works: from its own state at GD step 400 of the anchor's run (the
    flow from the initialization, saved every 40 steps: on the edge, η·λ₁ = 2, from step 350
    on), over U = 100 and 2U = 200 GD steps of flow time (11 saved times each: the setup's
    compiled program), its marginal cost against a plain GD step on the same network. Not from
    GD's iterate at step 400: GD oscillates across the edge, η·λ₁/2 = 1.178 there, and a flow
    started past it spends its first interval on the stabilization's pull-back (a warning at
    each call). At the edge an explicit solver's step is set by stability (η·λ = 2) and, for
    Bosh3 at rtol 1e-6, by accuracy too; each of its 3 evaluations a step runs the
    eigen-solve, the third-derivative contractions and the complementarity solve."""
    eta, start, units, saves = 2 * ETA, 400, 100, 11
    problem = _anchor_problem()
    flow = CentralFlow(eta, k=K)
    setup_s = time.process_time()
    path = central_solve(flow, problem, eta * jnp.linspace(0.0, start, saves))
    setup_s = time.process_time() - setup_s
    at_edge = eqx.tree_at(lambda p: p.params0, problem, jax.tree.map(lambda x: x[-1], path.params))
    return _marginal_row(
        f"central flow per unit GD time at the edge (k={K}), anchor MLP d={problem.num_params}",
        flow,
        at_edge,
        eta,
        units,
        saves=saves,
        rounds=FLOW_ROUNDS,
        gd_steps=GD_STEPS,
        where=f"from the central flow's own state at GD step {start} (the flow from the "
        f"initialization, {saves - 1} intervals; on the edge from step 350 on), not GD's "
        "iterate there (past the edge: GD oscillates across it)",
        compiled_by=f"that setup solve ({setup_s:.1f} s CPU with its {start} steps of flow time)",
    )


def _central_over_the_anchor_run(steps: int = 1000, sigma: float = 50.0) -> dict:
    """The anchor's whole run on its own data and initialization: the central flow from the
    initialization over `steps` GD steps of flow time (one solve, saved every 10 steps), its
    average cost per unit of GD time against `steps` plain GD steps (`FLOW_ROUNDS` rounds, CPU
    time, compile apart), and its prediction L + ½⟨Σ, H⟩ against GD's loss
    Gaussian-smoothed over `sigma` steps on steps 350-900, the anchor's window and statistic
    (the anchor: 3.0% max / 1.3% mean there, the stable flow up to 56%). GD runs in float32, as
    the anchor's notebook does, and in float64: at the edge GD is chaotic, and the two smoothed
    losses differ by up to 4% (the note's "precision floor"), as much as the errors compared."""
    from scipy.ndimage import gaussian_filter1d

    eta = 2 * ETA
    problem = _anchor_problem()
    p32 = networks.central_flows_example(dtype=jnp.float32)
    smoothed = {
        bits: gaussian_filter1d(
            np.asarray(dynopt.run(optax.sgd(eta), p, steps, every=1).loss, np.float64),
            sigma,
            mode="nearest",
        )
        for bits, p in ((64, problem), (32, p32))
    }
    saved = np.arange(0, steps + 1, 10)
    ts = jnp.asarray(eta * saved, dtype=float)
    flow = CentralFlow(eta, k=K)
    gd_t, flow_t = alternating(
        [_gd_steps(problem, eta, steps), lambda: central_solve(flow, problem, ts)],
        FLOW_ROUNDS,
        0.0,
        clock=time.process_time,
    )
    path = flow_t.result
    ratio = float(np.median([f / g for f, g in zip(flow_t.samples, gd_t.samples)]))
    gf = dynopt.solve(flows.GradientFlow(), problem, ts, solver="tsit5", rtol=1e-8, atol=1e-10)
    window = (saved >= 350) & (saved <= 900)
    onset = saved[np.argmax(eta * np.asarray(path.eigenvalues)[:, 0] / 2 >= 0.999)]

    def errors(curve, bits):
        err = np.abs(np.asarray(curve)[window] / smoothed[bits][saved[window]] - 1)
        return f"max {err.max():.1%}, mean {err.mean():.1%}"

    floor = np.max(np.abs(smoothed[32][saved[window]] / smoothed[64][saved[window]] - 1))
    return cost_row(
        "central",
        f"central flow per unit GD time over the anchor's whole run (k={K}, {steps} steps, "
        "its data and initialization)",
        dynopt_s=flow_t.median / steps,
        baseline="one plain GD step (jitted loop)",
        baseline_s=gd_t.median / steps,
        ratio=ratio,
        target=200.0,
        units=steps,
        saves=len(saved),
        note=f"average over the whole run, fixed per-call cost included: U = {steps} GD steps, "
        f"{len(saved)} saved times, one solve against {steps} GD steps (every={steps}), CPU "
        f"time, median over {FLOW_ROUNDS} rounds; first call (compile) "
        f"{flow_t.first - flow_t.median:.1f} s CPU; prediction vs σ={sigma:g}-smoothed GD "
        f"loss on steps 350-900: against float32 GD (the "
        f"anchor's precision) {errors(path.predicted_loss, 32)} (the anchor: 3.0%, 1.3%), "
        f"against float64 GD {errors(path.predicted_loss, 64)}; stable flow "
        f"{errors(gf.loss, 32)} (the anchor: up to 56%); precision floor (float32 vs float64 "
        f"smoothed GD loss) max {floor:.1%}; the central flow reaches η·λ = 2 at step {onset} "
        f"(the anchor: 350); the field's Lanczos eigenvalues within "
        f"{float(np.max(np.asarray(path.eig_deviation))):.1e} of refreshed ones; "
        f"{int(np.sum(np.asarray(path.num_steps)))} solver steps",
    )


SWEEP = 8  # learning rates in the vmapped sweep


def _tracked_sweep(problem: dynopt.Problem, k: int, steps: int, repeats: int) -> dict:
    """8 tracked GD runs (k directions tracked every 10 steps, learning rates 0.06–0.14, an
    array leaf: one compiled program each way) as one vmapped program vs one after another,
    CPU time in back-to-back pairs."""
    etas = jnp.asarray(ETA * np.linspace(0.6, 1.4, SWEEP))

    def one(lr):
        tx = sharpness.track_sharpness(optax.sgd(lr), k, every=10, max_iters=TRACK_ITERS, tol=1e-9)
        return dynopt.run(tx, problem, steps, every=10, observe=sharpness.sharpness).observations

    single, batch = eqx.filter_jit(one), eqx.filter_jit(jax.vmap(one))
    sequential = lambda: [single(e) for e in etas]
    vmapped = lambda: batch(etas)
    first_seq, first_vmap = _cpu_first(sequential), _cpu_first(vmapped)
    seq_s, vmap_s, ratio = paired(sequential, vmapped, repeats, min_pairs=5)
    seq, vec = np.stack(sequential()), np.asarray(vmapped())
    # NaN where nothing was tracked yet (the start without `init_grad_fn`), in both alike
    assert np.array_equal(np.isnan(seq), np.isnan(vec))
    diff = float(np.nanmax(np.abs(seq - vec)))
    return row(
        "central",
        f"{SWEEP} tracked GD runs (k={k}, every 10 steps) vmapped over learning rates",
        dynopt_s=vmap_s,
        baseline=f"{SWEEP} sequential runs (one compiled program)",
        baseline_s=seq_s,
        ratio=1.0 / ratio,
        target=1.0,
        note=f"ratio = sequential / vmapped, CPU time, median over 5+ back-to-back pairs "
        f"(times: minima); eigenvalues equal to {diff:.1e}; first calls (compile) "
        f"{first_vmap:.0f} s vmapped, {first_seq:.0f} s sequential, CPU",
    )
