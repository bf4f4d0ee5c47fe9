r"""Quasilinear first-order PDEs $\alpha(x,u)\cdot\nabla u = \beta(x,u)$ by characteristics."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import ArrayLike
from .integrate import check_initial, check_options, initial_det, integrate, tangents
from .solution import Characteristics


class _Field(eqx.Module):
    r"""$z = (x, u) \mapsto (\alpha, \beta)$, flat. A Module, so that solving the same PDE again
    (same `alpha`, `beta` objects) reuses the compiled solver."""

    alpha: Callable
    beta: Callable
    n: int = eqx.field(static=True)
    u_shape: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, z):
        x, u = z[: self.n], z[self.n :].reshape(self.u_shape)
        # In the solve's precision (float64): a float32 alpha or beta (a float32 constant in
        # the user's function) raised a strict-promotion error.
        alpha, beta = jnp.asarray(self.alpha(x, u)), jnp.ravel(self.beta(x, u))
        return jnp.concatenate([alpha.astype(z.dtype), beta.astype(z.dtype)])


@eqx.filter_jit
def _launch(initial, field, sigma):
    """For each sigma: z0 = (x0, u0), its tangent dz0/dsigma, and `initial_det` there."""

    def z0(sig):
        # The initial data in sigma's float64: float32 ones raised a strict-promotion error.
        x0, u0 = initial(sig)
        return jnp.concatenate([jnp.asarray(x0, sig.dtype), jnp.ravel(u0).astype(sig.dtype)])

    z0s, Z0s = tangents(z0, sigma)
    return z0s, Z0s, initial_det(field, field.n, z0s, Z0s)


def quasilinear(
    alpha: Callable,
    beta: Callable,
    initial: Callable,
    sigma: ArrayLike,
    s: ArrayLike,
    *,
    on_blowup: str = "raise",
    u_max: float = 1e8,
    solver=None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 16_384,
) -> Characteristics:
    r"""Solve $\alpha(x,u)\cdot\nabla u = \beta(x,u)$, $x \in \mathbb{R}^n$, with $u = u_0$ on the
    initial manifold $x = x_0(\sigma)$, along the characteristics (post 6, eq. 5)

    $$\frac{dx}{ds} = \alpha(x,u),\qquad \frac{du}{ds} = \beta(x,u),\qquad
      (x, u)(0) = (x_0(\sigma), u_0(\sigma)).$$

    Time-dependent equations take $x = (t, x_1, \dots)$ with $\alpha_t = 1$, so that $s = t$.
    A vector $u \in \mathbb{R}^k$ with vector $\beta$ solves a system sharing the operator
    $\alpha\cdot\nabla$ (eq. 29). The tangent $\partial(x,u)/\partial\sigma$ is integrated along
    (a `jax.jvp` of the characteristic field), so characteristic crossings are detected where
    $\det[\partial x/\partial\sigma,\ \alpha]$ reaches 0 (a zero of any order: its logarithm is
    integrated along, so no step passes over one); $|u| \ge$ `u_max` flags a divergence, and
    $|x| \ge$ `u_max` a characteristic that escapes to infinity in finite $s$.
    All are `diffrax.Event`s located by a root find.

    **Arguments:**

    - `alpha`: `(x, u) -> (n,)`; `beta`: `(x, u) -> shape of u`.
    - `initial`: `sigma -> (x0 (n,), u0 (scalar or (k,)))`, differentiable in `sigma`.
    - `sigma`: the initial-manifold parameters, `(m,)` for $n=2$ or `(m, n-1)`.
    - `s`: strictly increasing save values of the characteristic parameter, `s[0] >= 0`.
    - `on_blowup`: `"raise"` (a `BlowUpError` if any characteristic blows up before `s[-1]`) or
      `"stop"` (each characteristic stops at its blow-up; later entries are NaN).
    - `u_max`: the divergence threshold (of $|u|$ and of $|x|$); `solver`: a name or diffrax
      solver (default Tsit5); `rtol`, `atol`, `max_steps`: the diffrax controller and step budget.

    **Returns:** `Characteristics` (points, blow-up report; `.on_grid(points)` interpolates).

    **Raises:** `ValueError` for mismatched shapes, bad options or an initial curve that is
    characteristic; `BlowUpError` (a `ValueError`) for a horizon past a blow-up with
    `on_blowup="raise"`; `dynopt.SolveError` if diffrax fails for another reason.
    """
    options = check_options(on_blowup, u_max, solver, rtol, atol, max_steps)
    if not (callable(alpha) and callable(beta)):
        raise ValueError("alpha and beta must be functions (x, u) -> array.")
    sig, on_rows, x0, u0 = check_initial(initial, sigma)
    n, u_shape = x0.shape[0], u0.shape
    a_out = jax.eval_shape(alpha, x0, u0)
    if a_out.shape != (n,):
        raise ValueError(f"alpha(x, u) must return shape ({n},) like x, got {a_out.shape}.")
    b_out = jax.eval_shape(beta, x0, u0)
    if b_out.shape != u_shape:
        raise ValueError(f"beta(x, u) must return the shape of u, {u_shape}, got {b_out.shape}.")
    field = _Field(alpha, beta, n, u_shape)
    z0s, Z0s, det0 = _launch(on_rows, field, sig)
    return integrate(field, n, u_shape, z0s, Z0s, det0, sigma, s, options)
