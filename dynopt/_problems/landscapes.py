r"""Non-convex test landscapes: Rosenbrock and a double well."""

import equinox as eqx
import jax.numpy as jnp

from .._custom_types import Array, ArrayLike, Scalar
from .._problem import Problem


def _rosenbrock(x: Array, a: Array, b: Array) -> Scalar:
    return jnp.sum((a - x[:-1]) ** 2 + b * (x[1:] - x[:-1] ** 2) ** 2)


def rosenbrock(
    dim: int = 2, *, a: float = 1.0, b: float = 100.0, params0: ArrayLike | None = None
) -> Problem:
    r"""$L(x) = \sum_{i<d} (a - x_i)^2 + b(x_{i+1} - x_i^2)^2$, minimizer $(a, a^2, a^4, \dots)$
    for $d=2$ and $(1, \dots, 1)$ for $a = 1$.

    Default start: $(-1.2, 1, -1.2, 1, \dots)$, the classical one.
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}.")
    if b <= 0:
        raise ValueError(f"b must be > 0, got {b}.")
    if params0 is None:
        params0 = jnp.array([-1.2 if i % 2 == 0 else 1.0 for i in range(dim)])
    params0 = jnp.asarray(params0, dtype=float)
    if params0.shape != (dim,):
        raise ValueError(f"params0 must have shape ({dim},), got {params0.shape}.")
    minimizer = jnp.full(dim, 1.0) if a == 1.0 else (jnp.array([a, a * a]) if dim == 2 else None)
    loss_fn = eqx.Partial(_rosenbrock, a=jnp.asarray(a), b=jnp.asarray(b))
    return Problem(
        loss_fn=loss_fn, params0=params0, name=f"rosenbrock(d={dim})", minimizer=minimizer
    )


def _double_well(x: Array, barrier: Array, tilt: Array) -> Scalar:
    return jnp.sum(barrier * (x**2 - 1.0) ** 2 + tilt * x)


def double_well(
    *, barrier: float = 1.0, tilt: float = 0.0, params0: ArrayLike | None = None
) -> Problem:
    r"""$L(x) = \sum_i \text{barrier}\,(x_i^2-1)^2 + \text{tilt}\, x_i$: two wells near $\pm1$
    separated by a barrier of height `barrier` at 0 (a tilt makes one well deeper).

    Default start: $x_0 = 1.5$ (one coordinate).
    """
    if barrier <= 0:
        raise ValueError(f"barrier must be > 0, got {barrier}.")
    if params0 is None:
        params0 = jnp.array([1.5])
    params0 = jnp.asarray(params0, dtype=float)
    loss_fn = eqx.Partial(_double_well, barrier=jnp.asarray(barrier), tilt=jnp.asarray(tilt))
    # Two minimizers (one per well), so none is singled out.
    return Problem(loss_fn=loss_fn, params0=params0, name="double_well")
