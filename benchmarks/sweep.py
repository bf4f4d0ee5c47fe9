"""Benchmark 2: the sweep engine. K step sizes × N steps of gradient descent on the extended
Rosenbrock function (d = 100 and 1000, float64), three ways:

- dynopt: `dynopt.run(GradientFlow().discretize(hs), problem, N, every=N)`, all K runs in one
  vmapped, jitted scan (split across devices when there are several);
- (a) a Python loop over the step sizes calling a hand-written jitted single-run `lax.scan`
  (`optax.sgd(h)` with h traced, so it compiles once);
- (b) a Python loop over steps of a jitted optax update (the tutorial loop; h traced, compiled
  once), timed on a subset of the step sizes and scaled to K (its cost is linear in the runs).

Reported as runs·steps per second and the ratio of times for the same K·N work.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import dynopt
from dynopt import flows, problems

from ._common import block, Config, row


def _single_scan(problem, num_steps):
    @jax.jit
    def single(h):
        tx = optax.sgd(h)

        def body(carry, _):
            p, s = carry
            g = jax.grad(problem.loss)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        p0 = problem.params0
        (p, _), _ = jax.lax.scan(body, (p0, tx.init(p0)), None, length=num_steps)
        return p

    return single


def _tutorial_step(problem):
    @jax.jit
    def step(params, state, h):
        tx = optax.sgd(h)
        g = jax.grad(problem.loss)(params)
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    return step


def _time(fn, repeats):
    """(first call, median of `repeats` calls)."""
    start = time.perf_counter()
    out = block(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = block(fn())
        times.append(time.perf_counter() - start)
    return first, float(np.median(times)), out


def _one_size(d: int, k: int, n: int, subset: int, repeats: int, target_b) -> list[dict]:
    problem = problems.rosenbrock(d)
    hs = jnp.linspace(1e-5, 4e-4, k)  # all below the stability limit ~1.3e-3
    disc = flows.GradientFlow().discretize(hs)
    work = k * n

    first, ours, traj = _time(lambda: dynopt.run(disc, problem, n, every=n), repeats)
    single = _single_scan(problem, n)
    first_a, loop_a_s, finals = _time(lambda: [single(h) for h in hs], repeats)
    np.testing.assert_allclose(  # the same numbers, or the comparison means nothing
        np.asarray(traj.params[:, -1]), np.stack(finals), rtol=1e-10, atol=1e-12
    )
    step = _tutorial_step(problem)
    tx0 = optax.sgd(1e-3)

    def loop_b():
        out = []
        for h in hs[:subset]:
            p, s = problem.params0, tx0.init(problem.params0)
            for _ in range(n):
                p, s = step(p, s, h)
            out.append(p)
        return out

    first_b, loop_b_s, finals_b = _time(loop_b, max(1, repeats // 2))
    np.testing.assert_allclose(
        np.asarray(traj.params[:subset, -1]), np.stack(finals_b), rtol=1e-10, atol=1e-12
    )
    compile_b = max(first_b - loop_b_s, 0.0)
    loop_b_s *= k / subset
    case = f"K={k} step sizes × N={n} steps, Rosenbrock d={d}"
    common = dict(
        dynopt_compile_s=max(first - ours, 0.0), dynopt_rate=work / ours, work_runs_steps=work
    )
    return [
        row(
            "sweep engine",
            case,
            dynopt_s=ours,
            baseline="(a) loop of jitted single-run scans",
            baseline_s=loop_a_s,
            target=3.0,
            note=f"runs·steps/s: dynopt {work / ours:.3g}, (a) {work / loop_a_s:.3g}",
            baseline_compile_s=max(first_a - loop_a_s, 0.0),
            baseline_rate=work / loop_a_s,
            **common,
        ),
        row(
            "sweep engine",
            case,
            dynopt_s=ours,
            baseline="(b) Python loop of jitted optax steps",
            baseline_s=loop_b_s,
            target=target_b,
            note=f"runs·steps/s: (b) {work / loop_b_s:.3g}; (b) timed on {subset} of the {k} "
            "step sizes, scaled",
            baseline_compile_s=compile_b,
            baseline_rate=work / loop_b_s,
            **common,
        ),
    ]


def run(config: Config) -> list[dict]:
    k, n = (8, 100) if config.tiny else (64, 1000)
    dims = (10, 20) if config.tiny else (100, 1000)
    subset = 2 if config.tiny else 4  # step sizes timed for the per-step loop (b)
    rows = []
    for d in dims:
        target_b = 30.0 if d == dims[0] else None
        rows += _one_size(d, k, n, subset, config.repeats, target_b)
    return rows
