"""The memory guard counts an implicit solver's dense Jacobian: refused before anything is
allocated, naming the state size, the bytes and what to change (a small fake budget here, as
the dense-output guard's tests do: nothing of gigabytes is allocated)."""

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optax
import pytest

import dynopt
from dynopt import _compare, _solve, flows


jax.config.update("jax_enable_x64", True)


def _no_solve(*args, **kwargs):
    raise AssertionError("a solve was compiled")


def test_an_implicit_solve_whose_jacobian_exceeds_the_budget_is_refused(monkeypatch):
    """Kvaerno5's Newton iteration materialises the n x n Jacobian of the field (lineax's LU):
    3 entries, 72 bytes, above a budget of 50; Tsit5 needs none and solves. Before: only the
    dense output was counted, and centred RMSprop's order-2 field on an MLP died in XLA
    (RESOURCE_EXHAUSTED, 52 GB) instead."""
    problem = dynopt.problems.quadratic([1.0, 2.0, 3.0])
    monkeypatch.setattr(_solve, "IMPLICIT_MEMORY_LIMIT", 50)
    with monkeypatch.context() as m:
        m.setattr(_solve, "_compiled_solve", _no_solve)
        with pytest.raises(
            ValueError,
            match=r"solve: the implicit solver Kvaerno5 would materialise the dense Jacobian of "
            r"the flow's field on its state of 3 entries, about 6\.71e-08 GiB \(3\^2 x 8 "
            r"bytes\), above the 4\.66e-08 GiB limit\. Pass an explicit solver \(solver='tsit5'",
        ):
            dynopt.solve(flows.GradientFlow(), problem, [1.0], solver="kvaerno5")
    dynopt.solve(flows.GradientFlow(), problem, [1.0], solver="tsit5")
    # (An iterative linear solver is not counted; diffrax's VeryChord cannot run one here.)
    root = diffrax.VeryChord(rtol=1e-8, atol=1e-8, linear_solver=lx.GMRES(rtol=1e-8, atol=1e-8))
    assert not _solve._dense_linear_solve(diffrax.Kvaerno5(root_finder=root))
    assert _solve._dense_linear_solve(diffrax.Kvaerno5())


def test_a_large_state_counts_the_batched_products_of_its_jacobian(monkeypatch):
    """Above 1000 state entries the automatic choice compiled one Jacobian-vector product
    (ARPACK); the Jacobian is n of them at once, whose temporaries dominate on a network
    (an 8,970-parameter MLP: 274 GiB against the matrix's 0.6). Here (1,200 entries, Kvaerno5
    chosen for a stiffness of 1e5) the matrix alone, 11.5 MB, fits a budget of 20 MB; with
    the products' temporaries it does not. The estimate is within a factor 2 of XLA's own
    count for the Jacobian program (measured 1.5x here, 1.1x on the MLP)."""
    problem = dynopt.problems.quadratic(np.geomspace(1.0, 1e5, 1200))
    flow = flows.GradientFlow()
    need, size, per_column = _solve.implicit_jacobian_bytes(flow, problem)
    assert size == 1200 and per_column > 0 and need == 8.0 * size**2 + size * per_column

    def jacobian(state):
        with jax.numpy_dtype_promotion("standard"):
            flat, field = _solve._raveled_field(flow, problem, 0.0, state)
            return jax.jacfwd(field)(flat)

    stats = jax.jit(jacobian).lower(flow.init(problem.params0)).compile().memory_analysis()
    xla = stats.temp_size_in_bytes + stats.output_size_in_bytes
    assert 0.5 * xla <= need <= 2.0 * xla, (need, xla)
    monkeypatch.setattr(_solve, "IMPLICIT_MEMORY_LIMIT", 20e6)
    monkeypatch.setattr(_solve, "_compiled_solve", _no_solve)
    with pytest.raises(
        ValueError,
        match=r"Kvaerno5 would materialise .* state of 1200 entries, about 0\.03\d+ GiB "
        r"\(1200\^2 x 8 bytes \+ 1200 columns x \S+ MiB of the field's derivative\)",
    ):
        dynopt.solve(flow, problem, [1.0])


def test_compare_refuses_an_implicit_reference_over_the_budget_before_its_program(monkeypatch):
    """The order-2 reference of GD under a named Kvaerno5: refused before the compiled
    comparison (its reference solve would allocate the Jacobian inside it)."""
    problem = dynopt.problems.quadratic([1.0, 3.0], params0=jnp.asarray([1.0, -0.5]))
    monkeypatch.setattr(_solve, "IMPLICIT_MEMORY_LIMIT", 16)
    monkeypatch.setattr(_compare, "_compare_jit", _no_solve)
    with pytest.raises(
        ValueError,
        match=r"compare: the reference solve: the implicit solver Kvaerno5 .* state of 2 "
        r"entries.*a lower order \(order=1",
    ):
        dynopt.compare(optax.sgd, problem, (0.04, 0.02, 0.01), 0.4, order=2, solver="kvaerno5")
