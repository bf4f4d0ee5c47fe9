"""`compare` with its reference saved at the runs' times (`dense_solve(..., at_times=True)`)
instead of read off diffrax's dense output, which preallocates `max_steps` steps of every stage
(9 float64 values per state entry for Tsit5): a network-sized state now compares."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
import dynopt._compare as _compare
from dynopt import flows
from dynopt._validation import host_validated

from .helpers import TraceCounter


def _both(monkeypatch, fn, problem):
    """`fn(problem)` with the reference read off the dense output, then saved at the runs'
    times. One problem for both: what only depends on it (the automatic solver choice's
    Jacobian, an optimizer's automatic flow) is built once, only the comparisons compile
    twice."""
    out = []
    for limit in (np.inf, -1):
        monkeypatch.setattr(_compare, "DENSE_COMPARE_BYTES", limit)
        out.append(fn(problem))
    return out


def _bumpy(dtype=jnp.float64):
    a = jnp.array([1.0, 3.0, 0.5])
    return dynopt.Problem(  # the reference solves in float64, the runs in `dtype`
        lambda x: 0.5 * jnp.sum(a.astype(x.dtype) * x**2) + jnp.sum(jnp.cos(x)),
        jnp.array([1.0, -0.5, 2.0], dtype),
    )


def _tree():
    def loss(p):
        return jnp.sum(jnp.log(jnp.cosh(p["w"] - 1.0))) + 0.5 * jnp.sum(
            (p["b"] - jnp.tanh(p["w"][:2])) ** 2
        )

    return dynopt.Problem(loss, {"w": jnp.array([0.3, -0.2, 0.8, 0.0]), "b": jnp.ones(2)})


def _adam(h):
    return optax.adam(h)


HS = [0.1, 0.05, 0.025, 0.0125]
CASES = {  # name: (problem, comparison of it)
    "gradient flow": (_bumpy, lambda p: dynopt.compare(flows.GradientFlow(), p, HS, 1.0)),
    "heavy ball (a state)": (_bumpy, lambda p: dynopt.compare(flows.HeavyBall(1.0), p, HS, 1.0)),
    "per-step reference": (
        _bumpy,
        lambda p: dynopt.compare(
            flows.GradientFlow(), p, HS, 1.0, reference=flows.ModifiedGradientFlow
        ),
    ),
    "pytree params": (_tree, lambda p: dynopt.compare(flows.GradientFlow(), p, HS, 1.0)),
    "float32 params": (
        lambda: _bumpy(jnp.float32),
        lambda p: dynopt.compare(flows.GradientFlow(), p, HS, 1.0),
    ),
    "adam order 2 (per-step, fast state)": (
        _tree,
        lambda p: dynopt.compare(_adam, p, [0.02, 0.01, 0.005], 0.4, order=2),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_saved_reference_gives_the_dense_errors(case, monkeypatch):
    """Both paths evaluate the same step's interpolating polynomial at the same time (the
    times min(k dt, t1) are computed on the host with the in-program read's float64
    operations, and mapped to the solve's unit time by the same code), so the errors agree to
    the rounding of the reference state: atol 1e-14 x the state's scale, far below any error
    measured (observed: bit for bit). Pytree and float32 parameters, a state (heavy ball's
    velocity), per-step references (`lax.map`, each its own grid) and an optimizer's automatic
    order-2 flow.

    With float32 parameters the dense read computes k dt in the run's float32 (dt = 0.1 is
    0.1 + 1.5e-9 there), the saved grid in float64: the reference is read up to k x 1.5e-9 =
    1.5e-8 apart in time, |theta'| < 4 here: atol 1e-7, below the float32 iterates' resolution."""
    problem, fn = CASES[case]
    dense, saved = _both(monkeypatch, fn, problem())
    atol = 1e-7 if case == "float32 params" else 4e-14
    for field in ("errors", "final_errors", "scales"):
        a, b = np.asarray(getattr(dense, field)), np.asarray(getattr(saved, field))
        np.testing.assert_allclose(b, a, rtol=0, atol=atol, err_msg=field)
    np.testing.assert_array_equal(saved.diverged_at, dense.diverged_at)
    assert saved.verdict == dense.verdict


def _separable(d: int):
    lam = jnp.linspace(0.5, 2.0, d)
    x0 = jnp.cos(jnp.arange(d, dtype=jnp.float64))
    return lam, x0, dynopt.Problem(lambda x: 0.5 * jnp.sum(lam * x**2), x0)


def _closed_form_errors(lam, x0, hs, t1, rate):
    """max_k ||(1 - h lam)^k x0 - exp(-rate k h) x0|| and the k = N term, in NumPy."""
    lam, x0 = np.asarray(lam), np.asarray(x0)
    errs, finals = [], []
    for h in hs:
        n = round(t1 / h)
        e = [
            np.linalg.norm(((1 - h * lam) ** k - np.exp(-rate(h, lam) * k * h)) * x0)
            for k in range(n + 1)
        ]
        errs.append(max(e))
        finals.append(e[-1])
    return np.asarray(errs), np.asarray(finals)


@pytest.mark.parametrize("per_step", [False, True])
def test_a_network_sized_state_compares(per_step):
    """d = 50,000: dense output would preallocate 16,384 x 50,000 x 9 float64 values (55 GiB;
    refused at 2 GiB before), while the saved reference is 32 rows (the finest run's 21 times,
    rounded up to a power of 2). Gradient descent on a separable quadratic against gradient
    flow, exp(-lam t) x0, and against the modified flow of each h (per-step references),
    exp(-(lam + h lam^2 / 2) t) x0: the errors are the closed form's to the reference's
    tolerance (rtol 1e-10 on a state of norm ~160, errors ~1e-2 of it: 1e-7 relative).

    Tsit5 named: the automatic choice's, but found by ARPACK in 2,900 Jacobian-vector products
    on this evenly spread spectrum (5 s of CPU a call; tests/test_solve_choice.py tests that
    path)."""
    lam, x0, problem = _separable(50_000)
    hs, t1 = [0.1, 0.05, 0.025], 0.5
    if per_step:
        c = dynopt.compare(
            flows.GradientFlow(),
            problem,
            hs,
            t1,
            reference=flows.ModifiedGradientFlow,
            solver="tsit5",
        )
        errs, finals = _closed_form_errors(lam, x0, hs, t1, lambda h, lam: lam + h * lam**2 / 2)
    else:
        c = dynopt.compare(flows.GradientFlow(), problem, hs, t1, solver="tsit5")
        errs, finals = _closed_form_errors(lam, x0, hs, t1, lambda h, lam: lam)
    np.testing.assert_allclose(c.errors, errs, rtol=1e-7)
    np.testing.assert_allclose(c.final_errors, finals, rtol=1e-7)
    assert c.verdict == "asymptotic", c.reason
    assert abs(float(c.order) - (2.0 if per_step else 1.0)) < 0.1


def test_a_saved_reference_too_big_is_refused_naming_what_to_change():
    """200,000 state entries at 4,001 times (rounded up to 8,192 rows, 3 copies while the
    reference solves): 37 GiB, refused on the host, saying to shorten t1 or drop the smallest
    step sizes (max_steps is not what sizes it)."""
    big = dynopt.Problem(lambda x: jnp.sum(x**2), jnp.zeros(200_000))
    with pytest.raises(ValueError, match="Shorten t1 or drop the smallest step sizes") as info:
        dynopt.compare(flows.GradientFlow(), big, [1e-3, 5e-4, 2.5e-4], 1.0, solver="tsit5")
    assert "max_steps" not in str(info.value)


def test_saved_reference_program_is_reused_and_holds_no_host_callback(monkeypatch):
    """New step sizes (and horizon) whose grids round up to the same buffer lengths reuse the
    compiled comparison (the grid and the rows are traced arrays), and its program holds no
    host callback (JAX's persistent cache keeps it): the times were checked on the host and
    are written by the solver itself, not by diffrax's checked `SaveAt(ts=...)`."""
    monkeypatch.setattr(_compare, "DENSE_COMPARE_BYTES", -1)
    counter = TraceCounter(lambda x: 0.5 * jnp.sum(x**2) + jnp.sum(jnp.cos(x)))
    problem = dynopt.Problem(counter, jnp.array([1.0, -0.5, 2.0]))
    calls = []
    program = _compare._compare_jit

    def spy(*args):
        calls.append(args)
        return program(*args)

    monkeypatch.setattr(_compare, "_compare_jit", spy)
    dynopt.compare(flows.GradientFlow(), problem, [0.1, 0.05, 0.025], 0.4)
    traced = counter.count
    again = dynopt.compare(flows.GradientFlow(), problem, [0.08, 0.04, 0.02], 0.4)
    assert counter.count == traced
    assert again.verdict == "asymptotic", again.reason
    *_, grid, rows = calls[-1]
    assert grid is not None and rows is not None  # the saved path
    with host_validated():
        jaxpr = eqx.filter_make_jaxpr(_compare._compare_program)(*calls[-1])
    assert "callback" not in str(jaxpr)


SHARDED = """
import json
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import dynopt, dynopt._compare
from dynopt import flows
from tests.test_compare_saved import SWEEP, _bumpy

assert jax.device_count() == 4, jax.devices()
dynopt._compare.DENSE_COMPARE_BYTES = -1
shared = dynopt.compare(flows.GradientFlow(), _bumpy(), SWEEP, 1.0)
per_step = dynopt.compare(
    flows.GradientFlow(), _bumpy(), SWEEP, 1.0, reference=flows.ModifiedGradientFlow
)
print(json.dumps([np.asarray(shared.errors).tolist(), np.asarray(per_step.errors).tolist()]))
"""
SWEEP = 1.0 / np.array([10.0, 20.0, 40.0, 80.0, 160.0, 320.0])  # 6: padded to 8 over 4 devices


def test_saved_reference_splits_across_devices(monkeypatch):
    """The step sizes split over 4 host CPU devices (`sweep_map`, `sweep_apply`: the rows a
    run reads, and each per-step reference's grid, travel with its step size; padded from 6
    to 8 and trimmed) give one device's errors, to the rounding of a differently vectorized
    batch (tests/test_sharding.py)."""
    from .helpers import run_on_host_devices

    shared, per_step = run_on_host_devices(SHARDED)
    monkeypatch.setattr(_compare, "DENSE_COMPARE_BYTES", -1)
    one = dynopt.compare(flows.GradientFlow(), _bumpy(), SWEEP, 1.0)
    one_per_step = dynopt.compare(
        flows.GradientFlow(), _bumpy(), SWEEP, 1.0, reference=flows.ModifiedGradientFlow
    )
    np.testing.assert_allclose(shared, one.errors, rtol=1e-12)
    np.testing.assert_allclose(per_step, one_per_step.errors, rtol=1e-12)


def test_which_reference_a_sweep_gets():
    """Dense output while it is modest (256 MiB), or while it fits (2 GiB) and the saved rows
    would not be much smaller (saving costs a pass over its rows every reference step: with
    d = 1000, 8,001 times, it measured 4x slower); saved at the runs' times otherwise, always
    where dense output would not fit. Host-side only, nothing compiles."""
    import diffrax

    def choice(d, n, per_step=False):
        problem = dynopt.Problem(lambda x: jnp.sum(x**2), jnp.zeros(d))
        hs = np.asarray([4.0, 2.0, 1.0]) / n  # t1 = 1: the finest run takes n steps
        ns = np.rint(1.0 / hs)
        grid, rows = _compare._reference_buffers(
            flows.GradientFlow(), problem, hs, ns, 1.0, per_step, diffrax.Tsit5(), 16_384
        )
        return "dense" if grid is None else ("saved", grid.shape, rows.shape)

    assert choice(100, 8_000) == "dense"  # 113 MiB of dense output
    assert choice(1000, 2_000) == ("saved", (2048,), (3, 2048))  # 1.1 GiB against 47 MiB
    assert choice(1000, 8_000) == "dense"  # 1.1 GiB against 188 MiB (x 16 > 1.1 GiB)
    assert choice(1000, 400, per_step=True) == ("saved", (3, 512), (3, 512))  # 3 x 1.1 GiB
    assert choice(50_000, 400) == ("saved", (512,), (3, 512))  # 55 GiB against 586 MiB
    with pytest.raises(ValueError, match="Shorten t1"):
        choice(50_000, 8_000)  # 55 GiB against 9.2 GiB
