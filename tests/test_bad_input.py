"""Bad input that earlier probes found and that reached Python's or JAX's `TypeError`, or was
accepted silently (a NaN result, a negative action, a rank-deficient block): each is now a
one-line `ValueError` naming the argument and the valid range, and valid calls give the same
numbers as before."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynopt import games, networks, sharpness
from dynopt._validation import function, one_key


# --- the shared validators --------------------------------------------------------------------


def test_one_key_accepts_typed_and_legacy_keys_concrete_or_traced():
    typed, legacy = jax.random.key(0), jax.random.PRNGKey(0)
    assert one_key("key", typed) is typed and one_key("key", legacy) is legacy
    jax.vmap(lambda k: one_key("key", k))(jax.random.split(typed, 3))  # one key per member
    for bad, shown in (
        (0, "int 0"),
        (None, "None"),
        (jax.random.split(typed, 2), r"key<fry>\[2\]"),
        (jnp.zeros(2), r"float64\[2\]"),
    ):
        with pytest.raises(
            ValueError, match=rf"^key must be one jax\.random\.key .*got {shown}\.$"
        ):
            one_key("key", bad)


def test_function_names_the_argument_and_what_to_pass():
    assert function("f", len) is len and function("f", None, allow_none=True) is None
    with pytest.raises(ValueError, match=r"^f must be callable, got int 3\.$"):
        function("f", 3)
    with pytest.raises(ValueError, match=r"^g must be callable x -> y, got str 'relu'\.$"):
        function("g", "relu", "callable x -> y")
    with pytest.raises(ValueError, match=r"^f must be callable, got None\.$"):
        function("f", None)


# --- 1. PRNG keys ------------------------------------------------------------------------------


def test_random_start_refuses_an_int_key_and_more_columns_than_parameters():
    """`random_start(0, 5, 2)` was JAX's TypeError 'invalid PRNG key data'; k > n drew a
    block of more columns than dimensions (rank-deficient), accepted."""
    with pytest.raises(ValueError, match=r"^key must be one jax\.random\.key .*got int 0\.$"):
        sharpness.random_start(0, 5, 2)
    with pytest.raises(ValueError, match=r"^k must be in \[1, 5\] .*got k=6\.$"):
        sharpness.random_start(jax.random.key(0), 5, 6)
    # Valid calls: the same draw as jax.random.normal's.
    key = jax.random.key(3)
    np.testing.assert_array_equal(
        sharpness.random_start(key, 5, 5), jax.random.normal(key, (5, 5), jnp.float64)
    )


def test_networks_and_mixture_gan_share_the_key_check():
    for make in (
        lambda k: networks.mlp(2, 1, key=k),
        lambda k: games.mixture_gan(k, hidden=4, depth=1),
        lambda k: games.sample_mixture(k, 4),
    ):
        with pytest.raises(ValueError, match=r"^key must be one jax\.random\.key .*got int 0\.$"):
            make(0)
    x = games.sample_mixture(jax.random.key(1), 4)
    k_mode, k_noise = jax.random.split(jax.random.key(1))
    modes = games.mixture_modes()
    idx = jax.random.randint(k_mode, (4,), 0, 8)
    np.testing.assert_array_equal(x, modes[idx] + 0.02 * jax.random.normal(k_noise, (4, 2)))
