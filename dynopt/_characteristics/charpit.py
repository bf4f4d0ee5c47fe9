r"""Fully nonlinear first-order PDEs $F(x, u, \nabla u) = 0$ by the Charpit (characteristic
strip) system, with every partial derivative of $F$ by autodiff."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .._batching import map_batch
from .._custom_types import ArrayLike
from .._validation import function
from .integrate import (
    check_finite_start,
    check_initial,
    check_options,
    initial_det,
    integrate,
    OnRows,
    real_array,
)
from .solution import Characteristics


class _Field(eqx.Module):
    r"""$z = (x, u, p) \mapsto (F_p,\ p\cdot F_p,\ -F_x - F_u p)$, flat (eq. 18)."""

    F: Callable
    n: int = eqx.field(static=True)

    def __call__(self, z):
        n = self.n
        x, u, p = z[:n], z[n], z[n + 1 :]
        Fx, Fu, Fp = jax.grad(self.F, argnums=(0, 1, 2))(x, u, p)
        return jnp.concatenate([Fp, jnp.dot(p, Fp)[None], -Fx - Fu * p])


@eqx.filter_jit
def _launch(F, initial, sigma, guesses):
    """For each sigma: z0 = (x0, u0, p0), its tangent dz0/dsigma, the residual at p0 and
    `initial_det`.

    p0 solves R(p, sigma) = (F(x0, u0, p), p . dx0/dsigma_j - du0/dsigma_j) = 0 (F = 0 and the
    strip conditions from the initial data's derivative, eq. 22) by Newton from the guess: the
    rows of `guesses` `(m, n)`, or `guesses(sigma row)` (an `OnRows`, traced here, not an eager
    `vmap` of it: a program per operation); NaN rows: the strip conditions' min-norm solution.
    dp0/dsigma = -R_p^{-1} R_sigma by the implicit function theorem."""

    def start(sig):
        # The initial data in sigma's float64: float32 ones raised a strict-promotion error.
        x0, u0 = initial(sig)
        return jnp.asarray(x0, sig.dtype), jnp.asarray(u0, sig.dtype)

    def data(sig):
        x0, u0 = start(sig)
        T = jax.jacfwd(lambda q: start(q)[0])(sig)  # (n, n-1)
        du = jax.jacfwd(lambda q: start(q)[1])(sig)  # (n-1,)
        return x0, u0, T, du

    def R(p, sig):
        x0, u0, T, du = data(sig)
        return jnp.concatenate([F(x0, u0, p)[None], T.T @ p - du])

    def one(sig, guess=None):
        x0, u0, T, du = data(sig)
        if guess is None:
            guess = jnp.asarray(guesses(sig)).astype(jnp.float64)
        min_norm = jnp.linalg.pinv(T.T) @ du
        guess = jnp.where(jnp.isnan(guess), min_norm, guess)
        p0 = optx.root_find(R, optx.Newton(rtol=1e-13, atol=1e-13), guess, sig, throw=False).value
        dp = -jnp.linalg.solve(jax.jacfwd(R, 0)(p0, sig), jax.jacfwd(R, 1)(p0, sig))
        z0 = jnp.concatenate([x0, u0[None], p0])
        Z0 = jnp.concatenate([T, du[None], dp], axis=0)
        # The residual relative to the size of each equation's terms, so that F and c F (the same
        # PDE) are judged alike: F against |F_x||x| + |F_u||u| + |F_p||p| (its terms' size to
        # first order), the strip conditions against |dx0/dsigma_j||p| + |du0/dsigma_j|.
        Fx, Fu, Fp = jax.grad(F, argnums=(0, 1, 2))(x0, u0, p0)
        norm = jnp.linalg.norm
        size = jnp.concatenate(
            [
                (norm(Fx) * norm(x0) + jnp.abs(Fu * u0) + norm(Fp) * norm(p0))[None],
                norm(T, axis=0) * norm(p0) + jnp.abs(du),
            ]
        )
        r = jnp.abs(R(p0, sig))
        rel = jnp.where(size > 0, r / jnp.where(size > 0, size, 1.0), jnp.where(r > 0, jnp.inf, 0))
        return z0, Z0, jnp.max(rel)

    rows = (sigma,) if callable(guesses) else (sigma, guesses)
    z0s, Z0s, res0 = map_batch(one, *rows)
    n = (z0s.shape[1] - 1) // 2  # z = (x, u, p)
    return z0s, Z0s, res0, initial_det(_Field(F, n), n, z0s, Z0s)


@eqx.filter_jit
def _residual(F, n, zs):
    return jax.vmap(jax.vmap(lambda z: F(z[:n], z[n], z[n + 1 :])))(zs)


def charpit(
    F: Callable,
    initial: Callable,
    sigma: ArrayLike,
    s: ArrayLike,
    *,
    p_guess=None,
    on_blowup: str = "raise",
    u_max: float = 1e8,
    solver=None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 16_384,
) -> Characteristics:
    r"""Solve $F(x, u, p) = 0$, $p = \nabla u$, $x \in \mathbb{R}^n$, with $u = u_0$ on the
    initial manifold $x = x_0(\sigma)$, along the Charpit system (post 6, eq. 18)

    $$\frac{dx}{ds} = F_p,\qquad \frac{dp}{ds} = -F_x - F_u\,p,\qquad
      \frac{du}{ds} = p\cdot F_p,$$

    with $F_x, F_u, F_p$ from `jax.grad(F)`. The initial $p_0(\sigma)$ solves the $n$ equations
    $F(x_0, u_0, p_0) = 0$ and $p_0\cdot\partial x_0/\partial\sigma_j = \partial u_0/\partial
    \sigma_j$ (the derivative of the initial data) by `optimistix.Newton`; its derivative in
    $\sigma$ (by the implicit function theorem) starts the tangent equations used for crossing
    detection. Along exact characteristics $dF/ds = 0$: `residual` measures the drift.
    With $F = \alpha\cdot p - \beta$ this reduces to `quasilinear` (eq. 27).

    **Arguments:** as `quasilinear`, with

    - `F`: `(x (n,), u (), p (n,)) -> scalar`.
    - `p_guess`: Newton's start for $p_0$: `None` (the min-norm solution of the strip conditions),
      an `(n,)` or `(m, n)` array, or `sigma -> (n,)`. Where $F = 0$ has several roots
      (eikonal: $\pm$ the normal) the guess picks the branch.

    **Raises:** `ValueError` if `F` is not scalar, `u0` is not scalar, shapes mismatch, or no
    initial $p_0$ is found; `BlowUpError` for a horizon past a blow-up; `dynopt.SolveError`.
    """
    options = check_options(on_blowup, u_max, solver, rtol, atol, max_steps)
    function("F", F, "a function (x, u, p) -> scalar")
    sig, on_rows, x0, u0 = check_initial(initial, sigma)
    if u0.shape != ():
        raise ValueError(
            f"charpit solves scalar PDEs: initial(sigma)[1] (u0) must be a scalar, got shape "
            f"{u0.shape}. Systems sharing one operator are solved by `quasilinear`."
        )
    n = x0.shape[0]
    f_out = jax.eval_shape(F, x0, u0, x0)
    if f_out.shape != ():
        raise ValueError(
            f"F(x, u, p) must return a scalar, got shape {f_out.shape}. For a system, write one "
            "scalar equation (e.g. a sum of squares is NOT equivalent: it loses the strip "
            "structure) or use `quasilinear` with a vector u."
        )
    m = sig.shape[0]
    if p_guess is None:
        guesses = np.full((m, n), np.nan)
    elif callable(p_guess):
        guesses = OnRows(p_guess, on_rows.scalar)  # evaluated in `_launch`
    else:
        guesses = real_array(p_guess)
        if guesses is None:
            raise ValueError(
                f"p_guess must be None, a real array of shape ({n},) or ({m}, {n}), or a function "
                f"sigma -> ({n},); got {p_guess!r:.80}."
            )
        guesses = guesses.astype(np.float64)
        if guesses.shape == (n,):
            guesses = np.broadcast_to(guesses, (m, n))
    if callable(guesses):
        row = jax.ShapeDtypeStruct(sig.shape[1:], sig.dtype)
        shape = (m, *jax.eval_shape(lambda q: jnp.asarray(guesses(q)), row).shape)
    else:
        shape = guesses.shape
    if shape != (m, n):
        raise ValueError(
            f"p_guess must have shape ({n},) or ({m}, {n}), or be a function sigma -> ({n},); "
            f"got shape {shape}."
        )
    z0s, Z0s, res0, det0 = _launch(F, on_rows, sig, guesses)
    # (x0, u0) and their derivative first: NaN there would read as "no initial p0".
    check_finite_start(np.asarray(z0s)[:, : n + 1], np.asarray(Z0s)[:, : n + 1], sigma)
    res0 = np.asarray(res0)
    # Newton converges quadratically: at a root it stops at round-off, ~1e-16 of the terms'
    # size; 1e-8 leaves room for ill-conditioning, while no root leaves an O(1) remainder.
    bad = np.flatnonzero(~(res0 <= 1e-8))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"no initial p0 with F(x0, u0, p0) = 0 consistent with the initial data at "
            f"sigma={np.asarray(sigma)[i].tolist()} (residual {res0[i]:.3g} of its terms' size "
            "after Newton). Pass p_guess= closer to the branch you want, or check that F = 0 is "
            "solvable there."
        )
    residual = eqx.Partial(_residual, F, n)
    return integrate(_Field(F, n), n, (), z0s, Z0s, det0, sigma, s, options, residual=residual)
