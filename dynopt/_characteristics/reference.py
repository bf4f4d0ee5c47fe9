r"""What characteristics are checked against: post 6's closed forms (the Riccati transport
equation, inviscid Burgers) and a $\chi^2$ test of a transported density against samples.

NumPy functions of NumPy data: they grade results after the solve, outside any trace.
"""

from collections.abc import Callable

import numpy as np

from .._validation import function, interval


def _callable(name: str, f) -> None:
    function(name, f, "callable (a NumPy function)")


def _reciprocal_below(g: np.ndarray, horizon: float) -> np.ndarray:
    r"""$1/g$ where $1/g$ falls inside $(0, \text{horizon})$, else $+\infty$."""
    # > 0 (inf allowed): 0 divided by zero, and a negative one counted every blow-up as inside.
    # (A string was `float`'s error, naming no argument.)
    interval("horizon", horizon, lower=0.0, lower_open=True, allow_inf=True)
    if np.ndim(horizon) != 0:
        raise ValueError(f"horizon must be a scalar > 0 (inf for none), got {horizon!r:.80}.")
    return np.where(g > 1.0 / horizon, 1.0 / np.where(g > 0, g, 1.0), np.inf)


def riccati_solution(f: Callable, t, x) -> np.ndarray:
    r"""The closed form of $u_t + x u_x = u^2$, $u(0, x) = f(x)$ (post 6, eq. 12):

    $$u(t, x) = \frac{f(xe^{-t})}{1 - t f(xe^{-t})}.$$

    **Arguments:**

    - `f`: the initial profile, a NumPy function.
    - `t`, `x`: broadcastable arrays of times and places.

    **Returns:** $u(t, x)$ ($\pm\infty$ on the blow-up curve $t f(xe^{-t}) = 1$, and the other
    branch of the hyperbola beyond it).
    """
    _callable("f", f)
    t = np.asarray(t)
    fx = f(np.asarray(x) * np.exp(-t))
    with np.errstate(divide="ignore"):
        return fx / (1.0 - t * fx)


def riccati_blowup(f: Callable, sigma, horizon: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    r"""Where the characteristic of $u_t + x u_x = u^2$ from $(0, \sigma)$ blows up: along it
    $u = f(\sigma)/(1 - t f(\sigma))$ and $x = \sigma e^t$, so

    $$t^* = 1/f(\sigma) \quad (f(\sigma) > 0), \qquad x^* = \sigma e^{t^*}.$$

    **Arguments:**

    - `f`: the initial profile, a NumPy function; `sigma`: initial points.
    - `horizon`: blow-ups at $t^* \ge$ `horizon` count as none.

    **Returns:** `(t_star, x_star)`, `+inf` and `nan` where the characteristic stays finite.
    """
    _callable("f", f)
    sigma = np.asarray(sigma)
    t_star = _reciprocal_below(f(sigma), horizon)
    with np.errstate(invalid="ignore"):
        x_star = np.where(np.isfinite(t_star), sigma * np.exp(t_star), np.nan)
    return t_star, x_star


def burgers_crossing(f: Callable, f_prime: Callable, sigma, horizon: float = np.inf):
    r"""When the characteristic of inviscid Burgers $u_t + uu_x = 0$, $u(0, x) = f(x)$, from
    $\sigma$ meets its neighbours: $x = \sigma + f(\sigma)t$ folds where $\partial x/\partial\sigma
    = 1 + f'(\sigma)t = 0$, so

    $$t_c = -1/f'(\sigma) \quad (f'(\sigma) < 0), \qquad x_c = \sigma + f(\sigma)t_c;$$

    the first shock is at $\min_\sigma t_c$.

    **Arguments:**

    - `f`, `f_prime`: the initial profile and its derivative (NumPy functions); `sigma`: initial
      points.
    - `horizon`: crossings at $t_c \ge$ `horizon` count as none.

    **Returns:** `(t_c, x_c)`, `+inf` and `nan` where the characteristic never crosses.
    """
    _callable("f", f)
    _callable("f_prime", f_prime)
    sigma = np.asarray(sigma)
    t_c = _reciprocal_below(-f_prime(sigma), horizon)
    with np.errstate(invalid="ignore"):
        return t_c, np.where(np.isfinite(t_c), sigma + f(sigma) * t_c, np.nan)


def density_chi2(x, rho, samples, edges, mass_left: float = 0.0, min_expected: float = 5.0):
    r"""A transported density against samples of the same law: Pearson's $\chi^2$ per bin.

    The bin probabilities $p_j$ integrate the density known on the characteristics'
    endpoints $x_i$ (increasing: a 1-D flow map is monotone) by the cumulative trapezoid,
    $F(x_i) = m_\text{left} + \sum_{k < i}\tfrac12(\rho_k + \rho_{k+1})(x_{k+1} - x_k)$,
    $p_j = F(e_{j+1}) - F(e_j)$ (linear in between). With $N$ samples and counts $c_j$, over
    the bins with $Np_j \ge$ `min_expected`,

    $$z_j = \frac{c_j - Np_j}{\sqrt{Np_j(1 - p_j)}}, \qquad
    \chi^2/\text{dof} = \frac{1}{J}\sum_j z_j^2 \approx 1 \pm \sqrt{2/J}.$$

    **Arguments:**

    - `x`, `rho`: `(m,)` increasing characteristic endpoints and the density there.
    - `samples`: `(N,)` samples; `edges`: `(J + 1,)` bin edges.
    - `mass_left`: the probability left of `x[0]` (the part of the law no characteristic
      carries), in $[0, 1]$.
    - `min_expected`: bins with fewer expected counts are left out ($> 0$).

    **Returns:** `(chi2_per_dof, max_abs_z, mass, histogram)`: `mass` the probability the
    characteristics carry plus `mass_left` (about 1 when they cover the law), `histogram` the
    samples' density per bin.
    """
    x, rho, edges = np.asarray(x), np.asarray(rho), np.asarray(edges)
    if x.ndim != 1 or x.size < 2 or rho.shape != x.shape or not np.all(np.diff(x) > 0):
        raise ValueError(
            f"x must be increasing, shape (m,) with m >= 2, and rho of x's shape; got x of shape "
            f"{x.shape} (increasing: {bool(x.ndim == 1 and np.all(np.diff(x) > 0))}) and rho of "
            f"shape {rho.shape}. Sort the endpoints (np.argsort(x)) and rho with them."
        )
    if not np.all(np.isfinite(rho) & (rho >= 0)):  # a NaN read as "no bin expects enough"
        raise ValueError(f"rho must be finite and >= 0 (a density), got {rho.tolist()!r:.120}.")
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError(f"edges must be increasing, shape (J + 1,) with J >= 1, got {edges}.")
    # A probability in [0, 1]; min_expected >= 0 (a negative one would keep empty bins, 0/0).
    interval("mass_left", mass_left, lower=0.0, upper=1.0)
    interval("min_expected", min_expected, lower=0.0, lower_open=True)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (rho[1:] + rho[:-1]) * np.diff(x))])
    cdf += mass_left
    probs = np.diff(np.interp(edges, x, cdf))
    n = np.asarray(samples).size
    counts, _ = np.histogram(samples, edges)
    expected = n * probs
    use = expected >= min_expected
    if not np.any(use):  # (numpy's "zero-size array to reduction operation maximum" else)
        raise ValueError(
            f"no bin expects at least min_expected={min_expected:g} of the {n} samples: "
            "draw more samples, use wider edges or lower min_expected."
        )
    z = (counts - expected)[use] / np.sqrt(expected[use] * (1 - probs[use]))
    mass = float(cdf[-1] - cdf[0] + mass_left)
    histogram = counts / (n * np.diff(edges))
    return float(np.sum(z**2) / use.sum()), float(np.max(np.abs(z))), mass, histogram
