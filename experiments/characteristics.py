"""First-order PDEs by characteristics (post 6): closed forms, blow-up times, density transport."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from dynopt import characteristics as ch, flows, plotting, problems

from ._card import Array, by_mode
from ._headline import Headline


@dataclasses.dataclass(frozen=True)
class Config:
    """Run card. `python -m experiments run characteristics [--quick]`.

    (1) u_t + x u_x = u² (post 6, eq. 8) for f = sin x, 2e^{-x²}, x: characteristics vs the closed
    form u = f(xe^{-t})/(1 - t f(xe^{-t})) (eq. 12) and the blow-up where t f(xe^{-t}) = 1;
    (2) u_t = u_x², u(x,0) = x² by the Charpit system: u = x²/(1-4t), crossing at t = 1/4, F = 0
    along characteristics; (3) inviscid Burgers u_t + u u_x = 0, u(x,0) = e^{-x²}: crossing times
    per characteristic -1/f'(σ), first shock at t = √(e/2), x = √2; (4) eikonal |∇u| = 1 from the
    circle of radius 1: u = |x| - 1 outside, caustic at the centre at s = 1 inside; (5) a Gaussian
    cloud N(0.2, 0.5²) of initial parameters under gradient flow on the double well (x²-1)²: its
    density by characteristics (d log ρ/dt = -∇·f = ΔL) vs a Monte-Carlo histogram of the flow's
    endpoints (chi²/dof).
    Runtime on 2 CPU cores: quick, cold compilation cache, 26–31 s of CPU (37 s before
    2026-12-06's characteristics solved one after another on a CPU), ~50 s CPU full
    (compilation dominates).
    Headline (full): eq. 12 to 1.6e-9 relative, blow-up times to 2.2e-11; eq. 26, eikonal and
    |F| to 1e-15; Burgers crossing times to 3e-15 and first shock to 7e-14; density χ²/dof in
    [1.03, 1.38] over ~55 bins (2σ band [0.62, 1.38]).
    """

    seed: int = 0
    quick: bool = False
    ex1_points: int = by_mode(61, quick=31)
    ex1_saves: int = by_mode(41, quick=21)
    ex1_horizon: float = 1.9  # no grid sigma has its blow-up exactly at the horizon
    heat_points: int = by_mode(41, quick=21)
    burgers_points: int = by_mode(351, quick=71)
    eikonal_points: int = by_mode(48, quick=24)
    density_grid: int = by_mode(2001, quick=401)
    density_samples: int = by_mode(200_000, quick=20_000)
    density_times: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)
    density_bins: int = by_mode(60, quick=40)
    cloud_mean: float = 0.2
    cloud_std: float = 0.5


@dataclasses.dataclass
class Example1:
    """u_t + x u_x = u² for one initial profile f: characteristics vs eq. 12 and its blow-up."""

    max_rel_error_vs_eq12: float
    points_compared: int
    blowups_detected: int
    blowups_expected: int
    max_blowup_time_error: float
    max_blowup_place_error: float
    first_blowup: dict
    grid_interp_max_error: float
    grid_t: Array
    grid_x: Array
    x: Array  # (characteristics, saves, 2): (t, x) along each
    u: Array
    blowup_s: Array
    blowup_x: Array
    grid_u: Array  # u interpolated on (grid_t, grid_x)
    curve_t: Array  # the closed-form blow-up curve t f(x e^{-t}) = 1
    curve_x: Array


@dataclasses.dataclass
class Heat:
    """u_t = u_x², u(x, 0) = x² by the Charpit system."""

    max_abs_error_vs_eq26: float
    max_abs_F_residual: float
    blowup_kind: str
    max_blowup_time_error: float
    max_blowup_place_error: float
    x: Array
    u: Array
    s: Array
    residual: Array
    blowup_s: Array


@dataclasses.dataclass
class Burgers:
    crossings_detected: int
    crossings_expected: int
    max_crossing_time_error: float
    max_crossing_place_error: float
    first_shock_grid: dict
    first_shock_refined: dict
    first_shock_exact: dict
    first_shock_time_error: float
    first_shock_place_error: float
    sigma: Array
    x: Array
    u: Array
    blowup_s: Array
    blowup_x: Array
    exact_t: Array


@dataclasses.dataclass
class Eikonal:
    max_abs_error_vs_distance: float
    max_abs_F_residual: float
    outward_blowups: int
    caustic_kind: str
    max_caustic_time_error: float
    max_caustic_place_error: float
    out_x: Array
    out_u: Array
    in_x: Array
    in_u: Array
    s: Array
    residual: Array


@dataclasses.dataclass
class Density:
    """A Gaussian cloud under gradient flow on the double well: characteristics vs Monte Carlo."""

    times: list[float]
    chi2_per_dof: list[float]
    max_abs_z: list[float]
    mass: list[float]
    samples: int
    characteristics: int
    edges: Array
    x: Array  # (times, characteristics)
    rho: Array
    hist: Array  # (times, bins), normalised
    loss_x: Array
    loss: Array


# The PDEs at module level (x = (t, x)): a second solve of the same PDE reuses the compiled one.
_alpha1 = lambda x, u: jnp.stack([jnp.ones_like(x[0]), x[1]])  # u_t + x u_x = u²
_beta1 = lambda x, u: u**2
_F_heat = lambda x, u, p: p[0] - p[1] ** 2  # u_t = u_x²
_initial_heat = lambda s: (jnp.stack([jnp.zeros_like(s), s]), s**2)
_burgers_alpha = lambda x, u: jnp.stack([jnp.ones_like(u), u])  # u_t + u u_x = 0
_burgers_beta = lambda x, u: jnp.zeros_like(u)
_burgers_initial = lambda s: (jnp.stack([jnp.zeros_like(s), s]), jnp.exp(-(s**2)))
_F_eikonal = lambda x, u, p: 0.5 * (jnp.dot(p, p) - 1.0)  # |∇u| = 1
_circle = lambda a: (jnp.stack([jnp.cos(a), jnp.sin(a)]), jnp.zeros_like(a))

EX1_F = {
    "sin x": (jnp.sin, np.sin),
    "2 exp(-x²)": (lambda x: 2 * jnp.exp(-(x**2)), lambda x: 2 * np.exp(-(x**2))),
    "x": (lambda x: x, lambda x: x),
}


def _max_abs(a) -> float:
    return float(np.max(np.abs(a)))


def _split_tx(r):
    """(t, x, u) of a solve in (t, x), as NumPy arrays (sliced on the host: no program each)."""
    tx = np.asarray(r.x)
    return tx[..., 0], tx[..., 1], np.asarray(r.u)


@functools.partial(jax.jit, static_argnums=1)
def _standard_normal(seed, num):
    """`num` standard normal draws from `jax.random.key(seed)`, in one program."""
    return jax.random.normal(jax.random.key(seed), (num,))


def example1(config: Config) -> dict[str, Example1]:
    """(1) Characteristics of u_t + x u_x = u² against eq. 12 and the blow-up t* = 1/f(σ)."""
    sig, horizon = np.linspace(-3.0, 3.0, config.ex1_points), config.ex1_horizon
    ss = np.linspace(0.0, horizon, config.ex1_saves)
    tg, xg = np.meshgrid(np.linspace(0.0, horizon, 81), np.linspace(-3.0, 6.0, 181), indexing="ij")
    out = {}
    for name, (fj, fn) in EX1_F.items():
        initial = lambda s, fj=fj: (jnp.stack([jnp.zeros_like(s), s]), fj(s))
        r = ch.quasilinear(_alpha1, _beta1, initial, sig, ss, on_blowup="stop")
        t, x, u = _split_tx(r)
        exact = ch.riccati_solution(fn, t, x)
        ok = np.isfinite(u) & (np.abs(u) < 100.0)
        t_star, x_star = ch.riccati_blowup(fn, sig, horizon)
        hit = np.isfinite(t_star)
        bs, bx = np.asarray(r.blowup.s), np.asarray(r.blowup.x)[:, 1]
        grid = r.on_grid(np.stack([tg, xg], -1))
        before = tg * fn(xg * np.exp(-tg)) < 0.5  # well inside the classical region
        curve_t, curve_x = ch.riccati_blowup(fn, np.linspace(-3.0, 3.0, 2001), horizon)
        out[name] = Example1(
            max_rel_error_vs_eq12=float(np.max(np.abs(u - exact)[ok] / (1.0 + np.abs(exact[ok])))),
            points_compared=int(ok.sum()),
            blowups_detected=int(np.sum(np.asarray(r.blowup.kind) == 2)),
            blowups_expected=int(hit.sum()),
            max_blowup_time_error=_max_abs(bs[hit] - t_star[hit]),
            max_blowup_place_error=_max_abs(bx[hit] - x_star[hit]),
            first_blowup=r.blowup.first(),
            grid_interp_max_error=float(
                np.nanmax(np.abs(grid - ch.riccati_solution(fn, tg, xg))[before])
            ),
            grid_t=tg[:, 0], grid_x=xg[0], x=np.asarray(r.x), u=u, blowup_s=bs, blowup_x=bx,
            grid_u=np.asarray(grid), curve_t=curve_t, curve_x=curve_x,
        )  # fmt: skip
    return out


def heat(config: Config) -> Heat:
    """(2) u_t = u_x², u(x, 0) = x² by the Charpit system: u = x²/(1-4t), crossing at t = 1/4."""
    sig = np.linspace(-1.0, 1.0, config.heat_points)
    r = ch.charpit(_F_heat, _initial_heat, sig, np.linspace(0.0, 0.3, 31), on_blowup="stop")
    t, x, u = _split_tx(r)
    b, residual = r.blowup, np.asarray(r.residual)
    return Heat(
        max_abs_error_vs_eq26=_max_abs((u - x**2 / (1 - 4 * t))[np.isfinite(u)]),
        max_abs_F_residual=float(np.nanmax(np.abs(residual))),
        blowup_kind=b.first()["kind"],
        max_blowup_time_error=_max_abs(np.asarray(b.s) - 0.25),
        max_blowup_place_error=_max_abs(np.asarray(b.x)[:, 1]),
        x=np.asarray(r.x), u=u, s=np.asarray(r.s), residual=residual, blowup_s=np.asarray(b.s),
    )  # fmt: skip


def _burgers_solve(sig):
    saves = np.linspace(0.0, 2.0, 41)
    return ch.quasilinear(
        _burgers_alpha, _burgers_beta, _burgers_initial, sig, saves, on_blowup="stop"
    )


def burgers(config: Config) -> Burgers:
    """(3) Burgers: crossing times -1/f'(σ) per characteristic, the first shock at (√2, √(e/2))."""
    sig = np.linspace(-1.0, 2.5, config.burgers_points)
    r = _burgers_solve(sig)
    f = lambda s: np.exp(-(s**2))
    t_c, x_c = ch.burgers_crossing(f, lambda s: -2 * s * f(s), sig, horizon=2.0)
    bs, bx = np.asarray(r.blowup.s), np.asarray(r.blowup.x)[:, 1]
    hit = np.asarray(r.blowup.kind) == 1
    # The first shock: the smallest crossing time over sigma. Solve again on a grid of the same
    # size (the compiled solver is reused) spanning the two cells around the grid minimum, then
    # take the vertex of a parabola through the refined minimum and its neighbours.
    i = int(np.argmin(np.where(hit, bs, np.inf)))
    fine = np.linspace(sig[i - 1], sig[i + 1], sig.size)
    bf = np.asarray(_burgers_solve(fine).blowup.s)
    k = int(np.argmin(bf))
    a, b_, c = np.polyfit(fine[k - 1 : k + 2], bf[k - 1 : k + 2], 2)
    s_min = -b_ / (2 * a)
    t_shock = float(np.polyval([a, b_, c], s_min))
    x_shock = float(s_min + f(s_min) * t_shock)
    exact_t, exact_x = float(np.sqrt(np.e / 2)), float(np.sqrt(2.0))
    return Burgers(
        crossings_detected=int(hit.sum()),
        crossings_expected=int(np.isfinite(t_c).sum()),
        max_crossing_time_error=_max_abs(bs[hit] - t_c[hit]),
        max_crossing_place_error=_max_abs(bx[hit] - x_c[hit]),
        first_shock_grid={"t": float(bs[i]), "x": float(bx[i])},
        first_shock_refined={"t": t_shock, "x": x_shock},
        first_shock_exact={"t": exact_t, "x": exact_x},
        first_shock_time_error=abs(t_shock - exact_t),
        first_shock_place_error=abs(x_shock - exact_x),
        sigma=sig, x=np.asarray(r.x), u=np.asarray(r.u), blowup_s=bs, blowup_x=bx, exact_t=t_c,
    )  # fmt: skip


def eikonal(config: Config) -> Eikonal:
    """(4) |∇u| = 1 from the unit circle: u = |x| - 1 outward, a caustic at the centre inward."""
    m = config.eikonal_points
    sig = np.linspace(0.0, 2 * np.pi, m, endpoint=False)
    normals = np.stack([np.cos(sig), np.sin(sig)], -1)
    # Both branches of F = 0 in one solve: p0 = +normal (outward) and -normal (inward).
    both, saves = np.concatenate([sig, sig]), np.linspace(0.0, 1.5, 16)
    r = ch.charpit(_F_eikonal, _circle, both, saves, p_guess=np.concatenate([normals, -normals]),
                   on_blowup="stop")  # fmt: skip
    x, u, b, residual = np.asarray(r.x), np.asarray(r.u), r.blowup, np.asarray(r.residual)
    return Eikonal(
        max_abs_error_vs_distance=_max_abs(u[:m] - (np.linalg.norm(x[:m], axis=-1) - 1.0)),
        max_abs_F_residual=float(np.nanmax(np.abs(residual))),
        outward_blowups=int(np.sum(np.asarray(b.kind)[:m] != 0)),
        caustic_kind=b.first()["kind"],
        max_caustic_time_error=_max_abs(np.asarray(b.s)[m:] - 1.0),
        max_caustic_place_error=_max_abs(np.asarray(b.x)[m:]),
        out_x=x[:m], out_u=u[:m], in_x=x[m:], in_u=u[m:], s=np.asarray(r.s), residual=residual,
    )  # fmt: skip


def density(config: Config) -> Density:
    """(5) Characteristics from a grid of initial points and Monte-Carlo samples, in one solve."""
    mu, sd, g = config.cloud_mean, config.cloud_std, config.density_grid
    problem = problems.double_well()
    grid = np.linspace(mu - 5 * sd, mu + 5 * sd, g)
    samples = mu + sd * np.asarray(_standard_normal(config.seed, config.density_samples))
    x0 = np.concatenate([grid, samples])[:, None]
    logp0 = -0.5 * ((x0[:, 0] - mu) / sd) ** 2 - np.log(sd * np.sqrt(2 * np.pi))
    ts = np.asarray(config.density_times)
    r = ch.transport_density(flows.GradientFlow(), problem, x0, logp0, ts)
    xs, rho = np.asarray(r.states)[..., 0].T, np.asarray(r.density).T  # (times, points)
    edges = np.linspace(-2.0, 2.0, config.density_bins + 1)
    left = scipy.special.ndtr((grid[0] - mu) / sd)  # the cloud's mass left of the grid
    checks = [ch.density_chi2(x[:g], p[:g], x[g:], edges, left) for x, p in zip(xs, rho)]
    chi2, max_z, mass, hists = (list(c) for c in zip(*checks))
    xl = np.linspace(-2.0, 2.0, 201)
    return Density(
        times=ts.tolist(), chi2_per_dof=chi2, max_abs_z=max_z, mass=mass,
        samples=config.density_samples, characteristics=g, edges=edges, x=xs[:, :g],
        rho=rho[:, :g], hist=np.stack(hists), loss_x=xl,
        loss=np.asarray(jax.vmap(problem.loss)(jax.device_put(xl[:, None]))),
    )  # fmt: skip


SECTIONS = {
    "example1": example1,
    "ut_eq_ux2": heat,
    "burgers": burgers,
    "eikonal": eikonal,
    "density": density,
}

HEADLINES = (
    Headline("example1/sin x/max_rel_error_vs_eq12", "u_t + x u_x = u²: error vs eq. 12",
             high=1e-6),
    Headline("example1/2 exp(-x²)/max_blowup_time_error", "its blow-up times: error", high=1e-8),
    Headline("ut_eq_ux2/max_abs_error_vs_eq26", "u_t = u_x²: error vs x²/(1-4t)", high=1e-10),
    Headline("eikonal/max_abs_error_vs_distance", "eikonal: error vs |x| - 1", high=1e-10),
    Headline("burgers/first_shock_time_error", "Burgers: first shock time error", high=1e-8),
    Headline("density/chi2_per_dof/3", "density at t = 0.5: χ²/dof vs Monte Carlo",
             low=0.5, high=1.6),
)  # fmt: skip


def draw_example1(r):
    fig, axes = plotting.panels(len(r.example1), width=4.4, height=3.8)
    for ax, (name, e) in zip(axes, r.example1.items()):
        xg, tg = e.grid_x, e.grid_t
        plotting.plot_density_map(
            ax, xg, tg, e.grid_u, label="u (characteristics, interpolated)", clip=10.0
        )
        plotting.plot_characteristics_with_events(
            ax, e.x[..., 1], e.x[..., 0], e.blowup_x, e.blowup_s, label="blow-up events", every=2,
            ms=5,
        )  # fmt: skip
        ax.plot(e.curve_x, e.curve_t, "k--", lw=1.2, label="t·f(xe⁻ᵗ) = 1 (closed form)")
        title = (f"u_t + x u_x = u², f = {name}\nmax rel err {e.max_rel_error_vs_eq12:.1e}, "
                 f"blow-up t err {e.max_blowup_time_error:.1e}")  # fmt: skip
        plotting.dress(ax, legend=dict(loc="upper left"), grid=None, title=title, xlabel="x",
                       ylabel="t", xlim=(xg.min(), xg.max()),
                       ylim=(tg.min(), tg.max()))  # fmt: skip
    return fig


def _max_residual(s, residual):
    """Max |F| over the characteristics still alive at each s (NaN after a crossing)."""
    alive = np.any(np.isfinite(residual), axis=0)
    return s[alive], np.max(np.abs(np.nan_to_num(residual, nan=0.0)), axis=0)[alive]


def draw_charpit_eikonal(r):
    h, ek = r.ut_eq_ux2, r.eikonal
    fig, axes = plotting.panels(4, width=3.9, height=3.6)
    plotting.plot_characteristics_with_events(
        axes[0], h.x[..., 1], h.x[..., 0], 0.0, h.blowup_s, label="crossing events", color="C0"
    )
    axes[0].axhline(0.25, color="k", ls="--", lw=1, label="t = 1/4")
    title = f"u_t = u_x², u(x,0) = x²: Charpit\nblow-up t err {h.max_blowup_time_error:.1e}"
    plotting.dress(axes[0], legend=dict(loc="center left"), grid=None, title=title, xlabel="x",
                   ylabel="t")  # fmt: skip
    for j in range(0, 25, 6):
        order = np.argsort(h.x[:, j, 1])
        xx = h.x[order, j, 1]
        (line,) = axes[1].plot(xx, h.u[order, j], "o", ms=3, label=f"t = {h.s[j]:.2f}")
        xf = np.linspace(xx.min(), xx.max(), 100)
        axes[1].plot(xf, xf**2 / (1 - 4 * h.s[j]), "-", color=line.get_color(), lw=0.8)
    title = f"dots: characteristics, lines: x²/(1-4t)\nmax err {h.max_abs_error_vs_eq26:.1e}"
    plotting.dress(axes[1], grid=None, title=title, xlabel="x", ylabel="u")
    for xs, color in ((ek.out_x, "C0"), (ek.in_x, "C1")):
        plotting.plot_characteristic_curves(axes[2], xs[..., 0], xs[..., 1], color=color)
    th = np.linspace(0, 2 * np.pi, 200)
    axes[2].plot(np.cos(th), np.sin(th), "k-", lw=1.5, label="u = 0 (initial circle)")
    for rr in (1.5, 2.0, 2.5):
        axes[2].plot(rr * np.cos(th), rr * np.sin(th), "k:", lw=0.6)
    axes[2].plot([0], [0], "r*", ms=10, label="caustic (inward, s = 1)")
    title = (f"eikonal |∇u| = 1: u = |x| − 1 to {ek.max_abs_error_vs_distance:.0e}\n"
             f"caustic t err {ek.max_caustic_time_error:.1e}")  # fmt: skip
    plotting.dress(axes[2], legend=dict(loc="upper right"), grid=None, title=title, xlabel="x₁",
                   ylabel="x₂", aspect="equal")  # fmt: skip
    for res, fmt, label in ((h, "o-", "u_t = u_x²"), (ek, "s-", "eikonal")):
        plotting.plot_log_floor(axes[3], *_max_residual(res.s, res.residual), fmt, ms=3,
                                label=label)  # fmt: skip
    plotting.dress(axes[3], grid=None, title="F = 0 along Charpit characteristics", xlabel="s",
                   ylabel="max |F(x, u, p)|")  # fmt: skip
    return fig


def draw_burgers(r):
    b = r.burgers
    fig, axes = plotting.panels(2, width=4.6, height=3.8)
    plotting.plot_characteristics_with_events(
        axes[0], b.x[..., 1], b.x[..., 0], b.blowup_x, b.blowup_s, label="crossing events",
        every=2, color="C0", ms=4,
    )  # fmt: skip
    ft = b.first_shock_exact
    axes[0].plot([ft["x"]], [ft["t"]], "k*", ms=12, label="first shock (√2, √(e/2))")
    title = (f"Burgers u_t + u u_x = 0, u(x,0) = exp(−x²)\n"
             f"shock t err {b.first_shock_time_error:.1e}")  # fmt: skip
    plotting.dress(axes[0], grid=None, title=title, xlabel="x", ylabel="t")
    hit = np.isfinite(b.blowup_s)
    axes[1].plot(b.sigma, b.exact_t, "k-", lw=1, label="−1/f′(σ) (closed form)")
    axes[1].plot(b.sigma[hit], b.blowup_s[hit], "o", ms=3, label="diffrax Event")
    plotting.dress(axes[1], grid=None, ylim=(0.0, 2.1),
                   title=f"max crossing-time error {b.max_crossing_time_error:.1e}",
                   xlabel="σ (initial point)", ylabel="crossing time")  # fmt: skip
    return fig


def draw_density(r):
    d = r.density
    fig, axes = plotting.panels(len(d.times), width=3.6, height=3.4)
    for j, ax in enumerate(axes):
        plotting.plot_density_vs_histogram(ax, d.x[j], d.rho[j], d.edges, d.hist[j])
        ax.set_xlim(-2.0, 2.0)
        ax.set_title(f"t = {d.times[j]:g}: χ²/dof = {d.chi2_per_dof[j]:.2f}")
    twin = axes[0].twinx()
    twin.plot(d.loss_x, d.loss, "k:", lw=0.8)
    twin.set(ylim=(0, 4), yticks=[])
    plotting.key_entry(axes[0], "loss (x²−1)²", "k:", lw=0.8)
    plotting.legend(axes[0], loc="upper left")
    fig.suptitle(
        f"N(0.2, 0.5²) under gradient flow on (x²−1)² (dotted): characteristics "
        f"({d.characteristics} points) vs {d.samples} Monte-Carlo endpoints"
    )
    return fig


FIGURES = {
    "example1.png": draw_example1,
    "charpit_eikonal.png": draw_charpit_eikonal,
    "burgers.png": draw_burgers,
    "density.png": draw_density,
}
