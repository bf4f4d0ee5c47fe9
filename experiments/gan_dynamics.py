"""GAN training as a dynamical system (post 4): Dirac GAN verdicts, schemes' growth, drift, EMA."""

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import dynopt
from dynopt import games, plotting

from ._card import Array
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
    cases: tuple[str, ...] = (*games.POST4_CASES, "gan-qp (code)")
    linear_scales: tuple[float, ...] = (1e-1, 1e-2, 1e-3)
    growth_steps: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    growth_num_steps: int = 1000
    growth_games: tuple[str, ...] = ("vanilla", "wgan-gp c=0")
    growth_schemes: tuple[str, ...] = SCHEMES
    consensus_gamma: float = 0.5
    order_schemes: tuple[str, ...] = SCHEMES
    order_t1: float = 4.0
    order_num_steps: tuple[int, ...] = (20, 40, 80, 160)
    ema_step: float = 0.1
    ema_num_steps: int = 100_000
    ema_decays: tuple[float, ...] = (0.9, 0.99, 0.999, 0.9999)
    mix_schemes: tuple[str, ...] = SCHEMES
    mix_penalties: tuple[str, ...] = ("none", "r1")
    mix_r1: float = 0.1
    mix_gamma: float = 0.1
    mix_learning_rate: float = 0.05
    mix_num_steps: int = 6000
    mix_hidden: int = 32
    mix_batch: int = 128
    mix_std: float = 0.05
    mix_eval_samples: int = 2000
    mix_saves: int = 12

    QUICK: ClassVar[dict] = dict(
        cases=("vanilla", "wgan-gp c=0"),
        growth_num_steps=600,
        growth_games=("vanilla",),
        growth_schemes=("simultaneous", "alternating"),
        order_schemes=(),
        ema_num_steps=20_000,
        mix_schemes=("alternating",),
        mix_penalties=("none",),
        mix_num_steps=200,
        mix_hidden=8,
        mix_batch=32,
        mix_eval_samples=500,
        mix_saves=5,
    )


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


def _game(case: str, scale: float = 1.0) -> tuple[games.Game, dict]:
    """Post 4's case `case` (or "gan-qp (code)", the original code's normalization) from
    `scale`·z₀, with its spec (horizon, save times, window)."""
    spec = dict(games.POST4_CASES[case.removesuffix(" (code)")])
    kwargs = {k: spec[k] for k in ("weight", "center") if k in spec}
    if case.endswith(" (code)"):
        kwargs["normalization"] = "code"
    z0 = dict(phi0=scale * np.asarray(games.PHI0), theta0=scale * np.asarray(games.THETA0))
    return games.dirac_gan(spec["variant"], **kwargs, **z0), spec


def _verdict(norms: np.ndarray, theta0: float) -> str:
    tail = norms[-max(len(norms) // 10, 1) :]
    half = norms[len(norms) // 2 :]
    if tail.max() < 0.05 * theta0:
        return "converges to the equilibrium"
    if (half.max() - half.min()) < 0.05 * half.mean():
        return f"settles on a circle |θ| = {half.mean():.3f}, no convergence"
    return "oscillates, no convergence"


def verdicts(config: Config) -> dict[str, Case]:
    out = {}
    for case in config.cases:
        game, spec = _game(case)
        ts = np.arange(0.0, spec["horizon"], spec["save_every"])
        sol = dynopt.solve(games.GameFlow(), game, ts, solver="tsit5")
        phi, theta = (np.asarray(x) for x in sol.params)
        norms = np.linalg.norm(theta, axis=1)
        half = norms[len(norms) // 2 :]
        phi_norms = np.linalg.norm(phi, axis=1)
        c = out[case] = Case(
            horizon=spec["horizon"],
            theta_norm_initial=float(norms[0]),
            theta_norm_final=float(norms[-1]),
            theta_norm_last_half_mean=float(half.mean()),
            theta_norm_last_half_min=float(half.min()),
            theta_norm_last_half_max=float(half.max()),
            verdict=_verdict(norms, float(norms[0])),
            solver_steps=int(sol.stats["num_steps"]),
            ts=ts,
            theta=theta,
            phi_norm=phi_norms,
        )
        if spec["variant"] == "wgan":  # the exact invariant |phi(t)| = |phi0| (eq. 12)
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
    spec = games.POST4_CASES["vanilla"]
    ts = jnp.asarray(np.arange(0.0, spec["horizon"], spec["save_every"]))
    devs, thetas, thetas_lin = [], {}, {}
    for i, eps in enumerate(config.linear_scales):
        game, _ = _game("vanilla", eps)
        sol = dynopt.solve(games.GameFlow(), game, ts, solver="tsit5")
        lin = jax.vmap(games.dirac_linear_solution, in_axes=(0, None, None))(ts, *game.params0)
        theta, theta_lin = np.asarray(sol.params[1]), np.asarray(lin[1])
        devs.append(float(np.max(np.abs(theta - theta_lin)) / eps))
        thetas[str(i)], thetas_lin[str(i)] = theta / eps, theta_lin / eps
    slope = float(np.polyfit(np.log(config.linear_scales), np.log(devs), 1)[0])
    return Linearization(devs, slope, 4 * np.pi, np.asarray(ts), thetas, thetas_lin)


def _scheme(name: str, gamma: float) -> games.AbstractScheme:
    return games.scheme(name, gamma=gamma) if name == "consensus" else games.scheme(name)


@eqx.filter_jit
def _modified_jacobian(game, sch, h):
    """Jacobian at the equilibrium of the modified flow z' = w + h w1 (h traced: one compile)."""
    flow = games.ModifiedGameFlow(sch, h)
    flat, unravel = ravel_pytree(game.equilibrium)
    return jax.jacfwd(lambda x: ravel_pytree(flow.vector_field(0.0, unravel(x), game))[0])(flat)


def growth(config: Config) -> dict[str, dict[str, Growth]]:
    """Per-step growth of |z_k| near the equilibrium: spectral radius of the step matrix and the
    modified flow's rate exp(h max Re eig) against a fit of log|z_k| in the linear regime."""
    hs = np.asarray(config.growth_steps)
    out = {}
    for gname in config.growth_games:
        game, _ = _game(gname, 1e-8)  # |z| < 1e-4 over the fitted steps: linear regime
        jac = np.asarray(game.jacobian(game.equilibrium))
        per_game = {}
        for name in config.growth_schemes:
            sch = _scheme(name, config.consensus_gamma)
            n = config.growth_num_steps
            traj = dynopt.run(sch.discretize(jnp.asarray(hs)), game, n)
            norms = np.linalg.norm(np.concatenate(traj.params, axis=-1), axis=-1)
            measured, predicted, modified = [], [], []
            for j, h in enumerate(hs):
                ks = np.arange(n + 1)
                ok = (ks >= n // 10) & (norms[j] < 1e-4) & (norms[j] > 1e-300)
                slope = np.polyfit(ks[ok], np.log(norms[j][ok]), 1)[0]
                measured.append(float(np.exp(slope)))
                predicted.append(sch.growth(jac, h, game.num_phi))
                jm = _modified_jacobian(game, sch, jnp.asarray(h))
                rate = float(np.max(np.linalg.eigvals(np.asarray(jm)).real))
                modified.append(float(np.exp(h * rate)))
            per_game[name] = Growth(
                predicted_spectral_radius=predicted,
                predicted_modified_flow=modified,
                measured=measured,
                max_abs_error_spectral=float(np.max(np.abs(np.subtract(measured, predicted)))),
            )
        if gname == "vanilla":
            per_game["simultaneous"].closed_form = np.sqrt(1 + hs**2 / 4).tolist()
        out[gname] = per_game
    return out


def orders(config: Config) -> dict[str, SchemeOrder]:
    game = games.dirac_gan()
    hs = config.order_t1 / np.asarray(config.order_num_steps, dtype=float)
    out = {}
    for name in config.order_schemes:
        flow = games.GameFlow(_scheme(name, config.consensus_gamma))
        first = dynopt.compare(flow, game, hs, config.order_t1)
        second = dynopt.compare(flow, game, hs, config.order_t1, reference=flow.modified)
        out[name] = SchemeOrder(
            order_vs_flow=float(first.order),
            order_vs_modified_flow=float(second.order),
            errors_vs_flow=np.asarray(first.errors).tolist(),
            errors_vs_modified_flow=np.asarray(second.errors).tolist(),
            step_sizes=hs,
        )
    return out


def ema(config: Config) -> Ema:
    game = games.dirac_gan()
    n = config.ema_num_steps
    every = max(n // 5000, 1)
    traj = dynopt.run(
        games.weight_averages(games.Alternating().discretize(config.ema_step), config.ema_decays),
        game,
        n,
        every=every,
        observe=games.averages,
    )
    theta = np.asarray(traj.params[1])
    ema = np.asarray(traj.observations[1])  # (n_saved, n_decays, 2)
    half = len(theta) // 2
    raw = float(np.mean(np.linalg.norm(theta[half:], axis=-1)))
    dist = np.mean(np.linalg.norm(ema[half:], axis=-1), axis=0)
    return Ema(
        raw_mean_distance_last_half=raw,
        ema_mean_distance_last_half=dict(zip(map(str, config.ema_decays), dist.tolist())),
        ratio_raw_over_ema=dict(zip(map(str, config.ema_decays), (raw / dist).tolist())),
        diverged_at=int(traj.diverged_at),
        ts=np.asarray(traj.ts),
        theta=theta,
        avg=ema,
    )


def _penalties(name: str, config: Config):
    return {"none": (), "r1": (games.R1(config.mix_r1),)}[name]


def mixture(config: Config) -> dict[str, MixRun]:
    key = jax.random.key(config.seed)
    k_init, k_run, k_eval, k_data, k_proj = jax.random.split(key, 5)
    data = games.sample_mixture(k_data, config.mix_eval_samples, std=config.mix_std)
    data = data.astype(jnp.float32)
    every = config.mix_num_steps // config.mix_saves

    @jax.jit
    @jax.vmap
    def evaluate(theta):
        x = games.generate(theta, k_eval, config.mix_eval_samples)
        covered, good = games.mode_statistics(x, std=config.mix_std)
        return covered, good, games.sliced_wasserstein(k_proj, x, data), x

    out = {}
    for pen in config.mix_penalties:
        game = games.mixture_gan(
            k_init,
            hidden=config.mix_hidden,
            batch_size=config.mix_batch,
            std=config.mix_std,
            penalties=_penalties(pen, config),
            dtype=jnp.float32,
        )
        for name in config.mix_schemes:
            sch = _scheme(name, config.mix_gamma)
            disc = sch.discretize(config.mix_learning_rate)
            traj = dynopt.run(
                games.weight_averages(disc, 0.99),
                game,
                config.mix_num_steps,
                key=k_run,
                every=every,
                observe=games.averages,
            )
            # The saved iterates and, last, the final EMA: one batched evaluation.
            thetas = jax.tree.map(
                lambda x, e: jnp.concatenate([x, e[-1:, 0]]), traj.params[1], traj.observations[1]
            )
            covered, good, sw, samples = (np.asarray(x) for x in evaluate(thetas))
            e_cov, e_sw = covered[-1], sw[-1]
            covered, good, sw, samples = covered[:-1], good[:-1], sw[:-1], samples[:-1]
            out[f"{name}+{pen}"] = MixRun(
                modes_covered_final=int(covered[-1]),
                high_quality_fraction_final=float(good[-1]),
                sliced_w1_final=float(sw[-1]),
                sliced_w1_min=float(np.min(sw)),
                ema_modes_covered=int(e_cov),
                ema_sliced_w1=float(e_sw),
                diverged_at=int(traj.diverged_at),
                steps=np.arange(0, config.mix_num_steps + 1, every),
                covered=np.asarray(covered, float),
                sliced_w1=np.asarray(sw),
                samples=np.asarray(samples[-1]),
                data=np.asarray(data),
            )
    return out


SECTIONS = {
    "verdicts": verdicts,
    "eigenvalues_closed_form": eigenvalues_closed_form,
    "linearization": linearization,
    "growth": growth,
    "orders": orders,
    "ema": ema,
    "mixture": mixture,
}

HEADLINES = (
    Headline("verdicts/wgan-gp c=0/theta_norm_final", "WGAN-GP c=0: final |θ| (converges)",
             high=1e-2),
    Headline("verdicts/vanilla/theta_norm_last_half_min", "vanilla: min |θ| late (no convergence)",
             low=0.05),
    Headline("linearization/fitted_slope", "vanilla from ε·z₀: |θ − θ_lin|/ε ∝ ε^slope", 2.0, 0.1),
    Headline("growth/vanilla/simultaneous/max_abs_error_spectral",
             "simultaneous GDA: growth vs √(1+h²/4)", high=1e-6),
    Headline("growth/vanilla/alternating/max_abs_error_spectral", "alternating: growth vs ρ = 1",
             high=1e-5),
)  # fmt: skip


def draw_phase_portraits(r):
    fig, axes = plotting.panels(len(r.verdicts), ncols=3, width=3.4, height=3.4)
    for ax, (case, c) in zip(axes, r.verdicts.items()):
        window = games.POST4_CASES.get(case, games.POST4_CASES["gan-qp"])["window"]
        plotting.plot_phase_portrait(ax, [(c.theta, case)], window=window)
        ax.set_title(f"{case}, T = {c.horizon:g}\n{c.verdict}")
    return fig


def draw_verdicts(r):
    fig, axes = plotting.panels(2, width=5.0)
    for case, c in r.verdicts.items():
        axes[0].semilogy(c.ts, np.linalg.norm(c.theta, axis=1), label=case)
    title = "distance of the generator to the data point"
    plotting.dress(axes[0], xlabel="t", ylabel="|θ(t)|", title=title, grid="both")
    lin = r.linearization  # the curves θ/ε coincide: draw their distance to the rotation
    for i, eps in enumerate(r.config["linear_scales"]):
        dev = np.linalg.norm(lin.theta[str(i)] - lin.theta_lin[str(i)], axis=1)
        axes[1].semilogy(lin.ts, np.where(dev > 0, dev, np.nan), label=f"ε = {eps:g}")
    axes[1].set(xlabel="t", ylabel="|θ(t) − θ_lin(t)| / ε   (θ_lin: θ'' = −θ/4)")
    title = f"vanilla from ε·z₀: deviation ∝ ε^{lin.fitted_slope:.2f}"
    plotting.dress(axes[1], title=title, grid="both")
    return fig


def draw_growth(r):
    fig, axes = plotting.panels(len(r.growth), width=4.6, height=4.0)
    for ax, (gname, per) in zip(axes, r.growth.items()):
        for name, v in per.items():
            h, rho = (
                np.asarray(r.config["growth_steps"]),
                np.asarray(v.predicted_spectral_radius) - 1,
            )
            meas = np.abs(np.asarray(v.measured) - 1)
            (line,) = ax.loglog(h, rho, "-", lw=1)
            color = line.get_color()
            ax.loglog(h, np.asarray(v.predicted_modified_flow) - 1, ":", color=color)
            ax.loglog(h, np.where(meas > 0, meas, np.nan), "o", color=color, label=name)
            bounded = rho <= 1e-12
            if np.any(bounded):  # predicted ρ = 1: no line on a log axis, a mark on its bottom edge
                ax.plot(h[bounded], np.zeros(bounded.sum()), "v", color=color, ms=7, clip_on=False,
                        transform=ax.get_xaxis_transform(),
                        label=f"{name}: predicted ρ = 1 (bounded)")  # fmt: skip
        plotting.key_entry(ax, "step-matrix spectral radius − 1", "k-", lw=1)
        plotting.key_entry(ax, "modified-flow rate − 1", "k:")
        ax.set(xlabel="step size h", ylabel="growth of |z_k| per step − 1")
        title = f"Dirac GAN ({gname}) near equilibrium: lines predicted, dots measured"
        plotting.dress(ax, title=title, legend=dict(loc="center left"), grid="both")
    return fig


def draw_orders(r):
    if not r.orders:  # quick mode measures no orders (tests/test_games.py does)
        return None
    fig, axes = plotting.panels(len(r.orders), width=3.6)
    for ax, (name, m) in zip(axes, r.orders.items()):
        series = [
            (m.errors_vs_flow, "vs flow", m.order_vs_flow),
            (m.errors_vs_modified_flow, "vs modified flow", m.order_vs_modified_flow),
        ]
        plotting.plot_orders(ax, m.step_sizes, series, guides=(1.0, 2.0))
        ax.set_title(name)
    return fig


def draw_ema(r):
    e = r.ema
    fig, axes = plotting.panels(2, width=5.0)
    for j, a in enumerate(e.ema_mean_distance_last_half):
        axes[0].plot(e.ts, np.linalg.norm(e.avg[:, j], axis=-1), lw=1.2, label=f"EMA {a}")
    # The raw iterate last, thin and black: on top of the EMA that oscillates at its level.
    axes[0].plot(e.ts, np.linalg.norm(e.theta, axis=-1), "k-", lw=0.5, alpha=0.8, label="θ_k (raw)")
    axes[0].set(xlabel="t = k h", ylabel="distance to equilibrium θ* = 0", yscale="log")
    title = f"vanilla Dirac GAN, alternating GDA, h = {r.config['ema_step']}"
    plotting.dress(axes[0], title=title, grid=None)
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
    title = "8-Gaussian GAN: distance to the data"
    plotting.dress(
        axes[0], xlabel="step", ylabel="sliced W1 to the data", title=title, yscale="log"
    )
    plotting.dress(axes[1], xlabel="step", ylabel="modes covered (of 8)", title="modes covered",
                   legend=False)  # fmt: skip
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
