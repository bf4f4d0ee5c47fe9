"""`modified_flow` on the optax a researcher writes beyond the core optimizers: muon's constant
Newton-Schulz coefficients kept in its state, the parameter-free and plateau-driven steps of
`optax.contrib` (refused, naming why), SAM's two modes."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import optax.contrib
import pytest

import dynopt
from dynopt._modified import modified_flow


def matrix_problem() -> dynopt.Problem:
    """A tanh layer, MSE plus a log-cosh penalty, on `{"W": (3, 2), "b": (2,)}`: one 2-D leaf
    (muon orthogonalises it) and one 1-D leaf (muon steps it with Adam)."""
    k = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(k[0], (8, 3))
    y = jnp.tanh(jax.random.normal(k[1], (8, 2)))

    def loss(p):
        pred = jnp.tanh(x @ p["W"] + p["b"][None, :])
        fit = 0.5 * jnp.mean(jnp.sum((pred - y) ** 2, axis=-1))
        return fit + 0.05 * jnp.sum(jnp.log(jnp.cosh(p["W"])))

    p0 = {"W": 0.7 * jax.random.normal(k[2], (3, 2)), "b": jnp.asarray([0.3, -0.2])}
    return dynopt.Problem(loss, p0, name="tanh layer")


def settled_update(optimizer, problem, h: float, steps: int):
    """`(params, update / h)` after `steps` optax steps from its own zero state at step `h`:
    the fast state settles (β^steps below rounding) while θ moves by O(steps·h)."""
    tx = optimizer(jnp.asarray(h))

    @jax.jit
    def step(carry, _):
        p, s = carry
        u, s = tx.update(problem.grad(p), s, p)
        return (optax.apply_updates(p, u), s), None

    with jax.numpy_dtype_promotion("standard"):  # optax's own arithmetic, as a user runs it
        p, s = jax.lax.scan(step, (problem.params0, tx.init(problem.params0)), length=steps)[0]
        u, _ = tx.update(problem.grad(p), s, p)
    return p, jax.tree.map(lambda x: x / h, u)


def muon(h):
    return optax.contrib.muon(h, ns_steps=2, beta=0.5, adam_b1=0.5, adam_b2=0.6, eps=0.3)


def test_muon_newton_schulz_coefficients_are_constants_not_state():
    """muon keeps its Newton-Schulz coefficients in its state, passed through every step: a
    hyper-parameter, not a state that never forgets (it was refused as one). Its order-1 field
    is optax's own update / h as h -> 0, and its runs fit order 1 against it."""
    problem = matrix_problem()
    flow = modified_flow(muon, 0.01, order=1, problem=problem)
    assert flow.spec.regime == "fast"
    # optax's update / h at h = 1e-7 after 120 steps (0.6^120 ~ 1e-27): f1 + O(h).
    p, fd = settled_update(muon, problem, 1e-7, 120)
    f1 = eqx.filter_jit(flow.field_values)(p, problem)[0]
    rel = optax.tree.norm(optax.tree.sub(f1, fd)) / optax.tree.norm(fd)
    assert rel < 1e-5, rel
    # The 2-D leaf's field is the orthogonalised gradient, not the gradient: a check that the
    # coefficients were read (zeros would give a zero or a plain-gradient field).
    g = problem.grad(p)["W"]
    cos = jnp.vdot(f1["W"], -g) / (jnp.linalg.norm(f1["W"]) * jnp.linalg.norm(g))
    assert 0.1 < cos < 0.999, cos
    # Tsit5, the automatic choice here (measured): named, compare compiles no Jacobian of the
    # field to choose it (as below).
    cmp = dynopt.compare(muon, problem, [0.02, 0.01, 0.005], 0.4, solver="tsit5")
    assert cmp.verdict == "asymptotic" and abs(cmp.order - 1) < 0.1, cmp


@pytest.mark.parametrize(
    "name, optimizer, leaf",
    [
        ("prodigy", lambda h: optax.contrib.prodigy(h), ".estim_lr"),
        ("dadapt_adamw", lambda h: optax.contrib.dadapt_adamw(h), ".estim_lr"),
        ("cocob", lambda h: optax.contrib.cocob(h), "[2].scale['W']"),
    ],
)
def test_a_step_length_set_by_a_running_maximum_is_refused_for_that(name, optimizer, leaf):
    """Parameter-free optimizers set their step length by their own estimate, a running
    maximum of a state leaf: refused naming it (prodigy was told 'not affine in each leaf
    (deviation nan)' and to try state='slow'; dadapt and cocob to write the learning rate as a
    function of h, which it already was)."""
    with pytest.raises(ValueError, match=rf"state leaf {re.escape(leaf)} is a running maximum"):
        modified_flow(optimizer, 0.01, problem=matrix_problem())


def test_sam_without_opaque_mode_is_a_cycle_and_opaque_mode_is_the_remedy():
    """optax.contrib.sam alternates adversarial and descent steps (steps_since_sync counts
    modulo 2): refused as a cycle, naming opaque_mode=True (it was told its `.cache` is never
    forgotten). The remedy builds: SAM's whole step with the ascent -ρ = -h/2 is the explicit
    midpoint rule, f₂ = 0 (d₂ = ½H∇L cancels ½f₁'f₁), second order against gradient flow."""
    problem = matrix_problem()
    cycle = r"steps_since_sync .* every N = 2 steps.*opaque_mode=True"
    with pytest.raises(ValueError, match=cycle):
        modified_flow(
            lambda h: optax.contrib.sam(optax.sgd(h), optax.sgd(-0.5 * h)), 0.01, problem=problem
        )

    def sam(h):
        return optax.contrib.sam(optax.sgd(h), optax.sgd(-0.5 * h), opaque_mode=True)

    flow = modified_flow(sam, 0.01, order=2, problem=problem)
    f1, f2 = eqx.filter_jit(flow.field_values)(flow.init(problem.params0), problem)
    g = problem.grad(problem.params0)
    assert optax.tree.norm(optax.tree.add(f1.params, g)) < 1e-14
    assert optax.tree.norm(f2.params) < 1e-14


def by_ndim(matrices, vectors):
    """Labels from the leaves' shapes, as a researcher writes them (any structure steps)."""
    return lambda p: jax.tree.map(lambda x: matrices if x.ndim == 2 else vectors, p)


def test_a_transform_acting_by_shape_is_checked_on_the_users_parameters():
    """Momentum on the matrices, sgd on the vectors, labels from the leaves' shapes: on dynopt's
    probe (one vector) the momentum group is empty, and the regime found there (slow, a state
    taken as near identity) made compare's errors flat at 0.073 (local orders -0.03, -0.02) on
    a tanh layer. Checked on the problem passed, the state is fast: f₁ is optax's update / h,
    and the runs fit order 1. A clipping of the matrices alone is a branch there, not on the
    probe."""
    problem = matrix_problem()

    def opt(h):
        return optax.multi_transform(
            {"m": optax.sgd(h, momentum=0.5), "s": optax.sgd(h)}, by_ndim("m", "s")
        )

    flow = modified_flow(opt, 0.01, problem=problem)
    assert flow.spec.regime == "fast"
    p, fd = settled_update(opt, problem, 1e-7, 120)
    f1 = eqx.filter_jit(flow.field_values)(p, problem)[0]
    g = problem.grad(p)
    assert optax.tree.norm(optax.tree.sub(f1, fd)) / optax.tree.norm(fd) < 1e-5
    assert float(jnp.max(jnp.abs(f1["W"] + 2.0 * g["W"]))) < 1e-12  # -g/(1 - β)
    cmp = dynopt.compare(opt, problem, [0.02, 0.01, 0.005], 0.4, solver="tsit5")
    assert cmp.verdict == "asymptotic" and abs(cmp.order - 1) < 0.1, cmp

    def clipped(h):
        clip = optax.masked(optax.clip_by_global_norm(0.01), by_ndim(True, False))
        return optax.chain(clip, optax.sgd(h))

    assert modified_flow(clipped, 0.01, problem=problem).spec.branches


def test_reduce_on_plateau_is_refused_for_its_events():
    """reduce_on_plateau was told 'rounding (floor, round, argmax) or a branch inside a loop
    ... replace round(x) -> x'; its cause is a cut of the scale chosen by the loss history."""
    with pytest.raises(ValueError, match=r"reduce_on_plateau cuts its scale.*optax.sgd\(s \* h\)"):
        modified_flow(
            lambda h: optax.chain(optax.sgd(h), optax.contrib.reduce_on_plateau()),
            0.01,
            problem=matrix_problem(),
        )
