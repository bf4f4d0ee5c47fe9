"""RMSprop and Adam against their flows: orders, the κ → ∞ sign limit, step lengths, directions."""

import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.ticker import NullFormatter

import dynopt
from dynopt import flows, plotting, problems

from . import _post3 as post3


@dataclasses.dataclass(frozen=True)
class Config:
    """Run card. `python -m experiments run adaptive [--quick]`.

    (1) Orders: optax.rmsprop (λ = 1-κh) and optax.adam (βᵢ = 1-aᵢh) against RMSPropFlow(κ=2)
    and AdamFlow(a1=1, a2=5) on the quadratic diag(1, 10) from (1, 1) and on Rosenbrock from
    (-1.2, 1), for the RMSprop start G0 = 0 (optax's default) and G0 = g0² scale. (2) κ → ∞:
    the RMSprop flow approaches the sign-like flow -g/√(g²+ε) (= SignFlow(√ε)) as O(1/κ).
    (3) SignFlow's regularization width w against the exact (Filippov) sign flow: O(w).
    (4) RMSprop's per-step displacement |Δθᵢ|/γ (post 2's error-control reading) on Rosenbrock.
    (5) Coordinate vs global normalization on the quadratic: the global flow keeps the
    gradient-flow path, the coordinate flow turns it. (6) Post 3's 1-D Polyak example.
    Runtime on 2 CPU cores: quick < 30 s, full < 2 min. Headline: orders 1.0 (Adam; RMSprop with
    G0 ~ g0²) and ≈ 0.5 for RMSprop from G0 = 0 with small ε; κ-limit slope -1; width slope 1.
    """

    seed: int = 0
    quick: bool = False
    kappa: float = 2.0
    eps: float = 1e-8
    a1: float = 1.0
    a2: float = 5.0
    order_t1: float = 1.0
    order_steps: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
    order_problems: tuple[str, ...] = ("quadratic", "rosenbrock")
    order_cases: tuple[str, ...] = ("rmsprop_G0_zero", "rmsprop_G0_g0sq", "adam")
    limit_eps: float = 1e-2
    limit_kappas: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
    limit_fit_from: float = 300.0
    limit_t1: float = 1.0
    widths: tuple[float, ...] = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
    hist_gamma: float = 1e-3
    hist_decay: float = 0.99
    hist_steps: int = 20_000
    paths_eigenvalues: tuple[float, float] = (1.0, 25.0)
    paths_kappa: float = 10.0
    paths_t1: float = 3.0
    polyak_M: float = 1000.0
    polyak_h: float = 0.01
    polyak_steps: int = 2500

    QUICK: ClassVar[dict] = dict(
        order_steps=(64, 128, 256, 512),
        order_problems=("quadratic",),
        order_cases=("rmsprop_G0_g0sq", "adam"),
        limit_kappas=(100.0, 300.0, 1000.0, 3000.0),
        widths=(1e-1, 1e-2, 1e-3),
        hist_steps=5000,
    )


def _quadratic(config: Config) -> dynopt.Problem:
    return problems.quadratic(jnp.array([1.0, 10.0]), params0=jnp.array([1.0, 1.0]))


def _orders(config: Config) -> tuple[dict, dict]:
    probs = {"quadratic": _quadratic(config), "rosenbrock": problems.rosenbrock()}
    probs = {k: probs[k] for k in config.order_problems}
    hs = config.order_t1 / np.asarray(config.order_steps, dtype=float)
    metrics, arrays = {}, {"order_step_sizes": hs}
    for name, prob in probs.items():
        g0sq = np.asarray(prob.grad(prob.params0)) ** 2
        G0 = float(np.exp(np.mean(np.log(g0sq))))  # a scalar G0 on the scale of g0²
        cases = {
            "rmsprop_G0_zero": flows.RMSPropFlow(config.kappa, config.eps),
            "rmsprop_G0_g0sq": flows.RMSPropFlow(config.kappa, config.eps, initial_scale=G0),
            "adam": flows.AdamFlow(config.a1, config.a2, config.eps),
        }
        metrics[name] = {"G0": G0}
        for case in config.order_cases:
            flow = cases[case]
            cmp = dynopt.compare(flow, prob, hs, config.order_t1)
            metrics[name][f"order_{case}"] = float(cmp.order)
            metrics[name][f"final_order_{case}"] = float(cmp.final_order)
            arrays[f"order_{name}_{case}"] = np.asarray(cmp.errors)
    return metrics, arrays


def _limits(config: Config) -> tuple[dict, dict]:
    prob = _quadratic(config)
    ts = jnp.linspace(0.0, config.limit_t1, 101)
    sign = dynopt.solve(flows.SignFlow(width=jnp.sqrt(config.limit_eps)), prob, ts).params
    errs = []
    for kappa in config.limit_kappas:  # array hyper-parameters: one compiled solve
        flow = flows.RMSPropFlow(jnp.asarray(kappa), config.limit_eps)
        errs.append(float(jnp.max(jnp.abs(dynopt.solve(flow, prob, ts).params - sign))))
    kappas = np.asarray(config.limit_kappas)
    # Sign flow regularization: diagonal quadratic, exact Filippov solution known.
    x0 = np.asarray(prob.params0)
    t = np.asarray(ts)
    exact = np.sign(x0) * np.maximum(np.abs(x0) - t[:, None], 0.0)
    werrs = []
    for w in config.widths:
        ref = dynopt.solve(flows.SignFlow(width=jnp.asarray(w)), prob, ts, max_steps=65_536)
        werrs.append(float(np.max(np.abs(np.asarray(ref.params) - exact))))
    widths = np.asarray(config.widths)
    # O(1/κ) needs 1/κ below the sign-like flow's fastest time scale √ε/λ_max = 0.01.
    fit = kappas >= config.limit_fit_from
    metrics = {
        "kappa_slope": float(
            dynopt.fit_order(jnp.asarray(kappas[fit]), jnp.asarray(np.asarray(errs)[fit]))
        ),
        "kappa_fit_from": config.limit_fit_from,
        "kappa_errors": errs,
        "width_slope": float(dynopt.fit_order(jnp.asarray(widths), jnp.asarray(werrs))),
        "width_error_over_width": (np.asarray(werrs) / widths).tolist(),
    }
    arrays = {
        "limit_kappas": kappas,
        "limit_errors": np.asarray(errs),
        "widths": widths,
        "width_errors": np.asarray(werrs),
    }
    return metrics, arrays


def _displacements(config: Config) -> tuple[dict, dict]:
    prob = problems.rosenbrock()
    flow, dt = flows.RMSPropFlow.from_hyperparams(config.hist_gamma, config.hist_decay, config.eps)
    traj = dynopt.run(flow.discretize(dt), prob, config.hist_steps)
    ratio = np.abs(np.diff(np.asarray(traj.params), axis=0)).ravel() / config.hist_gamma
    q = np.quantile(ratio, [0.05, 0.5, 0.95])
    metrics = {
        "gamma": config.hist_gamma,
        "decay": config.hist_decay,
        "kappa": float(flow.kappa),
        "quantiles_5_50_95": q.tolist(),
        "fraction_within_half_to_twice": float(np.mean((ratio > 0.5) & (ratio < 2.0))),
        "max_ratio": float(ratio.max()),
        "final_loss": float(traj.loss[-1]),
    }
    return metrics, {"hist_ratio": ratio}


def _angle_deg(a, b):
    cos = np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Euclidean distance of each point to the polyline through `line`'s rows."""
    a, b = line[:-1], line[1:]
    ab = b - a
    rel = points[:, None, :] - a[None]
    s = np.clip(np.sum(rel * ab, -1) / np.maximum(np.sum(ab * ab, -1), 1e-300), 0.0, 1.0)
    return np.min(np.linalg.norm(rel - s[..., None] * ab, axis=-1), axis=1)


def _paths(config: Config) -> tuple[dict, dict]:
    prob = problems.quadratic(jnp.asarray(config.paths_eigenvalues), params0=jnp.array([1.0, 1.0]))
    ts = jnp.linspace(0.0, config.paths_t1, 601)
    g0sq = float(jnp.mean(prob.grad(prob.params0) ** 2))
    t_gf = jnp.concatenate([jnp.zeros(1), jnp.geomspace(1e-5, 30.0, 4000)])
    gf = np.asarray(jax.vmap(prob.flow_solution)(t_gf))  # closed form
    metrics, arrays = {}, {"paths_gradient_flow": gf}
    for norm in ("coordinate", "global"):
        flow_cls = {"coordinate": flows.RMSPropFlow, "global": flows.GlobalRMSPropFlow}[norm]
        flow = flow_cls(config.paths_kappa, config.eps, initial_scale=g0sq)
        ref = dynopt.solve(flow, prob, ts)
        path = np.asarray(ref.params)
        grads = np.asarray(jax.vmap(prob.grad)(ref.params))
        states = jax.vmap(ref.interpolation.evaluate)(ts)
        vel = np.asarray(jax.vmap(lambda s, f=flow: f.vector_field(0.0, s, prob).params)(states))
        angle = _angle_deg(vel, -grads)
        dist = _distance_to_polyline(path, gf)
        metrics[norm] = {
            "max_angle_to_minus_grad_deg": float(np.nanmax(angle)),
            "max_distance_to_gradient_flow_path": float(dist.max()),
            "final_distance_to_minimizer": float(np.linalg.norm(path[-1])),
        }
        arrays[f"paths_{norm}_flow"] = path
        arrays[f"paths_{norm}_angle"] = angle
    h = 0.01
    flow = flows.RMSPropFlow(config.paths_kappa, config.eps, initial_scale=g0sq)
    run = dynopt.run(flow.discretize(h), prob, round(config.paths_t1 / h))
    arrays["paths_coordinate_run"] = np.asarray(run.params)
    arrays["paths_ts"] = np.asarray(ts)
    xs, ys = np.linspace(-0.2, 1.1, 131), np.linspace(-0.2, 1.1, 131)
    grid = jnp.stack(jnp.meshgrid(jnp.asarray(xs), jnp.asarray(ys)), axis=-1)
    arrays["contour_x"], arrays["contour_y"] = xs, ys
    arrays["contour_loss"] = np.asarray(jax.vmap(jax.vmap(prob.loss))(grid))
    return metrics, arrays


def _polyak(config: Config) -> tuple[dict, dict]:
    return post3.polyak_vs_gd(config.polyak_M, config.polyak_h, config.polyak_steps)


SECTIONS = {
    "orders": _orders,
    "limits": _limits,
    "displacement": _displacements,
    "normalization": _paths,
    "polyak_post3": _polyak,
}


_CASES = {
    "rmsprop_G0_zero": ("RMSprop, G0 = 0", "o"),
    "rmsprop_G0_g0sq": ("RMSprop, G0 ~ g0²", "s"),
    "adam": ("Adam", "^"),
}


def plot(metrics: dict, arrays: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    paths = []
    hs = arrays["order_step_sizes"]
    names = list(metrics["orders"])
    fig, axes = plotting.figure(len(names))
    for ax, name in zip(axes, names):
        for case, (label, marker) in _CASES.items():
            if f"order_{name}_{case}" not in arrays:
                continue
            plotting.plot_error_vs_step_size(
                ax,
                hs,
                arrays[f"order_{name}_{case}"],
                label=label,
                order=metrics["orders"][name][f"order_{case}"],
                marker=marker,
            )
        anchor = float(arrays[f"order_{name}_adam"][-1]) * hs.max() / hs.min()
        plotting.plot_slope_guide(ax, hs, anchor, 1.0)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{name}: optax vs its flow")
        ax.legend()
    paths.append(plotting.save(fig, out_dir / "orders.png"))

    lim = metrics["limits"]
    fig, axes = plotting.figure(2)
    axes[0].loglog(arrays["limit_kappas"], arrays["limit_errors"], "o-", label="measured")
    k = arrays["limit_kappas"]
    axes[0].loglog(k, arrays["limit_errors"][0] * k[0] / k, "k--", lw=0.8, label="slope -1")
    axes[0].set_xlabel("κ")
    axes[0].set_ylabel("max |θ_RMSprop-flow − θ_sign-like| on [0, 1]")
    axes[0].set_title(
        f"κ → ∞: sign-like limit (slope {lim['kappa_slope']:.2f} for κ ≥ "
        f"{lim['kappa_fit_from']:g})",
    )
    axes[0].legend()
    axes[0].grid(True, which="both", alpha=0.3)
    w = arrays["widths"]
    axes[1].loglog(w, arrays["width_errors"], "o-", label="regularized vs exact sign flow")
    axes[1].loglog(w, w, "k--", lw=0.8, label="error = w")
    axes[1].set_xlabel("width w of sign_w(g) = g/√(g²+w²)")
    axes[1].set_ylabel("max error on [0, 1]")
    axes[1].set_title(f"SignFlow reference: O(w) (slope {lim['width_slope']:.2f})")
    axes[1].legend()
    axes[1].grid(True, which="both", alpha=0.3)
    paths.append(plotting.save(fig, out_dir / "limits.png"))

    dis = metrics["displacement"]
    fig, axes = plotting.figure(1, width=5.8)
    ratio = arrays["hist_ratio"]
    bins = np.geomspace(max(ratio[ratio > 0].min(), 1e-4), ratio.max() * 1.01, 60)
    axes[0].hist(ratio[ratio > 0], bins=bins)
    axes[0].set_xscale("log")
    axes[0].axvline(1.0, color="k", ls="--", label="|Δθᵢ| = γ")
    axes[0].set_xlabel("per-step displacement |Δθᵢ| / γ")
    axes[0].set_ylabel("count (steps × coordinates)")
    q = dis["quantiles_5_50_95"]
    axes[0].set_title(
        f"RMSprop on Rosenbrock, γ = {dis['gamma']:g}, λ = {dis['decay']:g}\n"
        f"median {q[1]:.2f}, 90% in [{q[0]:.2f}, {q[2]:.2f}], max {dis['max_ratio']:.1f} "
        "= 1/√(1−λ) (first step)",
    )
    axes[0].legend()
    paths.append(plotting.save(fig, out_dir / "displacement_hist.png"))

    nm = metrics["normalization"]
    fig, axes = plotting.figure(2, width=4.8, height=4.0)
    plotting.plot_contour_paths(
        axes[0],
        arrays["contour_loss"],
        arrays["contour_x"],
        arrays["contour_y"],
        [
            (arrays["paths_global_flow"], "RMSprop flow, global (eq. 14)"),
            (arrays["paths_coordinate_flow"], "RMSprop flow, per coordinate (eq. 15)"),
            (arrays["paths_coordinate_run"], "optax.rmsprop, h = 0.01"),
        ],
    )
    gf = arrays["paths_gradient_flow"]
    axes[0].plot(gf[:, 0], gf[:, 1], "k--", lw=1, label="gradient flow (closed form)")
    axes[0].plot([0.0], [0.0], "k*", ms=10)
    axes[0].set_title("quadratic diag(1, 25): direction change")
    axes[0].legend()
    for norm in ("global", "coordinate"):
        axes[1].plot(
            arrays["paths_ts"],
            arrays[f"paths_{norm}_angle"],
            label=f"{norm} (max {nm[norm]['max_angle_to_minus_grad_deg']:.1f}°)",
        )
    axes[1].set_xlabel("t")
    axes[1].set_ylabel("angle between θ' and −∇L (degrees)")
    axes[1].set_title("update direction vs steepest descent")
    axes[1].legend()
    axes[1].grid(True, alpha=0.3)
    paths.append(plotting.save(fig, out_dir / "normalization_paths.png"))

    fig = post3.figure(metrics["polyak_post3"], arrays)  # shared with the other experiment
    paths.append(plotting.save(fig, out_dir / "polyak_post3.png"))
    return paths
