"""Heavy ball as a discretized damped oscillator (Su, post 1): leapfrog vs naive maps, the two
scaling regimes, stability limits, and momentum jumping over a shallow minimum."""

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import flows, maps, plotting, problems


@dataclasses.dataclass(frozen=True)
class Config:
    """Run card. `python -m experiments run momentum [--quick]`.

    (1) Heavy ball θ'' + aθ' + ∇L = 0 against `optax.sgd(α, momentum=β)` on the damped oscillator
    L = θ²/2 (a = 0.5, closed form) and on Rosenbrock (a = 2): error vs h for Su's leapfrog map
    with the half-step initial velocity (order 2), the same map from optax's zero trace (order 1),
    the naive map β = 1 - ah, α = h² (order 1), the conformal-symplectic map β = e^{-ah} (order 1),
    and (full mode) the Nesterov variants (order 1). (2) The other scaling regime: β = 0.9 fixed,
    η → 0 against θ' = -∇L/(1-β) at t = kη (order 1). (3) Largest stable h·√λmax per scheme on a
    quadratic (a = 1, λmax = 100), by multisection over batched runs vs the Schur–Cohn prediction.
    (4) Tilted double well L = (x²-1)² + 0.3x from rest at x = 1.5: gradient flow stays in the
    shallow basin; heavy ball crosses the barrier iff the damping is below a critical value, found
    by bisection (flow) and multisection (leapfrog, h = 0.05).
    Runtime on 2 CPU cores: quick < 30 s, full < 3 min. Headline: orders 2.00 (leapfrog,
    half-step start) vs 1.00 (zero trace, Euler map); leapfrog stable up to h√λmax = 2.000;
    critical damping ≈ 0.650 on the double well (flow) and ≈ 0.647 (h = 0.05).
    """

    seed: int = 0
    quick: bool = False
    osc_damping: float = 0.5
    osc_t1: float = 8.0
    osc_steps: tuple[int, ...] = (40, 80, 160, 320, 640)
    rosen_damping: float = 2.0
    rosen_t1: float = 1.0
    rosen_steps: tuple[int, ...] = (400, 800, 1600, 3200, 6400)
    schemes: tuple[str, ...] = (
        "leapfrog",
        "leapfrog_zero_trace",
        "euler",
        "conformal",
        "nesterov",
        "nesterov_midpoint",
        "implicit_midpoint",
    )
    rosen_schemes: tuple[str, ...] = ("leapfrog", "leapfrog_zero_trace", "euler", "conformal")
    fixed_momentum: float = 0.9
    fixed_t1: float = 1.0
    fixed_steps: tuple[int, ...] = (100, 200, 400, 800, 1600)
    stab_damping: float = 1.0
    stab_lambda: float = 100.0
    stab_schemes: tuple[str, ...] = (
        "leapfrog",
        "euler",
        "conformal",
        "nesterov",
        "nesterov_midpoint",
        "implicit_midpoint",
    )
    stab_steps: int = 4000
    stab_grid: int = 24
    stab_rounds: int = 3
    well_tilt: float = 0.3
    well_x0: float = 1.5
    well_t1: float = 40.0
    well_step: float = 0.05
    well_bisections: int = 30

    QUICK: ClassVar[dict] = dict(
        osc_steps=(40, 80, 160, 320),
        rosen_steps=(400, 800, 1600, 3200),
        schemes=("leapfrog", "leapfrog_zero_trace", "euler"),
        rosen_schemes=(),
        fixed_steps=(100, 200, 400, 800),
        stab_schemes=("leapfrog",),
        stab_steps=2000,
        stab_grid=16,
        stab_rounds=2,
        well_bisections=20,
    )


_MAPS = {  # scheme name -> discretization map of heavy ball
    "leapfrog": maps.Leapfrog(),
    "leapfrog_zero_trace": maps.Leapfrog(half_step=False),
    "euler": maps.NaiveEuler(),
    "conformal": maps.ConformalEuler(),
    "nesterov": maps.Lookahead(1.0),
    "nesterov_midpoint": maps.Lookahead(0.5),
    "implicit_midpoint": maps.ImplicitMidpoint(),
}
oscillator_solution = flows.oscillator_solution


def _orders(problem, damping, t1, steps, schemes) -> dict:
    hs = t1 / np.asarray(steps, dtype=float)
    out = {"step_sizes": hs}
    for scheme in schemes:
        c = dynopt.compare(flows.HeavyBall(damping), problem, hs, t1, map=_MAPS[scheme])
        out[scheme] = {"errors": np.asarray(c.errors), "order": float(c.order), "solver": c.solver}
    return out


def measure_stability_limit(
    flow: flows.HeavyBall,
    lambda_max: float,
    *,
    num_steps: int,
    grid: int,
    rounds: int,
    map: maps.AbstractMap = _MAPS["leapfrog"],
) -> tuple[float, float]:
    """Bracket [stable, unstable] of the largest stable $z = h\\sqrt{\\lambda_{\\max}}$ on
    $\\tfrac{\\lambda}{2}x^2$ from $x_0 = 1$: `rounds` of a `grid`-point batched run (one compiled
    program) over the current bracket, unstable = diverged or $|x_N| > |x_0|$ after `num_steps`.
    """
    problem = problems.quadratic(jnp.array([lambda_max]))
    lo, hi = 0.05, 3.0
    for _ in range(rounds):
        zs = np.linspace(lo, hi, grid)
        traj = dynopt.run(
            map(flow, jnp.asarray(zs / np.sqrt(lambda_max))),
            problem,
            num_steps,
            every=num_steps,
        )
        final = np.abs(np.asarray(traj.params)[:, -1, 0])
        unstable = np.asarray(traj.diverged) | (final > 1.0)
        if not unstable.any():
            return float(hi), float("inf")
        first = int(np.argmax(unstable))
        if first == 0:
            return float("nan"), float(zs[0])
        lo, hi = float(zs[first - 1]), float(zs[first])
    return lo, hi


def _stability(config: Config) -> dict:
    out = {}
    for scheme in config.stab_schemes:
        flow = flows.HeavyBall(config.stab_damping)
        lo, hi = measure_stability_limit(
            flow,
            config.stab_lambda,
            num_steps=config.stab_steps,
            grid=config.stab_grid,
            rounds=config.stab_rounds,
            map=_MAPS[scheme],
        )
        out[scheme] = {  # the map's limit is a step size; the figure's unit is h sqrt(lambda)
            "predicted": _MAPS[scheme].stability_limit(flow, config.stab_lambda)
            * float(np.sqrt(config.stab_lambda)),
            "measured_bracket": [lo, hi],
            "measured": 0.5 * (lo + hi),
        }
    return out


def _crossed(xs: np.ndarray, barrier_x: float) -> np.ndarray:
    return np.min(xs, axis=-1) < barrier_x


def _double_well(config: Config) -> tuple[dict, dict]:
    problem = problems.double_well(tilt=config.well_tilt, params0=jnp.array([config.well_x0]))
    # Local maximum of (x²-1)² + tilt·x between the wells: 4x³ - 4x + tilt = 0, middle root.
    roots = np.sort(np.roots([4.0, 0.0, -4.0, config.well_tilt]).real)
    barrier_x = float(roots[1])
    ts = jnp.linspace(0.0, config.well_t1, 2001)

    def crosses_flow(a: float) -> bool:
        traj = dynopt.solve(flows.HeavyBall(a), problem, ts)
        return bool(_crossed(np.asarray(traj.params)[:, 0], barrier_x))

    lo, hi = 0.0, 4.0  # crosses at lo, stays at hi
    for _ in range(config.well_bisections):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if crosses_flow(mid) else (lo, mid)
    critical_flow = 0.5 * (lo + hi)

    # The leapfrog discretization: one batched run over dampings per multisection round.
    h, n = config.well_step, round(config.well_t1 / config.well_step)
    dlo, dhi = 0.0, 4.0
    for _ in range(3):
        grid = np.linspace(dlo, dhi, 32)
        traj = dynopt.run(flows.HeavyBall(jnp.asarray(grid)).discretize(h), problem, n)
        crossed = _crossed(np.asarray(traj.params)[..., 0], barrier_x)
        last = int(np.flatnonzero(crossed).max())
        dlo, dhi = float(grid[last]), float(grid[min(last + 1, grid.size - 1)])
    critical_leapfrog = 0.5 * (dlo + dhi)

    gd = dynopt.run(flows.GradientFlow().discretize(h), problem, n)
    dampings = (0.5 * critical_flow, 0.95 * critical_flow, 1.05 * critical_flow)
    paths = {
        f"well_hb_{i}": np.asarray(dynopt.solve(flows.HeavyBall(a), problem, ts).params)[:, 0]
        for i, a in enumerate(dampings)
    }
    xs = np.linspace(-1.8, 1.8, 361)
    metrics = {
        "tilt": config.well_tilt,
        "x0": config.well_x0,
        "barrier_x": barrier_x,
        "critical_damping_flow": critical_flow,
        "critical_damping_flow_bracket": [lo, hi],
        "critical_damping_leapfrog": critical_leapfrog,
        "critical_damping_leapfrog_bracket": [dlo, dhi],
        "leapfrog_step": h,
        "gradient_descent_final_x": float(gd.params[-1, 0]),
        "gradient_descent_crossed": bool(_crossed(np.asarray(gd.params)[:, 0], barrier_x)),
        "path_dampings": list(dampings),
    }
    arrays = {
        "well_ts": np.asarray(ts),
        "well_gd_ts": np.asarray(gd.ts),
        "well_gd": np.asarray(gd.params)[:, 0],
        "well_x": xs,
        "well_loss": np.asarray(jax.vmap(problem.loss)(jnp.asarray(xs)[:, None])),
        **paths,
    }
    return metrics, arrays


def _oscillator() -> dynopt.Problem:
    return problems.quadratic(jnp.array([1.0]), name="oscillator")


def closed_form(config: Config) -> tuple[dict, dict]:
    """The reference against the closed form (full mode; tests check it too)."""
    if config.quick:
        return {}, {}
    ts = jnp.linspace(0.0, config.osc_t1, 201)
    ref = dynopt.solve(flows.HeavyBall(config.osc_damping), _oscillator(), ts)
    exact = oscillator_solution(np.asarray(ts), config.osc_damping)
    return {"oscillator_max_abs_error": float(np.max(np.abs(ref.params[:, 0] - exact)))}, {}


def _orders_section(name, problem, damping, t1, steps, schemes) -> tuple[dict, dict]:
    res = _orders(problem, damping, t1, steps, schemes)
    schemes = [s for s in res if s != "step_sizes"]
    metrics = {
        "damping": damping,
        "t1": t1,
        "orders": {s: res[s]["order"] for s in schemes},
        "max_errors": {s: res[s]["errors"].tolist() for s in schemes},
    }
    arrays = {f"{name}_step_sizes": res["step_sizes"]}
    arrays.update({f"{name}_err_{s}": res[s]["errors"] for s in schemes})
    return metrics, arrays


def oscillator(c: Config) -> tuple[dict, dict]:
    return _orders_section(
        "oscillator", _oscillator(), c.osc_damping, c.osc_t1, c.osc_steps, c.schemes
    )


def rosenbrock(c: Config) -> tuple[dict, dict]:
    return _orders_section(
        "rosenbrock", problems.rosenbrock(), c.rosen_damping, c.rosen_t1, c.rosen_steps,
        c.rosen_schemes,
    )  # fmt: skip


def fixed_momentum(config: Config) -> tuple[dict, dict]:
    """Regime 2: beta fixed, eta -> 0, against theta' = -grad L / (1 - beta) at t = k eta."""
    etas = config.fixed_t1 / np.asarray(config.fixed_steps, dtype=float)
    fixed = dynopt.compare(
        flows.RescaledGradientFlow(config.fixed_momentum), _oscillator(), etas, config.fixed_t1
    )
    metrics = {
        "momentum": config.fixed_momentum,
        "t1": config.fixed_t1,
        "order": float(fixed.order),
        "max_errors": np.asarray(fixed.errors).tolist(),
    }
    return metrics, {"fixed_step_sizes": etas, "fixed_errors": np.asarray(fixed.errors)}


def stability(config: Config) -> tuple[dict, dict]:
    metrics = {
        "damping": config.stab_damping,
        "lambda_max": config.stab_lambda,
        "steps_per_run": config.stab_steps,
        "schemes": _stability(config),
    }
    return metrics, {}


def tuning_rule(config: Config) -> tuple[dict, dict]:
    beta, r = 0.9, 0.1
    beta_new = float(flows.rescale_momentum(beta, r))
    a_old = float(flows.HeavyBall.from_hyperparams(0.01, beta)[0].damping)
    a_new = float(flows.HeavyBall.from_hyperparams(0.01 * r, beta_new)[0].damping)
    metrics = {
        "momentum": beta,
        "lr_ratio": r,
        "new_momentum": beta_new,
        "leapfrog_damping_before": a_old,
        "leapfrog_damping_after": a_new,
    }
    return metrics, {}


def double_well(config: Config) -> tuple[dict, dict]:
    return _double_well(config)


SECTIONS = {
    "closed_form": closed_form,
    "oscillator": oscillator,
    "rosenbrock": rosenbrock,
    "fixed_momentum": fixed_momentum,
    "stability": stability,
    "tuning_rule": tuning_rule,
    "double_well": double_well,
}


_LABELS = {
    "leapfrog": "leapfrog map, half-step start",
    "leapfrog_zero_trace": "leapfrog map, optax zero trace",
    "euler": "naive map β = 1 - ah, α = h²",
    "conformal": "conformal map β = e^{-ah}",
    "nesterov": "Nesterov look-ahead θ + βv",
    "nesterov_midpoint": "Su midpoint look-ahead θ + βv/2",
    "implicit_midpoint": "implicit midpoint (eq. 19)",
}
_MARKERS = "osv^D<>"


def plot(metrics: dict, arrays: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    paths = []
    names = [n for n in ("oscillator", "rosenbrock") if metrics[n]["orders"]]
    fig, axes = plotting.figure(len(names) + 1, width=4.6, height=3.8)
    for ax, name in zip(axes, names):
        m = metrics[name]
        hs = arrays[f"{name}_step_sizes"]
        for i, scheme in enumerate(m["orders"]):
            plotting.plot_error_vs_step_size(
                ax,
                hs,
                arrays[f"{name}_err_{scheme}"],
                label=_LABELS[scheme],
                order=m["orders"][scheme],
                marker=_MARKERS[i % len(_MARKERS)],
            )
        ax.set_title(f"{name}: heavy ball a = {m['damping']:g}, t1 = {m['t1']:g}")
        low = min(float(np.min(arrays[f"{name}_err_{s}"])) for s in m["orders"])
        ax.set_ylim(bottom=low / 60)  # room for the legend under the curves
        ax.legend(loc="lower right")
    fm = metrics["fixed_momentum"]
    plotting.plot_error_vs_step_size(
        axes[-1],
        arrays["fixed_step_sizes"],
        arrays["fixed_errors"],
        label=f"sgd(η, β={fm['momentum']:g}) vs θ' = -∇L/(1-β)",
        order=fm["order"],
    )
    axes[-1].set_xlabel("learning rate η (t = kη)")
    axes[-1].set_title("fixed β, η → 0 (oscillator)")
    axes[-1].legend()
    paths.append(plotting.save(fig, out_dir / "orders.png"))

    st = metrics["stability"]
    fig, axes = plotting.figure(1, width=6.0, height=3.6)
    names = list(st["schemes"])
    x = np.arange(len(names))
    pred = [st["schemes"][s]["predicted"] for s in names]
    meas = [st["schemes"][s]["measured"] for s in names]
    axes[0].bar(x - 0.2, pred, width=0.4, label="predicted (Schur–Cohn)")
    bars = axes[0].bar(x + 0.2, meas, width=0.4, label=f"measured ({st['steps_per_run']} steps)")
    axes[0].bar_label(bars, labels=[f"{v:.4f}" for v in meas])
    axes[0].set_xticks(x, names, rotation=20)
    axes[0].set_ylabel("largest stable h·√λmax")
    axes[0].set_title(
        f"stability on a quadratic, a = {st['damping']:g}, λmax = {st['lambda_max']:g}"
    )
    axes[0].legend()
    axes[0].grid(True, axis="y", alpha=0.3)
    paths.append(plotting.save(fig, out_dir / "stability.png"))

    dw = metrics["double_well"]
    fig, axes = plotting.figure(2, width=4.8, height=3.6)
    axes[0].plot(arrays["well_x"], arrays["well_loss"], "k")
    axes[0].axvline(dw["barrier_x"], color="0.6", ls=":")
    axes[0].plot(
        [dw["x0"]],
        [float(np.interp(dw["x0"], arrays["well_x"], arrays["well_loss"]))],
        "ro",
        label="start (at rest)",
    )
    axes[0].set_xlabel("x")
    axes[0].set_ylabel("L(x)")
    axes[0].set_title(f"L = (x²-1)² + {dw['tilt']:g}x")
    axes[0].legend()
    ts = arrays["well_ts"]
    axes[1].plot(
        arrays["well_gd_ts"], arrays["well_gd"], "k", label=f"GD, h = {dw['leapfrog_step']:g}"
    )
    for i, a in enumerate(dw["path_dampings"]):
        axes[1].plot(ts, arrays[f"well_hb_{i}"], label=f"heavy ball a = {a:.3f}")
    axes[1].axhline(dw["barrier_x"], color="0.6", ls=":", label="barrier")
    axes[1].set_xlabel("t")
    axes[1].set_ylabel("x(t)")
    axes[1].set_title(
        f"critical damping: flow {dw['critical_damping_flow']:.4f}, "
        f"leapfrog h={dw['leapfrog_step']:g} {dw['critical_damping_leapfrog']:.4f}",
    )
    axes[1].legend()
    axes[1].grid(True, alpha=0.3)
    paths.append(plotting.save(fig, out_dir / "double_well.png"))
    return paths
