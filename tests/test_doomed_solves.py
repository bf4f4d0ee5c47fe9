"""Solves that cannot start (the vector field not finite at the start) are refused before any
solve, saying where and why (helper-95)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import _compare, _solve, flows


jax.config.update("jax_enable_x64", True)


def _no_solve(*args, **kwargs):
    raise AssertionError("a solve was compiled for a start no solver can step from")


@pytest.mark.parametrize("size", [10, 1200])
def test_a_field_not_finite_at_the_start_is_refused_before_any_solve(monkeypatch, size):
    """∑√x from x = 0: the gradient flow's field is -∞ at the first entry. The automatic choice
    took the infinite Jacobian for stiffness and ran Kvaerno5 to max_steps (5.2 s at 10
    entries and max_steps=64, 16.7 s at 1200), then said the field was not finite; now the
    field's value, read with the Jacobian, refuses the start naming the leaf and count, for
    a small (dense Jacobian) and a large (matrix-free) state alike, with no solve compiled."""
    problem = dynopt.Problem(lambda x: jnp.sum(jnp.sqrt(x)), jnp.linspace(0.0, 1.0, size))
    monkeypatch.setattr(_solve, "_compiled_solve", _no_solve)
    monkeypatch.setattr(_solve, "_SPECTRA", {})
    with pytest.raises(
        dynopt.SolveError,
        match=rf"GradientFlow's vector field is not finite at the start .* at \(the state "
        rf"itself\) \(1 of {size}\): no solver can take a step from it, so none was run",
    ):
        dynopt.solve(flows.GradientFlow(), problem, jnp.linspace(0.0, 1.0, 3))


def test_the_refusal_names_the_leaf_of_a_structured_state(monkeypatch):
    """A momentum flow's state (θ, v): the leaf where the field is not finite is named."""
    params = {"a": jnp.ones(3), "b": jnp.array([0.0, 1.0])}
    problem = dynopt.Problem(lambda p: jnp.sum(p["a"] ** 2) + jnp.sum(jnp.sqrt(p["b"])), params)
    monkeypatch.setattr(_solve, "_compiled_solve", _no_solve)
    with pytest.raises(dynopt.SolveError, match=r"not finite at the start .*\['b'\] \(1 of 2\)"):
        dynopt.solve(flows.GradientFlow(), problem, [1.0])


def test_a_finite_field_with_a_non_finite_jacobian_still_solves():
    """∑|x|^{3/2} from x = 0: the field -3/2 sign(x)|x|^{1/2} is finite, its Jacobian is not.
    The automatic choice took the infinite Jacobian for stiffness and picked Kvaerno5, whose
    Newton iteration uses that Jacobian: max_steps_reached at t = 0. Now Tsit5, which reads the
    field only, and the solve runs (x_1 stays at 0, x_2 follows x' = -3/2 √x:
    √x(t) = 1 - 3t/4)."""
    problem = dynopt.Problem(lambda x: jnp.sum(jnp.abs(x) ** 1.5), jnp.array([0.0, 1.0]))
    traj = dynopt.solve(flows.GradientFlow(), problem, [0.5])
    assert traj.solver == "tsit5"
    np.testing.assert_allclose(np.asarray(traj.params)[-1], [0.0, (1 - 0.375) ** 2], atol=1e-9)


def test_compare_refuses_an_automatic_reference_not_finite_at_theta0(monkeypatch):
    """SGD's order-2 modified flow on ∑|x|^{3/2} from a point with x_1 = 0: f2 = -½H∇L holds
    ∞·0 = NaN there. compare named it only after the reference solve failed (Tsit5 to
    max_steps); now before any solve, naming the term, with no comparison program run."""
    problem = dynopt.Problem(lambda x: jnp.sum(jnp.abs(x) ** 1.5), jnp.linspace(0.0, 1.0, 10))
    monkeypatch.setattr(_compare, "_compare_jit", _no_solve)
    with pytest.raises(
        dynopt.SolveError,
        match=r"compare: the reference's solve cannot start .*none was run\)\. Likely cause: "
        r"the order-2 modified flow is not finite at θ0 \(f2 at θ\)",
    ):
        dynopt.compare(lambda h: optax.sgd(h), problem, (0.02, 0.01, 0.005), 0.4, order=2)


def test_the_series_diagnosis_names_a_non_finite_term_of_a_bare_array_theta():
    """The same with an explicit solver (no automatic choice reads the field): the solve fails,
    and the diagnosis said "τ‖f2‖/‖f1‖ = nan ... below about h = nan" (a bare-array θ has
    the empty tree path, so the non-finite term was not found); now it names f2."""
    problem = dynopt.Problem(lambda x: jnp.sum(jnp.abs(x) ** 1.5), jnp.linspace(0.0, 1.0, 10))
    with pytest.raises(
        dynopt.SolveError, match=r"the order-2 modified flow is not finite at θ0 \(f2 at θ\)"
    ):
        dynopt.compare(
            lambda h: optax.sgd(h),
            problem,
            (0.02, 0.01, 0.005),
            0.4,
            order=2,
            solver="tsit5",
            max_steps=64,
        )


def test_the_series_diagnosis_says_nothing_meaningless_at_a_stationary_start():
    # At a minimum f1 = f2 = 0: the ratio 0/0 printed "τ‖f2‖/‖f1‖ = nan ... below about
    # h = nan" (helper-95's note). A stationary start is no cause of a failed solve.
    from dynopt._compare import _order_reference, _series_diagnosis

    problem = dynopt.problems.quadratic([1.0, 2.0], params0=jnp.zeros(2))
    reference = _order_reference(optax.sgd, 2, problem)
    assert _series_diagnosis(reference, True, problem, np.asarray([0.1, 0.05])) is None


@pytest.mark.parametrize("solver", ["tsit5", "kvaerno5", "dopri8"])
def test_a_chosen_solver_refuses_a_start_not_finite_before_any_solve(monkeypatch, solver):
    """∑√x from x = 0 with the solver named: no automatic choice read the field, and the solve
    ran to max_steps before its diagnosis said the field was not finite (3.3 s for Tsit5 and
    3.5 s for Kvaerno5 at max_steps=256). Where the automatic choice has read the field at
    these values (a first try with `solver=None`), a named solver is refused at once, with no
    solve compiled."""
    problem = dynopt.Problem(lambda x: jnp.sum(jnp.sqrt(x)), jnp.linspace(0.0, 1.0, 10))
    ts = jnp.linspace(0.0, 1.0, 3)
    monkeypatch.setattr(_solve, "_compiled_solve", _no_solve)
    refusal = (
        r"GradientFlow's vector field is not finite at the start .* at \(the state "
        r"itself\) \(1 of 10\): no solver can take a step from it, so none was run"
    )
    with pytest.raises(_solve.NotFiniteStart, match=refusal):
        dynopt.solve(flows.GradientFlow(), problem, ts)
    with pytest.raises(_solve.NotFiniteStart, match=refusal):
        dynopt.solve(flows.GradientFlow(), problem, ts, solver=solver)


def test_a_chosen_solver_compiles_nothing_to_check_its_start(monkeypatch):
    """A named solver's start check reads only the automatic choice's cached field: a solve
    that succeeds pays no compile of the field for it (5 s of 22 s on an order-3 automatic
    AdaBelief cell of `compare` when it did, 2026-12-06)."""
    problem = dynopt.Problem(lambda x: jnp.sum(x**2 + jnp.sin(x)), jnp.linspace(0.5, 1.0, 4))
    ts = jnp.linspace(0.0, 1.0, 3)
    # (Every evaluation of the field outside the solve goes through `_raveled_field`.)
    monkeypatch.setattr(_solve, "_raveled_field", lambda *a: pytest.fail("evaluated the field"))
    traj = dynopt.solve(flows.GradientFlow(), problem, ts, solver="tsit5")
    assert np.all(np.isfinite(np.asarray(traj.params)))


def test_a_slow_manifold_start_not_finite_names_the_term_as_the_reference_does():
    """Heavy ball's order-2 flow on ∑|x|^{3/2} from a point with x_1 = 0, against a finite
    reference: the runs start on the order-2 slow manifold, whose momentum holds H∇L = ∞·0 =
    NaN there, and die at once. The refusal names the start's non-finite leaf and the series'
    non-finite terms, the reading a failed reference's diagnosis makes (`_series_terms`, one
    for both)."""
    problem = dynopt.Problem(lambda x: jnp.sum(jnp.abs(x) ** 1.5), jnp.linspace(0.0, 1.0, 4))
    flow = dynopt.modified_flow(lambda h: optax.sgd(h, momentum=0.5), 0.02, 2, problem=problem)
    with pytest.raises(
        ValueError,
        match=r"blew up at step\(s\) \[1\], started on the order-2 slow manifold .* the start "
        r"state itself is not finite: 1 entries, in \[0\]\.trace \(1\)\. Likely cause: the "
        r"order-2 modified flow is not finite at θ0 \(f1 at θ; f2 at θ\): the optimizer's "
        r"update is not differentiable there",
    ):
        dynopt.compare(
            flow, problem, (0.02, 0.01, 0.005), 0.4, reference=flows.GradientFlow(), solver="tsit5"
        )
