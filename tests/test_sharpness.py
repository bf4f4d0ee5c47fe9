"""Top-k Hessian eigenpairs from HVPs (LOBPCG) against dense eigh; warm-started tracking inside
`run`; the edge of stability on a small network; bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import networks, sharpness


@pytest.fixture(scope="module")
def net():
    x, y = networks.gaussian_regression(32, 4, 1)
    model = networks.mlp(4, 1, width=12, depth=2, activation=jax.nn.swish, key=jax.random.key(0))
    return networks.network_problem(model, (x, y))


K, TOL = 2, 1e-12  # one k and one LOBPCG setting throughout: top_eigenpairs compiles once
_hessian = eqx.filter_jit(sharpness.dense_hessian)


def _dense_eigh(problem, params, diag=None):
    hess = np.asarray(_hessian(problem.loss, params))
    if diag is not None:
        s = 1.0 / np.sqrt(np.asarray(jax.flatten_util.ravel_pytree(diag)[0]))
        hess = s[:, None] * hess * s[None, :]
    return np.linalg.eigh(hess)


def _assert_top_eigenpairs(problem, start, diag, atol):
    """`top_eigenpairs` from `start` against dense eigh at `problem.params0`: values to `atol`,
    vectors up to sign (the top eigenvalues are simple in these tests)."""
    k = start.shape[1]
    got = sharpness.top_eigenpairs(problem.grad, problem.params0, start, diag=diag, tol=TOL)
    values, vectors = _dense_eigh(problem, problem.params0, diag)
    np.testing.assert_allclose(got.values, values[::-1][:k], rtol=0, atol=atol)
    overlap = np.abs(np.sum(np.asarray(got.vectors) * vectors[:, ::-1][:, :k], axis=0))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-8)


def test_top_eigenpairs_match_dense_eigh(net):
    start = sharpness.random_start(jax.random.key(1), net.num_params, K)
    diag = jax.tree.map(lambda x: 0.5 + jnp.abs(x), net.params0)  # a positive preconditioner
    for d in (None, diag):
        _assert_top_eigenpairs(net, start, d, atol=1e-8)


def test_tracking_inside_run_records_the_saved_iterates_eigenvalues(net):
    """Saved every 3 steps, tracked every 2 (one compiled run): the tracked saved iterates
    (θ₀ and steps 6, 12) record dense eigh's values; the others (steps 3, 9) record NaN, not
    the values of an earlier iterate."""
    tx = sharpness.track_sharpness(optax.sgd(0.3), K, every=2, init_grad_fn=net.grad, tol=TOL)
    traj = dynopt.run(tx, net, 12, every=3, observe=sharpness.sharpness)
    assert traj.observations.shape == (5, K)
    for i in (0, 2, 4):
        w = jax.tree.map(lambda x, i=i: x[i], traj.params)
        values, _ = _dense_eigh(net, w)
        np.testing.assert_allclose(traj.observations[i], values[::-1][:K], atol=1e-8)
    assert np.all(np.isnan(np.asarray(traj.observations)[1::2]))


def test_a_cheap_tracker_starts_converged(net):
    """`max_iters=2` (a warm step's budget) does not cap the cold start at θ₀: `init_iters`
    (default max(max_iters, 100)) does, so the first recorded eigenvalues are dense eigh's;
    with `init_iters=2` they are not (the test can fail), and the cap is said."""
    values, _ = _dense_eigh(net, net.params0)

    def first(**kw):
        tx = sharpness.track_sharpness(
            optax.sgd(0.3), K, init_grad_fn=net.grad, max_iters=2, tol=TOL, **kw
        )
        return np.asarray(sharpness.sharpness(net.params0, tx.init(net.params0), net))

    np.testing.assert_allclose(first(), values[::-1][:K], atol=1e-8)
    with pytest.warns(RuntimeWarning, match="stopped at its cap max_iters=2"):
        assert np.max(np.abs(first(init_iters=2) - values[::-1][:K])) > 1e-6
    with pytest.raises(ValueError, match="init_iters"):
        sharpness.track_sharpness(optax.sgd(0.1), K, init_iters=0)


def test_edge_of_stability_on_a_small_network(net):
    """GD (η = 0.3) sharpens until ηλ_max = 2, then hovers there (median after onset within
    10%), while a smaller step (η = 0.03, far from its threshold) keeps sharpening."""
    eta = 0.3
    traj = dynopt.run(optax.sgd(eta), net, 600, every=10)
    top = jax.jit(jax.vmap(lambda w: jnp.linalg.eigvalsh(sharpness.dense_hessian(net.loss, w))[-1]))
    ratio = np.asarray(top(traj.params)) * eta / 2
    assert ratio[0] < 0.25  # starts far below the threshold
    onset = int(np.argmax(ratio >= 1.0))
    assert 0 < onset < len(ratio) - 15, ratio
    after = ratio[onset:]
    assert 0.9 < np.median(after) < 1.1, after
    # The last 100 steps: the sharpness of single iterates oscillates with GD, its median sits
    # at the threshold; never runs away (GD at the edge, not diverging) nor drops back.
    assert abs(np.median(after[-10:]) - 1.0) < 0.05, after[-10:]
    assert 0.6 < np.min(after) and np.max(after) < 1.35, after
    loss = np.asarray(traj.loss)
    assert loss[-1] < 0.2 * loss[0] and np.any(np.diff(loss[onset:]) > 0)  # falls, not monotone


def test_block_products_run_one_column_at_a_time_on_a_cpu(net):
    """LOBPCG's block products (`hvp_operator`) are each column's linearized product, the
    numbers of a vmap over the columns to rounding; on a CPU backend one `lax.map` loop over
    the columns (a `scan`), not one batch (XLA:CPU ran the batch slower: LOBPCG took 1.4× as
    long on the anchor MLP)."""
    from dynopt._sharpness import hvp_column

    block = sharpness.random_start(jax.random.key(2), net.num_params, 3)
    op = sharpness.hvp_operator(net.grad, net.params0)
    batched = jax.vmap(hvp_column(net.grad, net.params0), in_axes=1, out_axes=1)
    got, want = np.asarray(jax.jit(op)(block)), np.asarray(jax.jit(batched)(block))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * np.max(np.abs(want)))
    primitives = {eqn.primitive.name for eqn in jax.make_jaxpr(op)(block).jaxpr.eqns}
    assert ("scan" in primitives) == (jax.default_backend() == "cpu")


def test_bad_input(net):
    with pytest.raises(ValueError, match="k must be in"):
        sharpness.track_sharpness(optax.sgd(0.1), net.num_params + 1).init(net.params0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        sharpness.track_sharpness(optax.sgd(0.1), 0)
    bad = jax.tree.map(lambda x: x * jnp.nan, net.params0)
    start = sharpness.random_start(jax.random.key(0), net.num_params, K)
    with pytest.raises(Exception, match="Hessian-vector product is not finite"):
        sharpness.top_eigenpairs(net.grad, bad, start, tol=TOL)
    # unchecked (no host callback, so the persistent cache can store the program): NaN out
    quiet = sharpness.top_eigenpairs(net.grad, bad, start, tol=TOL, checked=False)
    assert np.all(np.isnan(np.asarray(quiet.values)))
    good = sharpness.top_eigenpairs(net.grad, net.params0, start, tol=TOL, checked=False)
    ref = sharpness.top_eigenpairs(net.grad, net.params0, start, tol=TOL)
    np.testing.assert_array_equal(np.asarray(good.values), np.asarray(ref.values))
    with pytest.raises(ValueError, match="exactly one SharpnessState"):
        sharpness.sharpness(net.params0, optax.sgd(0.1).init(net.params0), net)


def _small():
    """Six parameters in a dict, non-quadratic: too few for LOBPCG at k >= 2 (5k >= n)."""

    def loss(p):
        return 0.5 * (jnp.sum(p["a"] * p["b"]) - 1.0) ** 2 + jnp.sum(jnp.cos(p["a"]))

    params = {"a": jnp.asarray([1.5, 0.1, 0.2]), "b": jnp.asarray([0.05, 0.3, -0.2])}
    return dynopt.Problem(loss, params)


@pytest.mark.parametrize("k", [1, 2, 6])
def test_a_model_too_small_for_lobpcg_takes_the_exact_dense_route(k):
    """k = 1 runs LOBPCG (5 < 6); k = 2 and k = n = 6 form the matrix from n products and
    `eigh` it: the eigenpairs are dense eigh's to rounding, with and without a preconditioner,
    and `track_sharpness` records them inside `run`."""
    problem = _small()
    start = sharpness.random_start(jax.random.key(1), 6, k)
    diag = {"a": jnp.asarray([0.5, 2.0, 1.0]), "b": jnp.asarray([1.5, 0.7, 3.0])}
    for d in (None, diag):
        _assert_top_eigenpairs(problem, start, d, atol=1e-10)
    tx = sharpness.track_sharpness(optax.sgd(0.05), k, init_grad_fn=problem.grad, tol=TOL)
    traj = dynopt.run(tx, problem, 4, every=2, observe=sharpness.sharpness)
    w = jax.tree.map(lambda x: x[-1], traj.params)
    np.testing.assert_allclose(
        traj.observations[-1], _dense_eigh(problem, w)[0][::-1][:k], rtol=0, atol=1e-10
    )


def test_a_start_block_of_the_wrong_shape_is_refused():
    problem = _small()
    for shape in [(5, 1), (6, 7), (6,), (6, 0)]:
        with pytest.raises(ValueError, match=r"start must be an \(n, k\) block with n = 6"):
            sharpness.top_eigenpairs(problem.grad, problem.params0, jnp.ones(shape))


def test_lane_cond_branches_under_vmap_and_keeps_the_costly_branch_inside_the_loop():
    """`lane_cond` is `lax.cond` lane by lane, also under `vmap`, and the costly branch stays
    inside its loop: XLA hoists out of a `while_loop` whatever depends only on values the loop
    forwards unchanged, and a hoisted branch runs on every call (an eigen-solve at every step of
    a vmapped tracked run: 16x slower than the sequential runs). Read off the compiled program:
    no instruction of the loop's body may sit in the entry computation."""
    from dynopt._sharpness import lane_cond

    def costly(x):
        return x * jnp.linalg.eigvalsh(jnp.outer(x, x) + jnp.eye(x.size))[0]

    def f(x, n):
        return lane_cond(n % 3 == 0, costly, lambda x: x, x)

    xs = jnp.arange(1.0, 25.0).reshape(4, 6)
    ns = jnp.arange(4)
    out = jax.jit(jax.vmap(f))(xs, ns)
    expect = jnp.stack([costly(x) if n % 3 == 0 else x for x, n in zip(xs, ns)])
    np.testing.assert_allclose(np.asarray(out), np.asarray(expect), rtol=1e-14)
    hlo = jax.jit(jax.vmap(f)).lower(xs, ns).compile().as_text()
    entry = hlo[hlo.index("ENTRY") :].split("\n}\n")[0]
    assert "while/body" not in entry, entry


def test_lanczos_is_the_krylov_spaces_top_ritz_pairs(net):
    """`method="lanczos"` (matfree): deep enough (m = 120 of n = 229 products, from a random
    start) it gives dense eigh's top pairs, with and without a preconditioner; the Krylov depth
    is checked against [k, n]."""
    start = sharpness.random_start(jax.random.key(1), net.num_params, K)
    diag = jax.tree.map(lambda x: 0.5 + jnp.abs(x), net.params0)
    for d in (None, diag):
        got = sharpness.top_eigenpairs(
            net.grad, net.params0, start, diag=d, max_iters=120, method="lanczos"
        )
        values, vectors = _dense_eigh(net, net.params0, d)
        np.testing.assert_allclose(got.values, values[::-1][:K], rtol=0, atol=1e-8)
        overlap = np.abs(np.sum(np.asarray(got.vectors) * vectors[:, ::-1][:, :K], axis=0))
        np.testing.assert_allclose(overlap, 1.0, atol=1e-8)
        assert int(got.iterations) == 120
    for m in (K - 1, net.num_params + 1):
        with pytest.raises(ValueError, match=r"max_iters \(the Krylov depth"):
            sharpness.top_eigenpairs(net.grad, net.params0, start, max_iters=m, method="lanczos")
    with pytest.raises(ValueError, match="method must be one of"):
        sharpness.track_sharpness(optax.sgd(0.1), K, method="power")


def test_lanczos_tracks_along_a_run_as_closely_as_lobpcg(net):
    """`track_sharpness(method="lanczos", max_iters=16)` (16 products a tracked step) against
    the converged eigenvalues at every saved iterate of a GD run: closer than one warm LOBPCG
    iteration (5k = 10 products at k = 2, its cheapest step)."""
    eta, steps = 0.3, 40
    exact_tx = sharpness.track_sharpness(optax.sgd(eta), K, init_grad_fn=net.grad, tol=TOL)
    exact = np.asarray(dynopt.run(exact_tx, net, steps, observe=sharpness.sharpness).observations)

    def deviation(method, iters):
        tx = sharpness.track_sharpness(
            optax.sgd(eta), K, init_grad_fn=net.grad, max_iters=iters, tol=TOL, method=method
        )
        got = dynopt.run(tx, net, steps, observe=sharpness.sharpness).observations
        return float(np.max(np.abs(np.asarray(got) - exact) / np.abs(exact)))

    lanczos, lobpcg = deviation("lanczos", 16), deviation("lobpcg", 1)
    assert lanczos < lobpcg < 1e-2, (lanczos, lobpcg)


def test_a_hessian_with_flat_directions_and_bad_arguments():
    """A Hessian of rank 2 in 40 dimensions: Lanczos' Krylov space closes after two products
    and matfree divides by the vanishing residual; the breakdown falls back to LOBPCG from the
    same block (the central flow's default method failed on such problems as "HVP not finite").
    Float32 parameters take a float64 start block in their own precision. A start block of
    dependent columns, max_iters < 1, a non-positive tol, a diag of the wrong structure or
    with a zero entry, and a preconditioner for a state without `nu` are refused, naming what."""
    a = jnp.asarray([4.0, 1.0] + [0.0] * 38)
    problem = dynopt.Problem(lambda p: 0.5 * jnp.sum(a * p**2), jnp.ones(40))
    start = sharpness.random_start(jax.random.key(0), 40, 2)
    for method in ("lanczos", "lobpcg"):
        found = sharpness.top_eigenpairs(
            problem.grad, problem.params0, start, method=method, max_iters=16
        )
        np.testing.assert_allclose(found.values, [4.0, 1.0], rtol=1e-10)
    a32 = a.astype(jnp.float32)
    low = dynopt.Problem(lambda p: 0.5 * jnp.sum(a32 * p**2), jnp.ones(40, jnp.float32))
    found = sharpness.top_eigenpairs(low.grad, low.params0, start)
    assert found.values.dtype == jnp.float32
    np.testing.assert_allclose(found.values, [4.0, 1.0], rtol=1e-5)
    bad = [
        (dict(start=jnp.ones((40, 2))), "linearly independent columns"),
        (dict(max_iters=0), "max_iters must be a positive integer"),
        (dict(tol=-1.0), "tol must be None or a positive"),
        (dict(diag=jnp.ones(3)), "diag must be a pytree like params"),
        (dict(diag=jnp.zeros(40)), "positive, finite entries"),
    ]
    for kwargs, match in bad:
        block = kwargs.pop("start", start)
        with pytest.raises(ValueError, match=match):
            sharpness.top_eigenpairs(problem.grad, problem.params0, block, **kwargs)
    with pytest.raises(ValueError, match="holds no second moment `nu`"):
        sharpness.track_sharpness(
            optax.sgd(0.1),
            1,
            preconditioner=sharpness.adam_preconditioner(),
            init_grad_fn=problem.grad,
        ).init(problem.params0)


def test_a_cap_with_the_default_tol_warns_only_where_the_residual_bound_is_large(net):
    """With the default tol (machine epsilon: out of reach for most n) LOBPCG can stop at its
    cap with eigenpairs accurate to rounding: no warning then (each value lies within its
    residual of an eigenvalue, here below `CAP_RESIDUAL` = 1e-8 of the largest; measured:
    warned at 40 iterations before, with values matching `eigh` to 1e-8). A cap that leaves
    the bound large (20 iterations: 9.3e-6 of the largest |value|, 2.5e-5 of the second's
    own) is said, with the bound."""
    values = _dense_eigh(net, net.params0)[0][::-1][:K]
    n = sum(x.size for x in jax.tree.leaves(net.params0))
    start = sharpness.random_start(jax.random.key(0), n, K)
    found = sharpness.top_eigenpairs(net.grad, net.params0, start, max_iters=40)
    assert int(found.iterations) == 40
    np.testing.assert_allclose(found.values, values, rtol=1e-8)
    with pytest.warns(RuntimeWarning, match=r"approximate \(each value within 9\.\de-06"):
        sharpness.top_eigenpairs(net.grad, net.params0, start, max_iters=20)


def test_the_lanczos_trackers_cold_start_polishes_krylov_ritz_vectors(net):
    """The cold start at θ₀ of `track_sharpness(method="lanczos")`: LOBPCG (to tol) from the
    top Ritz vectors of a Krylov space of depth 10(k + 1) (`krylov_start`), not from the random
    block: it needs 1 iteration, not the 36 (k = 2 here; 29 on the benchmark's MLP at k = 5:
    34 → 7 ms of CPU) it takes from the block, with the values dense `eigh`'s to 1e-8 either
    way. A Hessian of rank 2 breaks that Lanczos (a Krylov space closed after two products):
    LOBPCG then starts from the random block, and finds the exact values."""
    values = _dense_eigh(net, net.params0)[0][::-1][:K]
    iterations = {}
    for method in ("lanczos", "lobpcg"):
        tx = sharpness.track_sharpness(
            optax.sgd(0.3), K, init_grad_fn=net.grad, tol=TOL, max_iters=16, method=method
        )
        state = jax.jit(tx.init)(net.params0)
        np.testing.assert_allclose(state.values, values, rtol=0, atol=1e-8)
        iterations[method] = int(state.iterations)
    assert iterations["lanczos"] == 1 and iterations["lobpcg"] >= 10, iterations
    a = jnp.asarray([4.0, 1.0] + [0.0] * 38)
    flat = dynopt.Problem(lambda p: 0.5 * jnp.sum(a * p**2), jnp.ones(40))
    block = sharpness.random_start(jax.random.key(0), 40, 2)
    assert np.array_equal(sharpness.krylov_start(flat.grad, flat.params0, block), block)
    tx = sharpness.track_sharpness(
        optax.sgd(0.1), 2, init_grad_fn=flat.grad, max_iters=16, method="lanczos"
    )
    np.testing.assert_allclose(tx.init(flat.params0).values, [4.0, 1.0], rtol=1e-10)


def test_the_trackers_lanczos_orthogonalizes_once_unless_the_basis_lost_semi_orthogonality():
    """The tracker's warm Lanczos (`_lanczos_once_top`) orthogonalizes each Krylov vector once
    (classical Gram-Schmidt, half of matfree's full reorthogonalization). Where the basis stays
    semi-orthogonal ($\\max|Q^\\top Q - I| \\le \\sqrt\\epsilon$: a spread spectrum) it gives the
    twice-orthogonalized Ritz pairs (`_lanczos_top`) to rounding; where it does not (three
    eigenvalues at 1e8 above a spectrum in [0, 1]: the Krylov space all but closes, and once
    lost 3e-3 of orthogonality) it takes the twice-orthogonalized pairs themselves."""
    import matfree.decomp

    from dynopt._sharpness import _lanczos_once_top, _lanczos_top

    n, m, k = 60, 16, 3
    rotation = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (n, n)))[0]
    start = sharpness.random_start(jax.random.key(1), n, k)
    spectra = {
        "spread": jnp.geomspace(1e6, 1.0, n),
        "closing": jnp.concatenate([1e8 + jnp.arange(3.0), jnp.linspace(0.0, 1.0, n - 3)]),
    }
    for name, spectrum in spectra.items():
        matrix = (rotation * spectrum[None, :]) @ rotation.T
        matvec = lambda v, matrix=matrix: matrix @ v
        once = matfree.decomp.hessenberg(m, reortho="none", reortho_vjp="none", custom_vjp=False)
        basis = once(matvec, jnp.sum(start, axis=1))[0]
        lost = float(jnp.max(jnp.abs(basis @ basis.T - jnp.eye(m))))
        semi_orthogonal = lost <= float(jnp.sqrt(jnp.finfo(basis.dtype).eps))
        assert semi_orthogonal == (name == "spread"), (name, lost)
        got = _lanczos_once_top(None, start, m, matvec=matvec)
        want = _lanczos_top(None, start, m, matvec=matvec)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-14 if name == "closing" else 1e-12)
        overlap = np.abs(np.sum(np.asarray(got[1]) * np.asarray(want[1]), axis=0))
        np.testing.assert_allclose(overlap, 1.0, atol=1e-12 if name == "closing" else 1e-10)
        assert int(got[2]) == m
        top = np.sort(np.asarray(spectrum))[::-1][:k]
        np.testing.assert_allclose(got[0], top, rtol=1e-12)
        # The tracker (a quadratic with this Hessian): its warm steps take the same route.
        problem = dynopt.Problem(lambda p, matrix=matrix: 0.5 * p @ (matrix @ p), start[:, 0])
        tx = sharpness.track_sharpness(
            optax.sgd(1e-9), k, init_grad_fn=problem.grad, max_iters=m, method="lanczos"
        )
        tracked = dynopt.run(tx, problem, 2, observe=sharpness.sharpness).observations
        np.testing.assert_allclose(tracked[1:], np.stack([top, top]), rtol=1e-12)
