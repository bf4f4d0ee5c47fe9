"""GD vs gradient flow: orders 1 and 2 (modified flow), stability at 2/λ_max, dL/dt = -|∇L|²."""

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import flows, lyapunov, plotting, problems

from ._card import Array, by_mode
from ._headline import Headline


@dataclasses.dataclass(frozen=True)
class Config:
    """Run card. `python -m experiments run gd_flow [--quick]`.

    GD with step h against the gradient flow θ' = -∇L (expected order 1) and against the modified
    flow θ' = -∇(L + h/4 |∇L|²) (expected order 2) on (a) a rotated quadratic with eigenvalues
    log-spaced in [0.1, 100] (closed form), (b) 2-D Rosenbrock from (-1.2, 1), (c) L2-regularized
    logistic regression on synthetic data. Then the stability boundary h = 2/λ_max on (a), and the
    Lyapunov identity dL/dt = -|∇L|² along each reference.
    Runtime on 2 CPU cores: quick < 30 s, full < 3 min. Headline: fitted orders ≈ 1.0 and ≈ 2.0;
    GD diverges exactly above h = 2/λ_max = 0.02.
    """

    seed: int = 0
    quick: bool = False
    quad_dim: int = by_mode(20, quick=8)
    quad_log10_range: tuple[float, float] = (-1.0, 2.0)
    quad_t1: float = 1.0
    quad_steps: tuple[int, ...] = by_mode(
        (1000, 2000, 4000, 8000, 16000), quick=(1000, 2000, 4000, 8000)
    )
    rosen_t1: float = 0.5
    rosen_steps: tuple[int, ...] = by_mode(
        (4000, 8000, 16000, 32000, 64000), quick=(4000, 8000, 16000, 32000)
    )
    logistic_samples: int = by_mode(512, quick=128)
    logistic_dim: int = by_mode(20, quick=5)
    logistic_t1: float = 4.0
    logistic_steps: tuple[int, ...] = by_mode((8, 16, 32, 64, 128, 256), quick=(8, 16, 32, 64))
    stability_factors: tuple[float, ...] = (0.9, 0.99, 1.01, 1.1)
    stability_steps: int = 20_000
    boundary_grid: int = by_mode(64, quick=32)
    lyapunov_points: int = by_mode(201, quick=51)
    paths_t1: float = 20.0
    paths_steps: tuple[int, ...] = by_mode((20_000, 40_000), quick=(20_000,))


@dataclasses.dataclass
class ClosedForm:
    max_abs_error: float  # diffrax vs the quadratic's closed-form flow on [0, quad_t1]


@dataclasses.dataclass
class Orders:
    """One problem: GD against the gradient flow and the modified flow, and dL/dt = -|∇L|²."""

    name: str
    t1: float
    order_gd_vs_flow: float
    order_gd_vs_modified_flow: float
    final_order_gd_vs_flow: float
    final_order_gd_vs_modified_flow: float
    verdict_gd_vs_flow: str  # compare's verdict: an order is a number only when "asymptotic"
    verdict_gd_vs_modified_flow: str
    reference_solver: str
    lyapunov_max_rel_deviation: float
    step_sizes: Array
    err_flow: Array
    err_modified: Array
    lyap_ts: Array
    lyap_measured: Array
    lyap_predicted: Array


@dataclasses.dataclass
class Stability:
    lambda_max: float
    predicted_boundary: float
    found_boundary_interval: list[float]
    smallest_step_flagged_diverged: float
    steps_per_run: int
    runs: list[
        dict
    ]  # step_size, factor, diverged_at (first non-finite step, -1 if none), final_loss
    flow_final_loss: float
    ts: Array
    loss: Array  # (runs, saves)
    flow_t: Array
    flow_loss: Array
    grid: Array  # step sizes around the boundary
    unstable: Array


@dataclasses.dataclass
class Paths:
    flow: Array
    gd: dict[str, Array]  # by number of steps
    contour_x: Array
    contour_y: Array
    contour_loss: Array


def _problems(config: Config) -> dict[str, dynopt.Problem]:
    lo, hi = config.quad_log10_range
    return {
        "quadratic": problems.quadratic(
            jnp.logspace(lo, hi, config.quad_dim),
            rotate=True,
            seed=config.seed,
            name=f"quadratic(d={config.quad_dim}, cond={10.0 ** (hi - lo):.3g})",
        ),
        "rosenbrock": problems.rosenbrock(),
        "logistic": problems.logistic_regression(
            config.logistic_samples, config.logistic_dim, seed=config.seed
        ),
    }


def _settings(config: Config, name: str) -> tuple[float, np.ndarray]:
    """`(t1, step sizes)` of problem `name`'s order sweep."""
    t1, steps = {
        "quadratic": (config.quad_t1, config.quad_steps),
        "rosenbrock": (config.rosen_t1, config.rosen_steps),
        "logistic": (config.logistic_t1, config.logistic_steps),
    }[name]
    return t1, t1 / np.asarray(steps, dtype=float)


@functools.cache
def _against_flow(config: Config, name: str) -> dynopt.Comparison:
    """GD against the gradient flow on problem `name`, with the reference solve kept: the
    closed-form check and the Lyapunov identity read it (no solve compiled again for them)."""
    t1, hs = _settings(config, name)
    problem = _problems(config)[name]
    return dynopt.compare(flows.GradientFlow(), problem, hs, t1, keep_reference=True)


@eqx.filter_jit
def _flow_and_closed_form(ref: dynopt.Trajectory, problem: dynopt.Problem, ts):
    """The reference's parameters at `ts` (its dense output) and the closed form there: one
    program (eagerly, one per primitive)."""
    on_ref = jax.vmap(lambda t: ref.flow.params(ref.interpolation.evaluate(t)))(ts)
    return on_ref, jax.vmap(problem.flow_solution)(ts)


def closed_form(config: Config) -> ClosedForm:
    quad = _problems(config)["quadratic"]
    ts = jnp.linspace(0.0, config.quad_t1, config.lyapunov_points)
    ref, exact = _flow_and_closed_form(_against_flow(config, "quadratic").reference, quad, ts)
    return ClosedForm(float(np.max(np.abs(np.asarray(ref) - np.asarray(exact)))))


def orders(config: Config) -> dict[str, Orders]:
    out = {}
    for name, problem in _problems(config).items():
        t1, hs = _settings(config, name)
        gf = _against_flow(config, name)
        mod = dynopt.compare(
            flows.GradientFlow(), problem, hs, t1, reference=flows.ModifiedGradientFlow
        )
        ts = jnp.linspace(0.0, t1, config.lyapunov_points)
        # predicted: -|grad L|^2, along the reference `compare` solved
        measured, predicted = lyapunov.rates(gf.reference, problem, ts)
        out[name] = Orders(
            name=problem.name,
            t1=t1,
            order_gd_vs_flow=float(gf.order),
            order_gd_vs_modified_flow=float(mod.order),
            final_order_gd_vs_flow=float(gf.final_order),
            final_order_gd_vs_modified_flow=float(mod.final_order),
            verdict_gd_vs_flow=gf.verdict,
            verdict_gd_vs_modified_flow=mod.verdict,
            reference_solver=gf.solver,
            lyapunov_max_rel_deviation=float(lyapunov.max_relative_deviation(measured, predicted)),
            step_sizes=hs,
            err_flow=np.asarray(gf.errors),
            err_modified=np.asarray(mod.errors),
            lyap_ts=np.asarray(ts),
            lyap_measured=np.asarray(measured),
            lyap_predicted=np.asarray(predicted),
        )
    return out


def stability(config: Config) -> Stability:
    problem = _problems(config)["quadratic"]
    lam_max = float(np.max(np.linalg.eigvalsh(np.asarray(problem.hessian))))
    boundary = 2.0 / lam_max
    n, every = config.stability_steps, config.stability_steps // 500
    hs = boundary * np.asarray(config.stability_factors)
    t_flow = np.linspace(0.0, float(hs.max()) * n, 400)
    flow_loss = jax.jit(jax.vmap(lambda t: problem.loss(problem.flow_solution(t))))(t_flow)
    flow_loss = np.asarray(flow_loss)  # on the host: an index of a device array is a program
    # The loss curves and the bisection grid over the boundary region: one batched run (one
    # compiled program); the grid's runs are read at their first and last saved step.
    grid = boundary * np.linspace(0.95, 1.05, config.boundary_grid)
    both = jnp.asarray(np.concatenate([hs, grid]))
    runs = dynopt.run(flows.GradientFlow().discretize(both), problem, n, every=every)
    # Read on the host: each index or comparison of a device array compiles a program of its own.
    k, loss, at = hs.size, np.asarray(runs.loss), np.asarray(runs.diverged_at)
    flagged = at[k:] >= 0  # `Trajectory.diverged`
    grew = ~flagged & (loss[k:, -1] > loss[k:, 0])
    unstable = flagged | grew
    diverged_at = at[:k]

    def extreme(fn, mask):
        return float(fn(grid[mask])) if np.any(mask) else float("nan")

    return Stability(
        lambda_max=lam_max,
        predicted_boundary=boundary,
        found_boundary_interval=[extreme(np.max, ~unstable), extreme(np.min, unstable)],
        smallest_step_flagged_diverged=extreme(np.min, flagged),
        steps_per_run=n,
        runs=[
            dict(step_size=float(h), factor=float(f), diverged_at=int(d), final_loss=float(last))
            for h, f, d, last in zip(hs, config.stability_factors, diverged_at, loss[:k, -1])
        ],
        flow_final_loss=float(flow_loss[-1]),
        ts=np.asarray(runs.ts)[:k],
        loss=loss[:k],
        flow_t=t_flow,
        flow_loss=flow_loss,
        grid=grid,
        unstable=unstable,
    )


def paths(config: Config) -> Paths:
    problem, t1 = problems.rosenbrock(), config.paths_t1
    ref = dynopt.solve(flows.GradientFlow(), problem, jnp.linspace(0.0, t1, 2001))
    gd = {}
    for n in config.paths_steps:
        traj = dynopt.run(flows.GradientFlow().discretize(t1 / n), problem, n, every=n // 2000)
        gd[str(n)] = np.asarray(traj.params)
    xs, ys = np.linspace(-1.5, 1.5, 121), np.linspace(-0.5, 1.5, 101)
    return Paths(np.asarray(ref.params), gd, xs, ys, plotting.loss_on_grid(problem.loss, xs, ys))


SECTIONS = {"closed_form": closed_form, "problems": orders, "stability": stability, "paths": paths}

HEADLINES = (
    *(
        Headline(f"problems/{p}/order_gd_vs_{ref}", f"{p}: order of GD vs {ref.replace('_', ' ')}",
                 o, 0.1, verdict=f"problems/{p}/verdict_gd_vs_{ref}")
        for p in ("quadratic", "rosenbrock", "logistic")
        for ref, o in (("flow", 1.0), ("modified_flow", 2.0))
    ),
    Headline("problems/quadratic/lyapunov_max_rel_deviation", "dL/dt = -|∇L|², max rel. dev.",
             high=1e-6),
    Headline("closed_form/max_abs_error", "diffrax vs the closed-form flow: max abs. error",
             high=1e-8),
    Headline("stability/found_boundary_interval/0", "largest h found stable", high=0.02),
    Headline("stability/found_boundary_interval/1", "smallest h found unstable", low=0.02),
)  # fmt: skip


def draw_orders(r):
    fig, axes = plotting.panels(len(r.problems))
    for ax, (name, p) in zip(axes, r.problems.items()):
        series = [
            (p.err_flow, "GD vs gradient flow", p.order_gd_vs_flow),
            (p.err_modified, "GD vs modified flow", p.order_gd_vs_modified_flow),
        ]
        plotting.plot_orders(ax, p.step_sizes, series, guides=(1.0, 2.0))
        ax.set_title(f"{name} (t1 = {p.t1:g})")
    return fig


def draw_stability(r):
    st = r.stability
    fig, axes = plotting.panels(2, width=5.0)
    curves = [
        (t, loss, f"GD h = {run['factor']:g}·2/λmax")
        for t, loss, run in zip(st.ts, st.loss, st.runs)
    ]
    curves.append((st.flow_t, st.flow_loss, "gradient flow (closed form)"))
    # the step of divergence -> its time (the closed-form flow never diverges)
    diverged = [
        run["diverged_at"] * run["step_size"] if run["diverged_at"] >= 0 else None
        for run in st.runs
    ]
    plotting.plot_loss_curves(axes[0], curves, diverged_at=[*diverged, None])
    last = max((d for d in diverged if d is not None), default=float(st.ts.max()))
    axes[0].set_title(f"GD on the quadratic, λmax = {st.lambda_max:.3g}")
    plotting.dress(axes[0], xlim=(0.0, 1.1 * last), legend=dict(loc="center right"), grid="both")
    # y from what the x-range shows (the converging runs' tails past it reach 1e-16)
    shown = np.concatenate([loss[t <= 1.1 * last] for t, loss, _ in curves])
    axes[0].set_ylim(bottom=np.min(shown[np.isfinite(shown) & (shown > 0)]) / 3)
    axes[1].plot(st.grid / st.predicted_boundary, st.unstable.astype(float), "o", ms=3)
    axes[1].axvline(1.0, color="k", ls="--", label="predicted h = 2/λmax")
    axes[1].set_yticks([0, 1], ["converging", "diverging"])
    axes[1].set(xlabel="step size h / (2/λmax)", ylabel=f"after {st.steps_per_run} steps")
    plotting.dress(axes[1], title="stability boundary, one batched run", grid=None)
    return fig


def draw_lyapunov(r):
    names = list(r.problems)
    fig, axes = plotting.panels(2 * len(names), ncols=len(names), height=3.0)
    for ax, dev_ax, (name, p) in zip(axes, axes[len(names) :], r.problems.items()):
        plotting.plot_rate_check(ax, p.lyap_ts, -p.lyap_measured, -p.lyap_predicted, label="-dL/dt")
        plotting.dress(ax, yscale="log", title=f"{name}: -dL/dt vs |∇L|²")
        rel = np.abs(p.lyap_measured - p.lyap_predicted) / np.max(np.abs(p.lyap_predicted))
        dev_ax.semilogy(p.lyap_ts, np.where(rel > 0, rel, np.nan), ".-", ms=3)
        dev_ax.set_title(f"max rel. deviation {p.lyapunov_max_rel_deviation:.1e}")
        plotting.dress(
            dev_ax, xlabel="t", ylabel="|measured − predicted|\n/ max |predicted|", grid="both"
        )
    return fig


def draw_paths(r):
    fig, (ax,) = plotting.panels(1, width=5.5, height=4.0)
    paths = [(r.paths.flow, "gradient flow (diffrax)")]
    paths += [(p, f"GD, {n} steps") for n, p in r.paths.gd.items()]
    plotting.plot_contour_paths(
        ax, r.paths.contour_loss, r.paths.contour_x, r.paths.contour_y, paths
    )
    ax.plot([1.0], [1.0], "k*", ms=10, label="minimum (1, 1)")
    plotting.dress(ax, title="Rosenbrock: GD and gradient flow, t ∈ [0, 20]", grid=None)
    return fig


FIGURES = {
    "orders.png": draw_orders,
    "stability.png": draw_stability,
    "lyapunov.png": draw_lyapunov,
    "rosenbrock_paths.png": draw_paths,
}
