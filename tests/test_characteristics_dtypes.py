"""dynopt.characteristics probed off the beaten path: float32 initial data and coefficients
(the solve runs in float64), and a `u_max` that is not a real number."""

import jax.numpy as jnp
import numpy as np
import pytest

from dynopt import characteristics


C, A = 0.5, 0.3  # u_t + C u_x = -A u


def _initial32(q):
    return jnp.stack([jnp.zeros_like(q), q]).astype(jnp.float32), jnp.sin(q).astype(jnp.float32)


def _alpha32(x, u):
    del x, u
    return jnp.array([1.0, C], jnp.float32)


def _beta(x, u):
    del x
    return -A * u


@pytest.mark.parametrize("alpha_dtype", ["float32", "float64"])
def test_quasilinear_takes_float32_initial_data_and_coefficients(alpha_dtype):
    """float32 initial data or a float32 alpha raised a strict-promotion error; they are taken
    in the solve's float64. Linear transport with decay: x = (s, sigma + C s) and u = u0(sigma)
    e^{-A s}, with u0 the float32 values the user's function returned (exact in float64). The
    solve's rtol 1e-10 bounds the error (measured 3e-12): 1e-9."""
    alpha = _alpha32 if alpha_dtype == "float32" else (lambda x, u: jnp.array([1.0, C]))
    sigma, s = np.linspace(-1.0, 1.0, 5), np.array([0.5, 1.0])
    got = characteristics.quasilinear(alpha, _beta, _initial32, sigma, s)
    u0 = np.sin(sigma).astype(np.float32).astype(np.float64)
    assert got.u.dtype == np.float64
    np.testing.assert_allclose(got.u, u0[:, None] * np.exp(-A * s)[None], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.x[..., 1], sigma[:, None] + C * s[None], rtol=0, atol=1e-9)


def test_charpit_takes_float32_initial_data():
    """The eikonal equation |p|^2 = 1 with u = 0 on the line x2 = 0 (float32 initial data, a
    strict-promotion error before): on the branch p = (0, 1) the characteristics are vertical
    lines x2 = 2s (dx/ds = F_p = 2p) and u = x2. Tolerance: the solve's rtol, 1e-9."""

    def eikonal(x, u, p):
        del x, u
        return p @ p - 1.0

    def initial(q):
        return jnp.stack([q, jnp.zeros_like(q)]).astype(jnp.float32), jnp.zeros((), jnp.float32)

    sigma, s = np.linspace(-1.0, 1.0, 4), np.array([0.25, 0.75])
    got = characteristics.charpit(eikonal, initial, sigma, s, p_guess=np.array([0.0, 1.0]))
    np.testing.assert_allclose(got.u, got.x[..., 1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.x[..., 1], np.broadcast_to(2 * s, (4, 2)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.x[..., 0], np.broadcast_to(sigma[:, None], (4, 2)), atol=1e-9)


@pytest.mark.parametrize("u_max", ["big", True, np.array([1e8])])
def test_u_max_must_be_a_real_scalar(u_max):
    """A string u_max raised NumPy's TypeError, True ran as u_max = 1 and a 1-element array
    passed; each is now the ValueError naming u_max."""
    with pytest.raises(ValueError, match=r"u_max must be finite and > 0 \(a real scalar\)"):
        characteristics.quasilinear(
            _alpha32, _beta, _initial32, np.linspace(0.0, 1.0, 3), [0.5], u_max=u_max
        )
