"""NAG and the Nesterov ODE X'' + (r/t)X' + ∇f(X) = 0 (Su, Boyd & Candès 2016, Figure 1 setting)."""

import dataclasses
from pathlib import Path
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import flows, plotting, problems


@dataclasses.dataclass(frozen=True)
class Config:
    """Run card. `python -m experiments run nesterov [--quick]`.

    f(x) = 0.02x₁² + 0.005x₂², x₀ = (1, 1) (Su–Boyd–Candès, Fig. 1). (1) The ODE (r = 3, diffrax
    with the series start) against its Bessel closed form X = 2x₀J₁(√λt)/(√λt) (scipy). (2) NAG with
    momentum (k-1)/(k+2) at s ∈ {1, 0.25, 0.05}: max_k |x_k - X(k√s)| over k√s ≤ t1, and the
    fitted order in √s over s = (t1/N)², N = 300·2^j (expected 1). (3) f - f* for the ODE and NAG
    against the bound 2|x₀ - x*|²/t². (4) r ∈ {2, 3, 4, 5}: closed forms (J_ν, ν = (r-1)/2), the
    bound (r-1)²|x₀-x*|²/(2t²) for r ≥ 3, oscillation and rate. (5) The Lyapunov energy
    t²(f - f*) + 2|X + tX'/2 - x*|² is non-increasing.
    Runtime on 2 CPU cores: quick < 30 s, full < 3 min. Headline: ODE vs closed form ≤ 1e-9;
    deviations 0.154, 0.079, 0.036 for s = 1, 0.25, 0.05 (order ≈ 1.0 in √s); the bound holds with
    max ratio < 1 for r = 3, 4, 5.
    """

    seed: int = 0
    quick: bool = False
    eigenvalues: tuple[float, float] = (0.04, 0.01)
    x0: tuple[float, float] = (1.0, 1.0)
    t1: float = 300.0
    sbc_steps: tuple[float, ...] = (1.0, 0.25, 0.05)
    order_num_steps: tuple[int, ...] = (300, 600, 1200, 2400, 4800)
    rs: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0)
    num_points: int = 3001

    QUICK: ClassVar[dict] = dict(
        order_num_steps=(300, 600, 1200, 2400),
        num_points=1001,
    )


closed_form = flows.bessel_solution  # X(t) on λ/2 x² (library closed form)


def _closed_form_2d(ts, config: Config, r: float) -> np.ndarray:
    return closed_form(np.asarray(ts), np.asarray(config.x0), np.asarray(config.eigenvalues), r)


@eqx.filter_jit
def _evaluate_states(interpolation, ts):
    return jax.vmap(interpolation.evaluate)(ts)


def run(config: Config) -> tuple[dict, dict]:
    lam = jnp.asarray(config.eigenvalues)
    problem = problems.quadratic(lam, params0=jnp.asarray(config.x0), name="sbc_quadratic")
    dist0_sq = float(jnp.sum(jnp.asarray(config.x0) ** 2))
    ts = jnp.linspace(0.0, config.t1, config.num_points)
    metrics: dict = {"t1": config.t1, "eigenvalues": list(config.eigenvalues)}
    arrays: dict = {"ts": np.asarray(ts)}

    # (4) r-sweep (includes r = 3): solves, closed forms, bounds.
    refs, sweep = {}, {}
    for r in config.rs:
        flow = flows.NesterovODE(r)
        ref = dynopt.solve(flow, problem, ts)
        refs[r] = ref
        exact = _closed_form_2d(ts, config, r)
        gap = np.asarray(jax.vmap(problem.loss)(ref.params))
        bound = np.asarray(flow.rate_bound(ts[1:], dist0_sq))
        sweep[f"r={r:g}"] = {
            "closed_form_max_abs_error": float(np.max(np.abs(np.asarray(ref.params) - exact))),
            "max_gap_over_bound": float(np.max(gap[1:] / bound)) if r >= 3 else None,
            "final_gap": float(gap[-1]),
            "solver": ref.solver,
        }
        arrays[f"gap_r{r:g}"] = gap
        arrays[f"x1_r{r:g}"] = np.asarray(ref.params[:, 0])
    metrics["r_sweep"] = sweep

    flow = flows.NesterovODE(3.0)
    ref = refs[3.0]
    # (5) Lyapunov energy along the dense solution.
    states = _evaluate_states(ref.interpolation, ts)
    energy = np.asarray(jax.vmap(lambda t, s: flow.lyapunov_energy(t, s, problem))(ts, states))
    metrics["lyapunov"] = {
        "energy_0": float(energy[0]),
        "max_relative_increase": float(np.max(np.diff(energy)) / energy[0]),
    }
    arrays["energy"] = energy

    # (2) the SBC step sizes: one batched NAG run, each s cut at k sqrt(s) <= t1.
    s = np.asarray(config.sbc_steps)
    n_max = int(np.floor(config.t1 / np.sqrt(s.min())))
    nag_runs = dynopt.run(flow.discretize(jnp.asarray(s)), problem, n_max)
    # X(k sqrt(s)) for every run in one call (times past t1 are clipped, then cut off).
    tk_all = np.minimum(np.arange(n_max + 1)[None, :] * np.sqrt(s)[:, None], config.t1)
    xref_all = np.asarray(
        _evaluate_states(ref.interpolation, jnp.asarray(tk_all.ravel()))[0]
    ).reshape(s.size, n_max + 1, -1)
    deviations = []
    for i, si in enumerate(s):
        n = int(np.floor(config.t1 / np.sqrt(si) + 1e-9))
        tk = np.arange(n + 1) * np.sqrt(si)
        xk = np.asarray(nag_runs.params[i, : n + 1])
        xref = xref_all[i, : n + 1]
        deviations.append(float(np.max(np.linalg.norm(xk - xref, axis=1))))
        arrays[f"nag_t_s{i}"] = tk
        arrays[f"nag_x1_s{i}"] = xk[:, 0]
        arrays[f"nag_gap_s{i}"] = np.asarray(jax.vmap(problem.loss)(jnp.asarray(xk)))
    metrics["sbc"] = {"step_sizes": s.tolist(), "max_deviation": deviations}

    # Order in sqrt(s): s = (t1/N)^2, so that t1 is a whole number of steps.
    s_order = (config.t1 / np.asarray(config.order_num_steps, dtype=float)) ** 2
    comp = dynopt.compare(flow, problem, s_order, config.t1)
    # compare fits log e against log dt, and NAG's time step is dt = sqrt(s).
    metrics["order"] = {
        "step_sizes": s_order.tolist(),
        "max_deviation": np.asarray(comp.errors).tolist(),
        "order_in_sqrt_s": float(comp.order),
        "solver": comp.solver,
    }
    arrays["order_sqrt_s"] = np.sqrt(s_order)
    arrays["order_errors"] = np.asarray(comp.errors)
    arrays["gap_bound"] = np.concatenate([[np.inf], np.asarray(flow.rate_bound(ts[1:], dist0_sq))])
    return metrics, arrays


def plot(metrics: dict, arrays: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    paths = []
    ts = arrays["ts"]
    sbc = metrics["sbc"]
    fig, axes = plotting.figure(3, width=4.6, height=3.8)
    axes[0].plot(ts, arrays["x1_r3"], "k", lw=2, alpha=0.5, label="ODE r = 3")
    for i, s in enumerate(sbc["step_sizes"]):
        axes[0].plot(
            arrays[f"nag_t_s{i}"],
            arrays[f"nag_x1_s{i}"],
            ".",
            ms=2.5,
            label=f"NAG s = {s:g} (max dev {sbc['max_deviation'][i]:.3f})",
        )
    axes[0].set_xlabel("t = k√s")
    axes[0].set_ylabel("x₁")
    axes[0].set_title("NAG iterates vs the Nesterov ODE")
    axes[0].legend()
    axes[0].grid(True, alpha=0.3)

    curves = [(ts, arrays["gap_r3"], "ODE r = 3")]
    for i, s in enumerate(sbc["step_sizes"]):
        curves.append((arrays[f"nag_t_s{i}"], arrays[f"nag_gap_s{i}"], f"NAG s = {s:g}"))
    plotting.plot_loss_curves(axes[1], curves)
    axes[1].loglog(ts[1:], arrays["gap_bound"][1:], "k--", label="bound 2|x₀-x*|²/t²")
    axes[1].set_ylim(1e-8, 1e1)
    axes[1].set_xlim(1.0, ts[-1])
    axes[1].set_ylabel("f - f*")
    axes[1].set_title("f - f* with the O(1/t²) bound")
    axes[1].legend()

    od = metrics["order"]
    plotting.plot_error_vs_step_size(
        axes[2],
        arrays["order_sqrt_s"],
        arrays["order_errors"],
        label="max_k |x_k - X(k√s)|",
        order=od["order_in_sqrt_s"],
    )
    plotting.plot_slope_guide(
        axes[2],
        arrays["order_sqrt_s"],
        float(arrays["order_errors"][0]),
        1.0,
    )
    axes[2].set_xlabel("√s")
    axes[2].set_xticks(arrays["order_sqrt_s"], [f"{v:.3g}" for v in arrays["order_sqrt_s"]])
    axes[2].set_title(f"deviation over t ≤ {metrics['t1']:g}, order in √s")
    axes[2].legend()
    paths.append(plotting.save(fig, out_dir / "sbc.png"))

    fig, axes = plotting.figure(3, width=4.6, height=3.8)
    for key in metrics["r_sweep"]:
        r = key.split("=")[1]
        axes[0].plot(ts, arrays[f"x1_r{r}"], label=key)
        axes[1].loglog(ts[1:], arrays[f"gap_r{r}"][1:], label=key)
    axes[0].set_xlabel("t")
    axes[0].set_ylabel("x₁(t)")
    axes[0].set_title("r-sweep: oscillation of X(t)")
    axes[0].legend()
    axes[0].grid(True, alpha=0.3)
    axes[1].loglog(ts[1:], arrays["gap_bound"][1:], "k--", label="2|x₀-x*|²/t² (r = 3)")
    axes[1].set_ylim(1e-10, 1e1)
    axes[1].set_xlabel("t")
    axes[1].set_ylabel("f - f*")
    axes[1].set_title("r-sweep: rates")
    axes[1].legend()
    axes[1].grid(True, which="both", alpha=0.3)
    lya = metrics["lyapunov"]
    axes[2].plot(ts, arrays["energy"], label="E = t²(f-f*) + 2|X + tX'/2 - x*|²")
    axes[2].plot(ts, ts**2 * arrays["gap_r3"], label="t²(f - f*)")
    axes[2].set_xlabel("t")
    axes[2].set_title(f"Lyapunov energy (r = 3), max ΔE/E₀ = {lya['max_relative_increase']:.1e}")
    axes[2].legend()
    axes[2].grid(True, alpha=0.3)
    paths.append(plotting.save(fig, out_dir / "r_sweep.png"))
    return paths
