"""Minibatch sampling of finite sums: each scheme's exact covariance against Monte Carlo, and a
draw whose cost does not grow with the number of samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import dynopt
from dynopt import flows, problems, sde
from dynopt._problems.finite_sum import sample_indices


def _draws(n, b, replace, num):
    keys = jax.random.split(jax.random.key(0), num)
    draw = jax.jit(jax.vmap(lambda k: sample_indices(k, n, b, replace=replace)))
    return np.asarray(draw(keys))


# (n, B): Floyd's O(B^2) draw (B^2 <= 100 n) and, for B close to n, the permutation.
SIZES = [(10, 3), (128, 120)]


@pytest.mark.parametrize("n, b", SIZES)
def test_without_replacement_draws_a_uniform_subset(n, b):
    num = 20_000
    idx = _draws(n, b, False, num)
    assert idx.shape == (num, b) and idx.min() >= 0 and idx.max() < n
    srt = np.sort(idx, axis=1)
    assert np.all(srt[:, 1:] != srt[:, :-1])  # distinct within each minibatch
    # Each sample is in a minibatch with probability B/n: chi-square on the inclusion counts
    # (each count is Binomial(num, B/n); they sum to num * B, so n - 1 degrees of freedom,
    # with the (1 - B/n) variance factor of a fixed-size draw).
    counts = np.bincount(idx.ravel(), minlength=n)
    expected = num * b / n
    chi2 = np.sum((counts - expected) ** 2 / (expected * (1 - b / n)))
    assert chi2 < stats.chi2.ppf(0.9999, n - 1)


def _covariance_and_se(g):
    """The sample covariance of the rows of `g` and each entry's standard error (CLT: the
    standard deviation of the centred products over sqrt(num))."""
    d = g - g.mean(axis=0)
    prod = d[:, :, None] * d[:, None, :]
    return prod.mean(axis=0), prod.std(axis=0) / np.sqrt(g.shape[0])


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("n, b", SIZES)
def test_minibatch_covariance_factor_matches_monte_carlo(n, b, replace):
    """Cov of the minibatch gradient = c Sigma / B, c = (n-B)/(n-1) without replacement, 1 with:
    every entry within 4.5 CLT standard errors, and the other scheme's factor rejected."""
    p = problems.finite_sum(
        lambda w, s: 0.5 * (s[0] @ w - s[1]) ** 2 + 0.1 * jnp.sum(w**4),
        problems.linear_regression(n, 2, batch_size=1, noise=0.5, seed=1).data,
        jnp.zeros(2),
        batch_size=b,
        replace=replace,
    )
    theta = jnp.array([0.4, -0.3])
    keys = jax.random.split(jax.random.key(1), 20_000)
    g = np.asarray(jax.jit(jax.vmap(jax.grad(p.stochastic_loss), in_axes=(None, 0)))(theta, keys))
    cov, se = _covariance_and_se(g)
    model = sde.SGDNoise(0.1, b, replace=replace)
    exact = np.asarray(model.minibatch_covariance(theta, p))
    assert np.all(np.abs(cov - exact) < 4.5 * se)
    mean_se = np.sqrt(np.diag(exact) / g.shape[0])  # unbiased: the mean is the full gradient
    assert np.all(np.abs(g.mean(axis=0) - np.asarray(jax.grad(p.loss)(theta))) < 4.5 * mean_se)
    other = np.asarray(sde.SGDNoise(0.1, b, replace=not replace).minibatch_covariance(theta, p))
    assert np.abs(cov - other)[0, 0] > 10 * se[0, 0]


def test_with_replacement_a_batch_larger_than_the_data_is_well_defined():
    """B > n i.i.d. draws: Cov = Sigma / B (c = 1) against Monte Carlo, as for B <= n; without
    replacement the same B is refused by both the problem and the noise model, naming the fix."""
    n, b = 6, 15
    data = problems.linear_regression(n, 2, batch_size=1, noise=0.5, seed=1).data
    loss = lambda w, s: 0.5 * (s[0] @ w - s[1]) ** 2
    p = problems.finite_sum(loss, data, jnp.zeros(2), batch_size=b, replace=True)
    theta = jnp.array([0.4, -0.3])
    keys = jax.random.split(jax.random.key(2), 20_000)
    g = np.asarray(jax.jit(jax.vmap(jax.grad(p.stochastic_loss), in_axes=(None, 0)))(theta, keys))
    cov, se = _covariance_and_se(g)
    model = sde.SGDNoise(0.1, b, replace=True)
    assert float(model.finite_population_factor(p)) == 1.0
    exact = np.asarray(model.minibatch_covariance(theta, p))
    assert np.all(np.abs(cov - exact) < 4.5 * se)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, 6\].*replace=True"):
        problems.finite_sum(loss, data, jnp.zeros(2), batch_size=b)
    with pytest.raises(ValueError, match=r"\[1, 6\] \(n samples\) without replacement"):
        sde.SGDNoise(0.1, b).finite_population_factor(p)


def test_draw_does_not_touch_all_samples():
    """For B^2 <= 100 n the draw is Floyd's loop over B: no sort, no permutation of n."""
    jaxpr = str(jax.make_jaxpr(lambda k: sample_indices(k, 10_000, 32))(jax.random.key(0)))
    assert "= sort[" not in jaxpr
    # B close to n: the permutation is cheaper than B^2 compares, and taken.
    jaxpr = str(jax.make_jaxpr(lambda k: sample_indices(k, 128, 120))(jax.random.key(0)))
    assert "= sort[" in jaxpr


def test_sgd_problem_keeps_or_changes_the_scheme():
    p = problems.linear_regression(num_samples=20, dim=2, batch_size=4)
    assert sde.SGDNoise(0.1, 4).sgd_problem(p) is p
    q = sde.SGDNoise(0.1, 4, replace=True).sgd_problem(p)
    assert q is not p and q.stochastic_loss_fn.keywords["replace"] is True
    assert sde.SGDNoise(0.1, 4, replace=True).sgd_problem(q) is q
    back = sde.SGDNoise(0.1, 4).sgd_problem(q)
    assert back is not q and back.stochastic_loss_fn.keywords["replace"] is False


def test_shard_data_on_one_device_keeps_the_numbers():
    """`shard=True` on one process with one device: global arrays of the same values (the
    multi-device and multi-process cases: tests/test_networks.py, tests/test_multiprocess.py)."""
    whole = problems.linear_regression(16, 2, batch_size=4)
    sharded = problems.linear_regression(16, 2, batch_size=4, shard=True)
    assert sharded.data[0].sharding.spec == jax.sharding.PartitionSpec("data")
    for a, b in zip(whole.data, sharded.data):
        np.testing.assert_array_equal(a, b)
    local = problems.shard_data(whole.data, local=True)  # one process: its rows are all rows
    np.testing.assert_array_equal(local[1], whole.data[1])
    w = jnp.ones(2)
    assert float(sharded.loss(w)) == float(whole.loss(w))


def test_shard_data_refuses_bad_input():
    with pytest.raises(ValueError, match="data: every array must share one leading sample axis"):
        problems.shard_data((np.ones((4, 2)), np.ones(5)))
    with pytest.raises(ValueError, match="data: every array must share one leading sample axis"):
        problems.shard_data(np.ones(()))
    with pytest.raises(ValueError, match="mesh must have one axis"):
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
        problems.shard_data(np.ones((4, 2)), mesh)
    with pytest.raises(ValueError, match="shard must be True or False"):
        problems.logistic_regression(16, 2, shard="yes")


def test_batch_size_is_a_positive_integer_at_construction():
    """A NumPy integer is taken as the int it is (it became a traced leaf of the stochastic loss
    and failed inside `run`); a float, a bool, a JAX array or an empty data set is refused
    naming it."""
    import optax

    import dynopt

    x = jax.random.normal(jax.random.key(0), (100, 3))
    data = (x, x @ jnp.array([1.0, -2.0, 0.5]))

    def sample(w, s):
        return 0.5 * (s[0] @ w - s[1]) ** 2

    p = problems.finite_sum(sample, data, jnp.zeros(3), batch_size=np.int64(20))
    q = problems.finite_sum(sample, data, jnp.zeros(3), batch_size=20)
    key = jax.random.key(1)
    np.testing.assert_array_equal(
        dynopt.run(optax.sgd(0.05), p, 5, key=key).loss,
        dynopt.run(optax.sgd(0.05), q, 5, key=key).loss,
    )
    for bad in (2.5, 20.0, True, jnp.array(20)):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            problems.finite_sum(sample, data, jnp.zeros(3), batch_size=bad)
    with pytest.raises(ValueError, match="data must hold at least one sample"):
        problems.finite_sum(sample, (x[:0], x[:0, 0]), jnp.zeros(3), batch_size=1)


def _sample(w, s):
    return 0.5 * (s[0] @ w - s[1]) ** 2


def test_replace_must_be_a_bool():
    """`replace="no"` was read as `bool("no") = True` (sampling with replacement); only True and
    False (a NumPy bool too) are taken."""
    data = problems.linear_regression(10, 3, batch_size=1).data
    for bad in ("no", "False", 1, 0, None):
        with pytest.raises(ValueError, match="replace must be True or False"):
            problems.finite_sum(_sample, data, jnp.zeros(3), batch_size=4, replace=bad)
    with pytest.raises(ValueError, match="replace must be True or False"):
        sample_indices(jax.random.key(0), 10, 4, replace="no")
    for ok in (True, np.bool_(True), False, np.bool_(False)):
        p = problems.finite_sum(_sample, data, jnp.zeros(3), batch_size=4, replace=ok)
        assert p.stochastic_loss_fn.keywords["replace"] is bool(ok)


def test_full_batch_without_replacement_is_the_full_loss_with_no_draw():
    """B = n without replacement is the whole set: `arange(n)` with no permutation of n rows,
    and the stochastic loss and gradient equal the full ones exactly (any key)."""
    jaxpr = str(jax.make_jaxpr(lambda k: sample_indices(k, 128, 128))(jax.random.key(0)))
    assert "= sort[" not in jaxpr and "random_bits" not in jaxpr
    np.testing.assert_array_equal(sample_indices(jax.random.key(0), 128, 128), np.arange(128))
    p = problems.logistic_regression(300, 4, batch_size=300)
    w = jnp.linspace(-1.0, 1.0, 4)
    for seed in range(3):
        key = jax.random.key(seed)
        assert float(p.stochastic_loss(w, key)) == float(p.loss(w))
        np.testing.assert_array_equal(jax.grad(p.stochastic_loss)(w, key), jax.grad(p.loss)(w))
    # With replacement B = n is still a random draw.
    q = problems.finite_sum(_sample, p.data, jnp.zeros(4), batch_size=300, replace=True)
    assert float(q.stochastic_loss(w, jax.random.key(0))) != float(q.loss(w))


def test_bad_data_sizes_and_hyper_parameters_are_value_errors_naming_them():
    """A 0-d data leaf (IndexError), Python lists (AttributeError), a vector sample loss
    (silently averaged), float/str sizes (TypeErrors from JAX/NumPy), a NaN or infinite noise
    or l2 (accepted, a NaN loss): each a ValueError naming the argument."""
    x, y = jnp.ones((10, 3)), jnp.ones(10)
    with pytest.raises(ValueError, match=r"data must be a pytree of arrays .* data\[2\] of shape"):
        problems.finite_sum(
            lambda w, s: _sample(w, s) * s[2], (x, y, jnp.array(2.0)), jnp.zeros(3), batch_size=2
        )
    with pytest.raises(ValueError, match=r"data\[0\]\[0\]\[0\] of float.*jnp.asarray"):
        problems.finite_sum(_sample, ([[1.0, 2.0, 3.0]] * 4, [1.0, 2.0, 3.0, 4.0]), jnp.zeros(3),
                            batch_size=2)  # fmt: skip
    with pytest.raises(ValueError, match="data must be a pytree of arrays"):
        problems.finite_sum(_sample, (), jnp.zeros(3), batch_size=1)
    with pytest.raises(ValueError, match=r"sample_loss_fn must return a scalar, got shape \(3,\)"):
        problems.finite_sum(lambda w, s: (s[0] * w - s[1]) ** 2, (x, y), jnp.zeros(3), batch_size=2)
    # NumPy data is taken as it is.
    p = problems.finite_sum(_sample, (np.ones((10, 3)), np.ones(10)), jnp.zeros(3), batch_size=2)
    assert float(p.loss(jnp.zeros(3))) == 0.5
    for call, name in [
        (lambda: problems.linear_regression(50.0, 3), "num_samples"),
        (lambda: problems.linear_regression("50", 3), "num_samples"),
        (lambda: problems.linear_regression(50, 2.0), "dim"),
        (lambda: problems.logistic_regression(50, 0), "dim"),
        (lambda: problems.mlp_regression(100, 3, depth=2.5), "depth"),
        (lambda: problems.mlp_regression(100, 3, width=0), "width"),
    ]:
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            call()
    for bad in (float("nan"), float("inf"), -0.1):
        with pytest.raises(ValueError, match=r"noise must be >= 0 and finite"):
            problems.linear_regression(50, 3, noise=bad)
        with pytest.raises(ValueError, match=r"l2 must be >= 0 and finite"):
            problems.logistic_regression(50, 3, l2=bad)


def test_float32_data_at_float64_parameters():
    # solve integrates in float64 (copies of the float32 state): a float32 data set met float64
    # parameters inside the user's per-sample loss, a strict-promotion error (silently float64
    # under standard promotion). The data are widened to the parameters' precision: the same
    # numbers as the problem built from float64 copies of the data, and float32 runs unchanged.
    x = jax.random.normal(jax.random.key(0), (12, 2), jnp.float32)
    y = (x @ jnp.array([1.0, -2.0], jnp.float32)).astype(jnp.float32)
    labels = jnp.arange(12) % 2  # an integer leaf stays integer

    def sample_loss(w, sample):
        xi, yi, _ = sample
        return 0.5 * (xi @ w - yi) ** 2

    def problem(data, dtype):
        return problems.finite_sum(sample_loss, data, jnp.zeros(2, dtype), batch_size=4)

    narrow = problem((x, y, labels), jnp.float32)
    wide = problem((x.astype(jnp.float64), y.astype(jnp.float64), labels), jnp.float64)
    ts = jnp.array([0.5, 1.0])
    got = dynopt.solve(flows.GradientFlow(), narrow, ts)
    np.testing.assert_array_equal(got.params, dynopt.solve(flows.GradientFlow(), wide, ts).params)
    # A float32 run stays float32, with the float32 arithmetic of the data as given.
    run = dynopt.run(flows.GradientFlow().discretize(0.1), narrow, 3)
    assert run.params.dtype == jnp.float32 and run.loss.dtype == jnp.float32
    # The SDE's per-sample gradients at float64 parameters, as for the float64 data.
    noise = sde.SGDNoise(0.1, 4)
    w = jnp.array([0.3, 0.1])
    np.testing.assert_array_equal(
        noise.minibatch_covariance(w, narrow), noise.minibatch_covariance(w, wide)
    )


def test_numpy_data_under_a_users_trace():
    # A finite sum on NumPy data, its stochastic loss traced by the user (vmap over keys, jit):
    # the traced draw indexed the NumPy arrays (TracerArrayConversionError).
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 3)), rng.normal(size=10)
    p = problems.finite_sum(
        lambda w, s: 0.5 * (s[0] @ w - s[1]) ** 2, (x, y), jnp.zeros(3), batch_size=2
    )
    keys = jax.random.split(jax.random.key(0), 3)
    w = jnp.array([0.3, -0.1, 0.2])
    batched = jax.vmap(p.stochastic_loss, (None, 0))(w, keys)
    jitted = jax.jit(lambda w, k: p.stochastic_loss(w, k))(w, keys[1])
    one_by_one = jnp.stack([p.stochastic_loss(w, k) for k in keys])
    assert jnp.allclose(batched, one_by_one, rtol=1e-14, atol=0)
    assert jnp.allclose(jitted, one_by_one[1], rtol=1e-14, atol=0)


def test_a_sample_loss_of_the_wrong_arity_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="sample_loss_fn"):
        problems.finite_sum(
            lambda w, xi, yi: xi @ w - yi, (np.ones((4, 3)), np.ones(4)), jnp.zeros(3), batch_size=2
        )
