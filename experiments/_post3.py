"""Post 3's 1-D example, shared by the `adaptive` and `holistic` experiments.

L(x) = x(x − 1)(x − 3)² + 1.62276 from x = 4: GD settles in the local minimum x = 3; the truncated
Polyak flow θ' = −min(1/‖∇L‖, M)·L∇L/‖∇L‖ crosses the barrier and reaches the global minimum.
"""

import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import flows


def loss(x):
    x = x[0]
    return x * (x - 1) * (x - 3) ** 2 + 1.62276


def critical_points() -> tuple[float, float, float]:
    """(global minimum, barrier, local minimum x = 3) of L, from the roots of L'."""
    coeffs = np.poly([0.0, 1.0, 3.0, 3.0])  # x(x-1)(x-3)^2
    lo, barrier, hi = np.sort(np.roots(np.polyder(coeffs)).real)
    return float(lo), float(barrier), float(hi)


def polyak_vs_gd(M: float, h: float, n: int) -> tuple[dict, dict]:
    """Truncated Polyak (bound `M`) and GD, `n` steps of `h` from x = 4: `(metrics, arrays)`."""
    prob = dynopt.Problem(loss, jnp.array([4.0]), name="post3")
    polyak = dynopt.run(flows.PolyakFlow(M=M).discretize(h), prob, n)
    gd = dynopt.run(flows.GradientFlow().discretize(h), prob, n)
    x = np.asarray(polyak.params[:, 0])
    left = np.flatnonzero(x < 1.9)  # the barrier between the two basins peaks near x ≈ 1.9
    metrics = {
        "polyak_final_x": float(x[-1]),
        "polyak_final_loss": float(polyak.loss[-1]),
        "gd_final_x": float(gd.params[-1, 0]),
        "polyak_first_left_of_barrier_t": float(left[0] * h) if left.size else None,
    }
    arrays = {
        "polyak_ts": np.asarray(polyak.ts),
        "polyak_x": x,
        "gd_x": np.asarray(gd.params[:, 0]),
    }
    return metrics, arrays


def figure(metrics: dict, arrays: dict):
    """x(t) of both runs with the critical points (and the barrier crossing, when measured)."""
    from dynopt import plotting

    global_min, barrier, local_min = critical_points()
    fig, (ax,) = plotting.panels(1, width=5.5)
    t = arrays["polyak_ts"]
    ax.plot(t, arrays["gd_x"], lw=3, alpha=0.5, label="gradient descent")
    ax.plot(t, arrays["polyak_x"], lw=1, label="truncated Polyak")  # on top: it chatters at x = 3
    ax.axhline(global_min, color="k", ls=":", lw=0.8, label=f"global min x = {global_min:.3f}")
    ax.axhline(barrier, color="r", ls=":", lw=0.8, label=f"barrier x = {barrier:.3f}")
    ax.axhline(local_min, color="0.5", ls=":", lw=0.8, label="local min x = 3")
    esc = metrics.get("polyak_escape_t")
    if esc is not None:
        ax.axvline(esc, color="r", ls="--", lw=0.8, label=f"Polyak crosses it, t = {esc:.2f}")
    ax.set(ylim=(-2.0, 8.0), xlabel="t = k h", ylabel="x")
    ax.set_title(
        f"post 3, x0 = 4: Polyak ends at {metrics['polyak_final_x']:.4f}, "
        f"GD at {metrics['gd_final_x']:.4f}"
    )
    plotting.legend(ax)
    ax.grid(True, alpha=0.3)
    return fig
