"""`adam_preconditioner` and `rmsprop_preconditioner` against the optimizer they describe: the
diagonal $D$ they read off a state is the one that optax's own update divides by (read back from
the update, every optax configuration that changes $D$); states of another optimizer are refused;
tracked inside `run`, the preconditioned sharpness is dense `eigh`'s of $D^{-1/2}HD^{-1/2}$."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from dynopt import networks, sharpness, transforms


LR, B1, DECAY, EPS = 0.1, 0.8, 0.7, 1e-2  # a large eps: its placement changes D by ~1e-2
PARAMS = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(4)}  # two leaves of different shapes


def _steps(tx, num=3):
    """`num` updates of `tx` on random gradients: the last gradient, update and state."""
    state = tx.init(PARAMS)
    for key in jax.random.split(jax.random.key(0), num):
        ka, kb = jax.random.split(key)
        grad = {"w": jax.random.normal(ka, (3, 2)), "b": jax.random.normal(kb, (4,))}
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam is not strict-clean
            update, state = tx.update(grad, state, PARAMS)
    return grad, update, state


def _adam_numerator(state, grad):
    # Adam's numerator: the bias-corrected first moment, read from the state it updated.
    del grad
    (inner,) = [
        s for s in jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "mu")) if hasattr(s, "mu")
    ]
    return jax.tree.map(lambda m: m / (1 - B1 ** float(inner.count)), inner.mu)


def _gradient(state, grad):
    del state
    return grad


ADAM = dict(b1=B1, b2=DECAY, eps=EPS)
# (optimizer, its preconditioner) by the numerator optax divides by D: Adam's first moment, or
# RMSprop's gradient itself.
ADAM_CASES = {
    "adam, eps_root": (
        optax.adam(LR, eps_root=1e-3, **ADAM),
        sharpness.adam_preconditioner(DECAY, EPS, eps_root=1e-3),
    ),
    "inject_hyperparams(adam)": (
        optax.inject_hyperparams(optax.adam)(LR, **ADAM),
        sharpness.adam_preconditioner(DECAY, EPS),
    ),
    "chain(clip, adam)": (
        optax.chain(optax.clip_by_global_norm(1e3), optax.adam(LR, **ADAM)),
        sharpness.adam_preconditioner(DECAY, EPS),
    ),
    "amsgrad": (optax.amsgrad(LR, **ADAM), sharpness.adam_preconditioner(DECAY, EPS)),
}
RMSPROP_CASES = {
    "rmsprop": (optax.rmsprop(LR, DECAY, EPS), sharpness.rmsprop_preconditioner(EPS)),
    "rmsprop, eps outside the root": (
        optax.rmsprop(LR, DECAY, EPS, eps_in_sqrt=False),
        sharpness.rmsprop_preconditioner(EPS, eps_in_sqrt=False),
    ),
    "rmsprop, eps outside the root, read as Adam's": (
        optax.rmsprop(LR, DECAY, EPS, eps_in_sqrt=False),
        sharpness.adam_preconditioner(DECAY, EPS, bias_correction=False),
    ),
    "rmsprop, bias-corrected": (
        optax.rmsprop(LR, DECAY, EPS, bias_correction=True),
        sharpness.rmsprop_preconditioner(EPS, decay=DECAY),
    ),
    "rmsprop, bias-corrected, eps outside, read as Adam's": (
        optax.rmsprop(LR, DECAY, EPS, eps_in_sqrt=False, bias_correction=True),
        sharpness.adam_preconditioner(DECAY, EPS),
    ),
    "rmsprop, centered": (
        optax.rmsprop(LR, DECAY, EPS, centered=True),
        sharpness.rmsprop_preconditioner(EPS),
    ),
    "rmsprop, centered, bias-corrected, eps outside": (
        optax.rmsprop(LR, DECAY, EPS, centered=True, bias_correction=True, eps_in_sqrt=False),
        sharpness.rmsprop_preconditioner(EPS, decay=DECAY, eps_in_sqrt=False),
    ),
    "dynopt's global rmsprop (a scalar D)": (
        transforms.global_rmsprop(LR, DECAY, EPS),
        sharpness.rmsprop_preconditioner(EPS),
    ),
}
CASES = {
    **{name: (*row, _adam_numerator) for name, row in ADAM_CASES.items()},
    **{name: (*row, _gradient) for name, row in RMSPROP_CASES.items()},
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_preconditioner_is_what_the_optimizer_divides_by(case):
    """After three updates (bias corrections still far from 1: 1 - 0.7^3 = 0.66), optax's own
    update is -η·(numerator)/D with the D the preconditioner reads, to rounding; with the
    correction, eps_root, centering or eps placement dropped, D was off (measured before the
    fix: eps_root 0.47%, eps placement 3.2%, bias correction 19%, centering 32%, AMSGrad's
    nu_max 52%; inject_hyperparams raised a KeyError, rmsprop read as Adam's a TypeError)."""
    tx, precond, numerator = CASES[case]
    grad, update, state = _steps(tx)
    d = precond(state)
    expect = jax.tree.map(lambda g, u: -LR * g / u, numerator(state, grad), update)
    if not isinstance(d, dict):  # global RMSprop: one scalar for every coordinate
        d = jax.tree.map(lambda x: jnp.full(x.shape, d), expect)
    np.testing.assert_allclose(ravel_pytree(d)[0], ravel_pytree(expect)[0], rtol=1e-13)


def test_a_state_of_another_optimizer_is_refused():
    """Each refusal names what to change: a preconditioner read off a state it does not describe
    gives another matrix's sharpness under its name (before: an Adam state read as RMSprop's, a
    centered RMSprop's as uncentered, a bias-corrected one uncorrected, all silently)."""
    state = {name: _steps(tx, 1)[2] for name, (tx, _, _) in CASES.items()}
    bad = [
        (sharpness.adam_preconditioner(), optax.sgd(LR).init(PARAMS), "no second moment `nu`"),
        (sharpness.adam_preconditioner(), state["rmsprop, centered"], "ScaleByRStdDevState"),
        (sharpness.adam_preconditioner(), state["rmsprop"], "bias_correction must be False"),
        (
            sharpness.adam_preconditioner(bias_correction=False),
            state["adam, eps_root"],
            "bias_correction must be True",
        ),
        (sharpness.rmsprop_preconditioner(), state["adam, eps_root"], "use adam_preconditioner"),
        (sharpness.rmsprop_preconditioner(), state["rmsprop, bias-corrected"], "decay must be"),
        (
            sharpness.adam_preconditioner(),
            optax.chain(optax.adam(LR), optax.adam(LR)).init(PARAMS),
            "2 second moments",
        ),
    ]
    for precond, opt_state, match in bad:
        with pytest.raises(ValueError, match=match):
            precond(opt_state)
    for make, kwargs, match in [
        (sharpness.adam_preconditioner, dict(b2=1.0), "b2 must be"),
        (sharpness.adam_preconditioner, dict(eps_root=-1.0), "eps_root must be"),
        (sharpness.adam_preconditioner, dict(bias_correction="yes"), "bias_correction must be"),
        (sharpness.rmsprop_preconditioner, dict(decay=1.5), "decay must be"),
        (sharpness.rmsprop_preconditioner, dict(eps=-1.0), "eps must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            make(**kwargs)


def test_tracked_preconditioned_sharpness_of_inject_hyperparams_adam_and_centered_rmsprop():
    """Inside `run` (every 2 steps, k = 2, two MLP leaves of each kind): the recorded values at
    the last iterate are dense eigh's top eigenvalues of D^{-1/2} H D^{-1/2} there, D read off
    the final state; `inject_hyperparams(adam)` (two `count`s in its state) used to raise a
    KeyError. A scalar D (global RMSprop) is D^{-1} H."""
    x, y = networks.gaussian_regression(16, 3, 1)
    model = networks.mlp(3, 1, width=6, depth=1, activation=jax.nn.swish, key=jax.random.key(0))
    problem = networks.network_problem(model, (x, y))
    k, steps = 2, 4
    cases = [
        (
            optax.inject_hyperparams(optax.adam)(1e-2, b2=DECAY),
            sharpness.adam_preconditioner(DECAY),
        ),
        (optax.rmsprop(1e-2, DECAY, centered=True), sharpness.rmsprop_preconditioner()),
        (transforms.global_rmsprop(1e-2, DECAY), sharpness.rmsprop_preconditioner()),
    ]
    for inner, precond in cases:
        tx = sharpness.track_sharpness(inner, k, every=2, preconditioner=precond, tol=1e-12)
        state = tx.init(problem.params0)
        params = problem.params0
        step = jax.jit(lambda g, s, p, tx=tx: tx.update(g, s, p, grad_fn=problem.grad))
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam is not strict-clean
            for _ in range(steps):
                update, state = step(problem.grad(params), state, params)
                params = optax.apply_updates(params, update)
        d = np.asarray(ravel_pytree(precond(state.inner))[0])
        s = 1 / np.sqrt(np.broadcast_to(d, (problem.num_params,)))
        hess = np.asarray(sharpness.dense_hessian(problem.loss, params))
        values = np.linalg.eigvalsh(s[:, None] * hess * s[None, :])[::-1][:k]
        got = np.asarray(sharpness.sharpness(params, state, problem))
        np.testing.assert_allclose(got, values, rtol=1e-8)
