"""GAN training as a dynamical system (post 4): Dirac GAN verdicts, schemes' growth, drift, EMA."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import games, plotting

from ._card import Array, by_mode
from ._headline import Headline


SCHEMES = ("simultaneous", "alternating", "consensus", "extragradient", "optimistic")


@dataclasses.dataclass(frozen=True)
class Config:
    """Run card. `python -m experiments run gan_dynamics [--quick]`.

    (1) Post 4's five Dirac-GAN variants (+ GAN-QP with the original code's normalization) from
    (φ, θ) = (0.1, 0.2, 0.2, 0.1) with the post's horizons, diffrax Tsit5 at rtol 1e-10: ‖θ(t)‖
    statistics and verdicts, phase portraits, the WGAN invariant ‖φ‖, eigenvalues at the
    equilibrium. (2) The linearization θ'' = -θ/4: deviation O(ε²) from ε·z₀. (3) Each scheme's
    predicted per-step growth (spectral radius of its step matrix; its modified flow's rate)
    against the measured one near the equilibrium. (4) GD-type schemes against their flow (order
    1) and modified flow (order 2). (5) Generator EMA vs raw iterate under alternating GDA.
    (6) A small GAN on 8 Gaussians, each scheme with and without R1: modes covered and sliced W1.
    Runtime on 2 CPU cores: quick < 30 s, full a few minutes. Headline: only WGAN-GP c=0
    converges; simultaneous GDA grows by √(1+h²/4) per step (measured to 1e-6); alternating is
    bounded; EMA(0.999) sits ~100× closer to the equilibrium than θ.
    """

    seed: int = 0
    quick: bool = False
    cases: tuple[str, ...] = by_mode(
        (*games.POST4_CASES, "gan-qp (code)"), quick=("vanilla", "wgan-gp c=0")
    )
    linear_scales: tuple[float, ...] = (1e-1, 1e-2, 1e-3)
    growth_steps: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    growth_num_steps: int = by_mode(1000, quick=600)
    growth_games: tuple[str, ...] = by_mode(("vanilla", "wgan-gp c=0"), quick=("vanilla",))
    growth_schemes: tuple[str, ...] = by_mode(SCHEMES, quick=("simultaneous", "alternating"))
    consensus_gamma: float = 0.5
    order_schemes: tuple[str, ...] = by_mode(SCHEMES, quick=())
    order_t1: float = 4.0
    order_num_steps: tuple[int, ...] = (20, 40, 80, 160)
    ema_step: float = 0.1
    ema_num_steps: int = by_mode(100_000, quick=20_000)
    ema_decays: tuple[float, ...] = (0.9, 0.99, 0.999, 0.9999)
    mix_schemes: tuple[str, ...] = by_mode(SCHEMES, quick=("alternating",))
    mix_penalties: tuple[str, ...] = by_mode(("none", "r1"), quick=("none",))
    mix_r1: float = 0.1
    mix_gamma: float = 0.1
    mix_learning_rate: float = 0.05
    mix_num_steps: int = by_mode(6000, quick=200)
    mix_hidden: int = by_mode(32, quick=8)
    mix_batch: int = by_mode(128, quick=32)
    mix_std: float = 0.05
    mix_eval_samples: int = by_mode(2000, quick=500)
    mix_saves: int = by_mode(12, quick=5)


@dataclasses.dataclass
class Case:
    """One Dirac-GAN variant solved with diffrax: ‖θ(t)‖ statistics and the verdict."""

    horizon: float
    theta_norm_initial: float
    theta_norm_final: float
    theta_norm_last_half_mean: float
    theta_norm_last_half_min: float
    theta_norm_last_half_max: float
    verdict: str
    solver_steps: int
    ts: Array
    theta: Array
    phi_norm: Array
    phi_norm_initial: float | None = None  # WGAN: the invariant ‖φ(t)‖ = ‖φ0‖ (eq. 12)
    phi_norm_final: float | None = None
    phi_norm_max_drift: float | None = None
    eigenvalues_real: list[float] | None = None  # at the equilibrium (two cases)
    eigenvalues_imag: list[float] | None = None


@dataclasses.dataclass
class Linearization:
    """Vanilla from ε·z₀ against the rotation θ'' = -θ/4 (θ/ε by index into `linear_scales`)."""

    max_relative_deviation: list[float]
    fitted_slope: float
    # `dynopt.assess_order` on the deviations in ε: the slope is an order only when "asymptotic"
    verdict: str
    period_predicted: float
    ts: Array
    theta: dict[str, Array]
    theta_lin: dict[str, Array]


@dataclasses.dataclass
class Growth:
    """One scheme near the equilibrium: per-step growth of |z_k| at each of `growth_steps`,
    predicted and measured."""

    predicted_spectral_radius: list[float]
    predicted_modified_flow: list[float]
    measured: list[float]
    max_abs_error_spectral: float
    closed_form: list[float] | None = None  # simultaneous GDA on vanilla: √(1 + h²/4)


@dataclasses.dataclass
class SchemeOrder:
    order_vs_flow: float
    order_vs_modified_flow: float
    errors_vs_flow: list[float]
    errors_vs_modified_flow: list[float]
    step_sizes: Array


@dataclasses.dataclass
class Ema:
    """Alternating GDA on the vanilla Dirac GAN: EMAs of θ (by decay) against the raw iterate."""

    raw_mean_distance_last_half: float
    ema_mean_distance_last_half: dict[str, float]
    ratio_raw_over_ema: dict[str, float]
    diverged_at: int
    ts: Array
    theta: Array
    avg: Array  # (saves, decays, 2)


@dataclasses.dataclass
class MixRun:
    """A small GAN on 8 Gaussians with one scheme and penalty."""

    modes_covered_final: int
    high_quality_fraction_final: float
    sliced_w1_final: float
    sliced_w1_min: float
    ema_modes_covered: int  # the EMA(0.99) of the generator at the end
    ema_sliced_w1: float
    diverged_at: int
    steps: Array
    covered: Array
    sliced_w1: Array
    samples: Array
    data: Array


def _spec(case: str) -> dict:
    return games.POST4_CASES[case.removesuffix(" (code)")]


def _save_times(case: str) -> np.ndarray:
    return np.arange(0.0, _spec(case)["horizon"], _spec(case)["save_every"])


def _scheme(name: str, gamma: float) -> games.AbstractScheme:
    return games.scheme(name, gamma=gamma) if name == "consensus" else games.scheme(name)


def verdicts(config: Config) -> dict[str, Case]:
    out = {}
    for case in config.cases:
        game, ts = games.post4_game(case), _save_times(case)
        sol = dynopt.solve(games.GameFlow(), game, ts, solver="tsit5")
        phi, theta = (np.asarray(x) for x in sol.params)
        norms, phi_norms = np.linalg.norm(theta, axis=1), np.linalg.norm(phi, axis=1)
        half = norms[len(norms) // 2 :]
        stats = (norms[0], norms[-1], half.mean(), half.min(), half.max())
        head = (_spec(case)["horizon"], *map(float, stats), games.orbit_verdict(norms))
        c = out[case] = Case(*head, int(sol.stats["num_steps"]), ts, theta, phi_norms)
        if _spec(case)["variant"] == "wgan":  # the exact invariant |phi(t)| = |phi0| (eq. 12)
            c.phi_norm_initial, c.phi_norm_final = float(phi_norms[0]), float(phi_norms[-1])
            c.phi_norm_max_drift = float(np.max(np.abs(phi_norms - phi_norms[0])))
        if case in ("vanilla", "wgan-gp c=0"):
            eig = game.eigenvalues()
            c.eigenvalues_real, c.eigenvalues_imag = eig.real.tolist(), eig.imag.tolist()
    return out


def eigenvalues_closed_form(config: Config) -> dict[str, str]:
    lam = games.POST4_CASES["wgan-gp c=0"]["weight"]
    return {
        "vanilla": "±i/2 (each twice)",
        "wgan-gp c=0": f"-λ ± i√(1-λ²) = {-lam} ± {np.sqrt(1 - lam**2):.6f}i",
    }


def linearization(config: Config) -> Linearization:
    # The vanilla case's save times: the compiled reference solve is reused (8 periods of 4π).
    ts = jnp.asarray(_save_times("vanilla"))
    devs, thetas, thetas_lin = [], {}, {}
    for i, eps in enumerate(config.linear_scales):
        game = games.post4_game("vanilla", eps)
        sol = dynopt.solve(games.GameFlow(), game, ts, solver="tsit5")
        lin = jax.vmap(games.dirac_linear_solution, in_axes=(0, None, None))(ts, *game.params0)
        theta, theta_lin = np.asarray(sol.params[1]), np.asarray(lin[1])
        devs.append(float(np.max(np.abs(theta - theta_lin)) / eps))
        thetas[str(i)], thetas_lin[str(i)] = theta / eps, theta_lin / eps
    slope = float(np.polyfit(np.log(config.linear_scales), np.log(devs), 1)[0])
    verdict = dynopt.assess_order(np.asarray(config.linear_scales), np.asarray(devs)).verdict
    return Linearization(devs, slope, verdict, 4 * np.pi, np.asarray(ts), thetas, thetas_lin)


def growth(config: Config) -> dict[str, dict[str, Growth]]:
    """Per-step growth of |z_k| near the equilibrium: spectral radius of the step matrix and the
    modified flow's rate exp(h max Re eig) against a fit of log|z_k| in the linear regime."""
    hs = np.asarray(config.growth_steps)
    out = {}
    for gname in config.growth_games:
        game = games.post4_game(gname, 1e-8)  # |z| < 1e-4 over the fitted steps: linear regime
        jac, per_game = np.asarray(game.jacobian(game.equilibrium)), {}
        for name in config.growth_schemes:
            sch = _scheme(name, config.consensus_gamma)
            traj = dynopt.run(sch.discretize(jnp.asarray(hs)), game, config.growth_num_steps)
            norms = np.linalg.norm(np.concatenate(traj.params, axis=-1), axis=-1)
            measured = [games.measured_growth(norm) for norm in norms]
            predicted = [sch.growth(jac, h, game.num_phi) for h in hs]
            modified = [games.modified_flow_growth(sch, game, h) for h in hs]
            error = float(np.max(np.abs(np.subtract(measured, predicted))))
            per_game[name] = Growth(predicted, modified, measured, error)
        if gname == "vanilla":
            per_game["simultaneous"].closed_form = np.sqrt(1 + hs**2 / 4).tolist()
        out[gname] = per_game
    return out


def orders(config: Config) -> dict[str, SchemeOrder]:
    game, t1 = games.dirac_gan(), config.order_t1
    hs = t1 / np.asarray(config.order_num_steps, dtype=float)
    out = {}
    for name in config.order_schemes:
        flow = games.GameFlow(_scheme(name, config.consensus_gamma))
        first = dynopt.compare(flow, game, hs, t1)
        second = dynopt.compare(flow, game, hs, t1, reference=flow.modified)
        errors = (np.asarray(c.errors).tolist() for c in (first, second))
        out[name] = SchemeOrder(float(first.order), float(second.order), *errors, hs)
    return out


def ema(config: Config) -> Ema:
    n, decays = config.ema_num_steps, config.ema_decays
    disc = games.weight_averages(games.Alternating().discretize(config.ema_step), decays)
    traj = dynopt.run(disc, games.dirac_gan(), n, every=max(n // 5000, 1), observe=games.averages)
    theta = np.asarray(traj.params[1])
    avg = np.asarray(traj.observations[1])  # (n_saved, n_decays, 2)
    half = len(theta) // 2
    raw = float(np.mean(np.linalg.norm(theta[half:], axis=-1)))
    dist = np.mean(np.linalg.norm(avg[half:], axis=-1), axis=0)
    by_decay = [dict(zip(map(str, decays), v.tolist())) for v in (dist, raw / dist)]
    return Ema(raw, *by_decay, int(traj.diverged_at), np.asarray(traj.ts), theta, avg)


@jax.jit
def _split_key(seed):
    return tuple(jax.random.split(jax.random.key(seed), 5))  # one program, not three


def mixture(config: Config) -> dict[str, MixRun]:
    k_init, k_run, k_eval, k_data, k_proj = _split_key(config.seed)
    data = games.sample_mixture(k_data, config.mix_eval_samples, std=config.mix_std)
    data = np.asarray(data).astype(np.float32)  # on the host: a cast is a program
    every, averages = config.mix_num_steps // config.mix_saves, games.averages
    steps = np.arange(0, config.mix_num_steps + 1, every)

    @jax.jit
    @jax.vmap
    def evaluate(theta):
        x = games.generate(theta, k_eval, config.mix_eval_samples)
        covered, good = games.mode_statistics(x, std=config.mix_std)
        return covered, good, games.sliced_wasserstein(k_proj, x, data), x

    out = {}
    for pen in config.mix_penalties:
        penalties = {"none": (), "r1": (games.R1(config.mix_r1),)}[pen]
        sizes = dict(hidden=config.mix_hidden, batch_size=config.mix_batch, std=config.mix_std)
        game = games.mixture_gan(k_init, **sizes, penalties=penalties, dtype=jnp.float32)
        for name in config.mix_schemes:
            disc = _scheme(name, config.mix_gamma).discretize(config.mix_learning_rate)
            disc = games.weight_averages(disc, 0.99)
            # Every step tested (`every=1`), the history thinned to every `every`-th step in
            # `thetas`: the same iterates, and half the compilation (a block of steps and
            # its replay are two gradient sites of the alternating step each; 15.5 -> 8.2 s
            # of compilation for the quick run, cold).
            traj = dynopt.run(
                disc, game, config.mix_num_steps, key=k_run, every=1, observe=averages
            )
            # The saved iterates (every `every`-th step) and, last, the final EMA, on the host
            # (eagerly, each slice and concatenation compiled a program): one batched evaluation.
            thetas = jax.tree.map(
                lambda x, e: np.concatenate([np.asarray(x)[::every], np.asarray(e)[-1:, 0]]),
                traj.params[1],
                traj.observations[1],
            )
            cov, good, sw, samples = (np.asarray(x) for x in evaluate(thetas))
            final = (int(cov[-2]), float(good[-2]), float(sw[-2]), float(np.min(sw[:-1])))
            averaged = (int(cov[-1]), float(sw[-1]), int(traj.diverged_at))  # the final EMA
            curves = (steps, np.asarray(cov[:-1], float), sw[:-1], samples[-2], data)
            out[f"{name}+{pen}"] = MixRun(*final, *averaged, *curves)
    return out


SECTIONS = {
    f.__name__: f
    for f in (verdicts, eigenvalues_closed_form, linearization, growth, orders, ema, mixture)
}

HEADLINES = (
    Headline("verdicts/wgan-gp c=0/theta_norm_final", "WGAN-GP c=0: final |θ| (converges)",
             high=1e-2),
    Headline("verdicts/vanilla/theta_norm_last_half_min", "vanilla: min |θ| late (no convergence)",
             low=0.05),
    Headline("linearization/fitted_slope", "vanilla from ε·z₀: |θ − θ_lin|/ε ∝ ε^slope", 2.0, 0.1,
             verdict="linearization/verdict"),
    Headline("growth/vanilla/simultaneous/max_abs_error_spectral",
             "simultaneous GDA: growth vs √(1+h²/4)", high=1e-6),
    Headline("growth/vanilla/alternating/max_abs_error_spectral", "alternating: growth vs ρ = 1",
             high=1e-5),
)  # fmt: skip


def draw_phase_portraits(r):
    fig, axes = plotting.panels(len(r.verdicts), ncols=3, width=3.4, height=3.4)
    for ax, (case, c) in zip(axes, r.verdicts.items()):
        plotting.plot_phase_portrait(ax, [(c.theta, case)], window=_spec(case)["window"])
        ax.set_title(f"{case}, T = {c.horizon:g}\n{c.verdict}")
    return fig


def draw_verdicts(r):
    fig, axes = plotting.panels(2, width=5.0)
    curves = [(c.ts, c.theta, case) for case, c in r.verdicts.items()]
    title = "distance of the generator to the data point"
    plotting.plot_distances(axes[0], curves, xlabel="t", ylabel="|θ(t)|", title=title)
    lin = r.linearization  # the curves θ/ε coincide: draw their distance to the rotation
    scales = enumerate(r.config["linear_scales"])
    curves = [(lin.ts, lin.theta[str(i)] - lin.theta_lin[str(i)], f"ε = {e:g}") for i, e in scales]
    title = "vanilla from ε·z₀: deviation ∝ " + (
        f"ε^{lin.fitted_slope:.2f}" if lin.verdict == "asymptotic" else f"ε^p ({lin.verdict})"
    )
    ylabel = "|θ(t) − θ_lin(t)| / ε   (θ_lin: θ'' = −θ/4)"
    plotting.plot_distances(axes[1], curves, xlabel="t", ylabel=ylabel, title=title)
    return fig


def draw_growth(r):
    """Signed per-step rates ρ − 1 (> 0: |z_k| grows, < 0: it contracts, 0: bounded) on a
    symlog axis, linear within ±`_RATE_FLOOR`: a contracting scheme's rate is drawn below 0,
    not as |ρ − 1| beside the growing ones, and a prediction that changes sign is one line."""
    fig, axes = plotting.panels(len(r.growth), width=4.6, height=4.2)
    h = np.asarray(r.config["growth_steps"])
    for i, (ax, (gname, per)) in enumerate(zip(axes, r.growth.items())):
        for name, v in per.items():
            # Wide and pale under the dotted line: where the two predictions agree (simultaneous
            # steps: to plotting precision) both stay visible.
            rho = np.asarray(v.predicted_spectral_radius) - 1
            (line,) = ax.plot(h, rho, "-", lw=5, alpha=0.3, solid_capstyle="butt")
            color = line.get_color()
            ax.plot(h, np.asarray(v.predicted_modified_flow) - 1, ":", color=color, lw=1.5)
            ax.plot(h, np.asarray(v.measured) - 1, "o", color=color, label=name)
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=_RATE_FLOOR, linscale=0.5)
        ax.set_xticks(h)  # each step size measured, labelled
        plotting.key_entry(ax, "step-matrix spectral radius − 1", "k-", lw=5, alpha=0.3)
        plotting.key_entry(ax, "modified-flow rate − 1", "k:", lw=1.5)
        title = f"Dirac GAN ({gname}) near equilibrium:\nlines predicted, dots measured"
        ax.set(xlabel="step size h", ylabel="ρ − 1 per step (> 0: |z_k| grows)")
        # One key, beside the last panel (every panel draws the same schemes); inside a lone
        # panel, in the gap between the growing and the bounded schemes.
        last = i == len(axes) - 1
        legend = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        if len(axes) == 1:
            legend = dict(loc="center right")
        plotting.dress(ax, title=title, legend=legend if last else False, grid="both")
    return fig


_RATE_FLOOR = 1e-4  # below it the measured rates are the fit's noise (alternating: 1e-6)


def draw_orders(r):
    if not r.orders:  # quick mode measures no orders (tests/test_games.py does)
        return None
    fig, axes = plotting.panels(len(r.orders), width=3.6)
    for ax, (name, m) in zip(axes, r.orders.items()):
        series = [
            (m.errors_vs_flow, "vs flow", m.order_vs_flow),
            (m.errors_vs_modified_flow, "vs modified flow", m.order_vs_modified_flow),
        ]
        plotting.plot_orders(ax, m.step_sizes, series, guides=(1.0, 2.0), title=name)
    return fig


def draw_ema(r):
    e = r.ema
    fig, axes = plotting.panels(2, width=5.0)
    curves = [(e.ts, e.avg[:, j], f"EMA {a}") for j, a in enumerate(e.ema_mean_distance_last_half)]
    # The raw iterate last, thin and black: on top of the EMA that oscillates at its level.
    curves.append((e.ts, e.theta, "θ_k (raw)", dict(color="k", lw=0.5, alpha=0.8)))
    title = f"vanilla Dirac GAN, alternating GDA, h = {r.config['ema_step']}"
    ylabel = "distance to equilibrium θ* = 0"
    plotting.plot_distances(
        axes[0], curves, xlabel="t = k h", ylabel=ylabel, title=title, grid=None
    )
    decays = np.asarray([float(a) for a in e.ema_mean_distance_last_half])
    axes[1].loglog(1 - decays, list(e.ema_mean_distance_last_half.values()), "o-", label="EMA")
    axes[1].axhline(e.raw_mean_distance_last_half, color="k", ls="--", label="raw iterate")
    axes[1].set(xlabel="1 − decay", ylabel="mean distance over the last half")
    plotting.dress(axes[1], title="time-averaged distance: EMA vs the raw iterate", grid="both")
    return fig


def draw_mixture_curves(r):
    fig, axes = plotting.panels(2, width=5.0)
    for label, m in r.mixture.items():
        (line,) = axes[0].plot(m.steps, m.sliced_w1, label=label)
        axes[1].plot(m.steps, m.covered, color=line.get_color(), label=label)
    title, ylabel = "8-Gaussian GAN: distance to the data", "sliced W1 to the data"
    plotting.dress(axes[0], xlabel="step", ylabel=ylabel, title=title, yscale="log")
    # A count of 8: whole-number ticks over the whole range (0.2 of a mode is no reading).
    axes[1].set(xlabel="step", ylabel="modes covered (of 8)", ylim=(-0.4, 8.4), yticks=range(9))
    plotting.dress(axes[1], title="modes covered", legend=False)
    return fig


def draw_mixture_samples(r):
    fig, axes = plotting.panels(len(r.mixture), ncols=5, width=3.6, height=3.6)
    for ax, (label, m) in zip(axes, r.mixture.items()):
        ax.plot(m.data[:, 0], m.data[:, 1], ".", color="0.7", ms=1, label="data (8 Gaussians)")
        ax.plot(m.samples[:, 0], m.samples[:, 1], ".", ms=1, label="generator samples")
        ax.set_title(f"{label}\nmodes {m.modes_covered_final}/8, SW {m.sliced_w1_final:.3f}")
        ax.set(xlim=(-3, 3), ylim=(-3, 3), xlabel="x₁", ylabel="x₂", aspect="equal")
    plotting.legend(axes[0], loc="upper left", markerscale=6)
    return fig


FIGURES = {
    "phase_portraits.png": draw_phase_portraits,
    "verdicts.png": draw_verdicts,
    "growth.png": draw_growth,
    "orders.png": draw_orders,  # full mode only
    "ema.png": draw_ema,
    "mixture_curves.png": draw_mixture_curves,
    "mixture_samples.png": draw_mixture_samples,
}
