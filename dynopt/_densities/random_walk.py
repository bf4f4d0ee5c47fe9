r"""Route (d): the asymmetric random walk of the series (post 2; post 7's equivalence) on the
lattice $x_0 + \Delta s\,\mathbb Z^d$, $\Delta s^2 = \alpha\Delta t$; the 1-D route is its $d = 1$
case.

Every $\Delta t$ each coordinate steps $\pm\Delta s$ independently, $+$ with probability
$q_+ = \tfrac12(1 + p_i\Delta s/\alpha)$ and $-$ with $q_- = \tfrac12(1 - p_i\Delta s/\alpha)$:
the mean step is $p\,\Delta t$, the covariance $\alpha\Delta t\,I + O(\Delta t^2)$, so as
$\Delta t \to 0$ it is $dx = p\,dt + \sqrt\alpha\,dW$. (The pairing ±Δs ↔ (1 ∓ pΔs/α)/2 written
in the issue gives the drift −p; the mean step fixes the sign used here.) The law of the walk is
evolved exactly (master equation, no sampling) over the $2^d$ sign patterns $\sigma$,
$$P_{k+1}(j) = \sum_{\sigma\in\{\pm1\}^d} \prod_i \tfrac12\big(1 + \sigma_i p_i(x_{j-\sigma})
  \Delta s/\alpha\big)\,P_k(j - \sigma),$$
in 1-D $P_{k+1}(j) = q_+(j-1)P_k(j-1) + q_-(j+1)P_k(j+1)$, on a window of the lattice; mass
stepping out of it is absorbed (`lost_mass`). After $n$ steps only sites with every
$j_i \equiv n \pmod 2$ are occupied (a sub-lattice of spacing $2\Delta s$), where the density is
$P_n(j)/(2\Delta s)^d$. Requires $|p_i|\Delta s/\alpha \le 1$ on the window (probabilities in
$[0, 1]$).

A diagonal diffusion matrix $D$ (noise $\sqrt{D_{ii}}\,dW_i$, independent per axis) takes
$\alpha \to D_{ii}$ on axis $i$: spacing $\Delta s_i = \sqrt{D_{ii}\Delta t}$,
$q_\pm = \tfrac12(1 \pm p_i\Delta s_i/D_{ii})$, density $P_n(j)/\prod_i 2\Delta s_i$. Correlated
noise (off-diagonal $D$) has no such independent steps: refused.
"""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import ScalarLike
from .._problem import Problem
from .._validation import interval, positive
from .base import (
    as_point_array,
    check_lost_mass,
    check_scalar_point,
    check_tolerance,
    GridDensity,
    input_eps,
)
from .vector import (
    active_cells,
    as_vector_sde,
    check_dimension,
    check_finite_drift,
    check_point,
    mesh_points,
    TensorDensity,
)


@eqx.filter_jit
def _walk(sde, axes, nums, j0, ds, dt, n):
    # Sites >= nums[i] on axis i are padding (absorbing; at least one per axis, so np.roll's
    # wrap-around only ever moves zeros or lands in padding). n is traced.
    d = len(axes)
    shape = tuple(a.shape[0] for a in axes)
    active = active_cells(shape, nums)
    pts = mesh_points(axes).reshape(-1, d)
    P0 = jnp.zeros(shape).at[tuple(j0)].set(1.0)
    signs = list(itertools.product((1.0, -1.0), repeat=d))
    # ds: one, or one per axis (shape (1, d), as the rates)
    rate = sde.alpha if sde.isotropic else jnp.diag(sde.alpha)[None]

    def step(k, carry):
        P, lost, ratio = carry
        q = (jax.vmap(lambda x: sde.p(x, k * dt))(pts) * ds / rate).reshape(*shape, d)
        # Masked on the padding: a drift that is not finite there (outside the window) would
        # reach the window as NaN * 0 through the rolls; P is 0 there, so nothing else changes.
        q = jnp.where(active[..., None], q, 0.0)
        new = jnp.zeros(shape)
        for sigma in signs:
            w = jnp.prod(0.5 * (1.0 + jnp.asarray(sigma).reshape(*[1] * d, d) * q), axis=-1)
            new = new + jnp.roll(w * P, [int(s) for s in sigma], axis=tuple(range(d)))
        out = jnp.sum(jnp.where(active, 0.0, new))
        ratio = jnp.maximum(ratio, jnp.max(jnp.where(active[..., None], jnp.abs(q), 0.0)))
        return jnp.where(active, new, 0.0), lost + out, ratio

    zero = jnp.zeros(())
    return jax.lax.fori_loop(0, n, step, (P0, zero, zero))


def random_walk_nd(
    sde,
    x0,
    t1: ScalarLike,
    dt: ScalarLike,
    window,
    *,
    mass_tol: float | None = 1e-6,
    problem: Problem | None = None,
) -> TensorDensity:
    r"""The $d$-dim asymmetric random walk's law at $t_1 = n\,\Delta t$, as a density on the
    occupied sub-lattice inside `window` (one `(lo, hi)` per dimension).

    **Arguments:**

    - `sde`: a `VectorSDE` (isotropic, or with a diagonal diffusion matrix $D$), a `ScalarSDE`
      ($d = 1$), or a flow with such noise on `problem` (`VectorSDE.from_flow`).
    - `x0`: the start, a finite point of shape $(d,)$.
    - `t1`: the final time $t_1 = n\,\Delta t$.
    - `dt`: the time step $\Delta t > 0$ (lattice spacing $\Delta s = \sqrt{\alpha\Delta t}$;
      $\sqrt{D_{ii}\Delta t}$ on axis $i$).
    - `window`: one `(lo, hi)` per coordinate, containing $x_0$ (absorbing beyond).
    - `mass_tol`: the largest lost mass accepted, `None` (report only) or $\ge 0$ and finite.
    - `problem`: the problem a flow `sde` acts on (`None` otherwise).

    **Raises:** `ValueError` for $\Delta t \le 0$, $t_1/\Delta t$ not an integer, a window that is
    not one `(lo, hi)` pair per coordinate of $x_0$ or does not contain $x_0$, a drift that is
    not finite on the window (beyond it, on the lattice's padding, it is never used),
    $|p_i|\Delta s/\alpha > 1$ ($|p_i|\Delta s_i/D_{ii}$) somewhere on the window, a diffusion
    matrix that is not diagonal, or a lost mass above `mass_tol` (which
    must be `None` or >= 0 and finite). $t_1/\Delta t$ is an integer to the precision of their
    dtypes (float32 `dt = 0.01` is 0.01 to 2.2e-8).
    """
    return _random_walk(sde, problem, x0, t1, dt, window, mass_tol, "random_walk_nd")


def _random_walk(sde, problem, x0, t1, dt, window, mass_tol, name):
    positive("dt", dt)
    positive("t1", t1)
    mass_tol = check_tolerance("mass_tol", mass_tol)
    n = round(float(t1) / float(dt))
    # To the precision of the inputs' dtypes: float32 0.01 is 0.01 * (1 - 2.2e-8).
    eps = max(input_eps(v) for v in (t1, dt))
    if n < 1 or abs(n * float(dt) - float(t1)) > max(1e-9, 2.0 * eps) * float(t1):
        raise ValueError(f"t1/dt must be a positive integer, got t1={t1}, dt={dt}.")
    sde = as_vector_sde(sde, problem, times=np.linspace(0.0, float(t1), 5))
    win = np.asarray(interval("window", window), dtype=np.float64)  # finite real numbers
    x0 = np.asarray(as_point_array("x0", x0), dtype=np.float64)
    if win.ndim != 2 or win.shape[1] != 2 or x0.shape != (win.shape[0],):
        raise ValueError(
            f"window must be one (lo, hi) pair per coordinate of x0, got window shape {win.shape} "
            f"for x0 of shape {x0.shape}."
        )
    for i, (lo, hi) in enumerate(win):
        if not lo < hi:
            fix = f"reversed: write ({hi:g}, {lo:g})" if lo > hi else "empty"
            raise ValueError(
                f"window must be (lo, hi) with lo < hi per coordinate; coordinate {i} has "
                f"({lo:g}, {hi:g}), which is {fix}."
            )
    d = win.shape[0]
    check_dimension(sde, d)
    check_point("x0", x0, d)
    if not np.all((win[:, 0] <= x0) & (x0 <= win[:, 1])):
        raise ValueError(f"x0={x0} must lie inside window={win.tolist()}.")
    if sde.isotropic:
        ds = float(np.sqrt(float(sde.alpha) * float(dt)))
        steps, rate = [ds] * d, "alpha"
    else:
        D = np.asarray(sde.alpha, dtype=np.float64)
        if np.any(D != np.diag(np.diag(D))):
            raise ValueError(
                f"{name}: the walk steps each coordinate independently, so it has a diagonal "
                f"diffusion matrix only; D = {np.round(D, 6).tolist()} has off-diagonal "
                "entries (correlated noise). Use fokker_planck_nd, path_integral_nd or "
                "monte_carlo_density_nd, or change coordinates to D's eigenvectors (where it "
                "is diagonal)."
            )
        steps, rate = [float(np.sqrt(a * float(dt))) for a in np.diag(D)], "D_ii"
        ds = np.asarray(steps)  # Δs_i = sqrt(D_ii Δt) per axis
    js = [
        np.arange(np.ceil((lo - c) / h), np.floor((hi - c) / h) + 1).astype(int)
        for (lo, hi), c, h in zip(win, x0, steps)
    ]
    nums = [j.size for j in js]
    sizes = [1 << int(np.ceil(np.log2(m + 1))) for m in nums]  # power-of-two buckets, >= 1 pad
    axes = tuple(
        c + h * (j[0] + np.arange(s)).astype(float) for c, j, s, h in zip(x0, js, sizes, steps)
    )
    j0 = [int(np.flatnonzero(j == 0)[0]) for j in js]
    P, lost, ratio = _walk(
        sde,
        tuple(jnp.asarray(a) for a in axes),
        jnp.asarray(nums),
        jnp.asarray(j0),
        jnp.asarray(ds) if sde.isotropic else jnp.asarray(ds).reshape(1, d),
        jnp.asarray(float(dt)),
        jnp.asarray(n),
    )
    if not (np.isfinite(float(ratio)) and np.isfinite(float(lost))):  # name a NaN drift
        real = tuple(a[:m] for a, m in zip(axes, nums))
        check_finite_drift(sde, mesh_points(real), (0.0, (n - 1) * float(dt)), name)
    if not float(ratio) <= 1.0:
        raise ValueError(
            f"|p_i| ds / {rate} reaches {float(ratio):.3g} > 1 on the window: the walk's "
            f"probabilities (1 ± p_i ds/{rate})/2 leave [0, 1]. Use a smaller dt or a narrower "
            "window."
        )
    check_lost_mass(lost, mass_tol, name)
    occ = [np.flatnonzero((j - n) % 2 == 0) for j in js]  # occupied sub-lattice, per axis
    # The result's bookkeeping on the host: eagerly on device, each window size compiled ~6
    # one-op programs.
    P_occ, lost = np.asarray(P)[np.ix_(*occ)], np.asarray(lost)
    mass = np.sum(P_occ)
    return TensorDensity(
        axes=tuple(a[o] for a, o in zip(axes, occ)),
        density=P_occ / (2 * ds) ** d if sde.isotropic else P_occ / np.prod(2 * ds),
        t=t1,
        mass=mass,
        lost_mass=lost,
        mass_defect=np.abs(mass + lost - 1.0),
        method="random_walk",
    )


def random_walk(
    sde,
    x0: ScalarLike,
    t1: ScalarLike,
    dt: ScalarLike,
    window: tuple[float, float],
    *,
    mass_tol: float | None = 1e-6,
    problem: Problem | None = None,
) -> GridDensity:
    r"""The 1-D route: `random_walk_nd` with the window `(lo, hi)`, as a density on the occupied
    lattice sites.

    **Arguments:**

    - `sde`: a `ScalarSDE`, a 1-D `VectorSDE`, or a flow with noise on `problem`.
    - `x0`: the start $x_0$, one finite real number.
    - `t1`: the final time $t_1 = n\,\Delta t$.
    - `dt`: the time step $\Delta t > 0$ (lattice spacing $\Delta s = \sqrt{\alpha\Delta t}$).
    - `window`: `(lo, hi)` containing $x_0$: the lattice's extent (absorbing beyond).
    - `mass_tol`: the largest lost mass accepted, `None` (report only) or $\ge 0$ and finite.
    - `problem`: the problem a flow `sde` acts on (`None` otherwise).

    **Raises:** as `random_walk_nd` ($x_0$ outside the window, $t_1/\Delta t$ not an integer,
    $|p|\Delta s/\alpha > 1$ somewhere on the window: take a smaller $\Delta t$ or a narrower
    window).
    """
    x0 = check_scalar_point("x0", x0)
    res = _random_walk(sde, problem, x0, t1, dt, [window], mass_tol, "random_walk")
    return GridDensity.from_tensor(res)
