r"""Vector fields used with `ODECell`, in the `f(t, y, params)` signature."""

import jax.numpy as jnp

from .._custom_types import Array, Float


# Post 5's parameters (r1, r2, a1, a2, 1/N1, 1/N2) and initial state (its eq. 7 example).
POST5_PARAMS = (0.1, 0.3, 1e-4, 2e-4, 0.002, 0.003)
POST5_Y0 = (100.0, 150.0)
POST5_PARAM_NAMES = ("r1", "r2", "a1", "a2", "1/N1", "1/N2")


def competitive_lotka_volterra(
    t: Float[Array, ""], x: Float[Array, " 2"], params: Float[Array, " 6"]
) -> Float[Array, " 2"]:
    r"""Two competing species (post 5, eq. 7; a competition model, not predator–prey):

    $$\dot x_1 = r_1 x_1\Big(1 - \frac{x_1}{N_1}\Big) - a_1 x_1 x_2,\qquad
      \dot x_2 = r_2 x_2\Big(1 - \frac{x_2}{N_2}\Big) - a_2 x_1 x_2,$$

    with `params` $= (r_1, r_2, a_1, a_2, 1/N_1, 1/N_2)$, the post's order. With the post's
    values the coexistence equilibrium is $(375, 250)$.

    **Arguments:**

    - `t`: the time (unused: the field is autonomous).
    - `x`: the state $(x_1, x_2)$.
    - `params`: $(r_1, r_2, a_1, a_2, 1/N_1, 1/N_2)$, 6 values.

    **Returns:** $(\dot x_1, \dot x_2)$, shape `(2,)`.

    **Raises:** `ValueError` for `params` that are not 6 values (JAX clamps an out-of-range
    index: 5 values ran with $1/N_2 = 1/N_1$, 7 ignored the last).
    """
    del t
    shape = (len(params),) if isinstance(params, tuple | list) else jnp.shape(params)
    if shape != (6,):
        raise ValueError(
            f"params must be the 6 values (r1, r2, a1, a2, 1/N1, 1/N2), got shape {shape}."
        )
    r1, r2, a1, a2, in1, in2 = (params[i] for i in range(6))
    x1, x2 = x[0], x[1]
    return jnp.stack(
        [r1 * x1 * (1 - in1 * x1) - a1 * x1 * x2, r2 * x2 * (1 - in2 * x2) - a2 * x1 * x2]
    )
