"""`lane_by_lane` under forward-mode differentiation: `jax.jvp` of it (outside or inside a `vmap`,
closing over a batched value) gives `fn`'s own values and tangents, and a vmapped call still
runs one lane after another on a CPU (`sequential_vmap`'s JVP rule keeps its strategy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynopt._batching import lane_by_lane


def _fn(x, y, scale):
    return {"a": jnp.sin(x) * y * scale, "b": jnp.sum(x**2) * jnp.cos(y) + scale}


X = jnp.asarray([[0.3, -0.5, 0.7], [1.1, 0.2, -0.9]])
TX = jnp.asarray([[1.0, -1.0, 0.5], [0.25, 2.0, -0.75]])
Y, TY = jnp.asarray(0.4), jnp.asarray(-1.5)
SCALES = jnp.asarray([2.0, -3.0])


def _assert_equal(got, want):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-14, atol=0)


def _lanes_scanned(jaxpr) -> bool:
    """Whether the program holds a `scan` (`sequential_vmap`'s `lax.map` over the lanes)."""
    return "scan[" in str(jaxpr)


@pytest.mark.parametrize("jit", [False, True])
def test_jvp_of_lane_by_lane_is_fns_jvp(jit):
    """One call (no `vmap`): values and tangents are `fn`'s, eagerly and under `jit`."""
    wrap = jax.jit if jit else (lambda f: f)
    got = wrap(lambda x, t: jax.jvp(lambda x: lane_by_lane(_fn, x, Y, SCALES[0]), (x,), (t,)))
    want = wrap(lambda x, t: jax.jvp(lambda x: _fn(x, Y, SCALES[0]), (x,), (t,)))
    _assert_equal(got(X[0], TX[0]), want(X[0], TX[0]))


def test_jvp_of_a_vmapped_lane_by_lane_runs_lane_by_lane():
    """`jvp` of a `vmap` over `x` and a closed-over batched `scale` (passed to `fn` explicitly):
    `fn`'s values and tangents in each lane (also a tangent of `y`, unbatched), and on a CPU the
    lanes one after another (`lax.map`: a `scan`), which `fn` vmapped has none of."""

    def batched(inner):
        def over(x, y):
            return jax.vmap(lambda x, s: inner(x, y, s))(x, SCALES)

        return lambda x, y, tx, ty: jax.jvp(over, (x, y), (tx, ty))

    got = batched(lambda x, y, s: lane_by_lane(lambda x, y: _fn(x, y, s), x, y))
    want = batched(_fn)
    _assert_equal(got(X, Y, TX, TY), want(X, Y, TX, TY))
    if jax.default_backend() == "cpu":
        assert _lanes_scanned(jax.make_jaxpr(got)(X, Y, TX, TY))
        assert not _lanes_scanned(jax.make_jaxpr(want)(X, Y, TX, TY))


@pytest.mark.parametrize(
    "scales",
    [
        pytest.param(SCALES[0], id="scale unbatched"),
        pytest.param(
            SCALES,
            id="scale batched, no tangent",
            marks=pytest.mark.xfail(
                raises=ValueError,
                strict=True,
                reason="JAX's own `jax.custom_batching.sequential_vmap` (jax 0.10.2): its JVP "
                "rule under a `vmap` calls the batching rule with no mapped argument where an "
                "argument is batched with a zero tangent ('scan got no values to scan over')",
            ),
        ),
    ],
)
def test_vmap_of_jvp_of_lane_by_lane_is_fns(scales):
    """`vmap` of a `jvp` (a tangent per lane): each lane's value and tangent are `fn`'s."""

    def per_lane(inner):
        def one(x, t, s):
            return jax.jvp(lambda x: inner(x, Y, s), (x,), (t,))

        return jax.jit(jax.vmap(one, in_axes=(0, 0, 0 if jnp.ndim(scales) else None)))

    got = per_lane(lambda x, y, s: lane_by_lane(_fn, x, y, s))
    _assert_equal(got(X, TX, scales), per_lane(_fn)(X, TX, scales))
