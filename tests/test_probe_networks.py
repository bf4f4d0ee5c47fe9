"""`networks.mlp` and `networks.SmallCNN` say what a key is: a seed given as an integer (or a
batch of keys) failed inside `jax.random.split` with JAX's "invalid PRNG key data"."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

from dynopt import networks


@pytest.mark.parametrize("key", [0, jax.random.split(jax.random.key(0), 2), "seed"])
def test_a_key_that_is_not_one_prng_key_is_a_value_error(key):
    with pytest.raises(ValueError, match=r"key must be one jax\.random\.key"):
        networks.mlp(2, 1, key=key)
    with pytest.raises(ValueError, match=r"key must be one jax\.random\.key"):
        networks.SmallCNN(key=key)


def test_keys_typed_legacy_and_vmapped_build_the_same_network():
    typed = networks.mlp(2, 1, width=4, key=jax.random.key(3))
    legacy = networks.mlp(2, 1, width=4, key=jax.random.PRNGKey(3))
    assert all(
        jnp.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(eqx.filter(typed, eqx.is_array)),
            jax.tree.leaves(eqx.filter(legacy, eqx.is_array)),
        )
    )
    keys = jax.random.split(jax.random.key(1), 3)
    ensemble = eqx.filter_vmap(lambda k: networks.mlp(2, 1, width=4, key=k))(keys)
    assert ensemble.layers[0].weight.shape == (3, 4, 2)
