"""Heavy ball as a discretized damped oscillator (Su, post 1): leapfrog vs naive maps, the two
scaling regimes, stability limits, and momentum jumping over a shallow minimum."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import correspondences, flows, maps, plotting, problems

from ._card import Array, by_mode
from ._headline import Headline


# Heavy ball's maps, by their rows `heavy_ball_<scheme>` of the correspondence registry.
SCHEMES = tuple(
    row.name.removeprefix("heavy_ball_")
    for row in correspondences.REGISTRY
    if row.name.startswith("heavy_ball_")
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Run card. `python -m experiments run momentum [--quick]`.

    (1) Heavy ball θ'' + aθ' + ∇L = 0 against `optax.sgd(α, momentum=β)` on the damped oscillator
    L = θ²/2 (a = 0.5, closed form) and on Rosenbrock (a = 2): error vs h for Su's leapfrog map
    with the half-step initial velocity (order 2), the same map from optax's zero trace (order 1),
    the naive map β = 1 - ah, α = h² (order 1), the conformal-symplectic map β = e^{-ah} (order 1),
    and (full mode) the Nesterov variants (order 1). (2) The other scaling regime: β = 0.9 fixed,
    η → 0 against θ' = -∇L/(1-β) at t = kη (order 1). (3) Largest stable h·√λmax per scheme on a
    quadratic (a = 1, λmax = 100), by multisection over batched runs vs the Schur–Cohn prediction.
    (4) Tilted double well L = (x²-1)² + 0.3x from rest at x = 1.5: gradient flow stays in the
    shallow basin; heavy ball crosses the barrier iff the damping is below a critical value, found
    by bisection (flow) and multisection (leapfrog, h = 0.05).
    Runtime on 2 CPU cores: quick < 30 s, full < 3 min. Headline: orders 2.00 (leapfrog,
    half-step start) vs 1.00 (zero trace, Euler map); leapfrog stable up to h√λmax = 2.000;
    critical damping ≈ 0.650 on the double well (flow) and ≈ 0.647 (h = 0.05).
    """

    quick: bool = False
    osc_damping: float = 0.5
    osc_t1: float = 8.0
    osc_steps: tuple[int, ...] = by_mode((40, 80, 160, 320, 640), quick=(40, 80, 160, 320))
    rosen_damping: float = 2.0
    rosen_t1: float = 1.0
    rosen_steps: tuple[int, ...] = by_mode(
        (400, 800, 1600, 3200, 6400), quick=(400, 800, 1600, 3200)
    )
    schemes: tuple[str, ...] = by_mode(SCHEMES, quick=("leapfrog", "leapfrog_zero_trace", "euler"))
    rosen_schemes: tuple[str, ...] = by_mode(
        ("leapfrog", "leapfrog_zero_trace", "euler", "conformal"), quick=()
    )
    fixed_momentum: float = 0.9
    fixed_t1: float = 1.0
    # errors < 0.1 of the path
    fixed_steps: tuple[int, ...] = by_mode(
        (1600, 3200, 6400, 12800, 25600), quick=(1600, 3200, 6400)
    )
    stab_damping: float = 1.0
    stab_lambda: float = 100.0
    stab_schemes: tuple[str, ...] = by_mode(
        tuple(s for s in SCHEMES if s != "leapfrog_zero_trace"), quick=("leapfrog",)
    )
    stab_steps: int = by_mode(4000, quick=2000)
    stab_grid: int = by_mode(24, quick=16)
    stab_rounds: int = by_mode(3, quick=2)
    well_tilt: float = 0.3
    well_x0: float = 1.5
    well_t1: float = 40.0
    well_step: float = 0.05
    well_bisections: int = by_mode(30, quick=20)


def _map(scheme: str) -> maps.AbstractMap:
    """Heavy ball's discretization map `scheme`, from its row of the correspondence registry."""
    return correspondences.BY_NAME[f"heavy_ball_{scheme}"].map


@dataclasses.dataclass
class ClosedForm:
    oscillator_max_abs_error: float | None  # full mode only


@dataclasses.dataclass
class Orders:
    """Heavy ball on one problem: each discretization map against the flow."""

    orders: dict[str, float]
    verdicts: dict[str, str]  # compare's verdict per map: an order only when "asymptotic"
    step_sizes: Array
    errors: dict[str, Array]


@dataclasses.dataclass
class Fixed:
    """β fixed, η → 0: optax.sgd(η, momentum=β) against θ' = -∇L/(1-β) at t = kη."""

    order: float
    verdict: str
    step_sizes: Array
    errors: Array


@dataclasses.dataclass
class Stability:
    schemes: dict  # scheme -> predicted, measured_bracket, measured (h·√λmax)


@dataclasses.dataclass
class TuningRule:
    momentum: float
    lr_ratio: float
    new_momentum: float
    leapfrog_damping_before: float
    leapfrog_damping_after: float


@dataclasses.dataclass
class DoubleWell:
    barrier_x: float
    critical_damping_flow: float
    critical_damping_flow_bracket: list[float]
    critical_damping_leapfrog: float
    critical_damping_leapfrog_bracket: list[float]
    gradient_descent_final_x: float
    gradient_descent_crossed: bool
    path_dampings: list[float]
    ts: Array
    gd_ts: Array
    gd: Array
    x: Array
    loss: Array
    heavy_ball: dict[str, Array]  # x(t) by index into path_dampings


def _crossed(xs: np.ndarray, barrier_x: float) -> np.ndarray:
    return np.min(xs, axis=-1) < barrier_x


def double_well(config: Config) -> DoubleWell:
    problem = problems.double_well(tilt=config.well_tilt, params0=jnp.array([config.well_x0]))
    # Local maximum of (x²-1)² + tilt·x between the wells: 4x³ - 4x + tilt = 0, middle root.
    roots = np.sort(np.roots([4.0, 0.0, -4.0, config.well_tilt]).real)
    barrier_x = float(roots[1])
    ts = jnp.linspace(0.0, config.well_t1, 2001)

    def crosses_flow(a: float) -> bool:
        traj = dynopt.solve(flows.HeavyBall(a), problem, ts)
        return bool(_crossed(np.asarray(traj.params)[:, 0], barrier_x))

    lo, hi = 0.0, 4.0  # crosses at lo, stays at hi
    for _ in range(config.well_bisections):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if crosses_flow(mid) else (lo, mid)
    critical_flow = 0.5 * (lo + hi)

    # The leapfrog discretization: one batched run over dampings per multisection round.
    h, n = config.well_step, round(config.well_t1 / config.well_step)
    dlo, dhi = 0.0, 4.0
    for _ in range(3):
        grid = np.linspace(dlo, dhi, 32)
        traj = dynopt.run(flows.HeavyBall(jnp.asarray(grid)).discretize(h), problem, n)
        crossed = _crossed(np.asarray(traj.params)[..., 0], barrier_x)
        last = int(np.flatnonzero(crossed).max())
        dlo, dhi = float(grid[last]), float(grid[min(last + 1, grid.size - 1)])
    critical_leapfrog = 0.5 * (dlo + dhi)

    gd = dynopt.run(flows.GradientFlow().discretize(h), problem, n)
    gd_x = np.asarray(gd.params)[:, 0]
    dampings = (0.5 * critical_flow, 0.95 * critical_flow, 1.05 * critical_flow)
    paths = {
        str(i): np.asarray(dynopt.solve(flows.HeavyBall(a), problem, ts).params)[:, 0]
        for i, a in enumerate(dampings)
    }
    xs = np.linspace(-1.8, 1.8, 361)
    return DoubleWell(
        barrier_x=barrier_x, critical_damping_flow=critical_flow,
        critical_damping_flow_bracket=[lo, hi], critical_damping_leapfrog=critical_leapfrog,
        critical_damping_leapfrog_bracket=[dlo, dhi], gradient_descent_final_x=float(gd_x[-1]),
        gradient_descent_crossed=bool(_crossed(gd_x, barrier_x)), path_dampings=list(dampings),
        ts=np.asarray(ts), gd_ts=np.asarray(gd.ts), gd=gd_x, x=xs,
        loss=np.asarray(jax.vmap(problem.loss)(jnp.asarray(xs)[:, None])), heavy_ball=paths,
    )  # fmt: skip


def _oscillator() -> dynopt.Problem:
    return problems.quadratic(jnp.array([1.0]), name="oscillator")


def closed_form(config: Config) -> ClosedForm:
    """The reference against the closed form (full mode; tests check it too)."""
    if config.quick:
        return ClosedForm(None)
    ts = jnp.linspace(0.0, config.osc_t1, 201)
    ref = dynopt.solve(flows.HeavyBall(config.osc_damping), _oscillator(), ts)
    exact = flows.oscillator_solution(np.asarray(ts), config.osc_damping)
    return ClosedForm(float(np.max(np.abs(ref.params[:, 0] - exact))))


def _orders(problem, damping, t1, steps, schemes) -> Orders:
    hs = t1 / np.asarray(steps, dtype=float)
    out = Orders({}, {}, hs, {})
    for scheme in schemes:
        c = dynopt.compare(flows.HeavyBall(damping), problem, hs, t1, map=_map(scheme))
        out.orders[scheme], out.verdicts[scheme] = float(c.order), c.verdict
        out.errors[scheme] = np.asarray(c.errors)
    return out


def oscillator(c: Config) -> Orders:
    return _orders(_oscillator(), c.osc_damping, c.osc_t1, c.osc_steps, c.schemes)


def rosenbrock(c: Config) -> Orders:
    return _orders(
        problems.rosenbrock(), c.rosen_damping, c.rosen_t1, c.rosen_steps, c.rosen_schemes
    )


def fixed_momentum(config: Config) -> Fixed:
    """Regime 2: beta fixed, eta -> 0, against theta' = -grad L / (1 - beta) at t = k eta."""
    etas = config.fixed_t1 / np.asarray(config.fixed_steps, dtype=float)
    fixed = dynopt.compare(
        flows.RescaledGradientFlow(config.fixed_momentum), _oscillator(), etas, config.fixed_t1
    )
    return Fixed(float(fixed.order), fixed.verdict, etas, np.asarray(fixed.errors))


def stability(config: Config) -> Stability:
    """Largest stable h per map by multisection, against the map's predicted limit."""
    flow, lam = flows.HeavyBall(config.stab_damping), config.stab_lambda
    out = Stability({})
    for scheme in config.stab_schemes:
        lo, hi = maps.measure_stability_limit(
            _map(scheme), flow, lam, num_steps=config.stab_steps, grid=config.stab_grid,
            rounds=config.stab_rounds,
        )  # fmt: skip
        out.schemes[scheme] = {  # the map's limit is a step size; the figure's unit is h sqrt(λ)
            "predicted": _map(scheme).stability_limit(flow, lam) * float(np.sqrt(lam)),
            "measured_bracket": [lo, hi],
            "measured": 0.5 * (lo + hi),
        }
    return out


def tuning_rule(config: Config) -> TuningRule:
    beta, r = 0.9, 0.1
    beta_new = float(flows.rescale_momentum(beta, r))
    a_old = float(flows.HeavyBall.from_hyperparams(0.01, beta)[0].damping)
    a_new = float(flows.HeavyBall.from_hyperparams(0.01 * r, beta_new)[0].damping)
    return TuningRule(beta, r, beta_new, a_old, a_new)


SECTIONS = {
    "closed_form": closed_form,
    "oscillator": oscillator,
    "rosenbrock": rosenbrock,
    "fixed_momentum": fixed_momentum,
    "stability": stability,
    "tuning_rule": tuning_rule,
    "double_well": double_well,
}

HEADLINES = (
    *(
        Headline(f"oscillator/orders/{k}", label, o, 0.1, verdict=f"oscillator/verdicts/{k}")
        for k, label, o in (
            ("leapfrog", "order, leapfrog, half-step start", 2.0),
            ("leapfrog_zero_trace", "order, leapfrog from optax's zero trace", 1.0),
            ("euler", "order, naive map β = 1 - ah", 1.0),
        )
    ),
    Headline("fixed_momentum/order", "order, β fixed, η → 0", 1.0, 0.1,
             verdict="fixed_momentum/verdict"),
    Headline("stability/schemes/leapfrog/measured", "leapfrog's largest stable h√λmax", 2.0, 0.01),
    Headline("double_well/critical_damping_flow",
             "critical damping a (crosses the barrier below it), flow", 0.650, 1e-3),
    Headline("double_well/critical_damping_leapfrog", "critical damping a, leapfrog h = 0.05",
             0.647, 1e-3),
)  # fmt: skip


_LABELS = {
    "leapfrog": "leapfrog map, half-step start",
    "leapfrog_zero_trace": "leapfrog map, optax zero trace",
    "euler": "naive map β = 1 - ah, α = h²",
    "conformal": "conformal map β = e^{-ah}",
    "nesterov": "Nesterov look-ahead θ + βv",
    "nesterov_midpoint": "Su midpoint look-ahead θ + βv/2",
    "implicit_midpoint": "implicit midpoint (eq. 19)",
}


def draw_orders(r):
    measured = {n: o for n, o in (("oscillator", r.oscillator), ("rosenbrock", r.rosenbrock))}
    measured = {n: o for n, o in measured.items() if o.orders}
    fig, axes = plotting.panels(len(measured) + 1, width=4.6, height=3.8)
    for ax, (name, o) in zip(axes, measured.items()):
        series = [(o.errors[s], _LABELS[s], o.orders[s]) for s in o.orders]
        plotting.plot_orders(ax, o.step_sizes, series)
        prefix = {"oscillator": "osc", "rosenbrock": "rosen"}[name]
        a, t1 = r.config[f"{prefix}_damping"], r.config[f"{prefix}_t1"]
        ax.set_title(f"{name}: heavy ball a = {a:g}, t1 = {t1:g}")
    fm = r.fixed_momentum
    label = f"sgd(η, β={r.config['fixed_momentum']:g}) vs θ' = -∇L/(1-β)"
    plotting.plot_orders(axes[-1], fm.step_sizes, [(fm.errors, label, fm.order)])
    axes[-1].set(xlabel="learning rate η (t = kη)", title="fixed β, η → 0 (oscillator)")
    return fig


def draw_stability(r):
    st, c = r.stability, r.config
    fig, (ax,) = plotting.panels(1, width=6.0, height=3.6)
    predicted, measured = ([v[k] for v in st.schemes.values()] for k in ("predicted", "measured"))
    labels = ("predicted (Schur–Cohn)", f"measured ({c['stab_steps']} steps)")
    plotting.plot_bar_pairs(ax, list(st.schemes), predicted, measured, labels=labels)
    title = f"stability on a quadratic, a = {c['stab_damping']:g}, λmax = {c['stab_lambda']:g}"
    # the legend above the bars (plot_bar_pairs leaves headroom)
    plotting.dress(ax, ylabel="largest stable h·√λmax", title=title, grid=None,
                   legend=dict(loc="upper left", ncols=2))  # fmt: skip
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def draw_double_well(r):
    dw, c = r.double_well, r.config
    tilt, x0, h = c["well_tilt"], c["well_x0"], c["well_step"]
    fig, axes = plotting.panels(2, width=4.8, height=3.6)
    axes[0].plot(dw.x, dw.loss, "k")
    axes[0].axvline(dw.barrier_x, color="0.6", ls=":")
    axes[0].plot([x0], [np.interp(x0, dw.x, dw.loss)], "ro", label="start (at rest)")
    plotting.dress(axes[0], xlabel="x", ylabel="L(x)", title=f"L = (x²-1)² + {tilt:g}x", grid=None)
    axes[1].plot(dw.gd_ts, dw.gd, "k", label=f"GD, h = {h:g}")
    for i, a in enumerate(dw.path_dampings):
        axes[1].plot(dw.ts, dw.heavy_ball[str(i)], label=f"heavy ball a = {a:.3f}")
    axes[1].axhline(dw.barrier_x, color="0.6", ls=":", label="barrier")
    title = (
        f"critical damping: flow {dw.critical_damping_flow:.4f}, "
        f"leapfrog h={h:g} {dw.critical_damping_leapfrog:.4f}"
    )
    plotting.dress(axes[1], xlabel="t", ylabel="x(t)", title=title)
    return fig


FIGURES = {
    "orders.png": draw_orders,
    "stability.png": draw_stability,
    "double_well.png": draw_double_well,
}
