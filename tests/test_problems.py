"""dynopt.problems factories and `Problem` refusing what they cannot honour: a dense Hessian too
large to build (a diagonal quadratic instead, O(d)), non-numeric arguments, complex parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import flows, problems


def test_diagonal_quadratic_matches_dense():
    """Same loss, gradient and closed-form flow as the dense quadratic, without the d x d matrix."""
    lam = jnp.array([0.5, 2.0, 7.0])
    x0, xstar = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.3, 0.1, -0.2])
    dense = problems.quadratic(lam, params0=x0, minimizer=xstar)
    diag = problems.quadratic(lam, params0=x0, minimizer=xstar, diagonal=True)
    assert diag.hessian is None and diag.name == dense.name
    x = jnp.array([0.7, 0.2, -1.1])
    # Both are sums of three products in float64: they agree to a few ulps.
    np.testing.assert_allclose(diag.loss(x), dense.loss(x), rtol=1e-15)
    np.testing.assert_allclose(diag.grad(x), dense.grad(x), rtol=1e-15)
    np.testing.assert_allclose(diag.flow_solution(0.8), dense.flow_solution(0.8), rtol=1e-15)
    np.testing.assert_array_equal(diag.minimizer, xstar)


def test_dense_quadratic_gradient_is_one_matrix_vector_product():
    """The gradient H(x - x*) takes one d x d product (autodiff of x^T H x takes two); the
    Hessian, third derivatives and the derivative in H stay those of the quadratic form."""
    import jax

    from dynopt._problems.quadratic import _half_quadratic_form

    p = problems.quadratic(jnp.logspace(-1.0, 1.0, 6), rotate=True, seed=3, minimizer=jnp.ones(6))
    h, x = p.hessian, jnp.linspace(-1.0, 2.0, 6)
    np.testing.assert_allclose(p.grad(x), h @ (x - 1.0), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(jax.hessian(p.loss)(x), h, rtol=1e-14, atol=1e-15)
    third = jax.jacfwd(jax.hessian(p.loss))(x)
    np.testing.assert_array_equal(third, np.zeros((6, 6, 6)))
    d_h = jax.grad(_half_quadratic_form, argnums=1)(x, h)
    np.testing.assert_allclose(d_h, 0.5 * jnp.outer(x, x), rtol=1e-15)
    jaxpr = jax.make_jaxpr(p.grad)(x).jaxpr
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert sum(any(v.aval.shape == (6, 6) for v in e.invars) for e in dots) == 1


def test_million_parameter_diagonal_quadratic_runs():
    """10^6 eigenvalues: the dense form is refused before anything is allocated (it would be an
    8 TB matrix); the diagonal form takes gradient steps exactly (1 - h lambda)^k."""
    lam = np.linspace(0.1, 10.0, 10**6)
    with pytest.raises(ValueError, match=r"dense 1000000x1000000 Hessian .* pass diagonal=True"):
        problems.quadratic(lam)
    with pytest.raises(ValueError, match="diagonal=True needs rotate=False"):
        problems.quadratic(lam[:3], diagonal=True, rotate=True)
    p = problems.quadratic(lam, diagonal=True)
    h, k = 0.1, 3
    traj = dynopt.run(flows.GradientFlow().discretize(h), p, k, every=k)
    # Each step rounds x - h lam x (|x| <= 1) to a few ulps: absolute, as 1 - h lam reaches 0.
    eps = float(jnp.finfo(jnp.float64).eps)
    np.testing.assert_allclose(traj.params[-1], (1 - h * lam) ** k, rtol=0, atol=4 * k * eps)
    np.testing.assert_allclose(p.flow_solution(2.0), np.exp(-2.0 * lam), rtol=1e-14)


def test_bad_arguments_are_one_line_value_errors():
    with pytest.raises(ValueError, match=r"eigenvalues must be a finite real number, got 'abc'"):
        problems.quadratic("abc")
    with pytest.raises(ValueError, match="eigenvalues must be finite"):
        problems.quadratic([1.0, np.nan])
    with pytest.raises(ValueError, match=r"dim must be >= 2 and an integer, got 2\.5"):
        problems.rosenbrock(dim=2.5)
    with pytest.raises(ValueError, match="dim must be >= 2 and an integer"):
        problems.rosenbrock(dim=True)
    with pytest.raises(ValueError, match="b must be a real number > 0"):
        problems.rosenbrock(b="x")
    with pytest.raises(ValueError, match="barrier must be > 0"):
        problems.double_well(barrier=-1.0)
    assert problems.rosenbrock(dim=np.int64(3)).num_params == 3


def test_complex_parameters_are_refused():
    """A complex leaf would be descended along the conjugate of the steepest-ascent direction
    (jax.grad's convention), so |z|^2 grows: refused with the remedy."""
    with pytest.raises(ValueError, match="params0 must hold real floating arrays; got dtype comp"):
        dynopt.Problem(lambda z: jnp.sum(jnp.abs(z) ** 2), jnp.array([1.0 + 1.0j]))
    with pytest.raises(ValueError, match="params0 must hold real"):
        dynopt.Problem(
            lambda p: jnp.sum(jnp.abs(p["z"]) ** 2) + jnp.sum(p["x"] ** 2),
            {"x": jnp.ones(2), "z": jnp.ones(2, jnp.complex64)},
        )
    # The remedy in the message works: real and imaginary parts as two real leaves.
    p = dynopt.Problem(
        lambda p: jnp.sum(p["re"] ** 2 + p["im"] ** 2), {"re": jnp.ones(1), "im": jnp.ones(1)}
    )
    traj = dynopt.run(flows.GradientFlow().discretize(0.1), p, 5, every=5)
    assert float(traj.loss[-1]) < float(traj.loss[0])


@pytest.mark.parametrize("kind", ["diagonal", "dense", "rotated"])
def test_a_float32_quadratic_solves_in_float64(kind):
    """`quadratic(..., params0=float32)` keeps its arrays in float32; `solve` evaluates the loss
    at float64 copies of the parameters, where strict promotion raised (float32 Hessian or
    minimizer against float64 parameters). The loss is in the parameters' dtype, and the
    solution is the closed form's to float32's precision."""
    options = dict(diagonal=kind == "diagonal", rotate=kind == "rotated")
    q = problems.quadratic([1.0, 4.0], params0=jnp.ones(2, jnp.float32), **options)
    assert q.loss(q.params0).dtype == jnp.float32
    assert q.loss(jnp.ones(2)).dtype == jnp.float64
    end = dynopt.solve(flows.GradientFlow(), q, [1.0]).params[-1]
    exact = q.flow_solution(jnp.asarray(1.0)).astype(jnp.float64)
    assert float(jnp.max(jnp.abs(end - exact))) < 1e-6


def test_quadratic_of_traced_eigenvalues():
    # Built inside vmap/jit (a sweep over spectra): it raised a ConcretizationTypeError (the
    # name's condition number and the minimizer's test read the values); now each spectrum's
    # problem gives what the concrete one gives, and a non-finite eigenvalue raises when run.
    spectra = jnp.array([[1.0, 2.0], [3.0, 0.5]])
    disc = flows.GradientFlow().discretize(0.1)

    def final_loss(lam):
        return dynopt.run(disc, problems.quadratic(lam), 5).loss[-1]

    expected = [float(final_loss(lam)) for lam in spectra]
    np.testing.assert_array_equal(jax.vmap(final_loss)(spectra), expected)
    with pytest.raises(Exception, match="eigenvalues"):
        jax.block_until_ready(
            jax.jit(lambda lam: problems.quadratic(lam).loss(jnp.ones(2)))(
                jnp.array([1.0, jnp.nan])
            )
        )


def test_traced_problem_parameters_are_checked_when_run():
    # The checks of noise (and l2) ran only on concrete values: their returned, checked value
    # was discarded, so a negative noise built inside jit ran silently.
    def loss(noise):
        return problems.linear_regression(8, 2, noise=noise, batch_size=4).loss(jnp.zeros(2))

    assert jax.vmap(loss)(jnp.array([0.1, 0.2])).shape == (2,)
    with pytest.raises(Exception, match="noise must be >= 0"):
        jax.block_until_ready(jax.jit(loss)(jnp.asarray(-1.0)))
