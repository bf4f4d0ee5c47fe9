"""`dynopt._saving`: a vmapped diffrax solve saved at traced times by the solver itself, without
diffrax's host-callback checks of `SaveAt(ts=...)`."""

import warnings

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

from dynopt._saving import SaveAtTimes, saved


@pytest.mark.parametrize("implicit", [False, True])
def test_saving_at_times_is_diffraxs_save_at_ts(implicit):
    """`SaveAtTimes` (the solver writes the save times into its state: no diffrax check of the
    traced times, no host callback) saves what diffrax's `SaveAt(ts=...)` does, to rounding: y0
    at t0, inf past a terminating event, a pytree state, rejected steps, an implicit solver."""
    term = diffrax.ODETerm(lambda t, y, args: (y[0] ** 2, -t * y[1]))  # u' = u^2 blows up
    event = diffrax.Event(lambda t, y, args, **kw: 10.0 - y[0], optx.Newton(1e-12, 1e-12))
    ts = jnp.linspace(0.0, 2.0, 9)
    solver = diffrax.Kvaerno5() if implicit else diffrax.Tsit5()
    options = dict(
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
        event=event,
        max_steps=4096,
        throw=False,
    )

    def both(u0):
        y0 = (u0, jnp.ones(2))
        ref = diffrax.diffeqsolve(
            term, solver, 0.0, 2.0, None, y0, saveat=diffrax.SaveAt(ts=ts), **options
        )
        saving = SaveAtTimes(solver, ts)
        at_t1 = diffrax.SaveAt(t1=True, solver_state=True)
        new = diffrax.diffeqsolve(term, saving, 0.0, 2.0, None, y0, saveat=at_t1, **options)
        return ref.ys, saved(new, ts, 0.0, y0), new.stats["num_rejected_steps"]

    # u reaches 10 at t = 1/u0 - 0.1: after the horizon, at 1.15 and at 0.57.
    ref, new, rejected = jax.jit(jax.vmap(both))(jnp.array([0.3, 0.8, 1.5]))
    assert int(jnp.sum(rejected)) > 0
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref)):
        assert np.array_equal(np.isinf(a), np.isinf(b))
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    assert np.isinf(np.asarray(new[0])[1:, -1]).all()  # past both events


# XLA's HLO optimizations (its default level; the suite compiles at level 0), LLVM's still cheap.
_HLO_PASSES = {"xla_backend_optimization_level": 2}


@pytest.mark.parametrize("brownian", ["unsafe", "tree"])
def test_saving_at_times_is_diffraxs_save_at_ts_for_sdes(brownian):
    """The SDE solves of `dynopt.sde.simulate`: `MultiTerm(ODETerm, ControlTerm)` with an
    `UnsafeBrownianPath` or a `VirtualBrownianTree` (space-time Lévy area for the stochastic
    Runge-Kutta solvers), fixed steps, save times on and between the steps (the interpolant
    inside a step): what diffrax's `SaveAt(ts=...)` saves, bit for bit, for Itô (Euler) and
    Stratonovich (Heun, SRA1, ShARK) solvers, which stay marked as such (no diffrax warning)."""
    ts = jnp.array([0.0, 0.1, 0.35, 0.5, 0.93, 1.0])  # steps of 0.1: 0.35 and 0.93 inside one

    def terms(key, levy):
        shape = jax.ShapeDtypeStruct((2,), jnp.float64)
        if brownian == "unsafe":
            bm = diffrax.UnsafeBrownianPath(shape, key, levy_area=levy)
        else:
            bm = diffrax.VirtualBrownianTree(0.0, 1.0, 1e-3, shape, key, levy_area=levy)
        drift = diffrax.ODETerm(lambda t, y, args: -y * (1.0 + t))
        return diffrax.MultiTerm(
            drift, diffrax.ControlTerm(lambda t, y, args: 0.5 * jnp.eye(2), bm)
        )

    adjoint = (
        diffrax.ForwardMode() if brownian == "unsafe" else diffrax.RecursiveCheckpointAdjoint()
    )
    options = dict(stepsize_controller=diffrax.ConstantStepSize(), adjoint=adjoint, throw=False)
    y0 = jnp.array([1.0, -2.0])
    for solver in (diffrax.Euler(), diffrax.Heun(), diffrax.SRA1(), diffrax.ShARK()):
        srk = isinstance(solver, diffrax.AbstractSRK)
        levy = diffrax.SpaceTimeLevyArea if srk else diffrax.BrownianIncrement

        def both(key, solver=solver, levy=levy):
            sde = terms(key, levy)
            ref = diffrax.diffeqsolve(
                sde, solver, 0.0, 1.0, 0.1, y0, saveat=diffrax.SaveAt(ts=ts), **options
            )
            at_t1 = diffrax.SaveAt(t1=True, solver_state=True)
            new = diffrax.diffeqsolve(
                sde, SaveAtTimes(solver, ts), 0.0, 1.0, 0.1, y0, saveat=at_t1, **options
            )
            return ref.ys, saved(new, ts, 0.0, y0)

        # Bit for bit where XLA's HLO passes run (its default optimization level; also with
        # XLA's defaults throughout, checked 2026-12-05). At level 0, the suite's (conftest.py),
        # the stochastic Runge-Kutta solvers on the tree round one operation differently in the
        # two programs (an ulp), with or without LLVM's optimizations. So only those compile at
        # level 2, and without LLVM's expensive passes, which `optimized_compilation` added:
        # 9.5 -> 6.9 s of CPU for each (4.9 s at level 0; 2026-12-07). The other solvers are bit
        # for bit either way.
        exact = _HLO_PASSES if srk and brownian == "tree" else None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. "not marked as converging to either ..."
            keys = jax.random.split(jax.random.key(0), 4)
            ref, new = jax.jit(jax.vmap(both)).lower(keys).compile(exact)(keys)
        assert np.all(np.isfinite(ref))
        np.testing.assert_array_equal(new, ref, err_msg=type(solver).__name__)
