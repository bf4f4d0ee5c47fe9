r"""Local identifiability: which parameter combinations do the observations pin down?

For residuals $r(\theta) = m\odot(\hat y(\theta) - y)$ with i.i.d. noise of standard deviation
$\sigma$, the sensitivity matrix $S = \partial r/\partial\theta$ (computed by `jax.jacfwd`) gives

$$F = S^\top S/\sigma^2 \ \text{(Fisher information)},\qquad
  L(\theta^* + \alpha v) - L(\theta^*) \approx \alpha^2\|Sv\|^2 \ \text{(Gauss–Newton)},$$

so with $S = U\,\mathrm{diag}(s)\,V^\top$ the direction $v_k$ is determined to within
$\sigma/s_k$ and the parameter standard errors are
$\mathrm{se}_i = \sigma\big(\sum_k V_{ik}^2/s_k^2\big)^{1/2}$. With log-parameters these are
relative errors, so parameters of very different magnitudes compare on one scale.

A singular value $s_k \le \max(n, p)\,\varepsilon\,s_1$ ($n$ observed entries, $p$ parameters,
$\varepsilon$ the dtype's machine epsilon: NumPy's `matrix_rank` tolerance) is round-off of an
exactly flat direction (e.g. $\dot y = -ab\,y$ determines only $ab$, and its $S$ has
$s_2/s_1 \approx 10^{-16}$, not 0): it counts as zero, so every parameter with a component
along $v_k$ gets $\mathrm{se}_i = \infty$. The singular values themselves are reported as
computed.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, ArrayLike, Float, PyTree
from .._validation import interval, is_traced, positive, positive_int
from .cell import as_array
from .inference import check_model, check_raw, ObservationModel


class Identifiability(eqx.Module):
    r"""Sensitivity analysis at one parameter point (in the cell's stored units; flattened with
    `ravel_pytree`).

    **Fields:** `sensitivity` $S/\sigma$ (observed entries × parameters), `singular_values` of
    $S$ (descending), `directions` ($V$: column $k$ is the direction of `singular_values[k]`;
    the last column is the weakest), `fisher` $F$, `std_errors` (the Cramér–Rao standard errors,
    `inf` along an exactly flat direction: a singular value at most $\max(n, p)\,\varepsilon\,s_1$,
    see the module docstring).
    """

    sensitivity: Float[Array, "n p"]
    singular_values: Float[Array, " p"]
    directions: Float[Array, "p p"]
    fisher: Float[Array, "p p"]
    std_errors: Float[Array, " p"]

    @property
    def condition_number(self) -> Float[Array, ""]:
        return self.singular_values[0] / self.singular_values[-1]


def _noise_std(noise_std):
    """The noise level $\\sigma$: a finite scalar > 0 (it divides $S$; a negative one would flip
    the sign of every singular value)."""
    noise_std = positive("noise_std", noise_std)
    if np.ndim(noise_std) != 0:
        raise ValueError(f"noise_std must be a scalar, got shape {np.shape(noise_std)}.")
    return noise_std


def _flat(s, num_rows: int):
    """Which singular values (descending) are zero up to round-off: $s_k \\le \\max(n, p)
    \\,\\varepsilon\\, s_1$, NumPy's `matrix_rank` tolerance (relative, so scale-free)."""
    xp = np if isinstance(s, np.ndarray) else jnp
    return s <= max(num_rows, s.shape[0]) * xp.finfo(s.dtype).eps * s[0]


@eqx.filter_jit
def _jacobian(model: ObservationModel, raw: PyTree) -> tuple[Array, Array]:
    flat, unravel = ravel_pytree(raw)
    if model.route == "diffrax":
        # RecursiveCheckpointAdjoint is reverse-mode only; the sensitivity matrix is tall-thin
        # or square, where forward mode (one JVP per parameter) is the natural choice anyway.
        model = eqx.tree_at(lambda m: m.adjoint, model, diffrax.ForwardMode())
    mask = model.obs.mask.ravel() > 0
    jac = jax.jacfwd(lambda x: model.residuals(unravel(x)).ravel())(flat)
    return jac, mask


def identifiability(
    model: ObservationModel, raw: PyTree | None = None, *, noise_std: float = 1.0
) -> Identifiability:
    """Sensitivity matrix, singular values, Fisher information and standard errors of `model`'s
    observations at `raw` (default: the cell's current parameters), for noise level `noise_std`.

    **Arguments:**

    - `model`: an `ObservationModel`.
    - `raw`: the parameters (the cell's stored units), or `None` (the cell's current ones).
    - `noise_std`: the observation noise's standard deviation, a finite scalar $> 0$.

    **Returns:** an `Identifiability`.

    **Raises:** `ValueError` for a `model` that is not an `ObservationModel`, a `raw` that is not
    finite or not of the tree structure and leaf shapes of `model.cell.params`, or a
    `noise_std` that is not a finite scalar > 0.
    """
    check_model(model)
    noise_std = _noise_std(noise_std)
    raw = model.cell.params if raw is None else check_raw(model, raw)
    jac, mask = _jacobian(model, raw)
    # The observed rows on the host (their number is a shape), the rest in one program: eagerly,
    # every operation of the analysis compiled a program of its own.
    return _analyse(jac, np.flatnonzero(np.asarray(mask)), noise_std)


@jax.jit  # not eqx.filter_jit: a Python float `noise_std` is traced (and weakly typed)
def _analyse(jac: Array, rows: Array, noise_std) -> Identifiability:
    # sigma in the wider of its and the sensitivities' precisions, then in theirs: a float32
    # sigma of a float64 model raised a strict-promotion error.
    with jax.numpy_dtype_promotion("standard"):
        sens = (jac[rows] / noise_std).astype(jac.dtype)  # drop the rows of unobserved entries
    _, s, vt = jnp.linalg.svd(sens, full_matrices=True)
    directions = vt.T
    # Fewer observed entries than parameters: the missing singular values are exact zeros.
    s = jnp.concatenate([s, jnp.zeros(vt.shape[0] - s.shape[0], s.dtype)])
    flat = _flat(s, sens.shape[0])
    inv_s2 = jnp.where(flat, jnp.inf, 1.0 / jnp.where(flat, 1.0, s) ** 2)
    # A parameter with no component along a flat direction is not made infinite by it (0·inf).
    terms = jnp.where(directions == 0, 0.0, directions**2 * inv_s2[None, :])
    std_errors = jnp.sqrt(jnp.sum(terms, axis=1))
    return Identifiability(
        sensitivity=sens,
        singular_values=_times_sigma(s, noise_std),
        directions=directions,
        fisher=sens.T @ sens,
        std_errors=std_errors,
    )


def _times_sigma(s: Array, noise_std) -> Array:
    r"""$s\,\sigma$ in the wider of the two precisions, then in $s$'s (as `_analyse` divides)."""
    with jax.numpy_dtype_promotion("standard"):
        return (s * noise_std).astype(s.dtype)


def loss_profile(
    model: ObservationModel,
    raw: PyTree,
    direction: ArrayLike,
    alphas: ArrayLike,
    solver: optx.AbstractLeastSquaresSolver | None = None,
    max_steps: int = 100,
) -> Float[Array, " k"]:
    r"""The loss along a line through $\theta$ (flattened stored units; $v$ = `direction`, e.g. a
    column of `Identifiability.directions`), vmapped over `alphas`:

    - `solver=None`: the slice $L(\theta + \alpha v)$;
    - an optimistix least-squares solver: the profile
      $\min_\beta L(\theta + \alpha v + W\beta)$, with $W$ an orthonormal basis of $v^\perp$,
      which follows a curved valley where the straight slice climbs out of it.

    `direction` is normalised to $\|v\| = 1$.

    **Arguments:**

    - `model`: an `ObservationModel`.
    - `raw`: the parameters $\theta$ (the cell's stored units).
    - `direction`: $v$, shape `(p,)`, finite and nonzero.
    - `alphas`: the offsets $\alpha$, a non-empty finite 1-D array of $k$ values.
    - `solver`: `None` (the slice) or an optimistix least-squares solver (the profile).
    - `max_steps`: the solver's step budget, a positive integer.

    **Returns:** the loss at each $\alpha$, shape `(k,)`.

    **Raises:** `ValueError` for a `raw` as `identifiability` refuses it, a `direction` not of
    shape `(p,)` ($p$ the number of flattened parameters) or not finite and nonzero, `alphas`
    not 1-D, empty or not finite, or `max_steps` not a positive integer.
    """
    check_model(model)
    flat, _ = ravel_pytree(check_raw(model, raw))
    p = flat.shape[0]
    v = as_array(direction)
    if v.shape != (p,):
        raise ValueError(
            f"direction must have shape (p,) = ({p},) (the flattened parameters), got {v.shape}."
        )
    if not is_traced(v):  # a zero direction would normalise to NaN: the whole profile NaN
        norm = float(np.linalg.norm(np.asarray(v, np.float64)))
        if not (np.isfinite(norm) and norm > 0):
            raise ValueError(f"direction must be finite and nonzero, got norm {norm}.")
    alphas = as_array(alphas)
    if alphas.ndim != 1 or alphas.size == 0:
        raise ValueError(
            f"alphas must be 1-D and non-empty (one loss per alpha), got shape {alphas.shape}."
        )
    alphas = interval("alphas", alphas)  # a NaN alpha was a silent NaN loss (jit: error_if)
    max_steps = positive_int("max_steps", max_steps)
    return _loss_profile(model, raw, v, alphas, solver, max_steps)


@eqx.filter_jit
def _loss_profile(model, raw, direction, alphas, solver, max_steps):
    flat, unravel = ravel_pytree(raw)
    v = jnp.asarray(direction, flat.dtype)
    v = v / jnp.linalg.norm(v)
    alphas = jnp.asarray(alphas, flat.dtype)
    if solver is None:
        return jax.vmap(lambda a: model.loss(unravel(flat + a * v)))(alphas)
    # Orthonormal complement of v from a QR of [v, I].
    q, _ = jnp.linalg.qr(jnp.concatenate([v[:, None], jnp.eye(v.shape[0], dtype=v.dtype)], 1))
    w = q[:, 1 : v.shape[0]]

    def one(a):
        def residuals(beta, _):
            return model.residuals(unravel(flat + a * v + w @ beta))

        beta0 = jnp.zeros(w.shape[1], flat.dtype)
        sol = optx.least_squares(
            residuals, solver, beta0, options={"jac": "bwd"}, max_steps=max_steps, throw=False
        )
        return jnp.sum(residuals(sol.value, None) ** 2)

    return jax.vmap(one)(alphas)


def sensitivity_analysis(sensitivity, noise_std: float) -> tuple[np.ndarray, ...]:
    r"""The singular values, directions and Cramér–Rao standard errors of a sensitivity matrix
    $S$ (rows: observed entries, e.g. a subset of the rows of `Identifiability.sensitivity`
    times $\sigma$, to ask what fewer observations determine): with $S/\sigma =
    U\,\mathrm{diag}(s/\sigma)\,V^\top$, $\mathrm{se}_i = \sigma(\sum_k V_{ik}^2/s_k^2)^{1/2}$
    (`inf` along a flat direction, with `identifiability`'s rank tolerance; fewer rows than
    parameters give exact zeros).

    **Arguments:** `sensitivity` $S$ of shape `(n, p)`, `noise_std` $\sigma > 0$ (the noise's
    standard deviation, as for `identifiability`).

    **Raises:** `ValueError` for a `sensitivity` that is not a finite 2-D array, or a `noise_std`
    that is not a finite scalar > 0.

    **Returns:** `(singular_values, directions, std_errors)`: $s$ (descending, length $p$), $V$
    (column $k$ belongs to $s_k$), $\mathrm{se}$ (length $p$); NumPy arrays.
    """
    noise_std = float(_noise_std(noise_std))
    s_mat = np.asarray(sensitivity, float)
    if s_mat.ndim != 2 or s_mat.size == 0 or not np.all(np.isfinite(s_mat)):
        raise ValueError(
            f"sensitivity must be a finite, nonempty 2-D array (n, p), got shape {s_mat.shape}."
        )
    s_mat = s_mat / noise_std
    _, s, vt = np.linalg.svd(s_mat, full_matrices=True)
    s = np.concatenate([s, np.zeros(vt.shape[0] - s.size)])
    flat = _flat(s, s_mat.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = vt.T**2 / np.where(flat, 0.0, s)[None, :] ** 2
    # A parameter with no component along a flat direction is not made infinite by it (0/0).
    se = np.sqrt(np.sum(np.where(vt.T == 0, 0.0, terms), axis=1))
    return s * noise_std, vt.T, se
