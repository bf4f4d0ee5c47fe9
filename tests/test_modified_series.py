"""Probe of `modified_flow` on optimizers as users configure them.

Checked against closed forms here (not only refused inputs): the order-1..4 fields of GD,
heavy ball, Nesterov and an EMA on a quadratic against the series of $\\log z_s(h)/h$, $z_s$
the slow root of each method's characteristic polynomial (computed independently below, on
truncated power series in NumPy).
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt


_N = 6  # power-series terms


def _mul(a, b):
    return np.convolve(a, b)[:_N]


def _slow_root(trace, det):
    r"""The root $z(h) = 1 + O(h)$ of $z^2 - \mathrm{tr}(h)\,z + \det(h)$ as a power series
    (Newton's iteration on truncated series)."""
    z = np.zeros(_N)
    z[0] = 1.0
    for _ in range(2 * _N):
        f = _mul(z, z) - _mul(trace, z) + det
        df = 2 * z - trace
        q, r = np.zeros(_N), f.copy()
        for i in range(_N):  # q = f / df
            q[i] = r[i] / df[0]
            r = r - q[i] * np.concatenate([np.zeros(i), df[: _N - i]])
        z = z - q
    return z


def _log_over_h(z):
    """The coefficients $c_j$ of $\\log z(h)/h = \\sum_j c_j h^{j-1}$ (j = 1, 2, ...)."""
    w = z.copy()
    w[0] = 0.0
    out, power = np.zeros(_N), np.eye(1, _N)[0]
    for k in range(1, _N):
        power = _mul(power, w)
        out += (-1) ** (k + 1) * power / k
    return out[1:]


BETA = 0.4


def _characteristic(kind, lam):
    r"""trace and determinant of one step's 2x2 matrix on $\tfrac12\lambda x^2$, as series in
    $h$: heavy ball $\theta_{k+1} = \theta_k + \beta(\theta_k - \theta_{k-1}) - h\lambda\theta_k$;
    optax's Nesterov $m' = \beta m + g$, $\theta' = \theta - h(g + \beta m')$; an EMA
    $m' = \beta m + (1-\beta)g$, $\theta' = \theta - h m'$."""
    one, h = np.eye(1, _N)[0], np.eye(1, _N, 1)[0]
    if kind == "heavy_ball":
        return one * (1 + BETA) - lam * h, one * BETA
    if kind == "nesterov":
        return one * (1 + BETA) - lam * (1 + BETA) * h, one * BETA - lam * BETA * h
    return one * (1 + BETA) - (1 - BETA) * lam * h, one * BETA


_OPTIMIZERS = {
    "heavy_ball": lambda h: optax.sgd(h, momentum=BETA),
    "nesterov": lambda h: optax.sgd(h, momentum=BETA, nesterov=True),
    "ema": lambda h: optax.chain(optax.ema(BETA, debias=False), optax.scale(-h)),
}


@pytest.mark.parametrize("kind", sorted(_OPTIMIZERS))
def test_fast_momentum_fields_are_the_slow_roots_series_to_order_4(kind):
    r"""On a quadratic the fast-regime flow on the slow manifold is exactly
    $\dot\theta = (\log z_s(h)/h)\,\theta$ per eigenvalue: every $f_j$ is a coefficient of that
    series (heavy ball's $f_2$ is Ghosh et al.'s $-(1+\beta)/(2(1-\beta)^3)H\nabla L$)."""
    lams = np.array([0.7, 2.5])
    x0 = jnp.array([1.0, -0.6])
    problem = dynopt.problems.quadratic(jnp.asarray(lams), params0=x0)
    flow = dynopt.modified_flow(_OPTIMIZERS[kind], 0.01, 4, problem=problem)
    assert flow.spec.regime == "fast"
    fields = [np.asarray(flow.params(f)) for f in flow.field_values(flow.init(x0), problem)]
    series = np.stack([_log_over_h(_slow_root(*_characteristic(kind, lam))) for lam in lams])
    for j, f in enumerate(fields):
        expected = series[:, j] * np.asarray(x0)
        np.testing.assert_allclose(f, expected, rtol=1e-13, atol=0)


def test_a_float32_state_in_a_float64_run_is_named():
    """`optax.adam(..., mu_dtype=jnp.float32)` on float64 parameters: the first moment's
    float32 rounding (6e-8) failed the fast regime's affine test, reported as 'a leaf is
    nonlinear in itself' with the advice state='slow' (on this quartic; on a quadratic the
    rounding happened to pass). The refusal now says what it is."""
    quartic = lambda x: jnp.sum(x**4) / 4 + x[0] * x[1] + 0.5 * jnp.sum(x**2)
    problem = dynopt.Problem(quartic, jnp.array([0.7, -0.4, 1.1]))
    with pytest.raises(ValueError, match=r"\[0\]\.mu.*float32.*float64.*mu_dtype"):
        dynopt.modified_flow(
            lambda h: optax.adam(h, b1=0.5, b2=0.6, eps=0.3, mu_dtype=jnp.float32),
            0.01,
            2,
            problem=problem,
        )
