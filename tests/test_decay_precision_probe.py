"""Decays of another precision than the moments (float32 or bfloat16 β under x64): the bias
corrections formed in each decay's own precision, as optax forms them (found by an independent
check against optax: a float32 β₁ rounded β₂'s correction; the preconditioner cast β to the
moment's dtype first, D = inf in bfloat16)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynopt import sharpness, transforms


def _one_adam_step(b1, b2, *, nesterov=False):
    params = {"a": jnp.array([0.3, -1.0, 2.0]), "b": jnp.asarray(0.7)}
    grads = {"a": jnp.array([0.5, -0.25, 2.0]), "b": jnp.asarray(-1.5)}
    tx = transforms.adam(0.05, b1=b1, b2=b2, nesterov=nesterov)
    updates, _ = tx.update(grads, tx.init(params), params)
    return grads, updates


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize(
    "b1, b2", [(np.float32(0.5), 0.999), (0.5, np.float32(0.999)), (jnp.float32(0.5), 0.75)]
)
def test_adam_first_step_with_a_float32_decay_is_exact_in_float64(b1, b2, nesterov):
    # At the first step the bias corrections undo the moments' (1 - b) exactly:
    # m_hat = g, v_hat = g^2, so u = -lr g / (|g| + eps), whatever b1, b2 (here exact in
    # float32) and their dtypes; optax computes 1 - b**k in each b's own precision and
    # divides in float64. A float32 b1 rounded b2's correction to float32 (6.4e-6 relative in
    # the update), a float32 b2 its reciprocal (1.8e-9).
    grads, updates = _one_adam_step(b1, b2, nesterov=nesterov)
    fb1, fb2 = float(b1), float(b2)
    for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(updates)):
        g = np.asarray(g)
        m = (1 - fb1) * g
        v = (1 - fb2) * g**2
        m_hat = m / (1 - fb1)
        if nesterov:  # optax's NAdam: b1 m/(1 - b1^2) + (1 - b1) g/(1 - b1)
            m_hat = fb1 * m / (1 - fb1**2) + (1 - fb1) * g / (1 - fb1)
        expected = -0.05 * m_hat / (np.sqrt(v / (1 - fb2)) + 1e-8)
        assert u.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(u), expected, rtol=1e-14, atol=0)


def test_adam_with_a_float32_decay_follows_optax_over_many_steps():
    params = {"a": jnp.array([0.3, -1.0, 2.0]), "b": jnp.asarray(0.7)}

    def loss(p):
        return jnp.sum(jnp.sin(p["a"]) ** 2) + p["b"] ** 4

    # b1 = 0.5: its powers are exact in float32 (no rounding of b1**k either way), so the runs
    # differ only where a correction is rounded to float32: b2's at HEAD.
    runs = []
    for tx in (transforms.adam(0.05, b1=np.float32(0.5)), optax.adam(0.05, b1=np.float32(0.5))):
        p, state = params, tx.init(params)
        with jax.numpy_dtype_promotion("standard"):  # optax's own float32 ** int32 count
            for _ in range(30):
                updates, state = tx.update(jax.grad(loss)(p), state, p)
                p = optax.apply_updates(p, updates)
        runs.append(p)
    for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_preconditioner_of_a_float32_state_corrects_in_the_decays_precision(kind):
    # optax corrects nu by 1 - b2**t in b2's precision (float64 under x64), then in nu's dtype;
    # casting b2 = 0.999 to float32 first (0.99900001) put 1.3e-5 into 1 - b2 at t = 1 and
    # 6e-6 into D, 300 times optax's own float32 rounding.
    params = {"w": jnp.array([0.3, -1.0, 2.0], jnp.float32)}
    grads = {"w": jnp.array([0.5, -0.25, 2.0], jnp.float32)}
    if kind == "adam":
        tx, precondition = optax.adam(1e-3), sharpness.adam_preconditioner()
    else:
        tx = optax.rmsprop(1e-3, decay=0.999, eps=1e-8, eps_in_sqrt=False, bias_correction=True)
        precondition = sharpness.rmsprop_preconditioner(1e-8, decay=0.999, eps_in_sqrt=False)
    state = tx.init(params)
    for _ in range(3):
        with jax.numpy_dtype_promotion("standard"):  # optax's own float ** int32 count
            _, state = tx.update(grads, state, params)
    inner = state[0]
    d = np.asarray(precondition(state)["w"], np.float64)
    nu = np.asarray(inner.nu["w"], np.float64)
    expected = np.sqrt(nu / (1 - 0.999 ** int(inner.count))) + 1e-8
    np.testing.assert_allclose(d, expected, rtol=2e-7)


def test_adam_preconditioner_of_a_bfloat16_state_is_finite():
    # b2 = 0.999 cast to bfloat16 is 1.0: the correction 1 - b2**t was 0 and D was inf (a
    # preconditioned sharpness of 0), the division by zero optax's `bias_correction` avoids by
    # forming 1 - b2**t before the cast.
    params = {"w": jnp.array([0.3, -1.0, 2.0], jnp.bfloat16)}
    grads = {"w": jnp.array([0.5, -0.25, 2.0], jnp.bfloat16)}
    tx = optax.adam(1e-3)
    state = tx.init(params)
    with jax.numpy_dtype_promotion("standard"):
        _, state = tx.update(grads, state, params)
    d = np.asarray(sharpness.adam_preconditioner()(state)["w"], np.float64)
    nu = np.asarray(state[0].nu["w"], np.float64)
    np.testing.assert_allclose(d, np.sqrt(nu / (1 - 0.999)) + 1e-8, rtol=1e-2)
