"""GD vs gradient flow: orders 1 and 2 (modified flow), stability at 2/λ_max, dL/dt = -|∇L|²."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import flows, lyapunov, plotting, problems


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
    quad_dim: int = 20
    quad_log10_range: tuple[float, float] = (-1.0, 2.0)
    quad_t1: float = 1.0
    quad_steps: tuple[int, ...] = (1000, 2000, 4000, 8000, 16000)
    rosen_t1: float = 0.5
    rosen_steps: tuple[int, ...] = (4000, 8000, 16000, 32000, 64000)
    logistic_samples: int = 512
    logistic_dim: int = 20
    logistic_t1: float = 4.0
    logistic_steps: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    stability_factors: tuple[float, ...] = (0.9, 0.99, 1.01, 1.1)
    stability_steps: int = 20_000
    boundary_grid: int = 64
    lyapunov_points: int = 201
    paths_t1: float = 20.0
    paths_steps: tuple[int, ...] = (20_000, 40_000)


def make_config(quick: bool = False, seed: int = 0) -> Config:
    if not quick:
        return Config(seed=seed)
    return Config(
        seed=seed,
        quick=True,
        quad_dim=8,
        quad_steps=(1000, 2000, 4000, 8000),
        rosen_steps=(4000, 8000, 16000, 32000),
        logistic_samples=128,
        logistic_dim=5,
        logistic_steps=(8, 16, 32, 64),
        stability_steps=20_000,
        boundary_grid=32,
        lyapunov_points=51,
        paths_steps=(20_000,),
    )


def _problems(config: Config) -> dict[str, dynopt.Problem]:
    lo, hi = config.quad_log10_range
    eig = jnp.logspace(lo, hi, config.quad_dim)
    return {
        "quadratic": problems.quadratic(eig, rotate=True, seed=config.seed),
        "rosenbrock": problems.rosenbrock(),
        "logistic": problems.logistic_regression(
            config.logistic_samples, config.logistic_dim, seed=config.seed
        ),
    }


def _orders(config: Config, name: str, problem: dynopt.Problem, t1: float, steps) -> dict:
    hs = t1 / np.asarray(steps, dtype=float)
    gf = dynopt.compare(flows.GradientFlow(), problem, hs, t1)
    mod = dynopt.compare(
        flows.GradientFlow(), problem, hs, t1, reference=flows.ModifiedGradientFlow
    )
    return {
        "step_sizes": hs,
        "err_flow": np.asarray(gf.errors),
        "err_modified": np.asarray(mod.errors),
        "final_err_flow": np.asarray(gf.final_errors),
        "final_err_modified": np.asarray(mod.final_errors),
        "order_flow": float(gf.order),
        "order_modified": float(mod.order),
        "final_order_flow": float(gf.final_order),
        "final_order_modified": float(mod.final_order),
        "solver": gf.solver,
    }


def _stability(config: Config, problem: dynopt.Problem) -> tuple[dict, dict]:
    lam_max = float(np.max(np.linalg.eigvalsh(np.asarray(problem.hessian))))
    boundary = 2.0 / lam_max
    n, every = config.stability_steps, config.stability_steps // 500
    hs = boundary * np.asarray(config.stability_factors)
    curves = dynopt.run(flows.GradientFlow().discretize(jnp.asarray(hs)), problem, n, every=every)
    t_flow = np.linspace(0.0, float(hs.max()) * n, 400)
    flow_loss = jax.vmap(lambda t: problem.loss(problem.flow_solution(t)))(jnp.asarray(t_flow))
    # Bisection grid: one batched run over the boundary region.
    grid = boundary * np.linspace(0.95, 1.05, config.boundary_grid)
    sweep = dynopt.run(flows.GradientFlow().discretize(jnp.asarray(grid)), problem, n, every=n)
    flagged = np.asarray(sweep.diverged)
    grew = ~flagged & (np.asarray(sweep.loss[:, -1]) > np.asarray(sweep.loss[:, 0]))
    unstable = flagged | grew
    largest_stable = float(grid[~unstable].max()) if np.any(~unstable) else float("nan")
    smallest_unstable = float(grid[unstable].min()) if np.any(unstable) else float("nan")
    smallest_flagged = float(grid[flagged].min()) if np.any(flagged) else float("nan")
    metrics = {
        "lambda_max": lam_max,
        "predicted_boundary": boundary,
        "found_boundary_interval": [largest_stable, smallest_unstable],
        "smallest_step_flagged_diverged": smallest_flagged,
        "steps_per_run": n,
        "runs": [
            {
                "step_size": float(h),
                "factor": float(f),
                "diverged_at": int(d),
                "final_loss": float(curves.loss[i, -1]),
            }
            for i, (h, f, d) in enumerate(
                zip(hs, config.stability_factors, np.asarray(curves.diverged_at))
            )
        ],
        "flow_final_loss": float(flow_loss[-1]),
    }
    arrays = {
        "stab_step_sizes": hs,
        "stab_ts": np.asarray(curves.ts),
        "stab_loss": np.asarray(curves.loss),
        "stab_diverged_at": np.asarray(curves.diverged_at),
        "stab_steps": np.asarray(curves.steps),
        "stab_flow_t": t_flow,
        "stab_flow_loss": np.asarray(flow_loss),
        "boundary_grid": grid,
        "boundary_unstable": unstable,
    }
    return metrics, arrays


def _lyapunov(config: Config, problem: dynopt.Problem, t1: float) -> dict:
    ts = jnp.linspace(0.0, t1, config.lyapunov_points)
    ref = dynopt.solve(flows.GradientFlow(), problem, ts)
    measured = lyapunov.loss_rate(ref, problem, ts)
    predicted = -lyapunov.gradient_norm_sq(ref, problem, ts)
    return {
        "ts": np.asarray(ts),
        "measured": np.asarray(measured),
        "predicted": np.asarray(predicted),
        "max_rel_deviation": float(lyapunov.max_relative_deviation(measured, predicted)),
    }


def _rosenbrock_paths(config: Config, problem: dynopt.Problem) -> dict:
    t1 = config.paths_t1
    ref = dynopt.solve(flows.GradientFlow(), problem, jnp.linspace(0.0, t1, 2001))
    out = {"paths_flow": np.asarray(ref.params)}
    for n in config.paths_steps:
        traj = dynopt.run(flows.GradientFlow().discretize(t1 / n), problem, n, every=n // 2000)
        out[f"paths_gd_{n}"] = np.asarray(traj.params)
    xs, ys = np.linspace(-1.5, 1.5, 121), np.linspace(-0.5, 1.5, 101)
    grid = jnp.stack(jnp.meshgrid(jnp.asarray(xs), jnp.asarray(ys)), axis=-1)
    out["contour_x"], out["contour_y"] = xs, ys
    out["contour_loss"] = np.asarray(jax.vmap(jax.vmap(problem.loss))(grid))
    return out


def run(config: Config) -> tuple[dict, dict]:
    probs = _problems(config)
    quad = probs["quadratic"]
    ts = jnp.linspace(0.0, config.quad_t1, 101)
    ref = dynopt.solve(flows.GradientFlow(), quad, ts)
    closed_form_error = float(jnp.max(jnp.abs(ref.params - jax.vmap(quad.flow_solution)(ts))))

    metrics: dict = {"closed_form_max_abs_error": closed_form_error, "problems": {}}
    arrays: dict = {}
    settings = {
        "quadratic": (config.quad_t1, config.quad_steps),
        "rosenbrock": (config.rosen_t1, config.rosen_steps),
        "logistic": (config.logistic_t1, config.logistic_steps),
    }
    for name, (t1, steps) in settings.items():
        res = _orders(config, name, probs[name], t1, steps)
        lya = _lyapunov(config, probs[name], t1)
        metrics["problems"][name] = {
            "name": probs[name].name,
            "t1": t1,
            "order_gd_vs_flow": res["order_flow"],
            "order_gd_vs_modified_flow": res["order_modified"],
            "final_order_gd_vs_flow": res["final_order_flow"],
            "final_order_gd_vs_modified_flow": res["final_order_modified"],
            "reference_solver": res["solver"],
            "lyapunov_max_rel_deviation": lya["max_rel_deviation"],
        }
        for key in ("step_sizes", "err_flow", "err_modified"):
            arrays[f"{name}_{key}"] = res[key]
        for key in ("ts", "measured", "predicted"):
            arrays[f"{name}_lyap_{key}"] = lya[key]
    stab_metrics, stab_arrays = _stability(config, quad)
    metrics["stability"] = stab_metrics
    arrays.update(stab_arrays)
    arrays.update(_rosenbrock_paths(config, probs["rosenbrock"]))
    return metrics, arrays


def plot(metrics: dict, arrays: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    paths = []
    names = list(metrics["problems"])

    fig, axes = plotting.figure(len(names))
    for ax, name in zip(axes, names):
        m = metrics["problems"][name]
        hs = arrays[f"{name}_step_sizes"]
        plotting.plot_error_vs_step_size(
            ax,
            hs,
            arrays[f"{name}_err_flow"],
            label="GD vs gradient flow",
            order=m["order_gd_vs_flow"],
        )
        plotting.plot_error_vs_step_size(
            ax,
            hs,
            arrays[f"{name}_err_modified"],
            label="GD vs modified flow",
            order=m["order_gd_vs_modified_flow"],
            marker="s",
        )
        plotting.plot_slope_guide(
            ax, hs, float(arrays[f"{name}_err_flow"][-1]) * hs.max() / hs.min(), 1.0
        )
        plotting.plot_slope_guide(
            ax, hs, float(arrays[f"{name}_err_modified"][-1]) * (hs.max() / hs.min()) ** 2, 2.0
        )
        ax.set_title(f"{name} (t1 = {m['t1']:g})", fontsize=10)
        ax.legend(fontsize=8)
    paths.append(plotting.save(fig, out_dir / "orders.png"))

    st = metrics["stability"]
    fig, axes = plotting.figure(2, width=5.0)
    curves, diverged = [], []
    for i, run in enumerate(st["runs"]):
        valid = (arrays["stab_diverged_at"][i] < 0) | (
            arrays["stab_steps"][i] < arrays["stab_diverged_at"][i]
        )
        label = f"GD h = {run['factor']:g}·2/λmax" + (
            f" (diverged at step {run['diverged_at']})" if run["diverged_at"] >= 0 else ""
        )
        curves.append((arrays["stab_ts"][i][valid], arrays["stab_loss"][i][valid], label))
        diverged.append(run["diverged_at"] if run["diverged_at"] >= 0 else None)
    curves.append((arrays["stab_flow_t"], arrays["stab_flow_loss"], "gradient flow (closed form)"))
    diverged.append(None)
    plotting.plot_loss_curves(axes[0], curves, diverged_at=diverged)
    axes[0].set_title(f"GD on the quadratic, λmax = {st['lambda_max']:.3g}", fontsize=10)
    axes[0].set_xlim(0.0, 60.0)
    axes[0].legend(fontsize=7)
    grid, unstable = arrays["boundary_grid"], arrays["boundary_unstable"]
    scale = st["predicted_boundary"]
    axes[1].plot(grid / scale, unstable.astype(float), "o", ms=3)
    axes[1].axvline(1.0, color="k", ls="--", label="predicted h = 2/λmax")
    axes[1].set_xlabel("step size h / (2/λmax)")
    axes[1].set_ylabel(f"unstable after {st['steps_per_run']} steps")
    axes[1].set_yticks([0, 1], ["converging", "diverging"])
    axes[1].legend(fontsize=8)
    axes[1].set_title("stability boundary, one batched run", fontsize=10)
    paths.append(plotting.save(fig, out_dir / "stability.png"))

    fig, axes = plotting.figure(len(names))
    for ax, name in zip(axes, names):
        plotting.plot_rate_check(
            ax,
            arrays[f"{name}_lyap_ts"],
            -arrays[f"{name}_lyap_measured"],
            -arrays[f"{name}_lyap_predicted"],
            label="-dL/dt",
        )
        dev = metrics["problems"][name]["lyapunov_max_rel_deviation"]
        ax.set_title(f"{name}: -dL/dt vs |∇L|², max rel dev {dev:.1e}", fontsize=9)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    paths.append(plotting.save(fig, out_dir / "lyapunov.png"))

    fig, axes = plotting.figure(1, width=5.5, height=4.0)
    path_list = [(arrays["paths_flow"], "gradient flow (diffrax)")]
    for key in sorted(k for k in arrays if k.startswith("paths_gd_")):
        n = int(key.rsplit("_", 1)[1])
        path_list.append((arrays[key], f"GD, {n} steps"))
    plotting.plot_contour_paths(
        axes[0], arrays["contour_loss"], arrays["contour_x"], arrays["contour_y"], path_list
    )
    axes[0].plot([1.0], [1.0], "k*", ms=10)
    axes[0].legend(fontsize=8)
    axes[0].set_title("Rosenbrock: GD and gradient flow, t ∈ [0, 20]", fontsize=10)
    paths.append(plotting.save(fig, out_dir / "rosenbrock_paths.png"))
    return paths
