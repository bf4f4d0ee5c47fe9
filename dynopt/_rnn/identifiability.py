r"""Local identifiability: which parameter combinations do the observations pin down?

For residuals $r(\theta) = m\odot(\hat y(\theta) - y)$ with i.i.d. noise of standard deviation
$\sigma$, the sensitivity matrix $S = \partial r/\partial\theta$ (computed by `jax.jacfwd`) gives

$$F = S^\top S/\sigma^2 \ \text{(Fisher information)},\qquad
  L(\theta^* + \alpha v) - L(\theta^*) \approx \alpha^2\|Sv\|^2 \ \text{(Gauss–Newton)},$$

so with $S = U\,\mathrm{diag}(s)\,V^\top$ the direction $v_k$ is determined to within
$\sigma/s_k$ and the parameter standard errors are
$\mathrm{se}_i = \sigma\big(\sum_k V_{ik}^2/s_k^2\big)^{1/2}$. With log-parameters these are
relative errors, so parameters of very different magnitudes compare on one scale.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, ArrayLike, Float, PyTree
from .inference import ObservationModel


class Identifiability(eqx.Module):
    r"""Sensitivity analysis at one parameter point (in the cell's stored units; flattened with
    `ravel_pytree`).

    **Fields:** `sensitivity` $S/\sigma$ (observed entries × parameters), `singular_values` of
    $S$ (descending), `directions` ($V$: column $k$ is the direction of `singular_values[k]`;
    the last column is the weakest), `fisher` $F$, `std_errors` (the Cramér–Rao standard errors,
    `inf` along an exactly flat direction).
    """

    sensitivity: Float[Array, "n p"]
    singular_values: Float[Array, " p"]
    directions: Float[Array, "p p"]
    fisher: Float[Array, "p p"]
    std_errors: Float[Array, " p"]

    @property
    def condition_number(self) -> Float[Array, ""]:
        return self.singular_values[0] / self.singular_values[-1]


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

    **Raises:** `ValueError` for `noise_std <= 0`.
    """
    if not noise_std > 0:
        raise ValueError(f"noise_std must be > 0, got {noise_std}.")
    raw = model.cell.params if raw is None else raw
    jac, mask = _jacobian(model, raw)
    sens = jac[mask] / noise_std  # drop the rows of unobserved entries
    _, s, vt = jnp.linalg.svd(sens, full_matrices=True)
    directions = vt.T
    # Fewer observed entries than parameters: the missing singular values are exact zeros.
    s = jnp.concatenate([s, jnp.zeros(vt.shape[0] - s.shape[0], s.dtype)])
    inv_s2 = jnp.where(s > 0, 1.0 / jnp.where(s > 0, s, 1.0) ** 2, jnp.inf)
    std_errors = jnp.sqrt(jnp.sum(directions**2 * inv_s2[None, :], axis=1))
    return Identifiability(
        sensitivity=sens,
        singular_values=s * noise_std,
        directions=directions,
        fisher=sens.T @ sens,
        std_errors=std_errors,
    )


@eqx.filter_jit
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
    """
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
    (`inf` along a flat direction; fewer rows than parameters give exact zeros).

    **Arguments:** `sensitivity` $S$ of shape `(n, p)`, `noise_std` $\sigma > 0$.

    **Returns:** `(singular_values, directions, std_errors)`: $s$ (descending, length $p$), $V$
    (column $k$ belongs to $s_k$), $\mathrm{se}$ (length $p$); NumPy arrays.
    """
    s_mat = np.asarray(sensitivity, float) / noise_std
    _, s, vt = np.linalg.svd(s_mat, full_matrices=True)
    s = np.concatenate([s, np.zeros(vt.shape[0] - s.size)])
    with np.errstate(divide="ignore"):
        se = np.sqrt(np.sum(vt.T**2 / s[None, :] ** 2, axis=1))
    return s * noise_std, vt.T, se
