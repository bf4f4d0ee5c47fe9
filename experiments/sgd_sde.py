"""SGD noise as an SDE: stationary variances, weak order, linear scaling, schedules, Gibbs laws."""

import dataclasses
import time
from pathlib import Path
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import plotting, problems, sde


@dataclasses.dataclass(frozen=True)
class Config:
    """Run card. `python -m experiments run sgd_sde [--quick]`.

    (a) 1-D noisy quadratic ½λθ² (per-sample gradient variance σ², n samples) and linear
    regression: SGD's stationary variance ηcσ²/(Bλ(2−ηλ)) vs the SDE's ηcσ²/(2Bλ)
    (c = (n−B)/(n−1), sampling without replacement) vs Monte Carlo of SGD (optax, dynopt.run) and
    of the SDE (diffrax Euler–Maruyama), across η and B. (b) Weak error at T of E L and tr Cov for
    SGD vs SDE vs gradient flow, exact moment recursions, fitted orders. (c) Linear scaling rule
    (equal η/B) and batch-size schedule vs learning-rate decay. (d) Double wells: Langevin and
    Kramers histograms vs exp(−L/T) (total variation with its Monte-Carlo floor), mean escape
    time vs 1/T against the Arrhenius slope ΔL = 1.
    Runtime on 2 CPU cores: quick < 30 s, full < 5 min. Headline: Var_SGD/Var_SDE = 2/(2−ηλ)
    exactly, MC within error bars; weak order of E L ≈ 1 (SGD vs SDE and vs ODE), tr Cov ≈ 2 vs 1;
    escape-time slope ≈ ΔL (1.0) within the Kramers prefactor's finite-T correction.
    """

    seed: int = 0
    quick: bool = False
    n: int = 256
    lam: float = 1.0
    sigma: float = 1.0
    etas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.2)
    batches: tuple[int, ...] = (1, 4, 16)
    mc_paths: int = 4000
    sde_paths: int = 2000
    sde_substeps: int = 16
    relax_time: float = 12.0
    linreg_dim: int = 3
    linreg_noise: float = 0.5
    linreg_batch: int = 8
    linreg_paths: int = 2000
    weak_t: float = 2.0
    weak_etas: tuple[float, ...] = (0.2, 0.1, 0.05, 0.025, 0.0125)
    weak_paths: int = 2000
    scaling_ratio: float = 0.025
    scaling_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    scaling_mc_batches: tuple[int, ...] = (1, 4, 16, 32)
    schedule_eta: float = 0.4
    schedule_batch: int = 8
    schedule_factor: int = 5
    schedule_steps: int = 200
    schedule_paths: int = 1000
    well_temperature: float = 0.4
    well_tilt: float = 0.25
    well_paths: int = 4000
    well_t: float = 100.0
    well_dt: float = 0.02
    kramers: bool = True
    escape_temperatures: tuple[float, ...] = (0.5, 0.4, 1 / 3, 2 / 7, 0.25)
    escape_paths: int = 500
    escape_t: float = 2000.0
    escape_dt: float = 0.01

    QUICK: ClassVar[dict] = dict(
        etas=(0.1, 0.4, 1.2),
        batches=(4,),
        mc_paths=1000,
        sde_paths=0,  # SDE Monte Carlo only in the full run (the wells exercise simulate)
        sde_substeps=8,
        weak_paths=0,  # exact moments only in quick mode
        linreg_paths=0,
        kramers=False,
        scaling_batches=(1, 4, 16),
        scaling_mc_batches=(16,),
        schedule_steps=100,
        schedule_paths=0,  # exact moments only (Monte Carlo: 6 more compilations)
        well_paths=600,
        well_t=20.0,
        escape_temperatures=(0.5, 1 / 3),
        escape_paths=60,
        escape_t=300.0,
    )


# --- problems ------------------------------------------------------------------------------------


def _sample_quadratic(theta, x, lam):
    return 0.5 * lam * jnp.sum(theta * theta) - jnp.sum(x * theta)


def noisy_quadratic(n: int, lam: float, sigma: float, seed: int) -> dynopt.Problem:
    r"""$\ell_i(\theta) = \frac12\lambda\theta^2 - x_i\theta$ with centred $x_i$ of variance exactly
    $\sigma^2$: $L = \frac12\lambda\theta^2$, per-sample gradient variance $\sigma^2$."""
    x = np.random.default_rng(seed).normal(size=n)
    x = (x - x.mean()) / x.std() * sigma
    loss = eqx.Partial(_sample_quadratic, lam=jnp.asarray(lam))
    return problems.finite_sum(loss, jnp.asarray(x)[:, None], jnp.array([1.0]), batch_size=1)


def _double_well(x, tilt):
    return jnp.sum((x * x - 1.0) ** 2 + tilt * x)


def _var_se(x):
    x = np.asarray(x, float)
    d = x - x.mean(axis=0)
    v = np.mean(d**2, axis=0)
    return v, np.sqrt((np.mean(d**4, axis=0) - v**2) / x.shape[0])


# --- (a) stationary variances --------------------------------------------------------------------


def _stationary(config: Config, key) -> tuple[dict, dict]:
    quad = noisy_quadratic(config.n, config.lam, config.sigma, config.seed)
    etas = np.asarray(config.etas)
    steps = int(np.ceil(config.relax_time / (config.lam * etas.min())))
    out: dict = {"etas": etas}
    metrics: dict = {"steps": steps, "per_batch": {}}
    throughput = None
    for j, b in enumerate(config.batches):
        model = sde.SGDNoise(float(etas[0]), b)
        exact_sgd = np.array(
            [
                float(sde.quadratic_stationary_covariance(_with_lr(model, e), quad, step=e)[0, 0])
                for e in etas
            ]
        )
        exact_sde = np.array(
            [
                float(sde.quadratic_stationary_covariance(_with_lr(model, e), quad)[0, 0])
                for e in etas
            ]
        )
        disc = dynopt.flows.GradientFlow().discretize(jnp.asarray(etas))
        keys = jax.random.split(jax.random.fold_in(key, j), config.mc_paths)
        traj = dynopt.run(disc, model.sgd_problem(quad), steps, key=keys, every=steps)
        mc, se = _var_se(np.asarray(traj.params[:, :, -1, 0]).T)
        out[f"B{b}_exact_sgd"], out[f"B{b}_exact_sde"] = exact_sgd, exact_sde
        out[f"B{b}_mc_sgd"], out[f"B{b}_mc_sgd_se"] = mc, se
        metrics["per_batch"][str(b)] = {
            "ratio_exact_sgd_over_sde": (exact_sgd / exact_sde).tolist(),
            "ratio_formula_2_over_2_minus_eta_lam": (2 / (2 - etas * config.lam)).tolist(),
            "mc_sgd_z_scores": ((mc - exact_sgd) / se).tolist(),
        }
    if not config.sde_paths:
        return metrics, out
    # The SDE by Monte Carlo (Euler–Maruyama, h = eta/substeps), for the middle batch size.
    b = config.batches[len(config.batches) // 2]
    model = sde.SGDNoise(float(etas[0]), b)
    mc_sde, mc_sde_se, em_exact = [], [], []
    for i, e in enumerate(etas):
        h = e / config.sde_substeps
        ts = jnp.array([0.0, steps * e])
        start = time.perf_counter()
        paths = sde.simulate(
            _with_lr(model, e), quad, ts, jax.random.fold_in(key, 100 + i), config.sde_paths, dt=h
        )
        ys = np.asarray(paths.ys[:, -1, 0])
        if i == 1:  # compiled by the first call: time a pure simulation
            wall = time.perf_counter() - start
            throughput = config.sde_paths * steps * config.sde_substeps / wall
        v, s = _var_se(ys)
        mc_sde.append(v)
        mc_sde_se.append(s)
        em_exact.append(
            float(sde.quadratic_stationary_covariance(_with_lr(model, e), quad, step=h)[0, 0])
        )
    out["sde_batch"] = np.asarray(b)
    out["mc_sde"], out["mc_sde_se"], out["em_exact"] = map(
        np.asarray, (mc_sde, mc_sde_se, em_exact)
    )
    exact_sde = out[f"B{b}_exact_sde"]
    metrics["sde_mc"] = {
        "batch": b,
        "substeps": config.sde_substeps,
        "ratio_mc_sde_over_sde": (out["mc_sde"] / exact_sde).tolist(),
        "ratio_em_exact_over_sde": (out["em_exact"] / exact_sde).tolist(),
        "z_scores_vs_em_exact": ((out["mc_sde"] - out["em_exact"]) / out["mc_sde_se"]).tolist(),
        "throughput_path_steps_per_s": throughput,
        "solver": paths.solver,
    }
    return metrics, out


def _with_lr(model: sde.SGDNoise, eta: float) -> sde.SGDNoise:
    return eqx.tree_at(lambda m: m.learning_rate, model, jnp.asarray(eta))


def _linreg_stationary(config: Config, key, linreg) -> tuple[dict, dict]:
    lam_max = float(np.linalg.eigvalsh(np.asarray(jax.hessian(linreg.loss)(linreg.params0))).max())
    etas = np.asarray([e for e in config.etas if e <= 0.8]) / lam_max  # 2nd moments stable
    model = sde.SGDNoise(float(etas[0]), config.linreg_batch)
    tr_sgd = np.array(
        [
            np.trace(sde.quadratic_stationary_covariance(_with_lr(model, e), linreg, step=e))
            for e in etas
        ]
    )
    tr_sde = np.array(
        [np.trace(sde.quadratic_stationary_covariance(_with_lr(model, e), linreg)) for e in etas]
    )
    metrics = {
        "lambda_max": lam_max,
        "eta_lambda_max": (etas * lam_max).tolist(),
        "ratio_exact_tr_sgd_over_sde": (tr_sgd / tr_sde).tolist(),
    }
    arrays = {"lr_etas": etas, "lr_tr_sgd": tr_sgd, "lr_tr_sde": tr_sde}
    if not config.linreg_paths:
        return metrics, {**arrays, "lr_mc": etas * np.nan, "lr_mc_se": etas * np.nan}
    steps = int(np.ceil(config.relax_time * 2 / (etas.min() * 0.5)))  # λ_min ≈ 0.5 here
    disc = dynopt.flows.GradientFlow().discretize(jnp.asarray(etas))
    keys = jax.random.split(key, config.linreg_paths)
    traj = dynopt.run(disc, model.sgd_problem(linreg), steps, key=keys, every=steps)
    final = np.asarray(traj.params[:, :, -1, :])  # (eta, path, d)
    mean = final.mean(axis=1, keepdims=True)
    sq = np.sum((final - mean) ** 2, axis=-1)
    mc, se = sq.mean(axis=1), sq.std(axis=1) / np.sqrt(sq.shape[1])
    metrics["mc_z_scores"] = ((mc - tr_sgd) / se).tolist()
    return metrics, {**arrays, "lr_mc": mc, "lr_mc_se": se}


# --- (b) weak error ------------------------------------------------------------------------------


def _weak(config: Config, key, linreg) -> tuple[dict, dict]:
    etas = np.asarray(config.weak_etas)
    b = config.linreg_batch
    model = sde.SGDNoise(float(etas[0]), b)
    flow = sde.SGDNoise(float(etas[0]), config.n)  # B = n: c = 0, the gradient flow
    t_end = config.weak_t
    ts_fine = np.round(np.arange(0.0, t_end + 1e-12, etas.min()), 12)
    ref = sde.quadratic_moments(model, linreg, ts_fine)
    ode = sde.quadratic_moments(flow, linreg, ts_fine)
    out = {
        "weak_etas": etas,
        "weak_ts": ts_fine,
        "sde_loss": np.asarray(ref.expected_loss),
        "sde_tr": np.asarray(jnp.trace(ref.covariance, axis1=1, axis2=2)),
        "ode_loss": np.asarray(ode.expected_loss),
    }
    err = {k: [] for k in ("loss_vs_sde", "loss_vs_ode", "tr_vs_sde", "tr_vs_ode")}
    for i, e in enumerate(etas):
        ts = np.linspace(0.0, t_end, 11)  # multiples of every eta: one compiled program
        sgd = sde.quadratic_moments(_with_lr(model, e), linreg, ts, step=e)
        loss, tr = (
            np.asarray(sgd.expected_loss),
            np.asarray(jnp.trace(sgd.covariance, axis1=1, axis2=2)),
        )
        out[f"sgd_ts_{i}"], out[f"sgd_loss_{i}"], out[f"sgd_tr_{i}"] = ts, loss, tr
        cont = sde.quadratic_moments(_with_lr(model, e), linreg, jnp.array([t_end]))  # its SDE
        cont_loss, cont_tr = float(cont.expected_loss[-1]), float(jnp.trace(cont.covariance[-1]))
        err["loss_vs_sde"].append(abs(loss[-1] - cont_loss))
        err["loss_vs_ode"].append(abs(loss[-1] - out["ode_loss"][-1]))
        err["tr_vs_sde"].append(abs(tr[-1] - cont_tr))
        err["tr_vs_ode"].append(abs(tr[-1]))
    for k, v in err.items():
        out[f"weak_err_{k}"] = np.asarray(v)
    orders = {k: float(dynopt.fit_order(etas, np.asarray(v))) for k, v in err.items()}
    metrics = {
        "t": t_end,
        "orders": orders,
        "errors": {k: [float(x) for x in v] for k, v in err.items()},
    }
    if not config.weak_paths:
        return metrics, out
    # Monte Carlo check of the largest step: SGD (optax) and the SDE (diffrax EM, h = eta/8).
    e0 = float(etas[0])
    n_steps = round(t_end / e0)
    keys = jax.random.split(key, config.weak_paths)
    traj = dynopt.run(
        _with_lr(model, e0).discretize(), model.sgd_problem(linreg), n_steps, key=keys
    )
    loss = np.asarray(traj.loss)
    out["mc_sgd_ts"] = np.asarray(traj.ts[0])
    out["mc_sgd_loss"], out["mc_sgd_loss_se"] = loss.mean(0), loss.std(0) / np.sqrt(loss.shape[0])
    ts_mc = jnp.asarray(np.round(np.arange(0.0, t_end + 1e-12, 0.25), 12))
    paths = sde.simulate(
        model,
        linreg,
        ts_mc,
        jax.random.fold_in(key, 1),
        config.weak_paths,
        dt=float(etas.min()) / 4,
    )
    m, s = paths.expectation(linreg.loss)
    out["mc_sde_ts"], out["mc_sde_loss"], out["mc_sde_loss_se"] = (
        np.asarray(ts_mc),
        np.asarray(m),
        np.asarray(s),
    )
    z_sgd = (out["mc_sgd_loss"] - out["sgd_loss_0"]) / np.maximum(out["mc_sgd_loss_se"], 1e-300)
    metrics["mc_sgd_max_abs_z"] = float(np.max(np.abs(z_sgd[1:])))
    metrics["sde_solver"] = paths.solver
    return metrics, out


# --- (c) linear scaling rule and schedules -------------------------------------------------------


def _scaling(config: Config, key) -> tuple[dict, dict]:
    quad = noisy_quadratic(config.n, config.lam, config.sigma, config.seed)
    bs = np.asarray(config.scaling_batches)
    etas = config.scaling_ratio * bs
    rows = {"wo": [], "w": [], "sde_w": []}
    for b, e in zip(bs, etas):
        for label, rep in (("wo", False), ("w", True)):
            m = sde.SGDNoise(float(e), int(b), replace=rep)
            rows[label].append(
                float(sde.quadratic_stationary_covariance(m, quad, step=float(e))[0, 0])
            )
        m = sde.SGDNoise(float(e), int(b), replace=True)
        rows["sde_w"].append(float(sde.quadratic_stationary_covariance(m, quad)[0, 0]))
    mc, mc_se = [], []
    steps = int(np.ceil(config.relax_time / (config.lam * etas.min())))
    for j, b in enumerate(config.scaling_mc_batches):
        m = sde.SGDNoise(config.scaling_ratio * b, int(b), replace=True)
        keys = jax.random.split(jax.random.fold_in(key, j), config.mc_paths)
        traj = dynopt.run(m.discretize(), m.sgd_problem(quad), steps, key=keys, every=steps)
        v, s = _var_se(np.asarray(traj.params[:, -1, 0]))
        mc.append(v)
        mc_se.append(s)
    arrays = {
        "scale_batches": bs,
        "scale_etas": etas,
        "scale_sgd_without": np.asarray(rows["wo"]),
        "scale_sgd_with": np.asarray(rows["w"]),
        "scale_sde_with": np.asarray(rows["sde_w"]),
        "scale_mc_batches": np.asarray(config.scaling_mc_batches),
        "scale_mc": np.asarray(mc),
        "scale_mc_se": np.asarray(mc_se),
    }
    metrics = {
        "eta_over_b": config.scaling_ratio,
        "sde_variance_with_replacement": rows["sde_w"][0],
        "sgd_with_replacement_over_sde": (np.asarray(rows["w"]) / rows["sde_w"][0]).tolist(),
        "sgd_without_replacement_over_sde": (np.asarray(rows["wo"]) / rows["sde_w"][0]).tolist(),
    }
    return metrics, arrays


def _schedules(config: Config, key, linreg) -> tuple[dict, dict]:
    """Phases of equal samples: lr decay (η/f^k, B) vs batch growth (η, B f^k); with replacement,
    so both have the noise scale ηc/B = η/B of the same SDE at the same SDE times."""
    f, n0, b0, e0 = (
        config.schedule_factor,
        config.schedule_steps,
        config.schedule_batch,
        config.schedule_eta,
    )
    plans = {
        "lr_decay": [(e0 / f**k, b0, n0) for k in range(3)],
        "batch_growth": [(e0, b0 * f**k, n0 // f**k) for k in range(3)],
    }
    arrays, metrics = {}, {}
    for name, phases in plans.items():
        mean, cov = None, None
        params = None
        samples, updates, losses, mc, mc_se = [0.0], [0], [], [], []
        keys = jax.random.split(jax.random.fold_in(key, len(name)), config.schedule_paths)
        for k, (eta, b, n) in enumerate(phases):
            model = sde.SGDNoise(eta, int(b), replace=True)
            ts = eta * np.arange(n + 1)
            mom = sde.quadratic_moments(model, linreg, ts, step=eta, x0=mean, covariance0=cov)
            mean, cov = mom.mean[-1], mom.covariance[-1]
            losses.append(np.asarray(mom.expected_loss if k == 0 else mom.expected_loss[1:]))
            samples.extend(samples[-1] + b * np.arange(1, n + 1))
            updates.extend(updates[-1] + np.arange(1, n + 1))
            if not config.schedule_paths:
                continue
            # Monte Carlo: continue every path from where the previous phase left it.
            q = model.sgd_problem(linreg)
            phase_keys = jax.vmap(lambda kk, k=k: jax.random.fold_in(kk, k))(keys)
            if params is None:
                traj = dynopt.run(model.discretize(), q, n, key=phase_keys)
            else:

                def cont(p0, kk, q=q, model=model, n=n):
                    return dynopt.run(
                        model.discretize(), eqx.tree_at(lambda prob: prob.params0, q, p0), n, key=kk
                    )

                traj = jax.vmap(cont)(params, phase_keys)
            params = traj.params[:, -1]
            loss = np.asarray(traj.loss if k == 0 else traj.loss[:, 1:])
            mc.append(loss.mean(0))
            mc_se.append(loss.std(0) / np.sqrt(loss.shape[0]))
        arrays[f"sched_{name}_samples"] = np.asarray(samples) / config.n
        arrays[f"sched_{name}_updates"] = np.asarray(updates)
        arrays[f"sched_{name}_loss"] = np.concatenate(losses)
        nan = np.full(len(samples), np.nan)
        arrays[f"sched_{name}_mc"] = np.concatenate(mc) if mc else nan
        arrays[f"sched_{name}_mc_se"] = np.concatenate(mc_se) if mc else nan
        metrics[name] = {
            "phases_eta_batch_steps": [list(map(float, p)) for p in phases],
            "final_expected_loss": float(arrays[f"sched_{name}_loss"][-1]),
            "final_mc_loss": float(arrays[f"sched_{name}_mc"][-1]),
            "updates": int(updates[-1]),
        }
    a, b = (metrics[k]["final_expected_loss"] for k in plans)
    metrics["final_loss_relative_difference"] = abs(a - b) / a
    return metrics, arrays


# --- (d) double wells ----------------------------------------------------------------------------


def _reached_right_well(y):
    return y[0] >= 1.0


def _gibbs_bins(tilt, temp, edges):
    """Bin probabilities of ∝ exp(-((θ²-1)² + tilt θ)/temp), by the trapezoid rule."""
    grid = np.linspace(-3.0, 3.0, 60_001)
    lp = -((grid * grid - 1) ** 2 + tilt * grid) / temp
    w = np.exp(lp - lp.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    return np.diff(np.interp(np.clip(edges, grid[0], grid[-1]), grid, cdf))


def _tv(x, probs, edges, rng):
    counts = np.histogram(x, edges)[0]
    tv = 0.5 * np.sum(np.abs(counts / x.size - probs))
    # Its Monte-Carlo floor: TV of exact Gibbs samples of the same size.
    floor = 0.5 * np.abs(rng.multinomial(x.size, probs, size=400) / x.size - probs).sum(axis=1)
    return float(tv), float(floor.mean()), float(floor.std())


def _wells(config: Config, key) -> tuple[dict, dict]:
    temp = config.well_temperature
    edges = np.concatenate([[-np.inf], np.linspace(-2.0, 2.0, 41), [np.inf]])
    ts = jnp.array([0.0, config.well_t])
    rng = np.random.default_rng(config.seed)
    arrays: dict = {"well_edges": edges[1:-1]}
    metrics: dict = {"temperature": temp}
    cases = {
        "symmetric": (0.0, "langevin"),
        "tilted": (config.well_tilt, "langevin"),
        "kramers": (config.well_tilt, "kramers"),
    }
    if not config.kramers:
        del cases["kramers"]
    for i, (name, (tilt, kind)) in enumerate(cases.items()):
        pot = eqx.Partial(_double_well, tilt=jnp.asarray(tilt))
        model = sde.Langevin(temp) if kind == "langevin" else sde.Kramers(1.0, temp)
        paths = sde.simulate(
            model,
            dynopt.Problem(pot, jnp.array([0.0])),
            ts,
            jax.random.fold_in(key, i),
            config.well_paths,
            dt=config.well_dt,
        )
        x = np.asarray(paths.ys[:, -1, 0])
        probs = _gibbs_bins(tilt, temp, edges)  # ∝ exp(-L/T) = exp(-2L/σ²)
        wrong = _gibbs_bins(tilt, 2 * temp, edges)  # exp(-L/σ²), post 1's eq. (9) read literally
        tv, floor, floor_sd = _tv(x, probs, edges, rng)
        arrays[f"well_{name}_x"] = x
        metrics[name] = {
            "tilt": tilt,
            "tv_vs_gibbs": tv,
            "tv_mc_floor_mean": floor,
            "tv_mc_floor_sd": floor_sd,
            "tv_vs_exp_minus_L_over_sigma2": float(
                0.5 * np.sum(np.abs(np.histogram(x, edges)[0] / x.size - wrong))
            ),
            "fraction_right_well": float(np.mean(x > 0)),
            "solver": paths.solver,
            "diverged_paths": int(np.sum(np.asarray(paths.diverged))),
        }
    # Escape times from the left well to the right minimum, symmetric well (barrier ΔL = 1).
    pot = eqx.Partial(_double_well, tilt=jnp.asarray(0.0))
    means, ses, censored = [], [], []
    hit = _reached_right_well  # one function object: one compiled program for every T
    for i, temp_i in enumerate(config.escape_temperatures):
        tau = np.asarray(
            sde.first_passage(
                sde.Langevin(temp_i),
                dynopt.Problem(pot, jnp.array([-1.0])),
                hit,
                config.escape_t,
                jax.random.fold_in(key, 50 + i),
                config.escape_paths,
                dt=config.escape_dt,
            )
        )
        ok = np.isfinite(tau)
        censored.append(float(1 - ok.mean()))
        means.append(tau[ok].mean())
        ses.append(tau[ok].std() / np.sqrt(ok.sum()))
    inv_t = 1 / np.asarray(config.escape_temperatures)
    slope, intercept = np.polyfit(inv_t, np.log(means), 1)
    prefactor = 2 * np.pi / np.sqrt(8.0 * 4.0)  # Eyring–Kramers: 2π/√(L''(±1)|L''(0)|)
    arrays.update(escape_inv_t=inv_t, escape_mean=np.asarray(means), escape_se=np.asarray(ses))
    metrics["escape"] = {
        "barrier": 1.0,
        "fitted_slope_log_tau_vs_inv_T": float(slope),
        "fitted_prefactor": float(np.exp(intercept)),
        "eyring_kramers_prefactor": float(prefactor),
        "censored_fraction": censored,
        "mean_escape_times": [float(m) for m in means],
    }
    return metrics, arrays


def _key(config: Config, i: int):
    return jax.random.fold_in(jax.random.key(config.seed), i)


def _linreg(config: Config) -> dynopt.Problem:
    return problems.linear_regression(
        config.n,
        config.linreg_dim,
        batch_size=config.linreg_batch,
        noise=config.linreg_noise,
        seed=config.seed,
    )


def stationary(config: Config) -> tuple[dict, dict]:
    return _stationary(config, _key(config, 0))


def linreg_stationary(config: Config) -> tuple[dict, dict]:
    return _linreg_stationary(config, _key(config, 1), _linreg(config))


def weak(config: Config) -> tuple[dict, dict]:
    return _weak(config, _key(config, 2), _linreg(config))


def scaling(config: Config) -> tuple[dict, dict]:
    return _scaling(config, _key(config, 3))


def schedules(config: Config) -> tuple[dict, dict]:
    return _schedules(config, _key(config, 4), _linreg(config))


def wells(config: Config) -> tuple[dict, dict]:
    return _wells(config, _key(config, 5))


SECTIONS = {
    "stationary": stationary,
    "linreg_stationary": linreg_stationary,
    "weak": weak,
    "scaling": scaling,
    "schedules": schedules,
    "wells": wells,
}


# --- figures -------------------------------------------------------------------------------------


def plot(metrics: dict, arrays: dict, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    paths = []

    fig, axes = plotting.figure(2, width=5.0)
    ax = axes[0]
    etas = arrays["etas"]
    grid = np.linspace(0, etas.max() * 1.05, 200)
    ax.plot(grid, 2 / (2 - grid), "k-", label="SGD exact: 2/(2−ηλ)")
    ax.axhline(1.0, color="k", ls="--", label="SDE: ησ²c/(2Bλ)")
    for b in (int(k) for k in metrics["stationary"]["per_batch"]):
        ex = arrays[f"B{b}_exact_sde"]
        ax.errorbar(
            etas,
            arrays[f"B{b}_mc_sgd"] / ex,
            3 * arrays[f"B{b}_mc_sgd_se"] / ex,
            fmt="o",
            ms=4,
            capsize=2,
            label=f"SGD Monte Carlo, B = {b}",
        )
    if "mc_sde" in arrays:
        b = int(arrays["sde_batch"])
        ex = arrays[f"B{b}_exact_sde"]
        ax.errorbar(
            etas,
            arrays["mc_sde"] / ex,
            3 * arrays["mc_sde_se"] / ex,
            fmt="s",
            ms=4,
            capsize=2,
            label=f"SDE Monte Carlo (EM, h = η/{metrics['stationary']['sde_mc']['substeps']}),"
            f" B = {b}",
        )
    ax.set_xlabel("ηλ")
    ax.set_ylabel("stationary Var / SDE's ησ²c/(2Bλ)")
    ax.set_title("½λθ²: SGD vs SDE stationary variance (±3 SE)")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = axes[1]
    lr = arrays["lr_etas"] * metrics["linreg_stationary"]["lambda_max"]
    ax.plot(
        lr,
        arrays["lr_tr_sgd"] / arrays["lr_tr_sde"],
        "k-o",
        ms=3,
        label="SGD exact (moment recursion)",
    )
    ax.errorbar(
        lr,
        arrays["lr_mc"] / arrays["lr_tr_sde"],
        3 * arrays["lr_mc_se"] / arrays["lr_tr_sde"],
        fmt="o",
        ms=4,
        capsize=2,
        label="SGD Monte Carlo",
    )
    ax.axhline(1.0, color="k", ls="--", label="SDE")
    ax.set_xlabel("η λmax")
    ax.set_ylabel("tr Cov / SDE's tr Cov")
    ax.set_title("linear regression (state-dependent noise)")
    ax.legend()
    ax.grid(alpha=0.3)
    paths.append(plotting.save(fig, out_dir / "stationary.png"))

    fig, axes = plotting.figure(3, width=4.4)
    wm = metrics["weak"]
    for i, e in enumerate(arrays["weak_etas"][::2]):
        j = 2 * i
        axes[0].plot(
            arrays[f"sgd_ts_{j}"], arrays[f"sgd_loss_{j}"], lw=1, label=f"SGD η = {e:g} (exact)"
        )
        axes[1].plot(arrays[f"sgd_ts_{j}"], arrays[f"sgd_tr_{j}"], lw=1, label=f"SGD η = {e:g}")
    if "mc_sgd_ts" in arrays:
        axes[0].errorbar(
            arrays["mc_sgd_ts"],
            arrays["mc_sgd_loss"],
            3 * arrays["mc_sgd_loss_se"],
            fmt=".",
            ms=3,
            alpha=0.6,
            label=f"SGD η = {arrays['weak_etas'][0]:g}, Monte Carlo",
        )
        axes[0].errorbar(
            arrays["mc_sde_ts"],
            arrays["mc_sde_loss"],
            3 * arrays["mc_sde_loss_se"],
            fmt="s",
            ms=3,
            alpha=0.6,
            label="SDE Monte Carlo (diffrax)",
        )
    for ax, key, lab in ((axes[0], "sde_loss", "SDE (exact)"), (axes[1], "sde_tr", "SDE")):
        ax.plot(arrays["weak_ts"], arrays[key], "k--", lw=1.5, label=lab)
    axes[0].plot(arrays["weak_ts"], arrays["ode_loss"], "k:", lw=1.5, label="gradient flow")
    axes[0].set_yscale("log")
    axes[0].set_title(f"E L(θ_t), η = {arrays['weak_etas'][0]:g} SDE")
    axes[1].set_title("tr Cov(θ_t) (gradient flow: 0)")
    for ax in axes[:2]:
        ax.set_xlabel("t = kη")
        ax.legend()
        ax.grid(alpha=0.3)
    hs = arrays["weak_etas"]
    for k, lab, mk in (
        ("loss_vs_sde", "E L: SGD vs SDE", "o"),
        ("loss_vs_ode", "E L: SGD vs flow", "s"),
        ("tr_vs_sde", "tr Cov: SGD vs SDE", "^"),
        ("tr_vs_ode", "tr Cov: SGD vs flow", "v"),
    ):
        plotting.plot_error_vs_step_size(
            axes[2], hs, arrays[f"weak_err_{k}"], label=lab, order=wm["orders"][k], marker=mk
        )
    axes[2].set_xlabel("learning rate η")
    axes[2].set_ylabel(f"weak error at t = {wm['t']:g}")
    axes[2].legend()
    axes[2].set_title("weak errors (exact moments)")
    paths.append(plotting.save(fig, out_dir / "weak_error.png"))

    fig, axes = plotting.figure(3, width=4.4)
    ax = axes[0]
    bs = arrays["scale_batches"]
    ax.semilogx(bs, arrays["scale_sde_with"], "k--", label="SDE (η/B fixed)")
    ax.semilogx(bs, arrays["scale_sgd_with"], "o-", label="SGD exact, with replacement")
    ax.semilogx(bs, arrays["scale_sgd_without"], "s-", label="SGD exact, without replacement")
    ax.errorbar(
        arrays["scale_mc_batches"],
        arrays["scale_mc"],
        3 * arrays["scale_mc_se"],
        fmt="x",
        ms=7,
        capsize=2,
        color="k",
        label="SGD Monte Carlo (with repl.)",
    )
    ax.set_xlabel(f"batch size B (η = {metrics['scaling']['eta_over_b']:g}·B)")
    ax.set_ylabel("stationary Var θ")
    ax.set_title("linear scaling rule on ½λθ²")
    ax.legend()
    ax.grid(alpha=0.3)
    for ax, xkey, xlabel in (
        (axes[1], "samples", "epochs (samples / n)"),
        (axes[2], "updates", "updates"),
    ):
        for name, lab in (("lr_decay", "lr decay"), ("batch_growth", "batch growth")):
            x = arrays[f"sched_{name}_{xkey}"]
            (line,) = ax.semilogy(x, arrays[f"sched_{name}_loss"], label=f"{lab} (exact)")
            ax.errorbar(
                x[::4],
                arrays[f"sched_{name}_mc"][::4],
                3 * arrays[f"sched_{name}_mc_se"][::4],
                fmt=".",
                ms=3,
                color=line.get_color(),
                alpha=0.5,
                label=f"{lab} (Monte Carlo)",
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("E L")
        ax.legend()
        ax.grid(alpha=0.3)
    axes[1].set_title("equal noise scale η/B per phase")
    axes[2].set_title("the same runs against updates")
    paths.append(plotting.save(fig, out_dir / "scaling.png"))

    fig, axes = plotting.figure(4, width=3.8)
    wm = metrics["wells"]
    edges = arrays["well_edges"]
    centers = 0.5 * (edges[1:] + edges[:-1])
    width = edges[1] - edges[0]
    g = np.linspace(-2.0, 2.0, 400)
    temp = wm["temperature"]
    if "kramers" not in wm:
        axes[2].set_visible(False)
    for ax, name in zip(axes[:3], [k for k in ("symmetric", "tilted", "kramers") if k in wm]):
        tilt = wm[name]["tilt"]
        x = arrays[f"well_{name}_x"]
        counts = np.histogram(x, edges)[0] / (x.size * width)
        ax.bar(
            centers,
            counts,
            width=width,
            alpha=0.5,
            label=f"{'Kramers θ-marginal' if name == 'kramers' else 'Langevin'}",
        )
        loss = (g * g - 1) ** 2 + tilt * g
        for scale, style, lab in (
            (1.0, "k-", "∝ exp(−L/T) = exp(−2L/σ²)"),
            (2.0, "r:", "exp(−L/σ²) (post's eq. 9)"),
        ):
            dens = np.exp(-loss / (scale * temp))
            ax.plot(g, dens / np.trapezoid(dens, g), style, label=lab)
        m = wm[name]
        ax.set_title(
            f"{name}, tilt {tilt:g}: TV {m['tv_vs_gibbs']:.3f}\n"
            f"(MC floor {m['tv_mc_floor_mean']:.3f} ± {m['tv_mc_floor_sd']:.3f})",
        )
        ax.set_xlabel("θ")
        ax.legend()
    ax = axes[3]
    inv = arrays["escape_inv_t"]
    ax.errorbar(
        inv,
        arrays["escape_mean"],
        3 * arrays["escape_se"],
        fmt="o",
        capsize=2,
        label="mean escape time (diffrax)",
    )
    esc = wm["escape"]
    xs = np.linspace(inv.min(), inv.max(), 50)
    ax.semilogy(
        xs,
        esc["eyring_kramers_prefactor"] * np.exp(xs),
        "k--",
        label="Eyring–Kramers 1.11·exp(ΔL/T)",
    )
    ax.semilogy(
        xs,
        esc["fitted_prefactor"] * np.exp(esc["fitted_slope_log_tau_vs_inv_T"] * xs),
        "C1:",
        label=f"fit: slope {esc['fitted_slope_log_tau_vs_inv_T']:.2f} (ΔL = 1)",
    )
    ax.set_xlabel("1/T = 2/σ²")
    ax.set_ylabel("mean first passage −1 → +1")
    ax.set_title("escape time vs noise (log axis)")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    paths.append(plotting.save(fig, out_dir / "double_well.png"))
    return paths
