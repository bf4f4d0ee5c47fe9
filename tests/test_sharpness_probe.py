"""Second probe of `dynopt.sharpness`: settings the other tests do not use (low-rank indefinite
Hessians under Lanczos, preconditioned tracking from θ₀, ...), each against dense `eigh`."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import sharpness


# The dense references as one program each, not op by op (0.9 s of CPU a first call, 0.08 s).
_hessian = eqx.filter_jit(sharpness.dense_hessian)


def _low_rank(signs):
    """A loss on 60 parameters whose Hessian has rank len(signs), with the signs' inertia:
    Σ_i s_i φ(a_i·θ − ½), φ(z) = 3(z²/2 + z⁴/12) (not quadratic)."""
    n, r = 60, len(signs)
    a = jax.random.normal(jax.random.key(0), (r, n)) / np.sqrt(n)
    s = jnp.asarray(signs)

    def loss(p):
        z = a @ p - 0.5
        return 3.0 * jnp.sum(s * (0.5 * z**2 + z**4 / 12.0))

    return dynopt.Problem(loss, 0.3 * jax.random.normal(jax.random.key(1), (n,)))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_lanczos_on_a_low_rank_indefinite_hessian_is_dense_eighs(k):
    """Rank 4 in 60 dimensions, one positive and three negative eigenvalues (top 3.17, then
    zeros): the Krylov space closes after four products and matfree's Ritz vectors are
    round-off of norm 0.13-0.2, with values up to 290 (k = 1, depth 24). Their residual,
    not divided by that norm, passed the breakdown test (below |λ|/2), so the values came
    back silently. Now each depth gives dense eigh's top-k to 1e-10 (its values, tied zeros
    below the top: a relative 1e-10 of the top) and orthonormal vectors."""
    problem = _low_rank([1.0, -1.0, -1.0, -1.0])
    expect = np.linalg.eigvalsh(np.asarray(_hessian(problem.loss, problem.params0)))
    start = sharpness.random_start(jax.random.key(2), 60, k)
    for depth in (16, 24):
        found = sharpness.top_eigenpairs(
            problem.grad, problem.params0, start, max_iters=depth, method="lanczos"
        )
        np.testing.assert_allclose(found.values, expect[::-1][:k], rtol=0, atol=1e-10 * expect[-1])
        v = np.asarray(found.vectors)
        np.testing.assert_allclose(v.T @ v, np.eye(k), atol=1e-10)


def test_preconditioned_tracking_records_nan_at_theta0_and_the_optimizers_d_after():
    """Adam before its first update holds ν = 0, so D = ε: the preconditioned values at θ₀
    were the Hessian's divided by ε = 1e-8 (1.8e8 for a top eigenvalue of 1.8), recorded as
    the first observation. They are NaN now; from the first update on, each recorded value is
    dense eigh's of D^-1/2 H D^-1/2 with the D of Adam's bias-corrected ν replayed by hand
    (to 1e-8 relative: LOBPCG at tol 1e-12). A preconditioner of another optimizer's state
    is still refused at `init`, with or without `init_grad_fn`."""
    import optax
    from jax.flatten_util import ravel_pytree

    from dynopt import networks

    x, y = networks.gaussian_regression(32, 4, 1)
    model = networks.mlp(4, 1, width=6, depth=1, activation=jax.nn.swish, key=jax.random.key(0))
    problem = networks.network_problem(model, (x, y))
    b1, b2, eps, lr = 0.9, 0.99, 1e-8, 0.01
    precond = sharpness.adam_preconditioner(b2, eps)
    tx = sharpness.track_sharpness(
        optax.adam(lr, b1, b2, eps), 2, preconditioner=precond, init_grad_fn=problem.grad, tol=1e-12
    )
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam is not strict-clean
        traj = dynopt.run(tx, problem, 3, observe=sharpness.sharpness)
    got = np.asarray(traj.observations)
    assert np.all(np.isnan(got[0]))
    adam = optax.adam(lr, b1, b2, eps)
    state, w = adam.init(problem.params0), problem.params0
    for i in range(3):
        with jax.numpy_dtype_promotion("standard"):
            update, state = adam.update(problem.grad(w), state, w)
        w = optax.apply_updates(w, update)
        nu_hat = ravel_pytree(state[0].nu)[0] / (1 - b2 ** int(state[0].count))
        s = 1 / np.sqrt(np.sqrt(np.asarray(nu_hat)) + eps)
        hess = np.asarray(_hessian(problem.loss, w))
        expect = np.linalg.eigvalsh(s[:, None] * hess * s[None, :])[::-1][:2]
        np.testing.assert_allclose(got[i + 1], expect, rtol=1e-8)
    for grad_fn in (None, problem.grad):
        wrong = sharpness.track_sharpness(
            optax.sgd(0.1), 1, preconditioner=precond, init_grad_fn=grad_fn
        )
        with pytest.raises(ValueError, match="holds no second moment `nu`"):
            wrong.init(problem.params0)


def test_bad_arguments_are_refused_when_given_naming_them():
    """`track_sharpness` took a negative or zero `tol`, a Lanczos depth below k, a float seed
    and a non-callable preconditioner, and failed only later inside `run` (or with a
    TypeError); `random_start` took k = 0 (an empty block) and a negative size (an MLIR
    error); `top_eigenpairs` any `checked`; `dense_hessian` a non-scalar loss (a broadcasting
    TypeError). Each is now a ValueError naming the argument, when given."""
    import optax

    sgd = optax.sgd(0.1)
    bad_tracker = [
        (dict(tol=-1.0), "tol must be None or a positive"),
        (dict(tol=0.0), "tol must be None or a positive"),
        (dict(k=3, method="lanczos", max_iters=2), "max_iters .* at least k = 3"),
        (dict(seed=1.5), "seed must be an integer"),
        (dict(preconditioner=3), "preconditioner must be None or a function"),
    ]
    for kwargs, match in bad_tracker:
        with pytest.raises(ValueError, match=match):
            sharpness.track_sharpness(sgd, **kwargs)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        sharpness.random_start(key, 5, 0)
    with pytest.raises(ValueError, match="num_params must be a positive integer"):
        sharpness.random_start(key, -1, 1)
    problem = dynopt.Problem(lambda p: jnp.sum(jnp.cosh(p)), jnp.ones(5))
    start = sharpness.random_start(key, 5, 1)
    with pytest.raises(ValueError, match="checked must be True or False"):
        sharpness.top_eigenpairs(problem.grad, problem.params0, start, checked=1)
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar .* shape \(5,\)"):
        sharpness.dense_hessian(jnp.cosh, problem.params0)


def test_a_start_block_with_nan_is_said_to_be_non_finite():
    """A NaN start block (a warm start from a diverged solve) was refused as "linearly
    dependent columns" (the SVD of NaN); now as not finite."""
    problem = dynopt.Problem(lambda p: jnp.sum(jnp.cosh(p)), jnp.ones(12))
    start = sharpness.random_start(jax.random.key(0), 12, 1).at[3, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="start must be finite"):
        sharpness.top_eigenpairs(problem.grad, problem.params0, start)


def test_a_diverging_tracked_run_is_stopped_by_run_not_an_error():
    """GD at η = 3 on Σ cosh θ + θ⁴/2 diverges within a few steps: untracked, `run` stops it
    and says so (`diverged`); tracked, the eigen-solve at the first non-finite iterate raised
    "Hessian-vector product is not finite" from inside `run`, and a `vmap` over learning rates
    lost its stable lane too. Now the tracked run diverges as the untracked one (the same
    losses), with NaN recorded; the stable lane of the sweep is its own run's; and a loss
    whose gradient is finite but whose Hessian is not (|θ|^1.5 at θ = 0) is still the error."""
    import optax

    problem = dynopt.Problem(lambda p: jnp.sum(jnp.cosh(p)) + 0.5 * jnp.sum(p**4), jnp.ones(12))

    def tracked(lr):
        tx = sharpness.track_sharpness(optax.sgd(lr), 1, every=2)
        return dynopt.run(tx, problem, 12, every=4, observe=sharpness.sharpness)

    plain = dynopt.run(optax.sgd(3.0), problem, 12, every=4)
    assert plain.diverged
    got = tracked(3.0)
    assert got.diverged
    np.testing.assert_array_equal(got.loss, plain.loss)
    assert np.all(np.isnan(np.asarray(got.observations)))
    sweep = jax.vmap(lambda lr: tracked(lr).observations)(jnp.asarray([0.1, 3.0]))
    np.testing.assert_allclose(sweep[0], tracked(0.1).observations, rtol=1e-12)
    assert np.all(np.isnan(np.asarray(sweep[1])))
    kinked = dynopt.Problem(
        lambda p: jnp.sum(jnp.abs(p) ** 1.5) + jnp.sum(jnp.cosh(p)), jnp.zeros(12).at[0].set(1.0)
    )
    tx = sharpness.track_sharpness(optax.sgd(0.1), 1)
    with pytest.raises(Exception, match="Hessian-vector product is not finite"):
        dynopt.run(tx, kinked, 2, observe=sharpness.sharpness)


def test_a_capped_lobpcg_with_k_above_the_rank_does_not_warn_falsely():
    """k = 4 and 5 on a Hessian of rank 3: the extra values are 0 to rounding (5e-16, exact),
    but the cap's residual bound, taken relative to each |λ_j|, was 1.4 at k = 4 and warned
    that the eigenpairs were approximate. Relative to the largest |λ| (the spectrum's scale,
    as `eigh`'s own error) it is below `CAP_RESIDUAL`: the values are dense eigh's to 1e-12
    of λ₁, and nothing is said."""
    problem = _low_rank([1.0, 1.0, 1.0])
    expect = np.linalg.eigvalsh(np.asarray(_hessian(problem.loss, problem.params0)))
    for k in (4, 5):
        start = sharpness.random_start(jax.random.key(2), 60, k)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            found = sharpness.top_eigenpairs(problem.grad, problem.params0, start)
        assert int(found.iterations) == 100  # at the cap: the zeros never meet the tolerance
        np.testing.assert_allclose(found.values, expect[::-1][:k], rtol=0, atol=1e-12 * expect[-1])


def test_function_arguments_must_be_callable():
    """`top_eigenpairs(3, ...)`, `krylov_start(3, ...)`, `hvp_operator(3, ...)` and
    `dense_hessian(3, ...)` were Python's or JAX's TypeError ("'int' object is not callable",
    "Expected a callable value"); now a ValueError naming the argument."""
    x = jnp.ones(3)
    start = sharpness.random_start(jax.random.key(0), 3, 1)
    for call in (
        lambda: sharpness.top_eigenpairs(3, x, start),
        lambda: sharpness.krylov_start(3, x, start),
        lambda: sharpness.hvp_operator(3, x),
    ):
        with pytest.raises(ValueError, match="grad_fn must be a function"):
            call()
    with pytest.raises(ValueError, match="loss_fn must be a function"):
        sharpness.dense_hessian(3, x)


def test_hvp_operator_checks_diag():
    """`hvp_operator(grad_fn, params, diag)` took a diag of the wrong shape (or a negative one)
    without a word, failing only when applied (a broadcasting TypeError) or returning NaN
    (rsqrt of a negative entry); now top_eigenpairs' ValueError naming diag, at construction."""
    grad_fn = lambda x: jnp.array([2.0, 1.0, 0.5]) * x
    x = jnp.ones(3)
    with pytest.raises(ValueError, match="diag must be a pytree like params"):
        sharpness.hvp_operator(grad_fn, x, diag=jnp.ones(2))
    with pytest.raises(ValueError, match=r"diag .* must have positive, finite entries"):
        sharpness.hvp_operator(grad_fn, x, diag=-jnp.ones(3))
    op = sharpness.hvp_operator(grad_fn, x, diag=jnp.array([2.0, 1.0, 0.5]))
    np.testing.assert_allclose(op(jnp.eye(3)), jnp.eye(3), rtol=1e-15)  # D^-1/2 H D^-1/2 = I
