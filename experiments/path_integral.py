"""Transition densities of dx = p dt + √α dW by four routes (posts 7–8): Monte Carlo, Fokker–Planck,
time-sliced path integral (Itô / midpoint), asymmetric random walk; double-well stationary law;
post 8's stock model (σ vs σ², Itô's lemma for ln S, Black–Scholes by Monte Carlo)."""

import dataclasses
from pathlib import Path
from typing import ClassVar

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
    (5) 2-D: dx = Ax dt + √α dW with the non-normal A = [[-1, 2], [-0.5, -1]], x0 = (0.5, -0.3),
    T = 0.5, against the exact Gaussian (Van Loan covariance): MC (tensor histogram, TV vs N),
    Fokker–Planck (h), path integral (ε; Itô and midpoint with |det(I - ε∇p/2)|), walk (Δt).
    Section (5) runs in full mode only (it adds ~20 s, mostly compilation; the quick mode stays
    under its 30 s budget, and tests/test_densities_nd.py checks the 2-D routes).
    Runtime on 2 CPU cores: quick ~25 s, full ~2 min.
    Headline: slopes ≈ -0.5, 2, 1, 2, 1 (in 1-D and in 2-D); Var(ln S_T)/σ²T ≈ 1 (printed form
    off by 1/σ = 2.5x); BS call within 2 SE.
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
    # (5) 2-D linear SDE (full mode only).
    two_d: bool = True
    nd_A: tuple[tuple[float, ...], ...] = ((-1.0, 2.0), (-0.5, -1.0))
    nd_x0: tuple[float, ...] = (0.5, -0.3)
    nd_mc_paths: tuple[int, ...] = (2500, 5000, 10_000, 20_000, 40_000, 80_000, 160_000)
    nd_mc_steps: int = 20
    nd_fp_sizes: tuple[int, ...] = (17, 21, 25, 29, 33)
    nd_fp_t0: float = 0.2
    nd_pi_slices: tuple[int, ...] = (4, 8, 16, 32)
    nd_rw_steps: tuple[int, ...] = (64, 128, 256, 512, 1024)

    QUICK: ClassVar[dict] = dict(
        two_d=False,
        mc_paths=(1000, 3000, 10_000),
        fp_sizes=(49, 65, 97, 129),
        pi_grid=341,
        pi_slices=(8, 16, 32, 64),
        rw_steps=(25, 50, 100, 200),
        route_paths=10_000,
        stock_paths=10_000,
        stock_steps=64,
        nd_mc_paths=(2500, 5000, 10_000, 20_000),
        nd_fp_sizes=(17, 21, 25, 29),
        nd_rw_steps=(64, 128, 256, 512),
    )


def _slope(x, e) -> float:
    return float(dynopt.fit_order(jnp.asarray(x, float), jnp.asarray(e, float)))


def _route_metrics(paths, mc, fp_h, fp_err, fp_defect, fp_lost, eps, pi, dts, rw) -> dict:
    """Each route's errors and fitted slope (Monte Carlo in paths, FP in h, PI in ε, walk in Δt)."""
    return {
        "mc_tv": mc,
        "mc_slope_in_paths": _slope(paths, mc),
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
    metrics = _route_metrics(c.mc_paths, mc, fp_h, fp_err, fp_defect, fp_lost, eps, pi, dts, rw)
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
    paths = simulate(
        gbm, None, jnp.asarray([0.0, T]), k1, c.stock_paths, x0=s0, dt=T / c.stock_steps
    )
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


def _two_d(c: Config, key) -> tuple[dict, dict]:
    """The four routes in 2-D against the exact density of a non-normal linear SDE."""
    A, x0, T = np.asarray(c.nd_A), np.asarray(c.nd_x0), c.T
    sde = D.linear_vector_sde(A, c.alpha)
    mean, cov = D.linear_moments(A, T, x0, alpha=c.alpha)
    exact = lambda x: D.gaussian_density(x, mean, cov)
    peak = float(exact(mean))
    samples = D.monte_carlo_samples_nd(sde, x0, T, key, max(c.nd_mc_paths), dt=T / c.nd_mc_steps)
    edges = (np.linspace(-1.5, 1.7, 17), np.linspace(-1.6, 1.2, 15))
    probs = D.bin_probabilities(exact, edges)
    hists = [D.histogram_density_nd(samples[:n], edges, T) for n in c.nd_mc_paths]
    mc = [float(D.total_variation_nd(h, probs)) for h in hists]
    m0, c0 = D.linear_moments(A, c.nd_fp_t0, x0, alpha=c.alpha)
    fp_h, fp_err, fp_defect, fp_lost = [], [], [], []
    for m in c.nd_fp_sizes:
        axes = (np.linspace(-2.1, 2.5, m), np.linspace(-2.3, 1.9, m))
        init = D.gaussian_density(D.mesh_points(axes), m0, c0)
        # Solver tolerance 1e-6 ≪ the O(h²) error (≥ 1e-2): fewer implicit steps, each of which
        # factorises a dense (M+1)² Jacobian.
        fp = D.fokker_planck_nd(
            sde, init, axes, c.nd_fp_t0, T, pad_to=max(c.nd_fp_sizes), rtol=1e-6, atol=1e-9
        )
        fp_h.append(axes[0][1] - axes[0][0])
        fp_err.append(float(fp.error(exact)))
        fp_defect.append(float(fp.mass_defect))
        fp_lost.append(float(fp.lost_mass))
    pi_axes = (np.linspace(-2.3, 2.5, 53), np.linspace(-2.4, 2.0, 49))
    pi_res = {
        conv: [D.path_integral_nd(sde, x0, T, pi_axes, n, convention=conv) for n in c.nd_pi_slices]
        for conv in ("ito", "midpoint")
    }
    pi = {k: [float(r.error(exact)) for r in v] for k, v in pi_res.items()}
    window = [(-2.3, 2.5), (-2.4, 2.0)]
    rw_res = [D.random_walk_nd(sde, x0, T, T / n, window) for n in c.nd_rw_steps]
    rw = [float(r.error(exact)) for r in rw_res]
    eps = T / np.asarray(c.nd_pi_slices, float)
    dts = T / np.asarray(c.nd_rw_steps, float)
    metrics = {
        "A": [list(r) for r in c.nd_A],
        "x0": list(c.nd_x0),
        "exact_peak": peak,
        **_route_metrics(c.nd_mc_paths, mc, fp_h, fp_err, fp_defect, fp_lost, eps, pi, dts, rw),
        "finest_max_err_over_peak": {
            "fokker_planck": fp_err[-1] / peak,
            "pi_ito": pi["ito"][-1] / peak,
            "pi_midpoint": pi["midpoint"][-1] / peak,
            "random_walk": rw[-1] / peak,
        },
    }
    xs, ys = np.linspace(-1.6, 1.8, 121), np.linspace(-1.7, 1.3, 107)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1)
    arrays = {
        "nd_conv_mc_paths": np.asarray(c.nd_mc_paths, float),
        "nd_conv_mc": np.asarray(mc),
        "nd_conv_fp_h": np.asarray(fp_h),
        "nd_conv_fp": np.asarray(fp_err),
        "nd_conv_pi_eps": eps,
        "nd_conv_pi_ito": np.asarray(pi["ito"]),
        "nd_conv_pi_midpoint": np.asarray(pi["midpoint"]),
        "nd_conv_rw_dt": dts,
        "nd_conv_rw": np.asarray(rw),
        "nd_exact_x": xs,
        "nd_exact_y": ys,
        "nd_exact_p": np.asarray(exact(jnp.asarray(grid))),
    }
    finest = {
        "monte_carlo": hists[-1],
        "fokker_planck": fp,
        "pi_midpoint": pi_res["midpoint"][-1],
        "random_walk": rw_res[-1],
    }
    for name, r in finest.items():
        arrays[f"nd_{name}_x"], arrays[f"nd_{name}_y"] = (np.asarray(a) for a in r.axes)
        arrays[f"nd_{name}_err"] = np.asarray(r.density - r.exact_on_grid(exact))
    return metrics, arrays


def _key(c: Config, i: int):
    return jax.random.split(jax.random.key(c.seed), 4)[i]


def convergence(c: Config) -> tuple[dict, dict]:
    return _convergence(c, _key(c, 0))


def ou(c: Config) -> tuple[dict, dict]:
    sde = D.linear_sde(-1.0, c.alpha)
    exact = lambda x: D.linear_density(x, c.ou_T, c.x0, rate=-1.0, alpha=c.alpha)
    return _all_routes(c, sde, c.x0, c.ou_T, _key(c, 1), exact, (-3.0, 3.5), "ou")


def double_well(c: Config) -> tuple[dict, dict]:
    dw = D.ScalarSDE(D.Polynomial([0.0, 1.0, 0.0, -1.0]), c.alpha)
    exact = lambda x: D.stationary_density(dw, x)  # normalised on each route's points
    return _all_routes(c, dw, 0.0, c.dw_T, _key(c, 2), exact, (-2.5, 2.5), "dw")


def stock(c: Config) -> tuple[dict, dict]:
    return _stock(c, _key(c, 3))


def two_d(c: Config) -> tuple[dict, dict]:
    return _two_d(c, jax.random.fold_in(_key(c, 0), 2)) if c.two_d else ({}, {})


SECTIONS = {
    "convergence": convergence,
    "ou_max_err": ou,
    "double_well_max_err": double_well,
    "stock": stock,
    "two_d": two_d,
}
# Human names of the density routes (the code's names stay in metrics and data).
ROUTES = {
    "fokker_planck": "Fokker–Planck (finite volumes)",
    "pi_midpoint": "path integral, midpoint",
    "pi_trapezoid": "path integral, trapezoid",
    "random_walk": "random walk",
    "monte_carlo": "Monte Carlo histogram",
}


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
        ax.set_title(title)
        plotting.legend(ax)
    fig.suptitle("dx = x dt + √α dW, α = 0.5, x0 = 0.3, T = 0.5: each route vs the exact density")
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
            label="exact" if tag == "ou" else "stationary ∝ exp((2/α)∫p dx)",
        )
        for name, ls in styles.items():
            x, p = arrays[f"{tag}_{name}_x"], arrays[f"{tag}_{name}_p"]
            if name == "monte_carlo":
                ax.step(x, p, where="mid", lw=0.8, label=ROUTES[name])
            elif ls == ".":
                ax.plot(x, p, ".", ms=1.5, label=ROUTES[name])
            else:
                ax.plot(x, p, ls, lw=1, label=ROUTES[name])
        ax.set_title(title)
        ax.set(xlabel="x", ylabel="density P(x, T)")
        ax.set_ylim(0.0, 1.6 * float(np.max(arrays[f"{tag}_exact_p"])))  # room for the legend
        plotting.legend(ax, loc="upper center", ncols=2)
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
    axes[2].set_title("GBM μ = 0.05, σ = 0.4, S0 = 100, T = 1")
    axes[2].set(xlabel="S_T", ylabel="density")
    plotting.legend(axes[2])
    paths.append(plotting.save(fig, out_dir / "densities.png"))
    if metrics.get("two_d"):  # full mode only
        paths.append(_plot_two_d(metrics["two_d"], arrays, out_dir))
    return paths


def _plot_two_d(m: dict, arrays: dict, out_dir: Path) -> Path:
    fig, axes = plotting.figure(3, nrows=2, width=3.6, height=3.1)
    ex = dict(
        exact_x=arrays["nd_exact_x"], exact_y=arrays["nd_exact_y"], exact=arrays["nd_exact_p"]
    )
    for ax, (name, title) in zip(
        axes,
        (
            ("monte_carlo", f"(a) Monte Carlo, N = {int(arrays['nd_conv_mc_paths'][-1])}"),
            ("fokker_planck", f"(b) Fokker–Planck, h = {arrays['nd_conv_fp_h'][-1]:.3f}"),
            ("pi_midpoint", f"(c) midpoint path integral, ε = {arrays['nd_conv_pi_eps'][-1]:.3g}"),
            ("random_walk", f"(d) random walk, Δt = {arrays['nd_conv_rw_dt'][-1]:.2g}"),
        ),
    ):
        err = arrays[f"nd_{name}_err"]
        plotting.plot_density_error_2d(
            ax,
            arrays[f"nd_{name}_x"],
            arrays[f"nd_{name}_y"],
            err,
            scale=float(np.max(np.abs(err))),
            label="P - exact",
            **ex,
        )
        ax.set_title(title)
    for ax in axes[:4] + axes[5:]:
        ax.set_xlim(arrays["nd_exact_x"][0], arrays["nd_exact_x"][-1])
        ax.set_ylim(arrays["nd_exact_y"][0], arrays["nd_exact_y"][-1])
    mesh = axes[5].contourf(ex["exact_x"], ex["exact_y"], ex["exact"].T, 12, cmap="viridis")
    fig.colorbar(mesh, ax=axes[5], label="P(x, T | x0)", shrink=0.85)
    axes[5].set_title("(f) exact density (Van Loan covariance)")
    axes[5].set_xlabel("x₁")
    ax = axes[4]
    series = (
        ("nd_conv_mc_paths", "nd_conv_mc", "MC: N₀/N (TV)", m["mc_slope_in_paths"], True),
        ("nd_conv_fp_h", "nd_conv_fp", "Fokker–Planck: h/h₀", m["fp_slope_in_h"], False),
        ("nd_conv_pi_eps", "nd_conv_pi_ito", "Itô PI: ε/ε₀", m["pi_ito_slope_in_eps"], False),
        (
            "nd_conv_pi_eps",
            "nd_conv_pi_midpoint",
            "midpoint PI: ε/ε₀",
            m["pi_midpoint_slope_in_eps"],
            False,
        ),
        ("nd_conv_rw_dt", "nd_conv_rw", "walk: Δt/Δt₀", m["rw_slope_in_dt"], False),
    )
    for i, (xkey, ykey, label, slope, inverse) in enumerate(series):
        x = arrays[xkey] / arrays[xkey][0]
        plotting.plot_error_vs_step_size(
            ax,
            1.0 / x if inverse else x,
            arrays[ykey],
            label=label,
            order=abs(slope),
            marker="osD^v"[i],
        )
    ax.set_xlabel("discretization parameter / coarsest")
    ax.set_ylabel("max |P - exact| (MC: TV)")
    ax.set_title("(e) 2-D convergence of each route")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 40)  # room for the legend above the data
    plotting.legend(ax, loc="upper left")
    fig.suptitle(
        "2-D: dx = Ax dt + √α dW, A = [[-1, 2], [-0.5, -1]] (non-normal), α = 0.5, "
        "x0 = (0.5, -0.3), T = 0.5\n(a)-(d): each route's error at its finest setting over the "
        "exact density's contours"
    )
    return plotting.save(fig, out_dir / "densities_2d.png")
