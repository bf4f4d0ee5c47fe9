r"""Quadratic objectives with a closed-form gradient flow."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, ArrayLike, Params, Scalar
from .._problem import Problem


def _quadratic_loss(params: Params, hessian: Array, minimizer: Array) -> Scalar:
    x = ravel_pytree(params)[0] - minimizer
    return 0.5 * x @ (hessian @ x)


def _quadratic_flow(t: Array, q: Array, lam: Array, c0: Array, minimizer: Array, unravel):
    # theta(t) = x* + Q exp(-Lambda t) Q^T (theta0 - x*)
    return unravel(minimizer + q @ (jnp.exp(-lam * t) * c0))


def quadratic(
    eigenvalues: ArrayLike,
    *,
    params0: Params | None = None,
    minimizer: Params | None = None,
    rotate: bool = False,
    seed: int = 0,
    name: str | None = None,
) -> Problem:
    r"""$L(\theta) = \tfrac12 (\theta-\theta^*)^\top H (\theta-\theta^*)$, $H = Q\Lambda Q^\top$.

    The gradient flow $\dot\theta = -H(\theta-\theta^*)$ has the closed form
    $\theta(t) = \theta^* + Q e^{-\Lambda t} Q^\top(\theta_0 - \theta^*)$, exposed as
    `problem.flow_solution(t)`; `problem.hessian` is $H$ (on the raveled parameters).

    **Arguments:**

    - `eigenvalues`: the spectrum $\Lambda$ (length $d$). Negative values give saddles.
    - `params0`: initial parameters, any pytree with $d$ scalars in total (default: ones).
    - `minimizer`: $\theta^*$, same structure as `params0` (default: zeros).
    - `rotate`: if true, $Q$ is a random orthogonal matrix (seeded by `seed`), else $Q = I$.
    """
    lam = jnp.asarray(eigenvalues, dtype=float)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-D array, got shape {lam.shape}.")
    if not bool(np.all(np.isfinite(np.asarray(lam)))):
        raise ValueError("eigenvalues must be finite.")
    d = lam.shape[0]
    if params0 is None:
        params0 = jnp.ones(d, dtype=lam.dtype)
    flat0, unravel = ravel_pytree(params0)
    if flat0.shape != (d,):
        raise ValueError(
            f"params0 has {flat0.size} scalars but {d} eigenvalues were given; they must match."
        )
    if minimizer is None:
        xstar = jnp.zeros_like(flat0)
        minimizer_tree = unravel(xstar)
    else:
        xstar, _ = ravel_pytree(minimizer)
        minimizer_tree = minimizer
    if rotate:
        a = jax.random.normal(jax.random.key(seed), (d, d), dtype=flat0.dtype)
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diag(r))[None, :]  # Haar-distributed
    else:
        q = jnp.eye(d, dtype=flat0.dtype)
    lam = lam.astype(flat0.dtype)
    hessian = (q * lam[None, :]) @ q.T
    hessian = 0.5 * (hessian + hessian.T)
    c0 = q.T @ (flat0 - xstar)
    loss_fn = eqx.Partial(_quadratic_loss, hessian=hessian, minimizer=xstar)
    flow = eqx.Partial(_quadratic_flow, q=q, lam=lam, c0=c0, minimizer=xstar, unravel=unravel)
    if name is None:
        cond = float(jnp.max(jnp.abs(lam)) / jnp.maximum(jnp.min(jnp.abs(lam)), 1e-300))
        name = f"quadratic(d={d}, cond={cond:.3g})"
    return Problem(
        loss_fn=loss_fn,
        params0=params0,
        name=name,
        minimizer=minimizer_tree if bool(jnp.all(lam > 0)) else None,
        hessian=hessian,
        flow_solution=flow,
    )
