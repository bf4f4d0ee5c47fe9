"""Post 3's 1-D example, shared by the `adaptive` and `holistic` experiments.

L(x) = x(x − 1)(x − 3)² + 1.62276 from x = 4: GD settles in the local minimum x = 3; the truncated
Polyak flow θ' = −min(1/‖∇L‖, M)·L∇L/‖∇L‖ crosses the barrier and reaches the global minimum.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import flows, plotting

from ._card import Array


def loss(x):
    x = x[0]
    return x * (x - 1) * (x - 3) ** 2 + 1.62276


def critical_points() -> tuple[float, float, float]:
    """(global minimum, barrier, local minimum x = 3) of L, from the roots of L'."""
    coeffs = np.poly([0.0, 1.0, 3.0, 3.0])  # x(x-1)(x-3)^2
    lo, barrier, hi = np.sort(np.roots(np.polyder(coeffs)).real)
    return float(lo), float(barrier), float(hi)


@dataclasses.dataclass
class Post3:
    """Truncated Polyak (bound M) and GD, n steps of h from x = 4."""

    polyak_final_x: float
    polyak_final_loss: float
    gd_final_x: float
    polyak_first_left_of_barrier_t: float | None  # left of x = 1.9, near the barrier
    barrier_x: float
    global_min_x: float
    polyak_escape_t: float | None  # first time left of the barrier (closed form)
    polyak_basin_fraction: float  # of the runs from STARTS, those ending left of the barrier
    polyak_ts: Array
    polyak_x: Array
    gd_x: Array


# The escape is chaotic (jumps of up to h·M·L; a 1e-9 change of x0, or of rounding, moves where
# step n lands), so the robust statement is about the starts near 4, not one run.
STARTS = 4.0 + np.linspace(-1e-2, 1e-2, 201)
# "201 starts in 4 ± 0.01", for titles and headlines: read off STARTS, not written again.
STARTS_TEXT = (
    f"{len(STARTS)} starts in {(STARTS[0] + STARTS[-1]) / 2:g} ± {(STARTS[-1] - STARTS[0]) / 2:.2g}"
)


def basin_fraction(M: float, h: float, n: int, starts=STARTS) -> float:
    """The fraction of truncated-Polyak runs from `starts` that end left of the barrier (in
    the global minimum's basin); one vmapped run."""
    _, barrier, _ = critical_points()
    prob = dynopt.Problem(loss, jnp.array([4.0]), name="post3")
    opt = flows.PolyakFlow(M=M).discretize(h)

    def end(x0):
        moved = eqx.tree_at(lambda q: q.params0, prob, x0)
        return dynopt.run(opt, moved, n, every=n).final_params[0]

    ends = jax.vmap(end)(jnp.asarray(starts, jnp.float64)[:, None])
    return float(np.mean(np.asarray(ends) < barrier))


def polyak_vs_gd(M: float, h: float, n: int) -> Post3:
    prob = dynopt.Problem(loss, jnp.array([4.0]), name="post3")
    polyak = dynopt.run(flows.PolyakFlow(M=M).discretize(h), prob, n)
    gd = dynopt.run(flows.GradientFlow().discretize(h), prob, n)
    # On the host: eagerly, each index of a device array compiled a program of its own.
    x, ts = np.asarray(polyak.params)[:, 0], np.asarray(polyak.ts)
    gd_x = np.asarray(gd.params)[:, 0]
    global_min, barrier, _ = critical_points()
    near, left = np.flatnonzero(x < 1.9), np.flatnonzero(x < barrier)
    return Post3(
        float(x[-1]), float(np.asarray(polyak.loss)[-1]), float(gd_x[-1]),
        float(near[0] * h) if near.size else None, barrier, global_min,
        float(ts[left[0]]) if left.size else None, basin_fraction(M, h, n),
        ts, x, gd_x,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Config:
    """The run-card fields of `section`, written once for every experiment that runs it (its
    `Config` inherits them): the bound `polyak_M`, the step `polyak_h`, the number of steps."""

    polyak_M: float = 1000.0
    polyak_h: float = 0.01
    polyak_steps: int = 2500


def section(config: Config) -> Post3:
    """The run-card section: `polyak_vs_gd` with the config's `polyak_M`, `polyak_h`,
    `polyak_steps`."""
    return polyak_vs_gd(config.polyak_M, config.polyak_h, config.polyak_steps)


def figure(r: Post3):
    """x(t) of both runs with the critical points and the barrier crossing."""
    global_min, barrier, local_min = critical_points()
    fig, (ax,) = plotting.panels(1, width=5.5)
    ax.plot(r.polyak_ts, r.gd_x, lw=3, alpha=0.5, label="gradient descent")
    ax.plot(r.polyak_ts, r.polyak_x, lw=1, label="truncated Polyak")  # on top: chatters at x = 3
    ax.axhline(global_min, color="k", ls=":", lw=0.8, label=f"global min x = {global_min:.3f}")
    ax.axhline(barrier, color="r", ls=":", lw=0.8, label=f"barrier x = {barrier:.3f}")
    ax.axhline(local_min, color="0.5", ls=":", lw=0.8, label="local min x = 3")
    if r.polyak_escape_t is not None:
        esc = r.polyak_escape_t
        ax.axvline(esc, color="r", ls="--", lw=0.8, label=f"Polyak crosses it, t = {esc:.2f}")
    ax.set(ylim=(-2.0, 8.0), xlabel="t = k h", ylabel="x")
    title = f"post 3, x0 = 4: Polyak ends at {r.polyak_final_x:.4f}, GD at {r.gd_final_x:.4f}"
    share = r.polyak_basin_fraction
    if share is not None and np.isfinite(share):  # absent from results saved before it was
        title += f"\n(runs from {STARTS_TEXT}: {share:.0%} of Polyak's end in the global basin)"
    ax.set_title(title)
    plotting.legend(ax)
    ax.grid(True, alpha=0.3)
    return fig
