"""Mixed-dtype parameter trees (bfloat16 weights with float32 biases; float32 with float64): every
leaf keeps its dtype through `run` and `compare`, and the iterates agree with a float64 run to
the rounding of the narrowest dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import flows


PAIRS = [(jnp.bfloat16, jnp.float32), (jnp.float32, jnp.float64)]
FLOWS = [flows.HeavyBall(1.0), flows.AdamFlow(1.0, 0.5), flows.RMSPropFlow(2.0)]
STEPS, H = 10, 0.1


def _loss(p):
    # The loss reads every leaf in float64 (a loss may upcast; the optimizer state must not).
    w, b = p["w"].astype(jnp.float64), p["b"].astype(jnp.float64)
    return 0.5 * jnp.sum(w * w) + jnp.sum((b - 0.1) ** 2)


def _problem(lo, hi):
    return dynopt.Problem(_loss, {"w": jnp.array([1.0, -0.5], lo), "b": jnp.array([0.3], hi)})


def _dtypes(tree):
    return jax.tree.map(lambda x: jnp.dtype(x.dtype), tree)


@pytest.mark.parametrize("lo, hi", PAIRS, ids=["bf16+f32", "f32+f64"])
def test_run_keeps_each_leaf_dtype(lo, hi):
    """Under standard promotion (the users' default): today's crash was a `lax.scan` carry whose
    bfloat16 momentum came out float32 (hyper-parameters cast to the widest leaf dtype)."""
    problem = _problem(lo, hi)
    exact = _problem(jnp.float64, jnp.float64)
    # Each step rounds every leaf to its dtype (relative eps); on these contractive steps the
    # rounding errors add up, so after N steps the gap is at most ~N eps |theta|, |theta| <= 1.
    tol = 2 * STEPS * float(jnp.finfo(lo).eps)
    with jax.numpy_dtype_promotion("standard"):
        for flow in FLOWS:
            traj = dynopt.run(flow.discretize(H), problem, STEPS)
            assert _dtypes(traj.params) == {"w": jnp.dtype(lo), "b": jnp.dtype(hi)}
            ref = dynopt.run(flow.discretize(H), exact, STEPS)
            for leaf in ("w", "b"):
                np.testing.assert_allclose(
                    np.asarray(traj.params[leaf], np.float64),
                    np.asarray(ref.params[leaf]),
                    atol=tol,
                    err_msg=f"{type(flow).__name__} {leaf}",
                )


def test_strict_promotion_compare_and_automatic_solver():
    """Under strict promotion (the test suite's): `run`, `solve` with the automatic solver (its
    stiffness estimate ravels the tree in float64) and `compare` (its stability check too).
    The float64 problem's comparisons, once for both pairs."""
    exact = _problem(jnp.float64, jnp.float64)
    cmps64 = [dynopt.compare(flow, exact, [H, H / 2], t1=0.4) for flow in FLOWS]
    for lo, hi in PAIRS:
        problem = _problem(lo, hi)
        traj = dynopt.run(flows.HeavyBall(1.0).discretize(H), problem, STEPS)
        assert _dtypes(traj.params) == {"w": jnp.dtype(lo), "b": jnp.dtype(hi)}
        sol = dynopt.solve(flows.AdamFlow(1.0, 0.5), problem, jnp.array([0.2, 0.4]))
        assert np.all(np.isfinite(np.asarray(sol.loss)))
        for flow, cmp64 in zip(FLOWS, cmps64):
            cmp = dynopt.compare(flow, problem, [H, H / 2], t1=0.4)
            # The reference is float64 in both; the iterates differ by the rounding (see above).
            tol = 2 * STEPS * float(jnp.finfo(lo).eps)
            np.testing.assert_allclose(cmp.errors, cmp64.errors, atol=tol)
