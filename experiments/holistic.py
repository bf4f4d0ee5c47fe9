"""Post 3's holistic view, measured: L is a Lyapunov function for every flow, RMSprop never
stops, the Polyak flow decays as e^{-t}, and post 3's 1-D truncated-Polyak example."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import flows, lyapunov, maps, plotting, problems

from . import _post3 as post3
from ._card import Array, by_mode
from ._headline import Headline


# The flows whose dL/dt identity is checked, with their figure labels.
LABELS = {
    "gradient": "gradient flow",
    "sign": "sign flow (w = 0.01)",
    "rmsprop": "RMSprop flow",
    "rmsprop_global": "RMSprop flow, global",
    "adam": "Adam flow",
    "polyak": "Polyak flow",
    "polyak_truncated": "Polyak, M = 0.1",
    "diagonal": "diagonal P = 1/(1+θ²)",
    "newton": "Newton P = H⁻¹",
}


@dataclasses.dataclass(frozen=True)
class Config(post3.Config):
    """Run card. `python -m experiments run holistic [--quick]`.

    (1) Lyapunov: for GradientFlow, SignFlow(w), RMSPropFlow, AdamFlow, PolyakFlow (plain and
    truncated) and PreconditionedFlow (diagonal, Newton) on Rosenbrock from (-1.2, 1), dL/dt
    measured on the diffrax reference (`lyapunov.loss_rate`) against the identity the flow
    predicts (`lyapunov.predicted_rate`), max relative deviation on [0, t1].
    (2) RMSprop never stops: optax.rmsprop (λ = 0.9, via RMSPropFlow.from_hyperparams) on
    diag(1, 10) from (1, 1); late-time RMS distance to θ* vs γ (one vmapped run) and vs ε at fixed
    γ (another). Theory: the iterate locks onto the period-2 orbit θᵢ = ±aᵢ with
    G = λᵢ²aᵢ² and γλᵢ/√(G+ε) = 2, i.e. aᵢ = √((γ/2)² − ε/λᵢ²)₊: slope 1 in γ (a = γ/2 for
    ε → 0), and coordinate i converges (GD with step γ/√ε) once ε > εᵢ* = (γλᵢ/2)².
    (3) Polyak flow: L(t)/L(0) against e^{-t} on Rosenbrock. (4) Post 3's 1-D example
    (`experiments/_post3.py`, shared with the adaptive experiment).
    Runtime on 2 CPU cores: quick ≈ 19 s (4 of the 9 flows), full ≈ 43 s.
    Headline (full): Lyapunov deviations 3e-14 (gradient) to 1.9e-7 (Polyak), all rates < 0
    except Adam's (dL/dt up to +58: L is not a Lyapunov function for Adam); plateau slope
    1.00001 in γ, plateau = γ/√2 (±γ/2 per coordinate); crossover ε* = (γλ_max/2)² = 2.5e-3
    found in [2.2e-3, 3.2e-3] (λ = 1: 2.5e-5 in [2.2e-5, 3.2e-5]); GD-regime contraction
    |1 − γλᵢ/√ε| to 2e-7; Polyak max |L/(L0 e^{-t}) − 1| = 4e-9 on [0, 12]; post 3: Polyak
    escapes the x = 3 basin (barrier x = 1.843) at t = 2.72 and ends at 0.40693 (global min),
    GD ends at x = 3.
    """

    quick: bool = False
    lyap_t1: float = 3.0
    lyap_points: int = by_mode(301, quick=101)
    sign_width: float = 1e-2
    rms_eigenvalues: tuple[float, float] = (1.0, 10.0)
    rms_decay: float = 0.9
    rms_gammas: tuple[float, ...] = by_mode(
        (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1), quick=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    )
    rms_gamma_eps: float = 1e-12
    rms_eps_gamma: float = 1e-2
    rms_eps_range: tuple[float, float, int] = by_mode((1e-8, 1.0, 49), quick=(1e-8, 1.0, 25))
    rms_steps: int = by_mode(30_000, quick=6000)
    rms_window: int = by_mode(3000, quick=1000)
    lyap_flows: tuple[str, ...] = by_mode(
        tuple(LABELS), quick=("gradient", "rmsprop", "adam", "polyak")
    )
    polyak_t1: float = 12.0


@dataclasses.dataclass
class Rate:
    """One flow on Rosenbrock: measured dL/dt against the identity it predicts."""

    max_relative_deviation: float
    max_predicted_rate: float  # <= 0: L is a Lyapunov function
    loss_at_t1: float
    ts: Array
    measured: Array
    predicted: Array


@dataclasses.dataclass
class Plateau:
    """optax.rmsprop's late-time distance to θ* against γ and against ε."""

    plateau_slope_in_gamma: float
    # `dynopt.assess_order` on the plateaus in γ: the slope is an order only when "asymptotic"
    plateau_verdict: str
    plateau_over_gamma: list[float]
    plateau_vs_gamma_max_rel_error_to_theory: float
    crossover_total_predicted: float
    crossover_total_found: list[float]
    crossovers_per_coordinate: list[dict]
    plateau_vs_eps_max_abs_error_to_theory_over_gamma: float
    gd_regime_contraction_max_abs_error: float
    contraction_checked: int
    contraction_of: int
    gammas: Array
    plateau_gamma: Array
    plateau_gamma_pred: Array
    eps: Array
    plateau_eps: Array
    plateau_eps_pred: Array
    eps_coordinates: Array  # (eps, coordinate)


@dataclasses.dataclass
class PolyakDecay:
    L0: float
    max_abs_deviation_of_L_over_L0: float
    max_relative_deviation_pointwise: float
    ts: Array
    ratio: Array  # L(t)/L(0)


def _lyapunov_flow(name: str, config: Config, prob: dynopt.Problem) -> flows.AbstractFlow:
    """The flow `name` of `LABELS`; built on demand (the preconditioned ones check themselves on
    `prob`, work a quick run that skips them need not do)."""
    g0sq = float(jnp.mean(prob.grad(prob.params0) ** 2))
    build = {
        "gradient": lambda: flows.GradientFlow(),
        "sign": lambda: flows.SignFlow(width=config.sign_width),
        "rmsprop": lambda: flows.RMSPropFlow(2.0, 1e-8, initial_scale=g0sq),
        "rmsprop_global": lambda: flows.GlobalRMSPropFlow(2.0, 1e-8, initial_scale=g0sq),
        "adam": lambda: flows.AdamFlow(1.0, 5.0, 1e-8),
        "polyak": lambda: flows.PolyakFlow(),
        "polyak_truncated": lambda: flows.PolyakFlow(M=0.1),
        "diagonal": lambda: flows.PreconditionedFlow(  # d(θ) = 1/(1 + θ²) > 0, state-dependent
            flows.DiagonalPreconditioner(lambda p: 1.0 / (1.0 + p * p)), check_on=prob
        ),
        "newton": lambda: flows.PreconditionedFlow(flows.NewtonPreconditioner(), check_on=prob),
    }
    return build[name]()


def lyapunov_rates(config: Config) -> dict[str, Rate]:
    prob = problems.rosenbrock()
    ts = jnp.linspace(0.0, config.lyap_t1, config.lyap_points)
    ts_polyak = jnp.linspace(0.0, config.polyak_t1, 241)
    out = {}
    for name in config.lyap_flows:
        flow = _lyapunov_flow(name, config, prob)
        solver = "implicit" if name == "sign" else None
        # The Polyak reference runs to polyak_t1 (it also serves the L(t) = L(0)e^{-t} check).
        horizon = ts_polyak if name == "polyak" else ts
        ref = dynopt.solve(flow, prob, horizon, solver=solver, max_steps=65_536)
        measured, predicted = (np.asarray(r) for r in lyapunov.rates(ref, prob, ts))
        deviation = float(lyapunov.max_relative_deviation(measured, predicted))
        loss_t1 = float(prob.loss(ref.evaluate(ts[-1])))
        out[name] = Rate(
            deviation, float(predicted.max()), loss_t1, np.asarray(ts), measured, predicted
        )
    return out


def _rmsprop_runs(config: Config, prob, gamma, eps):
    flow, dt = flows.RMSPropFlow.from_hyperparams(gamma, config.rms_decay, eps)
    with jax.numpy_dtype_promotion("standard"):  # optax's rmsprop internals are not strict-clean
        traj = dynopt.run(flow.discretize(dt), prob, config.rms_steps)
    p = np.asarray(traj.params)  # (batch, steps + 1, 2); θ* = 0
    late = p[:, -config.rms_window :]
    return p, np.sqrt(np.mean(np.sum(late**2, -1), -1))


def rmsprop_plateau(config: Config) -> Plateau:
    lams = np.asarray(config.rms_eigenvalues)
    prob = problems.quadratic(jnp.asarray(lams), params0=jnp.ones(2))
    # vs γ: one vmapped run over a 1-D array of learning rates.
    gammas = np.asarray(config.rms_gammas)
    _, plateau_g = _rmsprop_runs(config, prob, jnp.asarray(gammas), config.rms_gamma_eps)
    slope = float(dynopt.fit_order(jnp.asarray(gammas), jnp.asarray(plateau_g)))
    pred_g = maps.rmsprop_orbit_distance(gammas, np.full_like(gammas, config.rms_gamma_eps), lams)
    # vs ε at fixed γ: one vmapped run over a 1-D array of eps.
    gamma = config.rms_eps_gamma
    lo, hi, n = config.rms_eps_range
    epss = np.geomspace(lo, hi, n)
    p, plateau_e = _rmsprop_runs(config, prob, gamma, jnp.asarray(epss))
    pred_e = maps.rmsprop_orbit_distance(np.full_like(epss, gamma), epss, lams)
    # Crossovers: the largest ε whose coordinate i still chatters, and the next sweep point.
    late_abs = np.sqrt(np.mean(p[:, -config.rms_window :] ** 2, 1))  # (n, 2) per coordinate
    floor = 1e-6 * gamma  # "stopped": 6 decades under the ε → 0 plateau
    crossovers = []
    for i, lam in enumerate(lams):
        alive = np.flatnonzero(late_abs[:, i] > floor)
        last = alive.max() if alive.size else -1
        bracket = [float(epss[last]) if last >= 0 else 0.0, float(epss[min(last + 1, n - 1)])]
        predicted = maps.rmsprop_crossover_eps(gamma, lam)
        crossovers.append({"lambda": float(lam), "predicted": predicted, "found": bracket})
    # GD regime: per-step contraction |θᵢ,k+1/θᵢ,k| vs |1 − γλᵢ/√ε| (G has decayed by step 500).
    k0, k1 = 500, 600
    gd = epss > 2 * maps.rmsprop_crossover_eps(gamma, lams.max())
    a0, a1 = np.abs(p[gd, k0]), np.abs(p[gd, k1])
    predicted_c = np.abs(1 - gamma * lams / np.sqrt(epss[gd, None]))
    # Fast-contracting coordinates (c < 0.5) reach round-off/underflow before step k1: skip them.
    ok = (predicted_c >= 0.5) & (a0 > 0)
    measured_c = (a1 / np.where(ok, a0, 1.0)) ** (1 / (k1 - k0))
    contraction_err = float(np.max(np.abs(measured_c - predicted_c)[ok]))
    return Plateau(
        plateau_slope_in_gamma=slope,
        plateau_verdict=dynopt.assess_order(gammas, np.asarray(plateau_g)).verdict,
        plateau_over_gamma=(plateau_g / gammas).tolist(),
        plateau_vs_gamma_max_rel_error_to_theory=float(np.max(np.abs(plateau_g / pred_g - 1))),
        crossover_total_predicted=float(maps.rmsprop_crossover_eps(gamma, lams.max())),
        crossover_total_found=crossovers[int(np.argmax(lams))]["found"],
        crossovers_per_coordinate=crossovers,
        plateau_vs_eps_max_abs_error_to_theory_over_gamma=float(
            np.max(np.abs(plateau_e - pred_e)) / gamma
        ),
        gd_regime_contraction_max_abs_error=contraction_err,
        contraction_checked=int(ok.sum()), contraction_of=int(ok.size), gammas=gammas,
        plateau_gamma=plateau_g, plateau_gamma_pred=pred_g, eps=epss, plateau_eps=plateau_e,
        plateau_eps_pred=pred_e, eps_coordinates=late_abs,
    )  # fmt: skip


def polyak_decay(config: Config) -> PolyakDecay:
    """L(t)/L(0) of the untruncated Polyak flow's reference (the solve of `_lyapunov`) vs e^{-t}."""
    prob = problems.rosenbrock()
    ts = jnp.linspace(0.0, config.polyak_t1, 241)
    ref = dynopt.solve(_lyapunov_flow("polyak", config, prob), prob, ts, max_steps=65_536)
    ts, ratio = np.asarray(ts), np.asarray(ref.loss) / float(ref.loss[0])
    deviation, relative = np.abs(ratio - np.exp(-ts)), np.abs(ratio / np.exp(-ts) - 1)
    L0 = float(prob.loss(prob.params0))
    return PolyakDecay(L0, float(np.max(deviation)), float(np.max(relative)), ts, ratio)


SECTIONS = {
    "lyapunov": lyapunov_rates,
    "rmsprop_plateau": rmsprop_plateau,
    "post3": post3.section,
    "polyak_decay": polyak_decay,
}

HEADLINES = (
    *(
        Headline(f"lyapunov/{f}/max_relative_deviation", f"{f}: dL/dt vs identity, rel. dev.",
                 high=1e-6)
        for f in ("gradient", "rmsprop", "adam", "polyak")
    ),
    Headline("lyapunov/adam/max_predicted_rate", "Adam: max dL/dt (not Lyapunov)", low=0.0),
    Headline("lyapunov/rmsprop/max_predicted_rate", "RMSprop: max dL/dt", high=0.0),
    Headline("rmsprop_plateau/plateau_slope_in_gamma", "RMSprop plateau: slope in γ", 1.0, 1e-3,
             verdict="rmsprop_plateau/plateau_verdict"),
    Headline("rmsprop_plateau/plateau_over_gamma/0", "plateau / γ (γ/√2)", 2**-0.5, 1e-3),
    Headline("rmsprop_plateau/plateau_vs_eps_max_abs_error_to_theory_over_gamma",
             "plateau vs ε: max error / γ", high=1e-6),
    Headline("rmsprop_plateau/gd_regime_contraction_max_abs_error", "GD-regime contraction error",
             high=1e-5),
    Headline("polyak_decay/max_relative_deviation_pointwise", "Polyak: |L/(L0 e⁻ᵗ) - 1|",
             high=1e-7),
    Headline("post3/polyak_final_x", "post 3: Polyak ends at (global min)", 0.40693, 1e-3),
    Headline("post3/gd_final_x", "post 3: GD ends at", 3.0, 1e-6),
    Headline("post3/polyak_escape_t", "post 3: Polyak crosses the barrier at t", low=2.5,
             high=3.0),
    Headline("post3/polyak_basin_fraction",
             f"post 3: share of Polyak runs from {post3.STARTS_TEXT} in the global basin",
             low=0.7),
)  # fmt: skip


def draw_lyapunov(r):
    n = len(r.lyapunov)  # 2 x 2 for quick mode's four flows, rows of 3 for nine
    fig, axes = plotting.panels(n, ncols=2 if n == 4 else 3, width=4.0, height=3.0)
    for ax, (name, rate) in zip(axes, r.lyapunov.items()):
        plotting.plot_rate_check(ax, rate.ts, -rate.measured, -rate.predicted, label="−dL/dt")
        ax.set_yscale("symlog", linthresh=1e-3)
        up = rate.max_predicted_rate > 0
        note = "\n(dL/dt > 0 at times: not a Lyapunov function)" if up else ""
        ax.set_title(f"{LABELS[name]}: max rel. dev. {rate.max_relative_deviation:.1e}{note}")
    plotting.legend(axes[0])  # the same two entries in every panel: once, where it hides nothing
    fig.suptitle("Rosenbrock from (−1.2, 1): measured −dL/dt vs the flow's identity")
    return fig


def draw_plateau(r):
    rm, config = r.rmsprop_plateau, r.config
    fig, axes = plotting.panels(2, width=5.0, height=4.0)
    axes[0].loglog(rm.gammas, rm.plateau_gamma, "o", label="measured (late RMS ‖θ − θ*‖)")
    axes[0].loglog(rm.gammas, rm.plateau_gamma_pred, "k--", lw=0.8, label="γ/√2 (period-2 orbit)")
    eps, slope = config["rms_gamma_eps"], rm.plateau_slope_in_gamma
    # a slope only where the sweep is asymptotic
    title = f"optax.rmsprop, ε = {eps:g}: " + plotting.order_text(
        slope, rm.plateau_verdict, "fitted slope {:.3f}"
    )
    plotting.dress(axes[0], title=title, grid="both", xlabel="learning rate γ",
                   ylabel="late-time distance to θ*")  # fmt: skip
    e, floor = rm.eps, 1e-9  # below: converged, drawn on the bottom edge
    axes[1].set_xscale("log")
    plotting.plot_log_floor(axes[1], e, rm.plateau_eps, floor=floor, label="total")
    for i, c in enumerate(rm.crossovers_per_coordinate):
        label = f"coordinate λ = {c['lambda']:g}"
        plotting.plot_log_floor(axes[1], e, rm.eps_coordinates[:, i], ".", floor=floor, ms=4,
                                label=label)  # fmt: skip
        axes[1].axvline(c["predicted"], color=f"C{i + 1}", ls=":", lw=1)
    pred = rm.plateau_eps_pred
    axes[1].loglog(e[pred > 0], pred[pred > 0], "k--", lw=0.8, label="√Σ((γ/2)² − ε/λᵢ²)₊")
    axes[1].axvline(rm.crossover_total_predicted, color="k", ls=":", lw=1)
    lo, hi = rm.crossover_total_found
    title = (
        f"γ = {config['rms_eps_gamma']:g}: GD (step γ/√ε) once ε > (γλ/2)²\n"
        f"predicted ε* = {rm.crossover_total_predicted:.2g}, found in [{lo:.2g}, {hi:.2g}]"
    )
    # the legend under the panel: inside, it hid the bottom-edge marks of converged runs
    below = dict(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=2)
    plotting.dress(axes[1], title=title, legend=below, grid="both", xlabel="ε",
                   ylabel="late-time distance to θ*")  # fmt: skip
    return fig


def draw_polyak_decay(r):
    pd, ts = r.polyak_decay, r.polyak_decay.ts
    fig, axes = plotting.panels(2, width=4.6)
    axes[0].semilogy(ts, pd.ratio, lw=2, alpha=0.6, label="L(t)/L(0)")
    axes[0].semilogy(ts, np.exp(-ts), "k:", label="$e^{-t}$")
    plotting.dress(axes[0], xlabel="t", title=f"Polyak flow on Rosenbrock, L(0) = {pd.L0:g}")
    axes[1].semilogy(ts[1:], np.abs(pd.ratio[1:] * np.exp(ts[1:]) - 1))
    title = f"max relative deviation {pd.max_relative_deviation_pointwise:.1e}"
    plotting.dress(axes[1], xlabel="t", ylabel="$|L(t)/(L(0)e^{-t}) - 1|$", title=title)
    return fig


def draw_post3(r):
    return post3.figure(r.post3)  # shared with the adaptive experiment


FIGURES = {
    "lyapunov_rates.png": draw_lyapunov,
    "rmsprop_plateau.png": draw_plateau,
    "polyak_decay.png": draw_polyak_decay,
    "post3_example.png": draw_post3,
}
