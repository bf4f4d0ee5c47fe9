r"""Route (b): the Fokker–Planck equation by the method of lines on a tensor grid, integrated by
diffrax; the 1-D route is its $d = 1$ case.

$$\partial_t P = -\nabla\cdot J,\qquad J_i = p_i P - \tfrac\alpha2\partial_i P$$
(post 2, eq. 12). Finite volumes on cells of size $h_1\cdots h_d$: on every face normal to
direction $i$, $J_i = p_i(x_{face},t)\tfrac{P_- + P_+}{2} - \tfrac\alpha2\tfrac{P_+ - P_-}{h_i}$
(second order), $\dot P = -\sum_i (J_{i,+} - J_{i,-})/h_i$, absorbing faces ($P = 0$ one cell
outside). The state carries the outflow $\dot L = \sum_i \prod_{j\ne i}h_j\,(\sum_{\text{high
faces}} J_i - \sum_{\text{low faces}} J_i)$, so $\sum P\prod h + L$ is conserved by the
semi-discrete system: its drift is the solver's conservation error (`mass_defect`), $L$ the mass
that left (`lost_mass`). Stiff ($\sim\alpha/h^2$): Kvaerno5 with a PID controller, through
`dynopt._solve.integrate` (a failure is a `dynopt.SolveError`). Above `DENSE_MAX_CELLS` cells
($M = \prod_i m_i$) its stage equations are solved by Newton's method with matrix-free GMRES,
$O(M)$ an iteration, instead of a dense factorisation of the $(M+1)\times(M+1)$ Jacobian,
$O(M^3)$ at every step (`_implicit_solver`). Central face
averages are monotone only for cell Péclet numbers $|p_i|h_i/\alpha \le 1$: a neighbour
$P_{j\pm1}$ enters $\dot P_j$ with the weight $(\alpha/h_i \mp p_i)/(2h_i)$. Beyond (strong drift
on a coarse grid) the density can turn negative and the absorbing faces feed spurious mass back
in; where the density lives, either beyond `BROKEN_TOL` (1%) is refused, naming the Péclet number.

**Anisotropic noise** (a `VectorSDE` with a diffusion matrix $D$):
$J_i = p_iP - \tfrac12\sum_j D_{ij}\partial_jP$. The diagonal term is the flux above with
$\alpha \to D_{ii}$ (Péclet numbers $|p_i|h_i/D_{ii}$); a mixed term $D_{ij}\partial_jP$,
$j \ne i$, takes on each face the mean of the central differences
$(P_{+e_j} - P_{-e_j})/(2h_j)$ of its two cells (second order, and still a flux: mass is
conserved). The mixed terms are not monotone on their own: a strongly correlated $D$ on a coarse
grid can turn the density negative, refused as above.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

from .._custom_types import Array, Float, ScalarLike
from .._problem import Problem
from .._solve import integrate, raise_for_result, SolveError
from .._validation import interval, positive, positive_int
from .base import (
    BROKEN_TOL,
    check_lost_mass,
    check_tolerance,
    check_uniform_grid,
    GridDensity,
)
from .vector import (
    active_cells,
    cell_volume,
    check_finite_drift,
    check_model_on_grid,
    mesh_points,
    padded_axes,
    TensorDensity,
)


# The implicit solver by the number of cells M (static: the state's shape). Up to
# `DENSE_MAX_CELLS`, diffrax's Kvaerno5 as it comes (a chord method on a dense LU of the
# (M+1)² Jacobian, O(M³) a step); above, Newton's method on matrix-free GMRES (optimistix's
# Newton: diffrax's chord method keeps its linearised Jacobian, which an iterative solver cannot
# use), O(M) a GMRES iteration. The stage matrices I - γΔt·J are column diagonally dominant at
# any step where the cell Péclet numbers |p_i| h_i / α are at most 1 (J conserves mass and its
# off-diagonal entries are then >= 0); where GMRES does not converge, the step is rejected and
# retried smaller like any failed stage solve. GMRES to 1e-12 keeps the semi-discrete system's
# mass to rounding. Measured per solve after compilation (OU-like cubic drift, t 0 -> 1, default
# tolerances, 2026-12-05): M = 101 LU 0.024 s / GMRES 0.059 s; 401: 0.37 / 0.21 s; 1,601:
# 8.9 / 2.1 s; 21² = 441: 0.57 / 0.27 s; the 2-D test's cubic rotating drift, 37² and 43² cells:
# 3.2 / 0.38 s and 6.2 / 0.51 s, the densities within 1.3e-16 of each other, mass defects equal.
DENSE_MAX_CELLS = 256
_NEWTON_GMRES = diffrax.Kvaerno5(
    root_finder=diffrax.with_stepsize_controller_tols(optx.Newton)(
        linear_solver=lx.GMRES(rtol=1e-12, atol=1e-15, restart=40, stagnation_iters=40)
    )
)


def _implicit_solver(cells: int) -> diffrax.Kvaerno5:
    return diffrax.Kvaerno5() if cells <= DENSE_MAX_CELLS else _NEWTON_GMRES


def _face_points(axes, i):
    # Points of the faces normal to direction i: axis i replaced by its m_i + 1 cell faces.
    h = axes[i][1] - axes[i][0]
    faces = jnp.concatenate([axes[i][:1] - 0.5 * h, axes[i] + 0.5 * h])
    grids = [faces if j == i else a for j, a in enumerate(axes)]
    return jnp.stack(jnp.meshgrid(*grids, indexing="ij"), axis=-1)


def _central(P, j, h):
    # (P_{+1} - P_{-1}) / 2h along axis j, with P = 0 one cell outside (absorbing).
    ext = jnp.pad(P, [(1, 1) if k == j else (0, 0) for k in range(P.ndim)])
    n = P.shape[j]
    hi = jax.lax.slice_in_dim(ext, 2, n + 2, axis=j)
    return (hi - jax.lax.slice_in_dim(ext, 0, n, axis=j)) / (2.0 * h)


def _face_average(G, i):
    # The mean of G over the two cells beside each face normal to axis i (0 one cell outside).
    ext = jnp.pad(G, [(1, 1) if k == i else (0, 0) for k in range(G.ndim)])
    n = G.shape[i]
    lo = jax.lax.slice_in_dim(ext, 0, n + 1, axis=i)
    return 0.5 * (lo + jax.lax.slice_in_dim(ext, 1, n + 2, axis=i))


@eqx.filter_jit
def _solve(sde, axes, nums, y0, t0, t1, solver, rtol, atol, max_steps):
    # `axes` may be padded past `nums` active cells per axis (one program for several grids).
    d = len(axes)
    shape = tuple(a.shape[0] for a in axes)
    hs = [a[1] - a[0] for a in axes]
    vol = hs[0]
    for h in hs[1:]:
        vol = vol * h
    active = active_cells(shape, nums)
    faces = [_face_points(axes, i) for i in range(d)]
    # The faces of the active cells (m_i + 1 along i): the drift is masked on the others, where it
    # need not be finite (outside the grid) and its NaN * 0 would reach the outflow sums.
    real = [
        active_cells(faces[i].shape[:-1], [nums[j] + 1 if j == i else nums[j] for j in range(d)])
        for i in range(d)
    ]

    alpha = sde.alpha.astype(y0.dtype)  # a float32 alpha has no strict promotion with P's
    iso = sde.isotropic

    def vf(t, y, args):
        P = jnp.where(active, y[:-1].reshape(shape), 0.0)
        dP = jnp.zeros(shape)
        out = jnp.zeros(())
        for i in range(d):
            fshape = faces[i].shape[:-1]
            pf = jax.vmap(lambda x: sde.p(x, t))(faces[i].reshape(-1, d))[:, i].reshape(fshape)
            pf = jnp.where(real[i], pf, 0.0)
            pad = [(1, 1) if j == i else (0, 0) for j in range(d)]
            ext = jnp.pad(P, pad)
            lo = jax.lax.slice_in_dim(ext, 0, shape[i] + 1, axis=i)
            hi = jax.lax.slice_in_dim(ext, 1, shape[i] + 2, axis=i)
            if iso:
                J = pf * 0.5 * (lo + hi) - 0.5 * alpha * (hi - lo) / hs[i]
            else:
                J = pf * 0.5 * (lo + hi) - 0.5 * alpha[i, i] * (hi - lo) / hs[i]
                for j in range(d):  # -D_ij ∂_j P / 2: the two cells' central differences
                    if j != i:
                        J = J - 0.5 * alpha[i, j] * _face_average(_central(P, j, hs[j]), i)
                # (The cross terms reach faces of the padding's cells beside the grid.)
                J = jnp.where(real[i], J, 0.0)
            dP = dP - jnp.diff(J, axis=i) / hs[i]
            high = jax.lax.dynamic_index_in_dim(J, nums[i], axis=i, keepdims=False)
            low = jax.lax.index_in_dim(J, 0, axis=i, keepdims=False)
            out = out + (vol / hs[i]) * (jnp.sum(high) - jnp.sum(low))
        dP = jnp.where(active, dP, 0.0)
        return jnp.concatenate([dP.reshape(-1), out[None]])

    sol = integrate(
        diffrax.ODETerm(vf),
        solver,
        t0,
        t1,
        y0,
        controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    return sol.ys[-1], sol.result


def _fokker_planck(sde, problem, initial, axes, t0, t1, options, name):
    rtol, atol, mass_tol, max_steps, pad_to = options
    mass_tol = check_tolerance("mass_tol", mass_tol)
    sde, axes = check_model_on_grid(sde, problem, axes, t0, t1)
    d = len(axes)
    shape = tuple(a.size for a in axes)
    interval("initial", initial)  # finite real numbers
    p0 = jnp.asarray(initial, dtype=float)
    if p0.shape != shape:
        raise ValueError(f"initial must have the grid's shape {shape}, got {p0.shape}.")
    negative = int(jnp.sum(p0 < 0))
    if negative:
        raise ValueError(
            f"initial must be a density, >= 0 everywhere: {negative} grid values are negative "
            f"(min {float(jnp.min(p0)):.3g}). Clip it (jnp.maximum(initial, 0)) and renormalise."
        )
    positive("rtol", rtol)
    positive("atol", atol)
    max_steps = positive_int("max_steps", max_steps)
    vol = cell_volume(axes)
    mass0 = jnp.sum(p0) * vol
    defect = abs(1.0 - float(mass0))
    if mass_tol is not None and not defect <= mass_tol:
        raise ValueError(
            f"{name}: the initial density has mass {float(mass0):.6g} on the grid (sum of "
            f"values times the cell volume), not 1 within mass_tol={mass_tol:g}. Normalise it, "
            "or widen the grid if its tails are cut off (mass_tol=None accepts it)."
        )
    padded, size = padded_axes(axes, pad_to)
    y0 = jnp.pad(p0, [(0, s - m) for s, m in zip(size, shape)]).reshape(-1)
    y1, result = _solve(
        sde,
        tuple(jnp.asarray(a) for a in padded),
        jnp.asarray(shape),
        jnp.concatenate([y0, jnp.zeros(1)]),
        jnp.asarray(t0, float),
        jnp.asarray(t1, float),
        _implicit_solver(int(np.prod(size))),
        rtol,
        atol,
        max_steps,
    )

    def name_a_nonfinite_drift():  # it reads as a step budget exhausted, or as lost mass
        for i in range(d):
            faces = _face_points(tuple(jnp.asarray(a) for a in axes), i)
            check_finite_drift(sde, faces, (t0, t1), name)

    try:
        raise_for_result(
            result,
            what=f"{name} (Kvaerno5)",
            max_steps=max_steps,
            rtol=rtol,
            atol=atol,
            implicit=True,
        )
    except SolveError:
        name_a_nonfinite_drift()
        raise
    if not bool(jnp.all(jnp.isfinite(y1))):
        name_a_nonfinite_drift()
    P = y1[:-1].reshape(size)[tuple(slice(0, m) for m in shape)]
    lost = y1[-1]
    mass = jnp.sum(P) * vol
    _check_monotone(sde, axes, p0, P, float(lost), float(mass), t0, t1, mass_tol, name)
    check_lost_mass(lost, mass_tol, name)
    return TensorDensity(
        axes=axes,
        density=P,
        t=t1,
        mass=mass,
        lost_mass=lost,
        mass_defect=jnp.abs(mass + lost - mass0),
        method="fokker_planck",
    )


def _check_monotone(sde, axes, p0, P, lost, mass, t0, t1, mass_tol, name) -> None:
    """`ValueError` when the density turned negative beyond `BROKEN_TOL` of its peak, or the
    faces created more than max(`mass_tol`, `BROKEN_TOL`) of mass: the central scheme was not
    monotone. Names the cell Péclet number where the initial or the final density is at least
    `BROKEN_TOL` of its peak (at t0, t1)."""
    if mass_tol is None:
        return
    peak, low = float(jnp.max(P)), float(jnp.min(P))
    negative = low < -BROKEN_TOL * peak
    created = -lost > max(mass_tol, BROKEN_TOL)
    if not (negative or created):
        return
    d = len(axes)
    pts = mesh_points(axes).reshape(-1, d)
    hs = np.array([a[1] - a[0] for a in axes])
    worst = np.zeros(d)  # max |p_i| over the cells where the density lives
    for t, dens in ((t0, p0), (t1, P)):
        dens = np.abs(np.asarray(dens)).reshape(-1)
        live = dens >= BROKEN_TOL * dens.max()
        p = np.abs(np.asarray(jax.vmap(sde.p, in_axes=(0, None))(pts, jnp.asarray(t, float))))
        worst = np.maximum(worst, np.max(p[live], axis=0))
    if sde.isotropic:
        alpha, rate = float(sde.alpha), "alpha"
        i = int(np.argmax(worst * hs))
    else:  # the diffusion across axis i is D_ii
        rates = np.diag(np.asarray(sde.alpha, dtype=np.float64))
        i = int(np.argmax(worst * hs / rates))
        alpha, rate = float(rates[i]), f"D_{i}{i}"
    axis = f" on axis {i}" if d > 1 else ""
    what = []
    if negative:
        what.append(
            f"the density turned negative, to {low:.3g} ({-low / peak:.1%} of its peak, beyond "
            f"{BROKEN_TOL:.0%})"
        )
    if created:
        what.append(
            f"mass was created, not lost (mass {mass:.6g}, lost_mass {lost:.3g}, beyond "
            f"max(mass_tol, {BROKEN_TOL:g}))"
        )
    refine = (
        f" Refine the grid to a spacing h_i <= {rate} / |p_i| = {alpha / worst[i]:.3g}{axis} (now "
        f"{hs[i]:.3g}): a wider grid with as many points is coarser."
        if worst[i] > 0
        else ""
    )
    raise ValueError(
        f"{name}: {' and '.join(what)}: the central fluxes are not monotone. The cell Péclet "
        f"number |p_i| h_i / {rate} reaches {worst[i] * hs[i] / alpha:.3g}{axis} where the density "
        f"lives (monotone only up to 1).{refine} mass_tol=None accepts and reports it."
    )


def fokker_planck_nd(
    sde,
    initial: Float[np.ndarray, "..."],
    axes,
    t0: ScalarLike,
    t1: ScalarLike,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-10,
    mass_tol: float | None = 1e-6,
    max_steps: int = 100_000,
    pad_to: int | tuple[int, ...] | None = None,
    problem: Problem | None = None,
) -> TensorDensity:
    r"""Evolve the density `initial` (values on the tensor grid `axes` at $t_0$, shape
    $(m_1,\dots,m_d)$) to $t_1$ by Fokker–Planck.

    A delta start has no grid representation: start at a small $t_0$ from an exact density or
    from `short_time_density_nd` (error $O(t_0)$).

    **Arguments:**

    - `sde`: a `VectorSDE` (scalar $\alpha$ or diffusion matrix $D$), a `ScalarSDE` ($d = 1$), or a
      flow with constant additive noise (nonsingular $D$) on
      `problem` (e.g. `dynopt.sde.Langevin(T)`, $\alpha = 2T$; see `VectorSDE.from_flow`).
    - `initial`: the density at $t_0$ on the grid, shape $(m_1, \dots, m_d)$, of mass 1 within
      `mass_tol`.
    - `axes`: the tensor grid, a tuple of $d$ uniform 1-D grids.
    - `t0`, `t1`: the start and end times, finite, $t_0 < t_1$.
    - `rtol`, `atol`: the implicit solve's step-size controller tolerances, $> 0$.
    - `mass_tol`: the largest lost (and created) mass accepted, `None` (report only) or $\ge 0$
      and finite.
    - `max_steps`: the solve's step budget, a positive integer.
    - `pad_to`: run on a state of these per-axis sizes (an int: the same on every axis; the
      extra cells inactive), so grids of different sizes share one compiled program (`None`:
      the grid's sizes).
    - `problem`: the problem a flow `sde` acts on (`None` otherwise).

    **Returns:** `TensorDensity` with `lost_mass` (flux out of the absorbing faces) and
    `mass_defect` = $|\sum P\prod h + L - \sum P_0\prod h|$.

    **Raises:** `ValueError` for bad axes, an `initial` of the wrong shape or whose mass differs
    from 1 by more than `mass_tol`, $t_1 \le t_0$, `pad_to` smaller than the grid, a flow whose
    noise is not constant additive noise with a nonsingular $D$ over $[t_0, t_1]$, a lost mass above
    `mass_tol`, or a scheme that was not monotone (cell Péclet number above 1 where the density
    lives): a density negative beyond 1% of its peak or mass created beyond max(`mass_tol`, 1%)
    (`mass_tol=None` reports all of these without raising; otherwise it must be >= 0 and
    finite); `dynopt.SolveError` when the implicit solve fails (step budget, Newton failure),
    saying what to change.
    """
    options = (rtol, atol, mass_tol, max_steps, pad_to)
    return _fokker_planck(sde, problem, initial, axes, t0, t1, options, "fokker_planck_nd")


def fokker_planck(
    sde,
    initial: Float[Array, " m"],
    grid: Float[Array, " m"],
    t0: ScalarLike,
    t1: ScalarLike,
    *,
    rtol: float = 1e-9,
    atol: float = 1e-12,
    mass_tol: float | None = 1e-6,
    max_steps: int = 100_000,
    pad_to: int | None = None,
    problem: Problem | None = None,
) -> GridDensity:
    r"""The 1-D route: `fokker_planck_nd` on the grid `(grid,)` (tighter default tolerances),
    returned as a `GridDensity` on `grid`.

    A delta start $P(\cdot, 0) = \delta_{x_0}$ has no grid representation: start at a small
    $t_0$ from an exact density or from `short_time_density` (error $O(t_0)$).

    **Arguments:**

    - `sde`: a `ScalarSDE`, a 1-D `VectorSDE`, or a flow with noise on `problem`.
    - `initial`: the density at $t_0$ on `grid`, shape $(m,)$, of mass 1 within `mass_tol`.
    - `grid`: a uniform 1-D grid of $m$ points.
    - `t0`, `t1`: the start and end times, finite, $t_0 < t_1$.
    - `rtol`, `atol`: the implicit solve's step-size controller tolerances, $> 0$.
    - `mass_tol`: the largest lost (and created) mass accepted, `None` (report only) or $\ge 0$
      and finite.
    - `max_steps`: the solve's step budget, a positive integer.
    - `pad_to`: run on a state of this size (an int, $\ge m$; `None`: $m$), so grids of
      different sizes share one compiled program.
    - `problem`: the problem a flow `sde` acts on (`None` otherwise).

    **Raises:** as `fokker_planck_nd`, for a 1-D model.
    """
    axes = (check_uniform_grid("grid", grid),)
    options = (rtol, atol, mass_tol, max_steps, pad_to)
    res = _fokker_planck(sde, problem, initial, axes, t0, t1, options, "fokker_planck")
    return GridDensity.from_tensor(res)
