"""Transition densities of dx = p dt + √α dW by four routes (posts 7–8): Monte Carlo, Fokker–Planck,
time-sliced path integral (Itô / midpoint), asymmetric random walk; double-well stationary law;
post 8's stock model (σ vs σ², Itô's lemma for ln S, Black–Scholes by Monte Carlo)."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import densities as D, plotting
from dynopt.sde import simulate


@dataclasses.dataclass(frozen=True)
class Config:
    """Run card. `python -m experiments run path_integral [--quick]`.

    (1) dx = x dt + √α dW (post 7, eq. 49), α = 0.5, x0 = 0.3, T = 0.5: each route against the
    exact Gaussian, with its convergence in its own parameter: Monte Carlo (diffrax ShARK, total
    variation on fixed bins vs N, slope -1/2), Fokker–Planck (Kvaerno5 method of lines, grid h,
    slope 2), path integral (slices ε: Itô slope 1, midpoint slope 2), random walk (Δt, slope 1).
    (2) OU (dx = -x dt + √α dW, T = 1) by all routes against the exact density. (3) Double well
    p = x - x³: every route at T = 6 against exp((2/α)∫p dx). (4) GBM μ = 0.05, σ = 0.4, S0 = 100,
    T = 1: Euler–Maruyama paths of S measure Var(ln S_T) = σ²T (not the printed σT) and
    E ln S_T = (μ - σ²/2)T; Itô's lemma for ln S by autodiff; Black–Scholes call (K = 110,
    r = 0.03) by Monte Carlo vs closed form.
    Runtime on 2 CPU cores: quick < 30 s, full ~2 min. Headline: slopes ≈ -0.5, 2, 1, 2, 1;
    Var(ln S_T)/σ²T ≈ 1 (printed form off by 1/σ = 2.5x); BS call within 2 SE.
    """

    seed: int = 0
    quick: bool = False
    alpha: float = 0.5
    x0: float = 0.3
    T: float = 0.5
    window: tuple[float, float] = (-4.0, 4.5)
    mc_paths: tuple[int, ...] = (1000, 4000, 16_000, 64_000, 256_000)
    mc_steps: int = 60  # every Monte-Carlo run: T/60 steps (one compiled program per path count)
    mc_bins: int = 36
    fp_sizes: tuple[int, ...] = (49, 65, 81, 97, 129)
    fp_t0: float = 0.25
    pi_grid: int = 425
    pi_slices: tuple[int, ...] = (8, 16, 32, 64, 128)
    rw_steps: tuple[int, ...] = (25, 50, 100, 200, 400)
    ou_T: float = 1.0
    dw_T: float = 6.0
    route_paths: int = 100_000
    stock_mu: float = 0.05
    stock_sigma: float = 0.4
    stock_s0: float = 100.0
    stock_T: float = 1.0
    stock_paths: int = 100_000
    stock_steps: int = 256
    strike: float = 110.0
    rate: float = 0.03


def make_config(quick: bool = False, seed: int = 0) -> Config:
    if not quick:
        return Config(seed=seed)
    return Config(
        seed=seed,
        quick=True,
        mc_paths=(1000, 3000, 10_000),
        fp_sizes=(49, 65, 97, 129),
        pi_grid=341,
        pi_slices=(8, 16, 32, 64),
        rw_steps=(25, 50, 100, 200),
        route_paths=10_000,
        stock_paths=10_000,
        stock_steps=64,
    )


def _slope(x, e) -> float:
    return float(dynopt.fit_order(jnp.asarray(x, float), jnp.asarray(e, float)))


def _convergence(c: Config, key) -> tuple[dict, dict]:
    sde = D.linear_sde(1.0, c.alpha)
    exact = lambda x: D.linear_density(x, c.T, c.x0, rate=1.0, alpha=c.alpha)
    cdf = lambda x: D.linear_cdf(x, c.T, c.x0, rate=1.0, alpha=c.alpha)
    lo, hi = c.window
    edges = np.linspace(-3.0, 4.0, c.mc_bins)
    samples = D.monte_carlo_samples(sde, c.x0, c.T, key, max(c.mc_paths), dt=c.T / c.mc_steps)
    mc = [
        float(D.total_variation(D.histogram_density(samples[:n], edges, c.T), edges, cdf))
        for n in c.mc_paths
    ]
    fp_h, fp_err, fp_defect, fp_lost = [], [], [], []
    for m in c.fp_sizes:
        g = np.linspace(lo, hi, m)
        init = D.linear_density(jnp.asarray(g), c.fp_t0, c.x0, rate=1.0, alpha=c.alpha)
        r = D.fokker_planck(sde, init, g, c.fp_t0, c.T, pad_to=max(c.fp_sizes))
        fp_h.append(g[1] - g[0])
        fp_err.append(float(r.error(exact)))
        fp_defect.append(float(r.mass_defect))
        fp_lost.append(float(r.lost_mass))
    grid = np.linspace(lo, hi, c.pi_grid)
    pi = {
        conv: [
            float(D.path_integral(sde, c.x0, c.T, grid, n, convention=conv).error(exact))
            for n in c.pi_slices
        ]
        for conv in ("ito", "midpoint")
    }
    rw = [float(D.random_walk(sde, c.x0, c.T, c.T / n, c.window).error(exact)) for n in c.rw_steps]
    eps = c.T / np.asarray(c.pi_slices, float)
    dts = c.T / np.asarray(c.rw_steps, float)
    metrics = {
        "mc_tv": mc,
        "mc_slope_in_paths": _slope(c.mc_paths, mc),
        "fp_max_err": fp_err,
        "fp_slope_in_h": _slope(fp_h, fp_err),
        "fp_max_mass_defect": max(fp_defect),
        "fp_lost_mass": fp_lost,
        "pi_ito_max_err": pi["ito"],
        "pi_ito_slope_in_eps": _slope(eps, pi["ito"]),
        "pi_midpoint_max_err": pi["midpoint"],
        "pi_midpoint_slope_in_eps": _slope(eps, pi["midpoint"]),
        "rw_max_err": rw,
        "rw_slope_in_dt": _slope(dts, rw),
    }
    arrays = {
        "conv_mc_paths": np.asarray(c.mc_paths, float),
        "conv_mc": np.asarray(mc),
        "conv_fp_h": np.asarray(fp_h),
        "conv_fp": np.asarray(fp_err),
        "conv_pi_eps": eps,
        "conv_pi_ito": np.asarray(pi["ito"]),
        "conv_pi_midpoint": np.asarray(pi["midpoint"]),
        "conv_rw_dt": dts,
        "conv_rw": np.asarray(rw),
    }
    return metrics, arrays


def _all_routes(c: Config, sde, x0, T, key, exact_fn, window, tag) -> tuple[dict, dict]:
    """Every route at its finest setting for one SDE, against `exact_fn` on each route's points."""
    lo, hi = window
    g = np.linspace(lo, hi, max(c.fp_sizes))
    fp = D.fokker_planck(
        sde, D.short_time_density(sde, x0, 0.02, g), g, 0.02, T, pad_to=max(c.fp_sizes)
    )
    gp = np.linspace(lo, hi, c.pi_grid)
    n = max(c.pi_slices) * max(1, round(T / c.T))
    pi_mid = D.path_integral(sde, x0, T, gp, n, convention="midpoint")
    pi_trap = D.path_integral(sde, x0, T, gp, n, convention="trapezoid")
    rw = D.random_walk(sde, x0, T, T / (max(c.rw_steps) * max(1, round(T / c.T))), window)
    edges = np.linspace(lo, hi, 51)
    mc = D.monte_carlo_density(sde, x0, T, edges, key, c.route_paths, dt=T / c.mc_steps)
    out, arrays = {}, {}
    for name, r in (
        ("fokker_planck", fp),
        ("pi_midpoint", pi_mid),
        ("pi_trapezoid", pi_trap),
        ("random_walk", rw),
        ("monte_carlo", mc),
    ):
        out[name] = float(jnp.max(jnp.abs(r.density - exact_fn(r.x))))
        arrays[f"{tag}_{name}_x"] = np.asarray(r.x)
        arrays[f"{tag}_{name}_p"] = np.asarray(r.density)
    xs = np.linspace(lo, hi, 400)
    arrays[f"{tag}_exact_x"], arrays[f"{tag}_exact_p"] = xs, np.asarray(exact_fn(jnp.asarray(xs)))
    out["peak"] = float(np.max(arrays[f"{tag}_exact_p"]))
    out["fp_time_start"] = 0.02
    return out, arrays


def _stock(c: Config, key) -> tuple[dict, dict]:
    mu, sig, T, s0 = c.stock_mu, c.stock_sigma, c.stock_T, c.stock_s0
    k1, k2 = jax.random.split(key)
    gbm = D.GBM(mu, sig)
    paths = simulate(gbm, s0, jnp.asarray([0.0, T]), k1, c.stock_paths, dt=T / c.stock_steps)
    sT = paths.ys[:, -1, 0]
    x = jnp.log(sT / s0)
    n = c.stock_paths
    mean, var = float(jnp.mean(x)), float(jnp.var(x))
    edges = np.linspace(20.0, 400.0, 77)
    hist = D.histogram_density(sT, edges, T)
    tv = {}
    for printed in (False, True):
        fine = jnp.linspace(edges[0], edges[-1], 76 * 200 + 1)
        dens = D.lognormal_density(fine, T, s0, mu=mu, sigma=sig, printed=printed)
        cell = (dens[1:] + dens[:-1]) / 2 * (fine[1] - fine[0])
        probs = jnp.sum(cell.reshape(76, 200), axis=1)
        tv["printed" if printed else "corrected"] = float(
            0.5 * jnp.sum(jnp.abs(hist.density * np.diff(edges) - probs))
        )
    d, g = D.ito_lemma(lambda t, s: jnp.log(s), lambda t, s: mu * s, lambda t, s: sig * s, 0.0, s0)
    xr = D.monte_carlo_samples(
        D.GBM(c.rate, sig).log_sde(), np.log(s0), T, k2, c.route_paths, dt=T / c.mc_steps
    )
    pay = D.discounted_payoff(jnp.exp(xr), c.strike, c.rate, T)
    price, se = float(jnp.mean(pay)), float(jnp.std(pay)) / np.sqrt(pay.shape[0])
    bs = float(D.black_scholes_call(s0, c.strike, c.rate, sig, T))
    metrics = {
        "paths": n,
        "euler_steps": c.stock_steps,
        "mean_lnS": mean,
        "mean_lnS_se": float(np.sqrt(var / n)),
        "mean_lnS_ito": (mu - sig**2 / 2) * T,
        "mean_lnS_naive": mu * T,
        "var_lnS": var,
        "var_lnS_se": var * float(np.sqrt(2 / n)),
        "var_lnS_corrected_sigma2T": sig**2 * T,
        "var_lnS_printed_sigmaT": sig * T,
        "tv_hist_vs_corrected_lognormal": tv["corrected"],
        "tv_hist_vs_printed_lognormal": tv["printed"],
        "ito_lemma_lnS_drift": float(d),
        "ito_lemma_lnS_diffusion": float(g),
        "bs_paths": int(pay.shape[0]),
        "bs_call_mc": price,
        "bs_call_mc_se": se,
        "bs_call_closed_form": bs,
        "bs_call_error_in_se": abs(price - bs) / se,
    }
    s_plot = np.linspace(edges[0], edges[-1], 400)
    arrays = {
        "stock_hist_x": np.asarray(hist.x),
        "stock_hist_p": np.asarray(hist.density),
        "stock_s": s_plot,
        "stock_corrected": np.asarray(
            D.lognormal_density(jnp.asarray(s_plot), T, s0, mu=mu, sigma=sig)
        ),
        "stock_printed": np.asarray(
            D.lognormal_density(jnp.asarray(s_plot), T, s0, mu=mu, sigma=sig, printed=True)
        ),
    }
    return metrics, arrays


def run(config: Config) -> tuple[dict, dict]:
    c = config
    keys = jax.random.split(jax.random.key(c.seed), 4)
    conv_m, arrays = _convergence(c, keys[0])
    ou = D.linear_sde(-1.0, c.alpha)
    ou_exact = lambda x: D.linear_density(x, c.ou_T, c.x0, rate=-1.0, alpha=c.alpha)
    ou_m, ou_a = _all_routes(c, ou, c.x0, c.ou_T, keys[1], ou_exact, (-3.0, 3.5), "ou")
    dw = D.ScalarSDE(D.Polynomial([0.0, 1.0, 0.0, -1.0]), c.alpha)
    dw_exact = lambda x: D.stationary_density(dw, x)  # normalised on each route's points
    dw_m, dw_a = _all_routes(c, dw, 0.0, c.dw_T, keys[2], dw_exact, (-2.5, 2.5), "dw")
    stock_m, stock_a = _stock(c, keys[3])
    arrays.update(ou_a)
    arrays.update(dw_a)
    arrays.update(stock_a)
    metrics = {
        "convergence": conv_m,
        "ou_max_err": ou_m,
        "double_well_max_err": dw_m,
        "stock": stock_m,
        "alpha": c.alpha,
    }
    return metrics, arrays


def plot(metrics: dict, arrays: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    m = metrics["convergence"]
    fig, axes = plotting.figure(4, width=3.6)
    panels = [
        (
            "conv_mc_paths",
            [("conv_mc", "Monte Carlo", m["mc_slope_in_paths"])],
            "paths N",
            "total variation on bins",
            "(a) Monte Carlo (diffrax ShARK)",
        ),
        (
            "conv_fp_h",
            [("conv_fp", "Fokker–Planck", m["fp_slope_in_h"])],
            "grid spacing h",
            "max |P - exact|",
            "(b) Fokker–Planck, Kvaerno5",
        ),
        (
            "conv_pi_eps",
            [
                ("conv_pi_ito", "Itô (pre-point)", m["pi_ito_slope_in_eps"]),
                ("conv_pi_midpoint", "midpoint + Jacobian", m["pi_midpoint_slope_in_eps"]),
            ],
            "time slice ε",
            "max |P - exact|",
            "(c) path integral",
        ),
        (
            "conv_rw_dt",
            [("conv_rw", "random walk", m["rw_slope_in_dt"])],
            "time step Δt (Δs² = αΔt)",
            "max |P - exact|",
            "(d) asymmetric random walk",
        ),
    ]
    for ax, (xkey, series, xlabel, ylabel, title) in zip(axes, panels):
        for i, (ykey, label, slope) in enumerate(series):
            plotting.plot_error_vs_step_size(
                ax, arrays[xkey], arrays[ykey], label=label, order=slope, marker="os"[i]
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(
        "dx = x dt + √α dW, α = 0.5, x0 = 0.3, T = 0.5: each route vs the exact density",
        fontsize=10,
    )
    paths = [plotting.save(fig, out_dir / "convergence.png")]

    fig, axes = plotting.figure(3, width=4.0)
    styles = {
        "fokker_planck": "-",
        "pi_midpoint": "--",
        "pi_trapezoid": ":",
        "random_walk": ".",
        "monte_carlo": "-",
    }
    for ax, tag, title in (
        (axes[0], "ou", "OU dx = -x dt + √α dW, T = 1"),
        (axes[1], "dw", "double well p = x - x³, T = 6"),
    ):
        ax.plot(
            arrays[f"{tag}_exact_x"],
            arrays[f"{tag}_exact_p"],
            "k-",
            lw=3,
            alpha=0.3,
            label="exact" if tag == "ou" else "exp((2/α)∫p dx)",
        )
        for name, ls in styles.items():
            x, p = arrays[f"{tag}_{name}_x"], arrays[f"{tag}_{name}_p"]
            if name == "monte_carlo":
                ax.step(x, p, where="mid", lw=0.8, label=name)
            elif ls == ".":
                ax.plot(x, p, ".", ms=1.5, label=name)
            else:
                ax.plot(x, p, ls, lw=1, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x")
        ax.legend(fontsize=6)
    st = metrics["stock"]
    axes[2].step(
        arrays["stock_hist_x"],
        arrays["stock_hist_p"],
        where="mid",
        lw=0.8,
        label=f"Euler–Maruyama S_T ({st['paths']} paths)",
    )
    axes[2].plot(
        arrays["stock_s"],
        arrays["stock_corrected"],
        "k-",
        label=f"log-normal, var σ²T (TV {st['tv_hist_vs_corrected_lognormal']:.3f})",
    )
    axes[2].plot(
        arrays["stock_s"],
        arrays["stock_printed"],
        "r--",
        label=f"as printed, var σT (TV {st['tv_hist_vs_printed_lognormal']:.3f})",
    )
    axes[2].set_title("GBM μ = 0.05, σ = 0.4, S0 = 100, T = 1", fontsize=9)
    axes[2].set_xlabel("S_T")
    axes[2].legend(fontsize=6)
    paths.append(plotting.save(fig, out_dir / "densities.png"))
    return paths
