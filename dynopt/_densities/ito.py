r"""Itô's lemma by autodiff.

For $dX = b(t,X)\,dt + \sigma(t,X)\,dW$ ($X\in\mathbb R^d$, $\sigma$ a $d\times m$ matrix, $W$ an
$m$-dimensional Brownian motion) and a scalar $f(t, x)$, $Y = f(t, X)$ satisfies
$$dY = \Big(\partial_t f + \nabla f\cdot b + \tfrac12\operatorname{tr}(\sigma\sigma^\top\nabla^2 f)
\Big)dt + (\nabla f)^\top\sigma\,dW,$$
the second-order term surviving because $dW\,dW^\top = I\,dt$ (post 8, eq. 71: for $f = \ln S$
on $dS = S(\mu\,dt + \sigma\,dW)$, drift $\mu - \sigma^2/2$ and diffusion $\sigma$).
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Float, ScalarLike
from .._validation import function, interval


def ito_lemma(
    f: Callable,
    drift: Callable,
    diffusion: Callable,
    t: ScalarLike,
    x: Float[Array, "..."],
) -> tuple[Float[Array, ""], Float[Array, "..."]]:
    r"""Drift and diffusion of $Y = f(t, X)$ at $(t, x)$ (formula above).

    **Arguments:**

    - `f(t, x) -> scalar`; `drift(t, x) -> b` (shape of `x`); `diffusion(t, x) -> σ`: for scalar
      `x` a scalar (one noise), for `x` of shape $(d,)$ a $(d, m)$ matrix.
    - `t`, `x`: the point; `x` a scalar or a 1-D array.

    **Returns:** `(drift_Y, diffusion_Y)`: a scalar and, per noise, $(\nabla f)^\top\sigma$ (a
    scalar for scalar `x`, shape $(m,)$ otherwise).

    **Raises:** `ValueError` if `f`, `drift` or `diffusion` is not callable, `x` is not a
    scalar or 1-D, `t` or `x` is not real and finite (a NaN point made the coefficients NaN;
    traced: inside `jit`), or `f` is not scalar-valued, or the shapes of $b$, $\sigma$ do not
    match `x`.
    """
    for name, fn in (("f", f), ("drift", drift), ("diffusion", diffusion)):
        function(name, fn, "callable (t, x) -> ...")
    t = jnp.asarray(interval("t", t), dtype=float)
    x = jnp.asarray(interval("x", x), dtype=float)
    if x.ndim > 1:
        raise ValueError(f"x must be a scalar or a 1-D array, got shape {x.shape}.")
    if jax.eval_shape(f, t, x).shape != ():
        raise ValueError("f must return a scalar.")
    scalar = x.ndim == 0
    xv = jnp.atleast_1d(x)
    b = jnp.atleast_1d(jnp.asarray(drift(t, x), dtype=float))
    sig = jnp.asarray(diffusion(t, x), dtype=float)
    sig = sig.reshape(1, 1) if scalar else sig
    if b.shape != xv.shape or sig.ndim != 2 or sig.shape[0] != xv.shape[0]:
        raise ValueError(
            f"drift must have x's shape {xv.shape} and diffusion shape (d, m) with d = "
            f"{xv.shape[0]}; got {b.shape} and {sig.shape}."
        )
    drift_y, diff_y = _ito_terms(f, scalar, t, xv, b, sig)
    return drift_y, (diff_y[0] if scalar else diff_y)


@eqx.filter_jit
def _ito_terms(f, scalar: bool, t, xv, b, sig):
    # One compiled program (run eagerly, every primitive of the derivatives compiled on its
    # own), cached on `f` itself: calls with the same `f` at new points reuse it.
    def fv(s, y):
        return f(s, y[0] if scalar else y)

    ft = jax.grad(fv, argnums=0)(t, xv)
    grad = jax.grad(fv, argnums=1)(t, xv)
    hess = jax.hessian(fv, argnums=1)(t, xv)
    return ft + grad @ b + 0.5 * jnp.trace(sig @ sig.T @ hess), grad @ sig
