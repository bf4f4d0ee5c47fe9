"""NAG and the Nesterov ODE X'' + (r/t)X' + ∇f(X) = 0 (Su, Boyd & Candès 2016, Figure 1 setting)."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import flows, plotting, problems

from ._card import Array, by_mode
from ._headline import Headline


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

    quick: bool = False
    eigenvalues: tuple[float, float] = (0.04, 0.01)
    x0: tuple[float, float] = (1.0, 1.0)
    t1: float = 300.0
    sbc_steps: tuple[float, ...] = (1.0, 0.25, 0.05)
    order_num_steps: tuple[int, ...] = by_mode(
        (300, 600, 1200, 2400, 4800), quick=(300, 600, 1200, 2400)
    )
    rs: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0)
    num_points: int = by_mode(3001, quick=1001)


@eqx.filter_jit
def _evaluate_states(interpolation, ts):
    return jax.vmap(interpolation.evaluate)(ts)


@dataclasses.dataclass
class Setup:
    ts: Array
    gap_bound: Array  # 2|x0 - x*|²/t², r = 3 (inf at t = 0)


@dataclasses.dataclass
class Ode:
    """The Nesterov ODE for one r: diffrax against its closed form, and its rate."""

    closed_form_max_abs_error: float
    max_gap_over_bound: float | None  # r ≥ 3 only
    final_gap: float
    solver: str
    x1: Array
    gap: Array


@dataclasses.dataclass
class Lyapunov:
    energy_0: float
    max_relative_increase: float
    energy: Array


@dataclasses.dataclass
class Sbc:
    """NAG at the SBC step sizes against X(k√s), each cut at k√s ≤ t1 (arrays by "s=…")."""

    max_deviation: list[float]
    t: dict[str, Array]
    x1: dict[str, Array]
    gap: dict[str, Array]


@dataclasses.dataclass
class Order:
    order_in_sqrt_s: float
    verdict: str  # compare's verdict: the order is a number only when "asymptotic"
    solver: str
    sqrt_s: Array
    errors: Array


def _problem(config: Config) -> dynopt.Problem:
    lam, x0 = jnp.asarray(config.eigenvalues), jnp.asarray(config.x0)
    return problems.quadratic(lam, params0=x0, name="sbc_quadratic")


def _ts(config: Config):
    return jnp.linspace(0.0, config.t1, config.num_points)


def _reference(config: Config, r: float = 3.0):
    """The ODE's diffrax solution (the same solve in every section: compiled once)."""
    return dynopt.solve(flows.NesterovODE(r), _problem(config), _ts(config))


def setup(config: Config) -> Setup:
    ts, dist0_sq = _ts(config), float(jnp.sum(jnp.asarray(config.x0) ** 2))
    bound = np.asarray(flows.NesterovODE(3.0).rate_bound(ts[1:], dist0_sq))
    return Setup(np.asarray(ts), np.concatenate([[np.inf], bound]))


def r_sweep(config: Config) -> dict[str, Ode]:
    """(4) r-sweep (includes r = 3): solves, closed forms, bounds."""
    problem, ts = _problem(config), _ts(config)
    x0, lam = np.asarray(config.x0), np.asarray(config.eigenvalues)
    dist0_sq = float(np.sum(x0**2))
    out = {}
    for r in config.rs:
        ref = _reference(config, r)
        exact = flows.bessel_solution(np.asarray(ts), x0, lam, r)  # X(t) on λ/2 x² per coordinate
        gap = np.asarray(jax.vmap(problem.loss)(ref.params))
        bound = np.asarray(flows.NesterovODE(r).rate_bound(ts[1:], dist0_sq))
        out[f"r={r:g}"] = Ode(
            closed_form_max_abs_error=float(np.max(np.abs(np.asarray(ref.params) - exact))),
            max_gap_over_bound=float(np.max(gap[1:] / bound)) if r >= 3 else None,
            final_gap=float(gap[-1]),
            solver=ref.solver,
            x1=np.asarray(ref.params[:, 0]),
            gap=gap,
        )
    return out


def lyapunov(config: Config) -> Lyapunov:
    """(5) Lyapunov energy along the dense solution (r = 3)."""
    problem, ts, flow = _problem(config), _ts(config), flows.NesterovODE(3.0)
    states = _evaluate_states(_reference(config).interpolation, ts)
    energy = np.asarray(jax.vmap(lambda t, s: flow.lyapunov_energy(t, s, problem))(ts, states))
    return Lyapunov(float(energy[0]), float(np.max(np.diff(energy)) / energy[0]), energy)


def sbc(config: Config) -> Sbc:
    """(2) the SBC step sizes: one batched NAG run, each s cut at k sqrt(s) <= t1."""
    problem, flow, ref = _problem(config), flows.NesterovODE(3.0), _reference(config)
    s = np.asarray(config.sbc_steps)
    n_max = int(np.floor(config.t1 / np.sqrt(s.min())))
    nag_runs = dynopt.run(flow.discretize(jnp.asarray(s)), problem, n_max)
    # X(k sqrt(s)) for every run in one call (times past t1 are clipped, then cut off).
    tk_all = np.minimum(np.arange(n_max + 1)[None, :] * np.sqrt(s)[:, None], config.t1)
    xref_all = np.asarray(
        _evaluate_states(ref.interpolation, jnp.asarray(tk_all.ravel()))[0]
    ).reshape(s.size, n_max + 1, -1)
    out = Sbc([], {}, {}, {})
    for i, si in enumerate(s):
        n = int(np.floor(config.t1 / np.sqrt(si) + 1e-9))
        xk = np.asarray(nag_runs.params[i, : n + 1])
        out.max_deviation.append(float(np.max(np.linalg.norm(xk - xref_all[i, : n + 1], axis=1))))
        key = f"s={si:g}"
        out.t[key], out.x1[key] = np.arange(n + 1) * np.sqrt(si), xk[:, 0]
        out.gap[key] = np.asarray(jax.vmap(problem.loss)(jnp.asarray(xk)))
    return out


def order(config: Config) -> Order:
    """Order in sqrt(s): s = (t1/N)^2, so that t1 is a whole number of steps."""
    s_order = (config.t1 / np.asarray(config.order_num_steps, dtype=float)) ** 2
    comp = dynopt.compare(flows.NesterovODE(3.0), _problem(config), s_order, config.t1)
    # compare fits log e against log dt, and NAG's time step is dt = sqrt(s).
    return Order(
        order_in_sqrt_s=float(comp.order),
        verdict=comp.verdict,
        solver=comp.solver,
        sqrt_s=np.sqrt(s_order),
        errors=np.asarray(comp.errors),
    )


SECTIONS = {f.__name__: f for f in (setup, r_sweep, lyapunov, sbc, order)}

HEADLINES = (
    Headline("r_sweep/r=3/closed_form_max_abs_error", "ODE vs closed form (r = 3): max abs. error",
             high=1e-9),
    Headline("r_sweep/r=3/max_gap_over_bound", "max (f - f*)/bound, r = 3", high=1.0),
    Headline("sbc/max_deviation/0", "NAG vs ODE: max ‖x_k − X(k√s)‖, s = 1", 0.154, 1e-3),
    Headline("sbc/max_deviation/2", "NAG vs ODE: max ‖x_k − X(k√s)‖, s = 0.05", 0.036, 1e-3),
    Headline("order/order_in_sqrt_s", "order of NAG → ODE in √s", 1.0, 0.1,
             verdict="order/verdict"),
    Headline("lyapunov/max_relative_increase", "Lyapunov energy: max ΔE/E₀", high=1e-5),
)  # fmt: skip


def draw_sbc(r):
    ts, sb, ode = r.setup.ts, r.sbc, r.r_sweep["r=3"]
    fig, axes = plotting.panels(3, width=4.6, height=3.8)
    axes[0].plot(ts, ode.x1, "k", lw=2, alpha=0.5, label="ODE r = 3")
    for (key, t), dev in zip(sb.t.items(), sb.max_deviation):
        axes[0].plot(t, sb.x1[key], ".", ms=2.5, label=f"NAG {key} (max dev {dev:.3f})")
    plotting.dress(axes[0], xlabel="t = k√s", ylabel="x₁", title="NAG iterates vs the Nesterov ODE")
    curves = [(ts, ode.gap, "ODE r = 3")]
    curves += [(t, sb.gap[key], f"NAG {key}") for key, t in sb.t.items()]
    plotting.plot_loss_curves(axes[1], curves)
    axes[1].loglog(ts[1:], r.setup.gap_bound[1:], "k--", label="bound 2|x₀-x*|²/t²")
    axes[1].set(ylim=(1e-8, 1e1), xlim=(1.0, ts[-1]), ylabel="f - f*")
    plotting.dress(axes[1], title="f - f* with the O(1/t²) bound", grid="both")
    od = r.order
    series = [(od.errors, "max_k |x_k - X(k√s)|", od.order_in_sqrt_s)]
    plotting.plot_orders(axes[2], od.sqrt_s, series, guides=(1,))
    axes[2].set_xticks(od.sqrt_s, [f"{v:.3g}" for v in od.sqrt_s])
    axes[2].set(xlabel="√s", title=f"deviation over t ≤ {r.config['t1']:g}, order in √s")
    return fig


def draw_r_sweep(r):
    ts = r.setup.ts
    fig, axes = plotting.panels(3, width=4.6, height=3.8)
    for key, ode in r.r_sweep.items():
        axes[0].plot(ts, ode.x1, label=key)
        axes[1].loglog(ts[1:], ode.gap[1:], label=key)
    plotting.dress(axes[0], xlabel="t", ylabel="x₁(t)", title="r-sweep: oscillation of X(t)")
    axes[1].loglog(ts[1:], r.setup.gap_bound[1:], "k--", label="2|x₀-x*|²/t² (r = 3)")
    axes[1].set(ylim=(1e-10, 1e1), xlabel="t", ylabel="f - f*", title="r-sweep: rates")
    plotting.dress(axes[1], grid="both")
    lya = r.lyapunov
    axes[2].plot(ts, lya.energy, label="E = t²(f-f*) + 2|X + tX'/2 - x*|²")
    axes[2].plot(ts, ts**2 * r.r_sweep["r=3"].gap, label="t²(f - f*)")
    title = f"Lyapunov energy (r = 3), max ΔE/E₀ = {lya.max_relative_increase:.1e}"
    plotting.dress(axes[2], xlabel="t", title=title)
    return fig


FIGURES = {"sbc.png": draw_sbc, "r_sweep.png": draw_r_sweep}
