"""`dynopt.modified_flow` on settings a second probe used: float32 states, pytrees of mixed
shapes, closed-form fields of non-proportional step sizes."""

import jax
import jax.numpy as jnp
import optax

import dynopt
from dynopt._modified import modified_flow


def _loss(p):
    return jnp.sum(jnp.log(jnp.cosh(p["w"] - 0.3))) + 0.5 * jnp.sum(
        p["b"] ** 2 * (1 + p["w"][0] ** 2)
    )


_P64 = {"w": jnp.asarray([0.6, -0.4, 0.9]), "b": jnp.asarray([0.4, -0.6])}


def test_vector_field_keeps_a_float32_state():
    """The truncated field f1 + h f2 of a float32 state is float32 (as its fields, and as every
    other flow keeps each leaf's dtype) and equals the float64 one to float32 rounding; the
    float64 step size raised a strict-promotion error (and promoted the field to float64 under
    standard promotion)."""
    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), _P64)
    problem32 = dynopt.Problem(_loss, p32)
    problem64 = dynopt.Problem(_loss, _P64)
    for opt in (lambda h: optax.sgd(h), lambda h: optax.sgd(h, momentum=0.5)):
        flow = modified_flow(opt, 0.01, order=2, problem=problem32)
        v32 = flow.vector_field(0.0, flow.init(p32), problem32)
        v64 = flow.vector_field(0.0, flow.init(_P64), problem64)
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(v32))
        for a, b in zip(jax.tree.leaves(v32), jax.tree.leaves(v64)):
            # float32 rounding of O(1) fields: a few units of 2^-24 ~ 6e-8 per operation.
            assert float(jnp.max(jnp.abs(a.astype(jnp.float64) - b))) < 1e-6


def test_fields_of_a_nonlinear_learning_rate():
    r"""`optax.sgd(2h + h²)`: $d_1 = -2g$, $d_2 = -g$, $d_3 = 0$, so $f_1 = -2g$,
    $f_2 = -g - 2Hg$ and $f_3 = -\tfrac16(f_1''(f_1, f_1) + f_1'f_1'f_1) - \tfrac12(f_1'f_2 +
    f_2'f_1)$, from the Hessian and third derivative of the loss (dense, on the raveled
    pytree); to float64 rounding."""
    from jax.flatten_util import ravel_pytree

    problem = dynopt.Problem(_loss, _P64)
    flat, unravel = ravel_pytree(_P64)
    L = lambda x: _loss(unravel(x))
    g, H = jax.grad(L)(flat), jax.hessian(L)(flat)
    D3 = jax.jacfwd(jax.hessian(L))(flat)
    f1 = -2 * g
    f2 = -g - 2 * H @ g
    f2p_f1 = -H @ f1 - 2 * (jnp.einsum("ijk,j,k->i", D3, f1, g) + H @ H @ f1)
    f3 = (2 * jnp.einsum("ijk,j,k->i", D3, f1, f1) + 8 * H @ H @ g) / 6 - 0.5 * (
        -2 * H @ f2 + f2p_f1
    )
    flow = modified_flow(lambda h: optax.sgd(2 * h + h**2), 0.01, order=3)
    fields = flow.terms(_P64, problem).fields
    for got, want in zip(fields, (f1, f2, f3)):
        assert float(jnp.max(jnp.abs(ravel_pytree(got)[0] - want))) < 1e-14


def test_terms_at_a_counted_start_says_why():
    """The slow Adam flow (b_i = 1 - a_i h: bias corrections carried as products c = b^k) is
    singular at `init`'s state, k = 0 (1 - b^0 = 0). `terms` said so only as the generic
    "not differentiable there, e.g. a second moment at 0" (misleading); it names the start
    now, and is finite at a state of t > 0."""
    import pytest

    from dynopt._modified import ModifiedState
    from dynopt._modified.counters import CountedState

    problem = dynopt.Problem(_loss, _P64)
    flow = modified_flow(lambda h: optax.adam(h, b1=1 - 3 * h, b2=1 - 2 * h), 0.01, order=2)
    y0 = flow.init(_P64)
    with pytest.raises(ValueError, match=r"singular \(1 - b\*\*0 = 0\)"):
        flow.terms(y0, problem)
    later = CountedState(
        jax.tree.map(lambda x: x + 0.1, y0.state.state), (jnp.asarray(0.5), jnp.asarray(0.6))
    )
    terms = flow.terms(ModifiedState(_P64, later), problem)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(terms.fields))


def test_counted_init_without_x64():
    """With x64 off (a float32 model), `init` of a counted slow flow computed its products in
    float64: "float64 requested, truncated" warnings. Now JAX's default float."""
    import warnings

    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        problem = dynopt.Problem(
            lambda p: jnp.sum(jnp.log(jnp.cosh(p["w"] - 0.3))), {"w": jnp.ones(3, jnp.float32)}
        )
        opt = lambda h: optax.adam(h, b1=1 - 3 * h, b2=1 - 2 * h)
        flow = modified_flow(opt, 0.01, order=2, problem=problem)
        y0 = flow.init(problem.params0)
        assert all(c.dtype == jnp.float32 for c in y0.state.products)


def test_terms_of_a_mixed_float32_float64_tree():
    """`terms` on a float32/float64 parameter tree raised TypePromotionError (the fits' sums
    across leaves); each field keeps its leaf's dtype and heavy ball's regulariser is
    (1 + β)/(4(1 - β)²) = 1.5 at β = 0.5, to float32 rounding."""
    p0 = {"a": jnp.asarray([0.3, -0.2, 0.5], jnp.float32), "b": jnp.asarray([0.4, -0.1])}

    def loss(p):
        return jnp.sum(jnp.log(jnp.cosh(p["a"].astype(jnp.float64) - 1.0))) + 0.5 * jnp.sum(
            p["b"] ** 2 * (1 + p["a"][0].astype(jnp.float64) ** 2)
        )

    problem = dynopt.Problem(loss, p0)
    flow = modified_flow(lambda h: optax.sgd(h, momentum=0.5), 0.01, order=2, problem=problem)
    terms = flow.terms(p0, problem)
    assert {k: x.dtype for k, x in terms.fields[1].items()} == {
        "a": jnp.float32,
        "b": jnp.float64,
    }
    assert abs(float(terms.rate) - 2.0) < 1e-6
    assert abs(float(terms.regularizer) - 1.5) < 1e-6


def test_a_fast_state_of_float32_parameters_at_order_two():
    """Heavy ball's order-2 slow manifold sums tau^j M_j with the expansion's float64 tau: on
    float32 parameters (a float32 network) strict promotion refused it, and `compare(...,
    order=2)` with it. Its fields are float32 and equal the float64 ones to float32 rounding."""
    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), _P64)
    opt = lambda h: optax.sgd(h, momentum=0.5)
    fields = {}
    for name, params in (("32", p32), ("64", _P64)):
        problem = dynopt.Problem(_loss, params)
        flow = modified_flow(opt, 0.01, order=2, problem=problem)
        fields[name] = flow.terms(flow.init(problem.params0), problem).fields
        # The run's start on the order-2 manifold at h (a float64 step size) is float32 too.
        disc = flow.discretize(0.01)
        state = disc.init(problem.params0, problem)
        fields[name] = (*fields[name], *jax.tree.leaves(state))
    for f32, f64 in zip(fields["32"], fields["64"], strict=True):
        for a, b in zip(jax.tree.leaves(f32), jax.tree.leaves(f64), strict=True):
            if jnp.issubdtype(b.dtype, jnp.floating):
                assert a.dtype == jnp.float32
                assert float(jnp.max(jnp.abs(a.astype(jnp.float64) - b))) < 1e-5
