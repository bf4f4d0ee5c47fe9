"""RMSprop and Adam against their flows: orders, the κ → ∞ sign limit, step lengths, directions."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import flows, plotting, problems

from . import _post3 as post3
from ._card import Array, by_mode
from ._headline import Headline


@dataclasses.dataclass(frozen=True)
class Config(post3.Config):
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

    quick: bool = False
    kappa: float = 2.0
    eps: float = 1e-8
    a1: float = 1.0
    a2: float = 5.0
    order_t1: float = 1.0
    order_steps: tuple[int, ...] = by_mode(
        (64, 128, 256, 512, 1024, 2048), quick=(64, 128, 256, 512)
    )
    order_problems: tuple[str, ...] = by_mode(("quadratic", "rosenbrock"), quick=("quadratic",))
    order_cases: tuple[str, ...] = by_mode(
        ("rmsprop_G0_zero", "rmsprop_G0_g0sq", "adam"), quick=("rmsprop_G0_g0sq", "adam")
    )
    limit_eps: float = 1e-2
    limit_kappas: tuple[float, ...] = by_mode(
        (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0), quick=(100.0, 300.0, 1000.0, 3000.0)
    )
    limit_fit_from: float = 300.0
    limit_t1: float = 1.0
    widths: tuple[float, ...] = by_mode((1e-1, 3e-2, 1e-2, 3e-3, 1e-3), quick=(1e-1, 1e-2, 1e-3))
    hist_gamma: float = 1e-3
    hist_decay: float = 0.99
    hist_steps: int = by_mode(20_000, quick=5000)
    paths_eigenvalues: tuple[float, float] = (1.0, 25.0)
    paths_kappa: float = 10.0
    paths_t1: float = 3.0


@dataclasses.dataclass
class Orders:
    """One problem: optax.rmsprop / optax.adam against their flows, by case."""

    G0: float
    order: dict[str, float]
    final_order: dict[str, float]
    verdict: dict[str, str]  # compare's verdict: an order only when "asymptotic"
    step_sizes: Array
    errors: dict[str, Array]


@dataclasses.dataclass
class Limits:
    """κ → ∞ (RMSprop flow to the sign-like flow) and the sign flow's regularization width."""

    kappa_slope: float
    width_slope: float
    # `dynopt.assess_order` on each sweep (κ as 1/κ): a slope is an order only when "asymptotic"
    kappa_verdict: str
    width_verdict: str
    width_error_over_width: list[float]
    kappas: Array
    errors: Array
    widths: Array
    width_errors: Array


@dataclasses.dataclass
class Displacement:
    kappa: float
    quantiles_5_50_95: list[float]
    fraction_within_half_to_twice: float
    max_ratio: float
    final_loss: float
    ratio: Array  # |Δθᵢ| / γ per step and coordinate


@dataclasses.dataclass
class Direction:
    """One normalization of the RMSprop flow (global eq. 14, per coordinate eq. 15)."""

    max_angle_to_minus_grad_deg: float
    max_distance_to_gradient_flow_path: float
    final_distance_to_minimizer: float
    path: Array
    angle: Array


@dataclasses.dataclass
class Landscape:
    ts: Array
    gradient_flow: Array  # closed form
    optax_run: Array  # optax.rmsprop (per coordinate), h = 0.01
    contour_x: Array
    contour_y: Array
    contour_loss: Array


def _quadratic(config: Config) -> dynopt.Problem:
    return problems.quadratic(jnp.array([1.0, 10.0]), params0=jnp.array([1.0, 1.0]))


def orders(config: Config) -> dict[str, Orders]:
    probs = {"quadratic": _quadratic(config), "rosenbrock": problems.rosenbrock()}
    probs = {k: probs[k] for k in config.order_problems}
    hs = config.order_t1 / np.asarray(config.order_steps, dtype=float)
    out = {}
    for name, prob in probs.items():
        g0sq = np.asarray(prob.grad(prob.params0)) ** 2
        G0 = float(np.exp(np.mean(np.log(g0sq))))  # a scalar G0 on the scale of g0²
        cases = {
            "rmsprop_G0_zero": flows.RMSPropFlow(config.kappa, config.eps),
            "rmsprop_G0_g0sq": flows.RMSPropFlow(config.kappa, config.eps, initial_scale=G0),
            "adam": flows.AdamFlow(config.a1, config.a2, config.eps),
        }
        cmps = {
            case: dynopt.compare(cases[case], prob, hs, config.order_t1)
            for case in config.order_cases
        }
        out[name] = Orders(
            G0, {k: float(c.order) for k, c in cmps.items()},
            {k: float(c.final_order) for k, c in cmps.items()},
            {k: c.verdict for k, c in cmps.items()}, hs,
            {k: np.asarray(c.errors) for k, c in cmps.items()},
        )  # fmt: skip
    return out


WIDTH_MAX_STEPS = 65_536  # the narrowest width's solve takes many small steps


def limits(config: Config) -> Limits:
    prob = _quadratic(config)
    ts = jnp.linspace(0.0, config.limit_t1, 101)
    # The widths' solve below (array width, their step budget): one compiled program for both.
    width = jnp.asarray(float(np.sqrt(config.limit_eps)))  # weakly typed, as the widths
    sign_flow = flows.SignFlow(width=width)
    sign = np.asarray(dynopt.solve(sign_flow, prob, ts, max_steps=WIDTH_MAX_STEPS).params)
    errs = []
    for kappa in config.limit_kappas:  # array hyper-parameters: one compiled solve
        flow = flows.RMSPropFlow(jnp.asarray(kappa), config.limit_eps)
        # On the host: eagerly, the difference, |.| and max were a program each.
        errs.append(float(np.max(np.abs(np.asarray(dynopt.solve(flow, prob, ts).params) - sign))))
    kappas, errs = np.asarray(config.limit_kappas), np.asarray(errs)
    # Sign flow regularization: diagonal quadratic, exact Filippov solution known.
    x0 = np.asarray(prob.params0)
    exact = np.sign(x0) * np.maximum(np.abs(x0) - np.asarray(ts)[:, None], 0.0)
    werrs = []
    for w in config.widths:
        ref = dynopt.solve(
            flows.SignFlow(width=jnp.asarray(w)), prob, ts, max_steps=WIDTH_MAX_STEPS
        )
        werrs.append(float(np.max(np.abs(np.asarray(ref.params) - exact))))
    widths, werrs = np.asarray(config.widths), np.asarray(werrs)
    # O(1/κ) needs 1/κ below the sign-like flow's fastest time scale √ε/λ_max = 0.01.
    fit = kappas >= config.limit_fit_from
    slope = lambda x, e: float(dynopt.fit_order(jnp.asarray(x), jnp.asarray(e)))
    verdict = lambda x, e: dynopt.assess_order(np.asarray(x), np.asarray(e)).verdict
    return Limits(
        slope(kappas[fit], errs[fit]), slope(widths, werrs), verdict(1 / kappas[fit], errs[fit]),
        verdict(widths, werrs), (werrs / widths).tolist(), kappas, errs, widths, werrs,
    )  # fmt: skip


def displacement(config: Config) -> Displacement:
    prob = problems.rosenbrock()
    flow, dt = flows.RMSPropFlow.from_hyperparams(config.hist_gamma, config.hist_decay, config.eps)
    traj = dynopt.run(flow.discretize(dt), prob, config.hist_steps)
    ratio = np.abs(np.diff(np.asarray(traj.params), axis=0)).ravel() / config.hist_gamma
    q = np.quantile(ratio, [0.05, 0.5, 0.95]).tolist()
    within = float(np.mean((ratio > 0.5) & (ratio < 2.0)))
    final_loss = float(np.asarray(traj.loss)[-1])  # on the host: an index is a program
    return Displacement(float(flow.kappa), q, within, float(ratio.max()), final_loss, ratio)


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


def _paths_problem(config: Config):
    prob = problems.quadratic(jnp.asarray(config.paths_eigenvalues), params0=jnp.array([1.0, 1.0]))
    # The mean and the concatenation on the host (the same numbers; eagerly, four programs).
    g0sq = float(np.mean(np.asarray(prob.grad(prob.params0)) ** 2))
    t_gf = np.concatenate([np.zeros(1), np.asarray(jnp.geomspace(1e-5, 30.0, 4000))])
    return prob, g0sq, np.asarray(jax.vmap(prob.flow_solution)(t_gf))  # closed form


@eqx.filter_jit
def _gradients_and_velocities(flow, prob, ref, ts):
    """∇L along the reference and the flow's θ' at `ts` (read off its dense output): one program
    per flow (eagerly, each operation of the gradient, the interpolation and the field was one)."""
    grads = jax.vmap(prob.grad)(ref.params)
    states = jax.vmap(ref.interpolation.evaluate)(ts)
    return grads, jax.vmap(lambda s: flow.vector_field(0.0, s, prob).params)(states)


def normalization(config: Config) -> dict[str, Direction]:
    prob, g0sq, gf = _paths_problem(config)
    ts = jnp.linspace(0.0, config.paths_t1, 601)
    out = {}
    for norm in ("coordinate", "global"):
        flow_cls = {"coordinate": flows.RMSPropFlow, "global": flows.GlobalRMSPropFlow}[norm]
        flow = flow_cls(config.paths_kappa, config.eps, initial_scale=g0sq)
        ref = dynopt.solve(flow, prob, ts)
        path = np.asarray(ref.params)
        grads, vel = map(np.asarray, _gradients_and_velocities(flow, prob, ref, ts))
        angle = _angle_deg(vel, -grads)
        distance = float(_distance_to_polyline(path, gf).max())
        final = float(np.linalg.norm(path[-1]))
        out[norm] = Direction(float(np.nanmax(angle)), distance, final, path, angle)
    return out


def landscape(config: Config) -> Landscape:
    prob, g0sq, gf = _paths_problem(config)
    h = 0.01
    flow = flows.RMSPropFlow(config.paths_kappa, config.eps, initial_scale=g0sq)
    run = dynopt.run(flow.discretize(h), prob, round(config.paths_t1 / h))
    xs = ys = np.linspace(-0.2, 1.1, 131)
    ts = np.asarray(jnp.linspace(0.0, config.paths_t1, 601))
    loss = plotting.loss_on_grid(prob.loss, xs, ys)
    return Landscape(ts, gf, np.asarray(run.params), xs, ys, loss)


SECTIONS = {
    "orders": orders,
    "limits": limits,
    "displacement": displacement,
    "normalization": normalization,
    "normalization_landscape": landscape,
    "polyak_post3": post3.section,
}

HEADLINES = (
    Headline("orders/quadratic/order/rmsprop_G0_g0sq", "order, optax.rmsprop vs its flow",
             1.0, 0.1, verdict="orders/quadratic/verdict/rmsprop_G0_g0sq"),
    Headline("orders/quadratic/order/adam", "order, optax.adam vs its flow", 1.0, 0.1,
             verdict="orders/quadratic/verdict/adam"),
    Headline("limits/kappa_slope", "κ → ∞: slope to the sign-like flow", -1.0, 0.1,
             verdict="limits/kappa_verdict"),
    Headline("limits/width_slope", "SignFlow(w) vs the exact sign flow: slope", 1.0, 0.1,
             verdict="limits/width_verdict"),
    Headline("normalization/global/max_angle_to_minus_grad_deg", "global: angle to -∇L (deg)",
             high=1e-4),
    Headline("normalization/coordinate/max_angle_to_minus_grad_deg", "per coordinate: angle (deg)",
             low=30.0),
    Headline("displacement/quantiles_5_50_95/1", "median step |Δθᵢ|/γ", 1.0, 0.2),
    Headline("polyak_post3/gd_final_x", "post 3: GD ends at", 3.0, 1e-6),
)  # fmt: skip


_CASES = {
    "rmsprop_G0_zero": "RMSprop, G0 = 0",
    "rmsprop_G0_g0sq": "RMSprop, G0 ~ g0²",
    "adam": "Adam",
}


def draw_orders(r):
    fig, axes = plotting.panels(len(r.orders))
    for ax, (name, o) in zip(axes, r.orders.items()):
        series = [(o.errors[c], _CASES[c], o.order[c]) for c in _CASES if c in o.errors]
        plotting.plot_orders(ax, o.step_sizes, series, guides=[1.0] * len(series))
        ax.set_title(f"{name}: optax vs its flow")
    return fig


def draw_limits(r):
    lim = r.limits
    fig, axes = plotting.panels(2)
    plotting.plot_power_law(axes[0], lim.kappas, lim.errors, slope=-1.0, label="measured",
                            reference="slope -1")  # fmt: skip
    fit_from = r.config["limit_fit_from"]
    # A slope only where its sweep is asymptotic; else its verdict.
    shown = plotting.order_text(lim.kappa_slope, lim.kappa_verdict)
    title = f"κ → ∞: sign-like limit ({shown} for κ ≥ {fit_from:g})"
    plotting.dress(axes[0], title=title, grid="both", xlabel="κ",
                   ylabel="max |θ_RMSprop-flow − θ_sign-like|\non [0, 1]")  # fmt: skip
    w = lim.widths
    axes[1].loglog(w, lim.width_errors, "o-", label="regularized vs exact sign flow")
    axes[1].loglog(w, w, "k--", lw=0.8, label="error = w")
    title = f"SignFlow reference: O(w) ({plotting.order_text(lim.width_slope, lim.width_verdict)})"
    plotting.dress(axes[1], title=title,
                   grid="both", xlabel="width w of sign_w(g) = g/√(g²+w²)",
                   ylabel="max error on [0, 1]")  # fmt: skip
    return fig


def draw_displacement(r):
    dis, gamma, decay = r.displacement, r.config["hist_gamma"], r.config["hist_decay"]
    fig, (ax,) = plotting.panels(1, width=5.8)
    ratio = dis.ratio[dis.ratio > 0]
    ax.hist(ratio, bins=np.geomspace(max(ratio.min(), 1e-4), ratio.max() * 1.01, 60))
    ax.axvline(1.0, color="k", ls="--", label="|Δθᵢ| = γ")
    ax.set(xlabel="per-step displacement |Δθᵢ| / γ", ylabel="count (steps × coordinates)")
    q = dis.quantiles_5_50_95
    title = (
        f"RMSprop on Rosenbrock, γ = {gamma:g}, λ = {decay:g}\n"
        f"median {q[1]:.2f}, 90% in [{q[0]:.2f}, {q[2]:.2f}], max {dis.max_ratio:.1f} "
        "= 1/√(1−λ) (first step)"
    )
    plotting.dress(ax, xscale="log", title=title, grid=None)
    return fig


def draw_normalization(r):
    nm, land = r.normalization, r.normalization_landscape
    fig, axes = plotting.panels(2, width=4.8, height=4.0)
    paths = [
        (nm["global"].path, "RMSprop flow, global (eq. 14)"),
        (nm["coordinate"].path, "RMSprop flow, per coordinate (eq. 15)"),
        (land.optax_run, "optax.rmsprop, h = 0.01"),
    ]
    plotting.plot_contour_paths(axes[0], land.contour_loss, land.contour_x, land.contour_y, paths)
    gf = land.gradient_flow
    axes[0].plot(gf[:, 0], gf[:, 1], "k--", lw=1, label="gradient flow (closed form)")
    axes[0].plot([0.0], [0.0], "k*", ms=10)
    plotting.dress(axes[0], title="quadratic diag(1, 25): direction change", grid=None)
    for norm in ("global", "coordinate"):
        d = nm[norm]
        axes[1].plot(land.ts, d.angle, label=f"{norm} (max {d.max_angle_to_minus_grad_deg:.1f}°)")
    plotting.dress(axes[1], title="update direction vs steepest descent", xlabel="t",
                   ylabel="angle between θ' and −∇L (degrees)")  # fmt: skip
    return fig


def draw_post3(r):
    return post3.figure(r.polyak_post3)  # shared with holistic


FIGURES = {
    "orders.png": draw_orders,
    "limits.png": draw_limits,
    "displacement_hist.png": draw_displacement,
    "normalization_paths.png": draw_normalization,
    "polyak_post3.png": draw_post3,
}
