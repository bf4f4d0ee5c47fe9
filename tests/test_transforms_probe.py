"""`dynopt.transforms` on settings a second probe used: construction inside a traced sweep,
float32 parameters with float64 traced hyper-parameters."""

import jax
import jax.numpy as jnp
import optax

from dynopt.transforms import modifying


def _loss(x):
    return jnp.sum(jnp.log(jnp.cosh(x - 1.0))) + 0.1 * jnp.sum(x) ** 2


def test_modifying_built_inside_jit():
    """`modifying(opt, step_size=h)` with a traced h (a sweep built inside `jit`/`vmap`): its
    slope probe ran on arrays of the outer trace and failed with a ConcretizationTypeError.
    The iterates equal GD on ∇L - (h/2)H∇L, one compile for two step sizes."""
    x0 = jnp.asarray([0.3, -0.2, 0.5])
    grad = jax.grad(_loss)
    traces = []

    def run(h):
        traces.append(h)
        tx = modifying(lambda h: optax.sgd(h), step_size=h)
        x, s = x0, tx.init(x0)
        for _ in range(3):
            u, s = tx.update(grad(x), s, x, grad_fn=grad, value_fn=_loss)
            x = x + u
        return x

    def by_hand(h):
        x = x0
        for _ in range(3):
            g = grad(x)
            x = x - h * (g - h / 2 * jax.jvp(grad, (x,), (g,))[1])
        return x

    f = jax.jit(run)
    hs = jnp.asarray([0.1, 0.2])
    # The reference compiled once, both step sizes (op by op it compiled ~100 programs).
    want = jax.jit(jax.vmap(by_hand))(hs)
    for h, w in zip(hs, want, strict=True):
        assert float(jnp.max(jnp.abs(f(h) - w))) < 1e-14
    assert len(traces) == 1
    swept = jax.vmap(run)(hs)
    assert float(jnp.max(jnp.abs(swept - want))) < 1e-14


def test_mu_dtype_must_be_floating():
    """An integer `mu_dtype` stored Adam's first moment truncated to integers (the updates of
    `adam(0.1, mu_dtype=jnp.int32)` were ±0.1 sign steps, silently), and a name that is no
    dtype raised numpy's TypeError: both a ValueError naming mu_dtype now. Floating dtypes, as
    a name or a type, still build and equal optax's iterates."""
    import pytest

    from dynopt.transforms import adam, adamw, scale_by_adam

    for bad in (jnp.int32, "int8", "bogus", bool):
        for make in (scale_by_adam, adam, adamw):
            args = () if make is scale_by_adam else (0.1,)
            with pytest.raises(ValueError, match=r"mu_dtype must be None .* or a floating dtype"):
                make(*args, mu_dtype=bad)
    x0 = jnp.asarray([0.3, -0.2, 0.5])
    for good in ("float32", jnp.bfloat16, jnp.float64):
        ours, theirs = scale_by_adam(mu_dtype=good), optax.scale_by_adam(mu_dtype=good)
        g = jax.grad(_loss)(x0)
        s1, s2 = ours.init(x0), theirs.init(x0)
        assert s1.mu.dtype == s2.mu.dtype == jnp.dtype(good)
        u1, _ = ours.update(g, s1, x0)
        with jax.numpy_dtype_promotion("standard"):  # optax's mixed-dtype moment update
            u2, _ = theirs.update(g, s2, x0)
        # |u| <= 1 (Adam's first step is g/(|g| + eps)): one rounding of the moment's dtype
        # apart (the hoisted correction), two units of its epsilon.
        assert float(jnp.max(jnp.abs(u1 - u2))) <= 2 * float(jnp.finfo(s1.mu.dtype).eps)


def test_preconditioner_must_be_callable():
    """`preconditioned_sgd(h, 3)` built and failed at the first update with "'int' object is
    not callable"; refused at construction now."""
    import pytest

    from dynopt.transforms import preconditioned_sgd, scale_by_preconditioner

    with pytest.raises(ValueError, match="precondition must be a callable"):
        preconditioned_sgd(0.1, 3)
    with pytest.raises(ValueError, match="precondition must be a callable"):
        scale_by_preconditioner(None)


def test_modifying_a_masked_weight_decay_on_the_users_problem():
    """A masked weight decay + sgd cannot step on the probe problem (one 3-vector), and the
    refusal told the user to pass `problem=`, which `modifying` did not take. It does now:
    the update is GD on F - (h/2)(∂F)F with F = ∇L + λ·mask·θ, exactly (one Hessian-vector
    product of F; float64 rounding)."""
    import dynopt

    def loss(p):
        return jnp.sum(jnp.log(jnp.cosh(p["a"] - 1.0))) + 0.5 * jnp.sum(p["b"] ** 2) * (
            1 + p["a"][0] ** 2
        )

    p0 = {"a": jnp.asarray([0.3, -0.2, 0.5]), "b": jnp.asarray([[0.4, -0.1]])}
    problem = dynopt.Problem(loss, p0)
    lam, h = 0.3, 0.1
    mask = {"a": True, "b": False}

    def opt(h):
        return optax.chain(optax.masked(optax.add_decayed_weights(lam), mask), optax.sgd(h))

    grad = jax.grad(loss)

    def field(p):
        return {"a": grad(p)["a"] + lam * p["a"], "b": grad(p)["b"]}

    tx = modifying(opt, step_size=h, problem=problem)
    u, _ = tx.update(grad(p0), tx.init(p0), p0, grad_fn=grad, value_fn=loss)
    f = field(p0)
    jf = jax.jvp(field, (p0,), (f,))[1]
    want = jax.tree.map(lambda a, b: -h * (a - h / 2 * b), f, jf)
    assert (
        max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(want))
        )
        < 1e-15
    )
    # Different slopes per group (sgd(h) and sgd(2h)) are no scalar slope: refused.
    import pytest

    multi = lambda h: optax.multi_transform(
        {"x": optax.sgd(h), "y": optax.sgd(2 * h)}, {"a": "x", "b": "y"}
    )
    with pytest.raises(ValueError, match="not affine in the gradient with a scalar slope"):
        modifying(multi, problem=problem)


def test_modified_flow_problem_must_be_a_problem():
    """`modified_flow(..., problem=3)` raised AttributeError ('int' has no params0)."""
    import pytest

    import dynopt

    with pytest.raises(ValueError, match="problem must be None or a dynopt problem"):
        dynopt.modified_flow(lambda h: optax.sgd(h), 0.01, problem=3)


def _mixed_loss(p):
    return jnp.sum(jnp.log(jnp.cosh(p["a"].astype(jnp.float64) - 1.0))) + 0.5 * jnp.sum(
        p["b"] ** 2 * (1 + p["a"][0].astype(jnp.float64) ** 2)
    )


_MIXED = {"a": jnp.asarray([0.3, -0.2, 0.5], jnp.float32), "b": jnp.asarray([0.4, -0.1])}


def test_mixed_float32_float64_tree():
    """A float32/float64 parameter tree under strict promotion: global_rmsprop, polyak_sgd,
    truncated_polyak_sgd and implicit_midpoint_momentum raised TypePromotionError (a norm or
    maximum summed across leaves of both dtypes). Each leaf keeps its dtype, and three steps
    equal the all-float64 run to float32 rounding (relative 2^-24 ~ 6e-8 per operation on
    O(1) values: 1e-6). implicit_midpoint_momentum's default tolerance is the float32 leaf's
    (16 float64 epsilons are out of its reach: every step ran max_iter = 100 iterations)."""
    from dynopt.transforms import (
        global_rmsprop,
        implicit_midpoint_momentum,
        polyak_sgd,
        truncated_polyak_sgd,
    )

    grad = jax.grad(_mixed_loss)
    wide = jax.tree.map(lambda x: x.astype(jnp.float64), _MIXED)
    for tx in (
        global_rmsprop(0.1),
        polyak_sgd(0.1),
        truncated_polyak_sgd(0.1, 1.0),
        implicit_midpoint_momentum(0.1, 0.5),
    ):
        out = []
        for p in (_MIXED, wide):
            s = tx.init(p)
            for _ in range(3):
                u, s = tx.update(grad(p), s, p, value=_mixed_loss(p), grad_fn=grad)
                p = optax.apply_updates(p, u)
            out.append((p, s))
        (p, s), (p64, _) = out
        assert {k: x.dtype for k, x in p.items()} == {"a": jnp.float32, "b": jnp.float64}
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(p64)):
            assert float(jnp.max(jnp.abs(a.astype(jnp.float64) - b))) < 1e-6
        if hasattr(s, "iterations"):
            assert int(s.iterations) < 100


def test_float64_array_hyperparameters_on_float32_parameters():
    """A sweep `vmap`-ped over float64 hyper-parameters (or NumPy float64 scalars) on float32
    parameters: adam's b1/b2 (optax's moment update), and the learning rate of adam, adamw and
    global_rmsprop, raised TypePromotionError under strict promotion; a Python float, weakly
    typed, did not. The iterates stay float32 and equal those with Python floats to float32
    rounding (the decays rounded once in float64 instead of float32: a few units of 2^-24 on
    O(1) iterates, 1e-5 after five steps)."""
    import numpy as np

    from dynopt.transforms import adam, adamw, global_rmsprop

    p0 = jnp.asarray([0.3, -1.2, 2.0], jnp.float32)

    def run(tx):
        s, x = tx.init(p0), p0
        for _ in range(5):
            u, s = tx.update(jnp.tanh(x), s, x)
            x = optax.apply_updates(x, u)
        return x

    makers = {
        "b1": lambda v: adam(0.1, b1=v),
        "b2": lambda v: adam(0.1, b2=v),
        "adam learning_rate": lambda v: adam(v),
        "adamw learning_rate": lambda v: adamw(v, weight_decay=0.1),
        "global_rmsprop learning_rate": lambda v: global_rmsprop(v),
    }
    for name, make in makers.items():
        value = {"b1": 0.8, "b2": 0.9}.get(name, 0.1)
        reference = run(make(value))
        swept = jax.vmap(lambda v, make=make: run(make(v)))(jnp.asarray([value, value]))
        scalar = run(make(np.float64(value)))
        assert swept.dtype == scalar.dtype == jnp.float32, name
        assert float(jnp.max(jnp.abs(swept - reference[None]))) < 1e-5, name
        assert float(jnp.max(jnp.abs(scalar - reference))) < 1e-5, name


def test_polyak_steps_without_the_loss():
    """The Polyak transforms read L - f_min: without `value=` they raised TypeError ("missing 1
    required keyword-only argument"); a ValueError saying what to pass now."""
    import pytest

    from dynopt.transforms import polyak_sgd, scale_by_truncated_polyak, truncated_polyak_sgd

    x0 = jnp.asarray([0.3, -0.2, 0.5])
    for tx in (polyak_sgd(0.1), truncated_polyak_sgd(0.1, 1.0), scale_by_truncated_polyak(1.0)):
        with pytest.raises(ValueError, match=r"update needs the loss, .*value=L"):
            tx.update(x0, tx.init(x0), x0)
        u, _ = tx.update(x0, tx.init(x0), x0, value=_loss(x0))
        assert bool(jnp.all(jnp.isfinite(u)))


def test_modifying_without_x64():
    """With x64 off (JAX's default: a float32 model), `modifying` requested float64 (a
    "truncated to float32" warning) and refused heavy ball as "not affine in the gradient":
    its slope probe, in float32, deviated by ~3e-7 from affine against a float64 bound of
    1e-9. Heavy ball's correction is then g - h(1+β)/(2(1-β)²)Hg, to float32 rounding (a few
    units of 2^-24 on O(1) updates: 1e-6)."""
    import warnings

    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        x0 = jnp.asarray([0.3, -0.2, 0.5], jnp.float32)
        grad = jax.grad(_loss)
        h, beta = 0.1, 0.5
        tx = modifying(lambda h: optax.sgd(h, momentum=beta), step_size=h)
        g = grad(x0)

        # One program (op by op: ~70), traced inside the warnings filter.
        @jax.jit
        def update_and_want(x0, g):
            u, _ = tx.update(g, tx.init(x0), x0, grad_fn=grad, value_fn=_loss)
            hg = jax.jvp(grad, (x0,), (g,))[1]
            return u, -h * (g - h * (1 + beta) / (2 * (1 - beta) ** 2) * hg)

        u, want = update_and_want(x0, g)
        assert u.dtype == jnp.float32
        assert float(jnp.max(jnp.abs(u - want))) < 1e-6
