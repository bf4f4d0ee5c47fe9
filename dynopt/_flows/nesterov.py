r"""The Nesterov ODE of Su, Boyd & Candès, with a series start at its singular point $t = 0$."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._custom_types import Array, Params, ScalarLike
from .._maps.nesterov import NAG
from .._problem import Problem
from .._validation import hyperparameter, interval
from .base import AbstractMappedFlow


def bessel_solution(t, x0, lam, r: float) -> np.ndarray:
    r"""The Nesterov ODE $\ddot X + \tfrac rt\dot X + \lambda X = 0$ on $\tfrac\lambda2 x^2$ from
    rest:

    $$X(t) = x_0\,\Gamma(\nu+1)(2/z)^\nu J_\nu(z),\qquad z = \sqrt\lambda\, t,\quad
    \nu = (r-1)/2,$$

    with the series $1 - z^2/(2(r+1))$ for $z < 10^{-4}$ (no $0/0$ at $t = 0$). Float64 NumPy,
    `scipy.special.jv` (jax's `bessel_jn` loses accuracy for $z \gtrsim 20$). Not validated: a
    host-side reference.

    **Arguments:**

    - `t`: the time(s), any shape.
    - `x0`: the initial position(s), broadcast over a trailing axis (one entry per eigenmode).
    - `lam`: the eigenvalue(s) $\lambda \ge 0$, broadcast like `x0`.
    - `r`: the friction constant $r$ (3 for Nesterov's method).

    **Returns:** a float64 `np.ndarray` of shape `(*t.shape, d)`, $d$ the broadcast number of
    modes.
    """
    from scipy.special import gamma, jv

    nu = (r - 1) / 2
    z = np.sqrt(np.asarray(lam)) * np.asarray(t)[..., None]
    small = z < 1e-4  # the even series 1 - z²/(2(r+1)) avoids 0/0 at t = 0
    zs = np.where(small, 1.0, z)
    value = gamma(nu + 1) * (2 / zs) ** nu * jv(nu, zs)
    return np.asarray(x0) * np.where(small, 1 - z**2 / (2 * (r + 1)), value)


class NesterovODE(AbstractMappedFlow):
    r"""The continuous limit of Nesterov's accelerated gradient (Su, Boyd & Candès 2016):

    $$\ddot X + \frac rt\dot X + \nabla f(X) = 0,\qquad X(0) = x_0,\ \dot X(0) = 0,$$

    as the system $\dot X = V$, $\dot V = -\tfrac rt V - \nabla f(X)$ on the state $(X, V)$.

    **Discretization:** `discretize(s)` is NAG $x_k = y_{k-1} - s\nabla f(y_{k-1})$,
    $y_k = x_k + \frac{k-1}{k+r-1}(x_k - x_{k-1})$ (`dynopt.transforms.nag`, holding $x_k$), with
    $t = k\sqrt s$: `dt` $= \sqrt s$. The iterates converge to $X(k\sqrt s)$ as $s \to 0$, to first
    order in $\sqrt s$.

    **Rate:** for convex $f$ and $r \ge 3$,
    $\mathcal E(t) = \frac{2t^2}{r-1}(f(X) - f^*) + (r-1)\|X + \tfrac{t}{r-1}\dot X - x^*\|^2$ is
    non-increasing (`lyapunov_energy`), so $f(X(t)) - f^* \le (r-1)^2\|x_0 - x^*\|^2/(2t^2)$
    (`rate_bound`; $2\|x_0-x^*\|^2/t^2$ for $r = 3$). On $f = \tfrac\lambda2 x^2$ the solution is
    $X(t) = x_0\,\Gamma(\nu+1)(2/z)^\nu J_\nu(z)$, $z = \sqrt\lambda t$, $\nu = (r-1)/2$
    ($2x_0J_1(z)/z$ for $r = 3$).

    **The singular start.** $r/t$ blows up at $t = 0$, where the solution is analytic and even in
    $t$: $X = x_0 + a_2t^2 + a_4t^4 + O(t^6)$ with $a_2 = -g/(2(1+r))$, $a_4 = Hg/(8(1+r)(3+r))$
    ($g = \nabla f(x_0)$, $H = \nabla^2 f(x_0)$). Eliminating $x_0$ gives the singular term as a
    regular function of the current state,
    $$\frac Vt = -\frac{\nabla f(X)}{1+r} - \frac{t^2\,\nabla^2f(X)\nabla f(X)}{(1+r)^2(3+r)}
      + O(t^4),$$
    and on $[0, t_s]$ (`series_time`) the flow uses it in place of $rV/t$:
    $\dot V = -\frac{\nabla f(X)}{1+r} + \frac{r\,t^2\,\nabla^2f\,\nabla f}{(1+r)^2(3+r)}$, a smooth
    field (Hessian-vector product by `jax.jvp`) that diffrax integrates from $t = 0$ itself. Its
    solution differs from the true one by $O(t_s^5)$ in $V$ and $O(t_s^6)$ in $X$ at $t_s$ (relative
    size $\sim(\sqrt{\lambda_{\max}}\,t_s)^6/10^4$, below $10^{-16}$ for
    $\lambda_{\max} \le 100$ at the default $t_s = 10^{-3}$); afterwards a velocity error decays
    like $(t_s/t)^r$ (the homogeneous solution $V \propto t^{-r}$) and a position error is carried
    by the regular dynamics. No core change is needed: `solve` and `compare` start at $t_0 = 0$ and
    the dense output is valid on all of $[0, t_1]$. Tested against the Bessel closed form and for
    independence of $t_s$.

    **Arguments:**

    - `r`: the friction constant $r > 0$ (3 for Nesterov; the $O(1/t^2)$ bound needs $r \ge 3$).
    - `series_time`: $t_s > 0$, the end of the series start (keep $\sqrt{\lambda_{\max}}\,t_s
      \ll 1$).
    """

    default_map: ClassVar[type] = NAG

    r: Array = hyperparameter("r", default=3.0, lower=0.0, lower_open=True)
    series_time: Array = hyperparameter("series_time", default=1e-3, lower=0.0, lower_open=True)

    def init(self, params: Params):
        return params, jax.tree.map(jnp.zeros_like, params)

    def vector_field(self, t: ScalarLike, state, problem: Problem):
        x, v = state
        r = self.r

        def series(_):
            g, hg = jax.jvp(problem.grad, (x,), (problem.grad(x),))
            c = r * t**2 / ((1 + r) ** 2 * (3 + r))
            return jax.tree.map(lambda gi, hgi: -gi / (1 + r) + c * hgi, g, hg)

        def regular(_):
            g = problem.grad(x)
            return jax.tree.map(lambda vi, gi: -(r / t) * vi - gi, v, g)

        dv = jax.lax.cond(t < self.series_time, series, regular, None)
        return v, dv

    def params(self, state) -> Params:
        return state[0]

    @classmethod
    def from_hyperparams(
        cls, learning_rate: ScalarLike, r: ScalarLike = 3.0
    ) -> tuple["NesterovODE", Array]:
        """NAG with step $s$ and friction $r$ follows `NesterovODE(r)` with $dt = \\sqrt s$;
        returns `(flow, s)` (the map's step size; its time step is $\\sqrt s$)."""
        return NAG().inverse(learning_rate, r)

    def rate_bound(self, t, distance_sq):
        r"""$(r-1)^2\|x_0 - x^*\|^2/(2t^2)$, with `distance_sq` $= \|x_0 - x^*\|^2$ (valid for
        $r \ge 3$ and convex $f$)."""
        t = jnp.asarray(t)
        return (self.r - 1) ** 2 * distance_sq / (2 * t**2)

    def lyapunov_energy(self, t, state, problem: Problem, f_star=None):
        r"""$\frac{2t^2}{r-1}(f(X) - f^*) + (r-1)\|X + \tfrac{t}{r-1}\dot X - x^*\|^2$ at one time
        (uses `problem.minimizer`; `f_star` defaults to $f(x^*)$). Non-increasing for convex $f$
        and $r \ge 3$.

        **Raises:** `ValueError` unless $r > 1$ (or without `problem.minimizer`)."""
        if problem.minimizer is None:
            raise ValueError("lyapunov_energy needs problem.minimizer (x*).")
        x, v = state
        xs = problem.minimizer
        f_star = problem.loss(xs) if f_star is None else f_star
        # The energy divides by r - 1: r <= 1 gave inf/NaN silently.
        r = interval("r", self.r, lower=1.0, lower_open=True, hint="lyapunov_energy needs r > 1.")
        r1 = r - 1
        dist = optax.tree.norm(
            jax.tree.map(lambda xi, vi, si: xi + t / r1 * vi - si, x, v, xs), squared=True
        )
        return 2 * t**2 / r1 * (problem.loss(x) - f_star) + r1 * dist
