"""Benchmark: sharpness tracking and the GD central flow, as multiples of a plain GD step.

The setting of the public central-flow reference code (issue 16's anchor): MLP 8 → 16 → 16 → 1,
swish, 128 standard-normal points and targets, MSE, GD η = 0.1, k = 5 tracked directions (float64).
Rows: (1) a GD step with the top-5 eigenpairs updated at every step by 2, and by 1, warm-started
LOBPCG iterations, and by `matfree`'s Lanczos with 16 products from the warm start (`TRACK_ROWS`,
`sharpness.track_sharpness(method=…, max_iters=…)`: the vectors refine along the run instead of
being reconverged each step), against a plain GD step, both inside one jitted `run`, timed in
back-to-back pairs (goal ≤ 20×; the anchor's 240×); the note gives the largest relative deviation
of the tracked eigenvalues from fully converged ones over the run (2 iterations: 44–50×, 1.8e-3; 1
iteration: 26–30×, 7.4e-3; Lanczos 16: 17×, 6.2e-4, 2026-12-04); (2) `central_solve` per unit of GD
time (one step η), compile excluded (goal ≤ 200×; the anchor's 2,600×). The flow starts at the
initialization, below the threshold (Σ = 0 until the sharpness reaches 2/η), so row (2) is the
pre-EoS cost; row (4), not in tiny mode, is the cost at the edge, on the anchor's own
initialization (`_anchor_problem`), where an explicit solver's step is set by stability (η·λ = 2),
not by rtol: `central_solve`'s Bosh3 takes ~1.6 steps of 3 evaluations per GD step (Tsit5: ~1 of 6,
1.2× slower there), 1.8e3x (goal 200x: missed). 2026-12-04, with the eigen-solve inside the field
by Lanczos (48 products) instead of LOBPCG (8 iterations): 231× below the edge (was 484×), 883× at
the edge (was 1.33e3×). Row (3), not in tiny mode: 8 tracked GD runs over learning rates 0.06–0.14
as one vmapped program against the 8 runs one after another (goal: the vmapped program faster).
Met: 1.17× (1.01 s vmapped vs 1.18 s sequential, 200 steps, CPU time, compile 22 s vs 14 s; the
eigenvalues agree to 1e-15). It was 16× *slower* (25.3 s vs 1.6 s, compile 48 s) because XLA
hoisted the eigen-solve out of `lane_cond`'s `while_loop` (its inputs were loop invariants,
forwarded unchanged) and so ran it at every step of every lane; `lane_cond` now carries the
branch's operands round the loop through an optimization barrier. `central_path` vmapped over 8
learning rates uses `lane_cond` too: measured by hand (flow time 0–1, this network, CPU time) at
0.95× the 8 solves one after another (15.7 s vs 14.9 s; compile 33 s, was 529 s); not a row (its
compile). Row (5), not in tiny mode: the central flow over the anchor's whole run (1000 GD steps
of flow time from the initialization, one solve, the sharpness reaching 2/η near step 320) per
unit of GD time, with its prediction error against the σ = 50-step smoothed GD loss on steps
350-900 (the anchor's window and statistic) in the note.
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

from ._common import Config, cost_row, paired, row, timed


ETA, K, TRACK_ITERS = 0.1, 5, 2
# (method, warm iterations, or the Krylov depth for Lanczos, per tracked step): cost against
# accuracy
TRACK_ROWS = (("lobpcg", 2), ("lobpcg", 1), ("lanczos", 16))


def _problem(tiny: bool) -> dynopt.Problem:
    n, width = (32, 8) if tiny else (128, 16)
    x, y = networks.gaussian_regression(n, 8, 1)
    model = networks.mlp(8, 1, width=width, depth=2, activation=jax.nn.swish, key=jax.random.key(0))
    return networks.network_problem(model, (x, y))


def run(config: Config) -> list[dict]:
    problem = _problem(config.tiny)
    d = problem.num_params
    k = 1 if config.tiny else K
    steps = 20 if config.tiny else 200
    plain_tx = optax.sgd(ETA)
    _, plain_s = timed(lambda: dynopt.run(plain_tx, problem, steps).loss, config.repeats)
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
        start = time.process_time()
        tracked = np.asarray(dynopt.run(tracked_tx, problem, steps, observe=obs).observations)
        first = time.process_time() - start
        deviation = float(np.max(np.abs(tracked - exact) / np.abs(exact)))
        cpu_step_s, tracked_s, ratio = paired(
            lambda: dynopt.run(plain_tx, problem, steps).loss,
            lambda tx=tracked_tx: dynopt.run(tx, problem, steps, observe=obs).observations,
            config.repeats,
        )
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
                baseline="one plain GD step",
                baseline_s=cpu_step_s / steps,
                ratio=ratio,
                target=20.0,
                note=f"CPU-time multiple of a step, median over 11+ back-to-back pairs; tracked "
                f"eigenvalues within {deviation:.1e} (relative) of converged ones over the run; "
                f"first call (compile) {first:.1f} s CPU",
            )
        )
    if not config.tiny:  # its vmapped program alone compiles for ~50 s of CPU
        rows.append(_tracked_sweep(problem, k, steps, 1))  # ~25 s a call: one repeat
    units = 10 if config.tiny else 50  # GD steps of flow time
    ts = ETA * jnp.linspace(0.0, units, 6)
    flow = CentralFlow(ETA, k=k)
    first, flow_s = timed(lambda: central_solve(flow, problem, ts).loss, config.repeats)
    rows.append(
        _per_gd_time(
            f"central flow per unit GD time (k={k}), MLP d={d}",
            flow_s / units,
            plain_s / steps,
            f"from the initialization (below the threshold); compile {first:.1f} s",
        )
    )
    if not config.tiny:
        rows.append(_central_at_the_edge(config.repeats))
        rows.append(_central_over_the_anchor_run())
    return rows


def _anchor_problem() -> dynopt.Problem:
    """The anchor's own network, data and initial weights (`networks.central_flows_example`:
    the notebook's `nnx.Rngs(0)` stream rebuilt), its MSE without the ½ (so its η = 0.1 is
    η = 0.2 on dynopt's ½-MSE)."""
    return networks.central_flows_example()


def _central_at_the_edge(repeats: int) -> dict:
    """The central flow where it works: from GD's iterate at step 400 (η·λ_max = 2 from step
    350 on) for 100 GD steps of flow time, against a plain GD step on the same network."""
    eta, start, units = 2 * ETA, 400, 100
    problem = _anchor_problem()
    tx = optax.sgd(eta)
    _, gd_s = timed(lambda: dynopt.run(tx, problem, 1000, every=1000).loss, repeats)
    step_s = gd_s / 1000
    w = dynopt.run(tx, problem, start, every=start).final_params
    at_edge = dynopt.Problem(problem.loss, w)
    flow = CentralFlow(eta, k=K)
    ts = eta * jnp.linspace(0.0, units, 11)
    first, flow_s = timed(lambda: central_solve(flow, at_edge, ts).loss, repeats)
    path = central_solve(flow, at_edge, ts)  # compiled: what the note reads
    median_ratio = float(np.median(eta * np.asarray(path.eigenvalues)[:, 0] / 2))
    solver_steps = int(np.sum(np.asarray(path.num_steps)))
    return _per_gd_time(
        f"central flow per unit GD time at the edge (k={K}), anchor MLP d={problem.num_params}",
        flow_s / units,
        step_s,
        f"GD steps {start}-{start + units}, median η·λ₁/2 = {median_ratio:.3f}; {solver_steps} "
        f"Bosh3 steps for {units} GD steps (stiffness η·λ = 2 bounds the step; at rtol 1e-6 "
        f"Bosh3's accuracy too), each with 3 evaluations of the eigen-solve, third "
        f"derivatives and complementarity solve; "
        f"compile {first:.1f} s",
    )


def _central_over_the_anchor_run(steps: int = 1000, sigma: float = 50.0) -> dict:
    """The anchor's whole run on its own data and initialization: the central flow from the
    initialization over `steps` GD steps of flow time (one solve, saved every 10 steps; timed
    once, compile included in `first`), and its prediction L + ½⟨Σ, H⟩ against GD's loss
    Gaussian-smoothed over `sigma` steps on steps 350-900, the anchor's window and statistic
    (the anchor: 3.0% max / 1.3% mean there, the stable flow up to 56%). GD runs in float32, as
    the anchor's notebook does, and in float64: at the edge GD is chaotic, and the two smoothed
    losses differ by up to 4% (the note's "precision floor"), as much as the errors compared."""
    from scipy.ndimage import gaussian_filter1d

    eta = 2 * ETA
    problem = _anchor_problem()
    tx = optax.sgd(eta)
    _, gd_s = timed(lambda: dynopt.run(tx, problem, steps, every=steps).loss, 3)
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
    start = time.perf_counter()
    path = central_solve(CentralFlow(eta, k=K), problem, ts)
    first = time.perf_counter() - start
    _, flow_s = timed(lambda: central_solve(CentralFlow(eta, k=K), problem, ts).loss, 1)
    gf = dynopt.solve(flows.GradientFlow(), problem, ts, solver="tsit5", rtol=1e-8, atol=1e-10)
    window = (saved >= 350) & (saved <= 900)
    onset = saved[np.argmax(eta * np.asarray(path.eigenvalues)[:, 0] / 2 >= 0.999)]

    def errors(curve, bits):
        err = np.abs(np.asarray(curve)[window] / smoothed[bits][saved[window]] - 1)
        return f"max {err.max():.1%}, mean {err.mean():.1%}"

    floor = np.max(np.abs(smoothed[32][saved[window]] / smoothed[64][saved[window]] - 1))
    return _per_gd_time(
        f"central flow per unit GD time over the anchor's whole run (k={K}, {steps} steps, "
        "its data and initialization)",
        flow_s / steps,
        gd_s / steps,
        f"prediction vs σ={sigma:g}-smoothed GD loss on steps 350-900: against float32 GD (the "
        f"anchor's precision) {errors(path.predicted_loss, 32)} (the anchor: 3.0%, 1.3%), "
        f"against float64 GD {errors(path.predicted_loss, 64)}; stable flow "
        f"{errors(gf.loss, 32)} (the anchor: up to 56%); precision floor (float32 vs float64 "
        f"smoothed GD loss) max {floor:.1%}; the central flow reaches η·λ = 2 at step {onset} "
        f"(the anchor: 350); the field's Lanczos eigenvalues within "
        f"{float(np.max(np.asarray(path.eig_deviation))):.1e} of refreshed ones; "
        f"{int(np.sum(np.asarray(path.num_steps)))} solver steps; first call {first:.1f} s",
    )


def _per_gd_time(case: str, per_unit_s: float, step_s: float, note: str) -> dict:
    """A central-flow row: seconds of `central_solve` per unit of GD time (one step η) as a
    multiple of one plain GD step (goal ≤ 200×)."""
    return cost_row(
        "central",
        case,
        dynopt_s=per_unit_s,
        baseline="one plain GD step",
        baseline_s=step_s,
        target=200.0,
        note=note,
    )


SWEEP = 8  # learning rates in the vmapped sweep


def _tracked_sweep(problem: dynopt.Problem, k: int, steps: int, repeats: int) -> dict:
    """8 tracked GD runs (k directions tracked every 10 steps, learning rates 0.06–0.14, an
    array leaf: one compiled program each way) as one vmapped program vs one after another."""
    etas = jnp.asarray(ETA * np.linspace(0.6, 1.4, SWEEP))

    def one(lr):
        tx = sharpness.track_sharpness(optax.sgd(lr), k, every=10, max_iters=TRACK_ITERS, tol=1e-9)
        return dynopt.run(tx, problem, steps, every=10, observe=sharpness.sharpness).observations

    single, batch = eqx.filter_jit(one), eqx.filter_jit(jax.vmap(one))
    first_seq, seq_s = timed(lambda: [single(e) for e in etas], repeats)
    first_vmap, vmap_s = timed(lambda: batch(etas), repeats)
    seq, vec = np.stack([single(e) for e in etas]), np.asarray(batch(etas))
    # NaN where nothing was tracked yet (the start without `init_grad_fn`), in both alike
    assert np.array_equal(np.isnan(seq), np.isnan(vec))
    diff = float(np.nanmax(np.abs(seq - vec)))
    return row(
        "central",
        f"{SWEEP} tracked GD runs (k={k}, every 10 steps) vmapped over learning rates",
        dynopt_s=vmap_s,
        baseline=f"{SWEEP} sequential runs (one compiled program)",
        baseline_s=seq_s,
        target=1.0,
        note=f"eigenvalues equal to {diff:.1e}; first calls (compile) {first_vmap:.0f} s vmapped, "
        f"{first_seq:.0f} s sequential",
    )
