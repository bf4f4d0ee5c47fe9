r"""RMSprop never stops: optax's `rmsprop` on a quadratic locks onto a period-2 orbit.

On $\frac12\sum_i\lambda_i\theta_i^2$ with learning rate $\gamma$ and $\epsilon$, the late iterate
jumps between $\theta_i = \pm a_i$ with $G_i = \lambda_i^2a_i^2$ and $\gamma\lambda_i/\sqrt{G_i +
\epsilon} = 2$, i.e. $a_i = \sqrt{((\gamma/2)^2 - \epsilon/\lambda_i^2)_+}$: a distance to the
minimizer $\propto\gamma$ for $\epsilon \to 0$, and coordinate $i$ converges (gradient descent with
step $\gamma/\sqrt\epsilon$) once $\epsilon > (\gamma\lambda_i/2)^2$.
"""

import numpy as np

from .._validation import nonnegative, positive


def rmsprop_orbit_distance(gamma, eps, eigenvalues) -> np.ndarray:
    r"""The period-2 orbit's distance to the minimizer, $\sqrt{\sum_i((\gamma/2)^2 -
    \epsilon/\lambda_i^2)_+}$, broadcast over `gamma` and `eps` (`eigenvalues`: the $\lambda_i$).

    **Arguments:**

    - `gamma`: the learning rate $\gamma > 0$, a scalar or an array.
    - `eps`: $\epsilon \ge 0$, broadcast with `gamma`.
    - `eigenvalues`: the $\lambda_i > 0$, a 1-D array (summed over).

    **Raises:** `ValueError` unless `gamma` $> 0$, `eps` $\ge 0$ and every eigenvalue $> 0$ (a
    coordinate with $\lambda_i \le 0$ has no orbit: it stays put or runs away).
    """
    positive("gamma", gamma)
    nonnegative("eps", eps)
    lams = np.asarray(positive("eigenvalues", eigenvalues), float)
    a2 = (np.asarray(gamma)[..., None] / 2) ** 2 - np.asarray(eps)[..., None] / lams**2
    return np.sqrt(np.maximum(a2, 0.0).sum(-1))


def rmsprop_crossover_eps(gamma, eigenvalue):
    r"""$\epsilon_i^* = (\gamma\lambda_i/2)^2$: above it coordinate $i$ stops chattering (leaves the
    period-2 orbit and converges).

    **Arguments:**

    - `gamma`: the learning rate $\gamma > 0$.
    - `eigenvalue`: the coordinate's curvature $\lambda_i > 0$ (scalars or arrays that
      broadcast).

    **Returns:** $(\gamma\lambda_i/2)^2$, broadcast over the two.

    **Raises:** `ValueError` unless `gamma` $> 0$ and `eigenvalue` $> 0$ (finite).
    """
    positive("gamma", gamma)
    positive("eigenvalue", eigenvalue)
    return (gamma * eigenvalue / 2) ** 2
