r"""Quadratic objectives with a closed-form gradient flow."""

import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, ArrayLike, Params, Scalar
from .._problem import Problem
from .._validation import flag, interval, is_traced, seed as check_seed


# A dense Hessian (and rotation) above this many bytes is refused: 10^6 eigenvalues would need
# an 8 TB matrix. Diagonal quadratics store the spectrum only.
DENSE_MAX_BYTES = 2**30


@jax.custom_jvp
def _half_quadratic_form(x: Array, hessian: Array) -> Scalar:
    return 0.5 * x @ (hessian @ x)


def _half_quadratic_form_jvp(primals, tangents):
    # H is symmetric by construction, so the gradient is H x: one matrix-vector product where
    # autodiff of x^T H x takes two (H x and H^T x). Hessian-vector products stay exact (H v).
    # Symbolic zeros: a constant H (the usual case) adds no d x d product of zeros.
    x, hessian = primals
    dx, dhessian = tangents
    hx = hessian @ x
    dout = jnp.zeros_like(hx, shape=())
    if not isinstance(dx, jax.custom_derivatives.SymbolicZero):
        dout = dout + hx @ dx
    if not isinstance(dhessian, jax.custom_derivatives.SymbolicZero):
        dout = dout + 0.5 * x @ (dhessian @ x)
    return 0.5 * x @ hx, dout


_half_quadratic_form.defjvp(_half_quadratic_form_jvp, symbolic_zeros=True)


def _ravel(tree: Params):
    """`ravel_pytree` as under standard promotion: a mixed tree (float32 and float64 leaves)
    ravels to its widest dtype and unravels to each leaf's own; under strict promotion JAX's
    `ravel_pytree` has no promotion path for it (a `TypePromotionError`)."""
    with jax.numpy_dtype_promotion("standard"):
        return ravel_pytree(tree)


# The loss in the parameters' dtype (the problem's arrays cast to it): float32 parameters keep a
# float32 loss, and `solve`'s float64 copy of them a float64 one, under strict promotion too.
def _quadratic_loss(params: Params, hessian: Array, minimizer: Array) -> Scalar:
    flat = _ravel(params)[0]
    x = flat - minimizer.astype(flat.dtype)
    return _half_quadratic_form(x, hessian.astype(flat.dtype))


def _diagonal_loss(params: Params, eigenvalues: Array, minimizer: Array) -> Scalar:
    flat = _ravel(params)[0]
    x = flat - minimizer.astype(flat.dtype)
    return 0.5 * jnp.sum(eigenvalues.astype(flat.dtype) * x * x)


def _times(flow):
    """`flow(t, **arrays)` for a time or a 1-D array of times (stacked along a leading axis, as
    `Trajectory.evaluate`), `t` in the parameters' dtype (a float64 time of float32 parameters
    mixes no dtypes under strict promotion)."""

    def at(t, lam, **kwargs):
        t = jnp.asarray(t).astype(lam.dtype)
        if t.ndim > 1:
            raise ValueError(f"t must be a time or a 1-D array of times, got shape {t.shape}.")
        if t.ndim == 1:
            return jax.vmap(lambda s: flow(s, lam=lam, **kwargs))(t)
        return flow(t, lam=lam, **kwargs)

    return at


@_times
def _diagonal_flow(t: Array, lam: Array, c0: Array, minimizer: Array, unravel):
    return unravel(minimizer + jnp.exp(-lam * t) * c0)


@_times
def _quadratic_flow(t: Array, q: Array, lam: Array, c0: Array, minimizer: Array, unravel):
    # theta(t) = x* + Q exp(-Lambda t) Q^T (theta0 - x*)
    return unravel(minimizer + q @ (jnp.exp(-lam * t) * c0))


@ft.partial(jax.jit, static_argnames="rotate")
def _dense_arrays(lam: Array, flat0: Array, xstar: Array, seed, rotate: bool):
    r"""$Q$ (Haar-distributed with `rotate`, else $I$), $H = Q\Lambda Q^\top$ and
    $c_0 = Q^\top(\theta_0 - \theta^*)$: one program (eagerly, a dozen: one per operation)."""
    d = lam.shape[0]
    if rotate:
        a = jax.random.normal(jax.random.key(seed), (d, d), dtype=flat0.dtype)
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diag(r))[None, :]  # Haar-distributed
    else:
        q = jnp.eye(d, dtype=flat0.dtype)
    # Q^T materialized before each product, as the operations ran eagerly: folded into the
    # product instead, the sums run in another order (the last bit of c0 moved).
    qt = jax.lax.optimization_barrier(q.T)
    hessian = (q * lam[None, :]) @ qt
    hessian = 0.5 * (hessian + hessian.T)
    return q, hessian, qt @ (flat0 - xstar)


def quadratic(
    eigenvalues: ArrayLike,
    *,
    params0: Params | None = None,
    minimizer: Params | None = None,
    rotate: bool = False,
    seed: int = 0,
    name: str | None = None,
    diagonal: bool = False,
) -> Problem:
    r"""$L(\theta) = \tfrac12 (\theta-\theta^*)^\top H (\theta-\theta^*)$, $H = Q\Lambda Q^\top$.

    The gradient flow $\dot\theta = -H(\theta-\theta^*)$ has the closed form
    $\theta(t) = \theta^* + Q e^{-\Lambda t} Q^\top(\theta_0 - \theta^*)$, exposed as
    `problem.flow_solution(t)` (a time, or a 1-D array of times: stacked along a leading
    axis); `problem.hessian` is $H$ (on the raveled parameters).

    **Arguments:**

    - `eigenvalues`: the spectrum $\Lambda$ (length $d$). Negative values give saddles.
    - `params0`: initial parameters, any pytree with $d$ scalars in total (default: ones).
    - `minimizer`: $\theta^*$, same structure as `params0` (default: zeros).
    - `rotate`: if true, $Q$ is a random orthogonal matrix (seeded by `seed`), else $Q = I$.
    - `diagonal`: if true ($Q = I$ only), the loss is $\tfrac12\sum_i\lambda_i(\theta_i -
      \theta^*_i)^2$ and nothing of size $d^2$ is built: $O(d)$ memory and work, for millions of
      parameters. `problem.hessian` is then `None` (the spectrum is `eigenvalues`).

    **Raises:** `ValueError` for eigenvalues that are not a non-empty 1-D array of finite real
    numbers, a `params0` or `minimizer` of another size, `rotate` or `diagonal` not a bool, a
    `seed` that is not an integer in $[0, 2^{32})$ (with `rotate`), `diagonal` with `rotate`,
    or a dense $d \times d$ Hessian above 1 GiB (pass `diagonal=True`).
    """
    if not is_traced(eigenvalues) and np.size(eigenvalues) == 0:
        raise ValueError("eigenvalues must be a non-empty 1-D array, got an empty one.")
    eigenvalues = interval("eigenvalues", eigenvalues)  # real and finite, before any array
    rotate, diagonal = flag("rotate", rotate), flag("diagonal", diagonal)
    if rotate and is_traced(seed):  # a sweep over rotations traces the seed
        if not jnp.issubdtype(jnp.result_type(seed), jnp.integer):
            raise ValueError(f"seed must be an integer (the rotation's PRNG seed), got {seed!r}.")
    elif rotate:
        seed = check_seed("seed", seed)  # the rule of every data constructor: [0, 2**32)
    lam = jnp.asarray(eigenvalues, dtype=float)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-D array, got shape {lam.shape}.")
    d = lam.shape[0]
    if diagonal and rotate:
        raise ValueError("diagonal=True needs rotate=False (a rotated Hessian is dense).")
    size = d * d * lam.dtype.itemsize
    if not diagonal and size > DENSE_MAX_BYTES:
        raise ValueError(
            f"quadratic with {d} eigenvalues would build a dense {d}x{d} Hessian "
            f"({size / 2**30:.3g} GiB, limit {DENSE_MAX_BYTES / 2**30:g} GiB); pass "
            "diagonal=True (no rotation) to store only the spectrum."
        )
    if params0 is None:
        # (on the host where it can be: no compiled program)
        params0 = (
            jnp.ones(d, lam.dtype) if is_traced(lam) else jax.device_put(np.ones(d, lam.dtype))
        )
    flat0, unravel = _ravel(params0)
    if flat0.shape != (d,):
        raise ValueError(
            f"params0 has {flat0.size} scalars but {d} eigenvalues were given; they must match."
        )
    leaves = jax.tree.leaves(params0)
    if (
        minimizer is None
        and all(isinstance(x, np.ndarray | jax.Array) for x in leaves)
        and not (is_traced(leaves))
    ):
        # Zeros made on the host: no compiled program each (`unravel` compiles one).
        xstar = jax.device_put(np.zeros(flat0.shape, flat0.dtype))
        minimizer_tree = jax.tree.map(lambda x: jax.device_put(np.zeros(x.shape, x.dtype)), params0)
    elif minimizer is None:
        xstar = jnp.zeros_like(flat0)
        minimizer_tree = unravel(xstar)
    else:
        xstar, _ = _ravel(minimizer)
        if xstar.shape != (d,):
            raise ValueError(
                f"minimizer has {xstar.size} scalars but {d} eigenvalues were given; they must "
                "match."
            )
        minimizer_tree = minimizer
        # In the parameters' dtype, as the loss reads it: the closed form then is too, and a
        # float64 minimizer of float32 parameters mixes no dtypes (strict promotion).
        xstar = xstar.astype(flat0.dtype)
    lam = lam.astype(flat0.dtype)
    # The default name holds no eigenvalue: a label for results and figures (no compiled program
    # is keyed on it: `name_field`), the same for every spectrum of a sweep.
    name = f"quadratic(d={d})" if name is None else name
    if not is_traced(lam):
        # Built inside jit/vmap (a sweep over spectra) the minimizer is kept as given (a true
        # minimizer only where every eigenvalue is > 0, which the caller's spectra decide).
        minimizer_tree = minimizer_tree if bool(np.all(np.asarray(lam) > 0)) else None
    if diagonal:
        return Problem(
            loss_fn=eqx.Partial(_diagonal_loss, eigenvalues=lam, minimizer=xstar),
            params0=params0,
            name=name,
            minimizer=minimizer_tree,
            flow_solution=eqx.Partial(
                _diagonal_flow, lam=lam, c0=flat0 - xstar, minimizer=xstar, unravel=unravel
            ),
        )
    q, hessian, c0 = _dense_arrays(lam, flat0, xstar, seed if rotate else 0, rotate=rotate)
    loss_fn = eqx.Partial(_quadratic_loss, hessian=hessian, minimizer=xstar)
    flow = eqx.Partial(_quadratic_flow, q=q, lam=lam, c0=c0, minimizer=xstar, unravel=unravel)
    return Problem(
        loss_fn=loss_fn,
        params0=params0,
        name=name,
        minimizer=minimizer_tree,
        hessian=hessian,
        flow_solution=flow,
    )
