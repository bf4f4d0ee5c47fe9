"""dynopt.transforms as optax citizens: Adam/AdamW against `optax.adam`/`optax.adamw` with every
argument optax takes (eps_root, mu_dtype, nesterov, a weight-decay mask, schedules) on a pytree
of several leaves; dtypes kept (float32, bfloat16), empty trees, traced hyper-parameters
(`inject_hyperparams`, a vmapped sweep) and bad hyper-parameters refused at construction and
inside `jit`."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynopt import transforms

from .helpers import tree_max_abs_diff


def _params(dtype=jnp.float64):
    k1, k2 = jax.random.split(jax.random.key(0))
    return {
        "w": jax.random.normal(k1, (2, 4), dtype),
        "b": jax.random.normal(k2, (3,), dtype),
        "s": jnp.asarray(0.3, dtype),
    }


def _loss(params):
    # Smooth and non-convex, a different curvature per leaf.
    return sum(jnp.sum(jnp.cos(x) * x**2 + 0.1 * x**4) for x in jax.tree.leaves(params))


def _run(tx, params, num_steps, **extra):
    def step(carry, _):
        p, state = carry
        updates, state = tx.update(jax.grad(_loss)(p), state, p, **extra)
        return (optax.apply_updates(p, updates), state), None

    (params, state), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), length=num_steps))(
        params
    )
    return params, state


def _optax(factory, *args, **kwargs):
    """optax's transform, run under standard promotion (its Adam is not strict-promotion clean)."""
    tx = factory(*args, **kwargs)

    def init(params):
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    def update(updates, state, params=None, **extra):
        with jax.numpy_dtype_promotion("standard"):
            return tx.update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(init, update)


_MASK = {"w": True, "b": False, "s": True}
_ADAM_OPTIONS = [
    {},
    {"eps_root": 1e-6},
    {"nesterov": True},
    {"mu_dtype": jnp.float32},
    {"b1": 0.8, "b2": 0.95, "eps": 1e-4, "eps_root": 1e-3, "nesterov": True},
]


@pytest.mark.parametrize("options", _ADAM_OPTIONS, ids=lambda o: "-".join(o) or "default")
def test_adam_and_adamw_equal_optax(options):
    """300 steps in float64 on three leaves of different shapes: the iterates agree with optax's
    to 1e-12 (the hoisted corrections are one rounding apart; the step is 1e-2 and the run stays
    in a contracting region, so roundings are not amplified)."""
    params = _params()
    ours, ours_state = _run(transforms.adam(1e-2, **options), params, 300)
    ref, ref_state = _run(_optax(optax.adam, 1e-2, **options), params, 300)
    assert tree_max_abs_diff(ours, ref) < 1e-12
    assert jax.tree.structure(ours_state) == jax.tree.structure(ref_state)
    assert jax.tree.map(jnp.result_type, ours_state) == jax.tree.map(jnp.result_type, ref_state)
    for mask in (_MASK, lambda p: _MASK):
        ours = _run(transforms.adamw(1e-2, weight_decay=0.1, mask=mask, **options), params, 300)[0]
        ref = _run(_optax(optax.adamw, 1e-2, weight_decay=0.1, mask=mask, **options), params, 300)
        assert tree_max_abs_diff(ours, ref[0]) < 1e-12


def test_adam_signatures_and_schedules_are_optax():
    """Positional arguments mean what they mean in optax (adamw's 5th is eps_root, not
    weight_decay), and schedules work for the learning rate and the weight decay."""
    for ours, theirs in ((transforms.adam, optax.adam), (transforms.adamw, optax.adamw)):
        names = list(inspect.signature(ours).parameters)
        assert names == list(inspect.signature(theirs).parameters)
    params = _params()
    args = (1e-2, 0.9, 0.99, 1e-8, 1e-6, None, 0.05)
    ours = _run(transforms.adamw(*args), params, 100)[0]
    assert tree_max_abs_diff(ours, _run(_optax(optax.adamw, *args), params, 100)[0]) < 1e-12
    lr = optax.cosine_decay_schedule(1e-2, 150)
    wd = optax.polynomial_schedule(0.1, 0.0, 2, 150)
    with jax.numpy_dtype_promotion("standard"):  # optax's schedules are not strict-clean
        ours = _run(transforms.adamw(lr, weight_decay=wd, mask=_MASK), params, 200)[0]
        ref = _run(_optax(optax.adamw, lr, weight_decay=wd, mask=_MASK), params, 200)[0]
    assert tree_max_abs_diff(ours, ref) < 1e-12


_EXTRA = {"value_fn": _loss, "grad_fn": jax.grad(_loss)}


def _all_transforms(mask=_MASK):
    return {
        "adam": transforms.adam(1e-2, nesterov=True, eps_root=1e-8),
        "adam_mu_f32": transforms.adam(1e-2, mu_dtype=jnp.float32),
        "adamw": transforms.adamw(1e-2, weight_decay=0.1, mask=mask),
        "global_rmsprop": transforms.global_rmsprop(1e-2),
        "nesterov": transforms.nesterov_momentum(1e-2, 0.9),
        "nesterov_theta": transforms.nesterov_momentum(1e-2, 0.9, 0.5, reparametrize=False),
        "nag": transforms.nag(1e-2),
        "implicit_midpoint": transforms.implicit_midpoint_momentum(1e-2, 0.9),
        "polyak": transforms.polyak_sgd(1e-2),
        "truncated_polyak": transforms.truncated_polyak_sgd(1e-2, 10.0),
        "usam": transforms.usam(1e-2, 0.05),
        "modifying": transforms.modifying(lambda h: optax.sgd(h), step_size=1e-2),
    }


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_dtypes_kept(dtype):
    """Low-precision parameters: updates in their dtype, every floating state leaf in the dtype
    it was initialised with (mu_dtype=float32 keeps a float32 moment for bfloat16 weights, as
    optax does), under strict promotion."""
    params = _params(dtype)
    for name, tx in _all_transforms().items():
        state0 = tx.init(params)
        value = _loss(params)
        out, state = _run(tx, params, 3, value=value, **_EXTRA)
        assert jax.tree.map(jnp.result_type, out) == jax.tree.map(jnp.result_type, params), name
        assert jax.tree.map(jnp.result_type, state) == jax.tree.map(jnp.result_type, state0), name
        assert all(np.all(np.isfinite(np.asarray(x, np.float64))) for x in jax.tree.leaves(out))
    state = transforms.adam(1e-2, mu_dtype=jnp.float32).init(params)[0]
    assert {x.dtype for x in jax.tree.leaves(state.mu)} == {jnp.dtype(jnp.float32)}


def test_empty_tree():
    """`init`/`update` on an empty pytree give empty updates (as optax's transforms do)."""
    for tx in (transforms.global_rmsprop(0.1), transforms.polyak_sgd(0.1)):
        assert tx.update({}, tx.init({}), {}, value=jnp.zeros(()))[0] == {}
    for name, tx in _all_transforms(mask=None).items():
        extra = {"value_fn": lambda p: jnp.zeros(()), "grad_fn": lambda p: p}
        updates, _ = tx.update({}, tx.init({}), {}, value=jnp.zeros(()), **extra)
        assert updates == {}, name


def test_traced_hyperparameters_take_effect():
    """inject_hyperparams: Adam's b1 and eps_root changed in the state between steps take
    effect, and equal optax's injected Adam."""
    params = _params()
    g = jax.grad(_loss)(params)
    g2 = jax.grad(_loss)(jax.tree.map(lambda x: 0.5 - x, params))
    ours = optax.inject_hyperparams(transforms.adam)(learning_rate=1e-2, b1=0.9, eps_root=0.0)
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2, b1=0.9, eps_root=0.0)

    def two_steps(tx):
        @jax.jit
        def run(tx_state, b1, eps_root):
            tx_state = optax.tree.set(tx_state, b1=b1, eps_root=eps_root)
            with jax.numpy_dtype_promotion("standard"):  # optax's injected Adam
                _, tx_state = tx.update(g, tx_state, params)
                return tx.update(g2, tx_state, params)[0]

        return lambda b1, eps_root: run(tx.init(params), b1, eps_root)

    ours_run, ref_run = two_steps(ours), two_steps(ref)
    for b1, eps_root in ((0.9, 0.0), (0.5, 1e-3)):
        assert tree_max_abs_diff(ours_run(b1, eps_root), ref_run(b1, eps_root)) < 1e-15
    assert tree_max_abs_diff(ours_run(0.9, 0.0), ours_run(0.5, 0.0)) > 1e-4  # b1 took effect


def test_float64_sweep_over_float32_parameters():
    """A vmapped sweep of float64 learning rates over float32 parameters keeps float32 (strict
    promotion), and twice the learning rate gives twice the step (usam)."""
    p32 = _params(jnp.float32)

    def usam_step(lr, rho):
        tx = transforms.usam(lr, rho)
        return tx.update(jax.grad(_loss)(p32), tx.init(p32), p32, grad_fn=jax.grad(_loss))[0]

    lrs = jnp.asarray([1e-2, 2e-2])
    out = jax.jit(jax.vmap(usam_step, in_axes=(0, None)))(lrs, jnp.asarray(0.05))
    assert {x.dtype for x in jax.tree.leaves(out)} == {jnp.dtype(jnp.float32)}
    one = usam_step(1e-2, 0.05)
    second = jax.tree.map(lambda x: x[1], out)  # twice the learning rate: twice the step
    assert tree_max_abs_diff(second, jax.tree.map(lambda x: 2 * x, one)) < 1e-7


_implicit = transforms.implicit_midpoint_momentum
_BAD = [
    ("learning_rate must be >= 0", lambda v: transforms.adam(v), -1e-3),
    ("b1 must be in \\[0, 1\\)", lambda v: transforms.adam(1e-3, b1=v), 1.0),
    ("b2 must be in \\[0, 1\\)", lambda v: transforms.adamw(1e-3, b2=v), -0.1),
    ("eps must be >= 0", lambda v: transforms.adam(1e-3, eps=v), -1e-8),
    ("eps_root must be >= 0", lambda v: transforms.adam(1e-3, eps_root=v), -1e-8),
    ("weight_decay must be >= 0", lambda v: transforms.adamw(1e-3, weight_decay=v), -1e-4),
    ("decay must be in \\[0, 1\\)", lambda v: transforms.global_rmsprop(1e-3, decay=v), 1.0),
    ("eps must be >= 0", lambda v: transforms.global_rmsprop(1e-3, eps=v), -1.0),
    ("momentum must be in \\[0, 1\\]", lambda v: transforms.nesterov_momentum(1e-3, v), 1.5),
    ("lookahead must be >= 0", lambda v: transforms.nesterov_momentum(1e-3, 0.9, v), -0.5),
    ("learning_rate must be >= 0", lambda v: transforms.nag(v), -1e-3),
    ("r must be > 0", lambda v: transforms.nag(1e-3, v), -1.0),
    ("momentum must be in \\[0, 1\\]", lambda v: _implicit(0.1, v), 1.5),
    ("learning_rate must be >= 0", lambda v: transforms.polyak_sgd(v), -1e-3),
    ("max_learning_rate must be > 0", lambda v: transforms.polyak_sgd(1e-3, 0.0, v), 0.0),
    ("max_scale must be > 0", lambda v: transforms.truncated_polyak_sgd(1e-3, v), 0.0),
    ("rho must be >= 0", lambda v: transforms.usam(1e-3, v), -0.1),
    ("learning_rate must be >= 0", lambda v: transforms.usam(v, 0.1), -1e-3),
]


@pytest.mark.parametrize(("match", "make", "bad"), _BAD, ids=[b[0].split()[0] for b in _BAD])
def test_bad_hyperparameters(match, make, bad):
    """Refused by name with the valid range: at construction (the bad value and NaN) and, for a
    traced value, when the compiled program runs (`eqx.error_if`)."""
    for value in (bad, float("nan")):
        with pytest.raises(ValueError, match=match):
            make(value)
    params = {"a": jnp.ones(2), "b": jnp.full((2, 2), 0.5)}

    def two_steps(v):
        tx = make(v)
        state = tx.init(params)
        u, state = tx.update(params, state, params, value=jnp.ones(()), **_EXTRA)
        return tx.update(u, state, params, value=jnp.ones(()), **_EXTRA)[0]

    with pytest.raises(Exception, match=match):
        jax.block_until_ready(jax.jit(two_steps)(jnp.asarray(bad)))


def test_other_bad_input():
    with pytest.raises(ValueError, match="step_size must be > 0"):
        transforms.modifying(lambda h: optax.sgd(h), step_size=-0.1)
    with pytest.raises(ValueError, match="tol must be > 0"):
        transforms.implicit_midpoint_momentum(1e-3, 0.9, tol=0.0)
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        transforms.implicit_midpoint_momentum(1e-3, 0.9, max_iter=0)
    with pytest.raises(ValueError, match="learning_rate must be"):
        transforms.nesterov_momentum(optax.constant_schedule(1e-3), 0.9)  # no schedules here
    tx = transforms.usam(0.1, 0.1)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)), None, grad_fn=lambda p: p)


def test_adam_with_a_narrower_first_moment_divides_as_optax():
    """`mu_dtype=float32` on float64 parameters: optax divides the float32 first moment by the
    float64 denominator in float64; the denominator was cast to float32 first (each update
    4.8e-9 off optax's, relative). Now one update is optax's to 1e-15."""
    params = {"s": jnp.asarray(0.3), "w": jnp.linspace(-1.0, 1.0, 5)}
    grads = {"s": jnp.asarray(0.123456789), "w": jnp.linspace(0.1, 0.9, 5)}
    ours, theirs = (
        transforms.adam(1e-2, mu_dtype=jnp.float32),
        optax.adam(1e-2, mu_dtype=jnp.float32),
    )
    with jax.numpy_dtype_promotion("standard"):
        got = ours.update(grads, ours.init(params), params)[0]
        want = theirs.update(grads, theirs.init(params), params)[0]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.dtype == b.dtype == jnp.float64
        assert jnp.max(jnp.abs(a - b) / jnp.abs(b)) < 1e-15
