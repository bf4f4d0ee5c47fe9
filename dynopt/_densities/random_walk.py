r"""Route (d): the asymmetric random walk of the series (post 2; post 7's equivalence).

A walker on the lattice $x_0 + j\,\Delta s$ steps $+\Delta s$ with probability
$q_+ = \tfrac12(1 + p\,\Delta s/\alpha)$ and $-\Delta s$ with
$q_- = \tfrac12(1 - p\,\Delta s/\alpha)$ every $\Delta t$,
with $\Delta s^2 = \alpha\,\Delta t$: mean step $p\,\Delta t$, variance
$\alpha\Delta t + O(\Delta t^2)$, so as $\Delta t\to0$ it is $dx = p\,dt + \sqrt\alpha\,dW$. (The
pairing ±Δs ↔ (1 ∓ pΔs/α)/2 written in the issue gives the drift −p; the mean step fixes the sign
used here.) The law of the walk is evolved exactly (master equation, no sampling):
$$P_{k+1}(j) = q_+(j-1)\,P_k(j-1) + q_-(j+1)\,P_k(j+1),$$
on a lattice window; mass stepping out of the window is absorbed and reported as `lost_mass`.
After $n$ steps only sites with $j \equiv n \pmod 2$ are occupied, so the density there is
$P_n(j)/(2\Delta s)$. Requires $|p|\,\Delta s/\alpha \le 1$ on the window (probabilities in [0,1]).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import ScalarLike
from .base import check_lost_mass, check_positive, GridDensity, ScalarSDE


@eqx.filter_jit
def _walk(sde, xs, num, j0, ds, dt, n):
    # Sites >= num are padding (absorbing); n is traced: one program for many (dt, window).
    active = jnp.arange(xs.shape[0]) < num
    P0 = jnp.zeros_like(xs).at[j0].set(1.0)

    def step(k, carry):
        P, lost, ratio = carry
        q = 0.5 * jax.vmap(lambda x: sde.p(x, k * dt))(xs) * ds / sde.alpha
        up, down = (0.5 + q) * P, (0.5 - q) * P
        new = jnp.concatenate([jnp.zeros(1), up[:-1]]) + jnp.concatenate([down[1:], jnp.zeros(1)])
        out = jnp.sum(jnp.where(active, 0.0, new)) + down[0]
        ratio = jnp.maximum(ratio, jnp.max(jnp.where(active, jnp.abs(2 * q), 0.0)))
        return jnp.where(active, new, 0.0), lost + out, ratio

    zero = jnp.zeros((), xs.dtype)
    return jax.lax.fori_loop(0, n, step, (P0, zero, zero))


def random_walk(
    sde: ScalarSDE,
    x0: ScalarLike,
    t1: ScalarLike,
    dt: ScalarLike,
    window: tuple[float, float],
    *,
    mass_tol: float | None = 1e-6,
) -> GridDensity:
    r"""The asymmetric random walk's law at $t_1 = n\,\Delta t$, as a density on the occupied
    lattice sites in `window`.

    **Raises:** `ValueError` for $\Delta t \le 0$, $t_1/\Delta t$ not an integer, $x_0$ outside
    the window, $|p|\Delta s/\alpha > 1$ somewhere on the window (negative probabilities: take
    a smaller $\Delta t$ or a narrower window), or a lost mass above `mass_tol`.
    """
    if not isinstance(sde, ScalarSDE):
        raise ValueError(f"sde must be a dynopt.densities.ScalarSDE, got {type(sde).__name__}.")
    check_positive("dt", dt)
    check_positive("t1", t1)
    n = round(float(t1) / float(dt))
    if n < 1 or abs(n * float(dt) - float(t1)) > 1e-9 * float(t1):
        raise ValueError(f"t1/dt must be a positive integer, got t1={t1}, dt={dt}.")
    lo, hi = (float(w) for w in window)
    x0 = float(x0)
    if not lo <= x0 <= hi:
        raise ValueError(f"x0={x0} must lie inside window=({lo}, {hi}).")
    ds = float(np.sqrt(float(sde.alpha) * float(dt)))
    js = np.arange(np.ceil((lo - x0) / ds), np.floor((hi - x0) / ds) + 1).astype(int)
    num = js.size
    size = 1 << int(np.ceil(np.log2(num)))  # power-of-two buckets: few compilations
    xs_pad = x0 + ds * (js[0] + np.arange(size)).astype(float)
    j0 = int(np.flatnonzero(js == 0)[0])
    P, lost, ratio = _walk(
        sde,
        jnp.asarray(xs_pad),
        jnp.asarray(num),
        jnp.asarray(j0),
        jnp.asarray(ds),
        jnp.asarray(float(dt)),
        jnp.asarray(n),
    )
    xs, P = jnp.asarray(xs_pad[:num]), P[:num]
    if not float(ratio) <= 1.0:
        raise ValueError(
            f"|p| ds / alpha reaches {float(ratio):.3g} > 1 on the window: the walk's "
            "probabilities (1 ± p ds/alpha)/2 leave [0, 1]. Use a smaller dt or a narrower window."
        )
    check_lost_mass(lost, mass_tol, "random_walk")
    occupied = (js - n) % 2 == 0
    x_occ, P_occ = xs[occupied], P[occupied]
    mass = jnp.sum(P_occ)
    return GridDensity(
        x=x_occ,
        density=P_occ / (2 * ds),
        t=jnp.asarray(t1, float),
        mass=mass,
        lost_mass=lost,
        mass_defect=jnp.abs(mass + lost - 1.0),
        method="random_walk",
    )
