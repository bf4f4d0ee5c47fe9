"""`solve`'s automatic solver, chosen from the spectrum of the Jacobian of the flow's own vector
field at its initial state (it was the loss Hessian's, whatever the flow): momentum flows
oscillate, preconditioned flows decay at the rates of $PH$, not $H$. Every stiffness ratio is
checked against the closed-form eigenvalues of the linear field."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import flows, problems
from dynopt._solve import _pick_solver, _tsit5_polynomial, _tsit5_stability_radius


def _stiff_rates(params):
    """P = diag(1, 1e5): on H = diag(1, 10), PH = diag(1, 1e6)."""
    return jnp.asarray([1.0, 1e5]) * jnp.ones_like(params)


def _slowing_rates(params):
    """P = diag(1, 1e-6): on H = diag(1, 1e6), PH = I."""
    return jnp.asarray([1.0, 1e-6]) * jnp.ones_like(params)


def _max_error(traj, closed_form, ts):
    got = np.asarray(traj.params)
    want = np.stack([np.asarray(closed_form(jnp.asarray(t))[0]) for t in ts])
    return float(np.max(np.abs(got - want)))


def test_heavy_ball_oscillations_are_not_stiff():
    r"""HeavyBall(1) on H = diag(1, 1e2, 1e4): every mode is a damped oscillation,
    $\mu = -1/2 \pm i\sqrt{\lambda - 1/4}$, all decaying at 1/2, so the ratio is
    $\tfrac12/\max(\tfrac12, 1/T) = 1$ and the choice Tsit5 (the Hessian's ratio, 1e4, chose
    Kvaerno5). Tsit5 is also the better solver here: against the closed form it is at least as
    accurate as Kvaerno5 at the same tolerances (the previous choice; measured: 4.3e-10
    against 1.3e-8, 5,522 steps against 5,059, a third of the CPU time)."""
    q = problems.quadratic([1.0, 1e2, 1e4])
    flow, T = flows.HeavyBall(1.0), 2.0
    assert dynopt.stiffness_ratio(q, q.params0, T, flow) == pytest.approx(1.0, rel=1e-12)
    assert dynopt.stiffness_ratio(q, q.params0, T) == pytest.approx(1e4, rel=1e-12)  # -H's
    ts = np.linspace(0.0, T, 11)
    auto = dynopt.solve(flow, q, ts)
    assert auto.solver == "tsit5"
    implicit = dynopt.solve(flow, q, ts, solver="kvaerno5")
    exact = flow.closed_form(q)
    assert _max_error(auto, exact, ts) <= _max_error(implicit, exact, ts)


def test_gradient_flow_on_a_stiff_quadratic_stays_implicit():
    """H = diag(1, 1e6): the field -H decays at 1 and 1e6, ratio 1e6 (T >= 1): Kvaerno5."""
    q = problems.quadratic([1.0, 1e6])
    flow = flows.GradientFlow()
    assert dynopt.stiffness_ratio(q, q.params0, 2.0, flow) == pytest.approx(1e6, rel=1e-12)
    ts = np.array([0.5, 2.0])
    traj = dynopt.solve(flow, q, ts)
    assert traj.solver == "kvaerno5"
    exact = np.exp(-np.outer(ts, [1.0, 1e6]))
    # Per step the error is <= atol + rtol |y| (1e-12 + 1e-10); the flow contracts, so the
    # global error is at most the sum over the (few hundred) steps: < 1e-8.
    np.testing.assert_allclose(np.asarray(traj.params), exact, rtol=0, atol=1e-8)


@pytest.mark.parametrize(
    ("eigenvalues", "diagonal", "rates", "solver"),
    [
        ([1.0, 10.0], _stiff_rates, [1.0, 1e6], "kvaerno5"),  # H mild, PH stiff
        ([1.0, 1e6], _slowing_rates, [1.0, 1.0], "tsit5"),  # H stiff, PH = I
    ],
)
def test_preconditioned_flow_is_chosen_by_its_own_rates(eigenvalues, diagonal, rates, solver):
    r"""$\dot\theta = -PH\theta$ decays at the eigenvalues of $PH$ (here diagonal: `rates`), so
    its ratio is $\max/\max(\min, 1/T)$ of those, and the choice follows $PH$, not $H$."""
    q = problems.quadratic(eigenvalues)
    flow = flows.PreconditionedFlow(flows.DiagonalPreconditioner(diagonal))
    T = 2.0
    want = max(rates) / max(min(rates), 1.0 / T)
    assert dynopt.stiffness_ratio(q, q.params0, T, flow) == pytest.approx(want, rel=1e-12)
    ts = np.array([0.5, T])
    traj = dynopt.solve(flow, q, ts)
    assert traj.solver == solver
    exact = np.exp(-np.outer(ts, rates))  # params0 = ones
    np.testing.assert_allclose(np.asarray(traj.params), exact, rtol=0, atol=1e-8)


def test_newton_flow_on_a_stiff_quadratic_is_not_stiff():
    """The Newton flow's field is -(H^-1) H = -I whatever H: ratio 1, Tsit5."""
    q = problems.quadratic([1.0, 1e6])
    flow = flows.PreconditionedFlow(flows.NewtonPreconditioner())
    assert dynopt.stiffness_ratio(q, q.params0, 2.0, flow) == pytest.approx(1.0, rel=1e-9)
    assert dynopt.solve(flow, q, [2.0]).solver == "tsit5"


def test_overdamped_heavy_ball_is_stiff():
    r"""HeavyBall(a) with $a^2 \gg 4\lambda$ is overdamped: its modes on $\lambda$ decay at
    $(a \pm \sqrt{a^2 - 4\lambda})/2$, about $a$ and $\lambda/a$, so H = diag(1) alone (ratio
    1 for the gradient flow) gives a stiff momentum flow, ratio $\approx a^2$ for $T \ge a$."""
    a, T = 1e3, 2e3
    q = problems.quadratic([1.0])
    fast, slow = (a + np.sqrt(a * a - 4.0)) / 2, (a - np.sqrt(a * a - 4.0)) / 2
    ratio = dynopt.stiffness_ratio(q, q.params0, T, flows.HeavyBall(a))
    assert ratio == pytest.approx(fast / max(slow, 1.0 / T), rel=1e-9)
    assert _pick_solver(None, q, q.params0, T, flow=flows.HeavyBall(a))[1] == "kvaerno5"
    assert _pick_solver(None, q, q.params0, T, flow=flows.GradientFlow())[1] == "tsit5"


def test_long_horizon_counts_decayed_modes_at_tsit5s_stability_radius():
    r"""The long-horizon rule: Tsit5 needs $T|\mu|/r(\mu)$ steps for stability alone on a mode
    that has decayed ($-\mathrm{Re}\,\mu\,T \ge 25$). HeavyBall(1) on $\lambda = 1e4$:
    $|\mu| = 100$, 0.3° off the imaginary axis, where the stability radius is 1.71 (not 3.5);
    over $T = 1000$ the mode has decayed ($e^{-500}$) and Tsit5 would step at $\le 1.71/100$
    for the rest of it, 58,000 steps. Over $T = 10$ it is alive ($e^{-5}$): it must be
    resolved by any solver, and only the ratio (1) counts."""
    q = problems.quadratic([1e4])
    flow = flows.HeavyBall(1.0)
    mu = np.array([-0.5 + 1j * np.sqrt(1e4 - 0.25)])
    radius = _tsit5_stability_radius(mu)[0]
    assert 1.5 < radius < 2.0
    assert 1000.0 * 100.0 / radius > 16_384
    assert _pick_solver(None, q, q.params0, 1000.0, 16_384, flow=flow)[1] == "kvaerno5"
    assert _pick_solver(None, q, q.params0, 10.0, 16_384, flow=flow)[1] == "tsit5"


def test_tsit5_stability_radius_matches_the_real_root():
    r"""On the negative real axis the radius is the first $x > 0$ with $|R(-x)| = 1$: a real root
    of $R(-x) = \pm 1$ (np.roots of the polynomial), to the radius's 1e-3 grid."""
    coef = _tsit5_polynomial()
    np.testing.assert_allclose(coef[:6], [1, 1, 1 / 2, 1 / 6, 1 / 24, 1 / 120], rtol=1e-12)
    roots = []
    for sign in (1.0, -1.0):
        shifted = coef * (-1.0) ** np.arange(7)  # R(-x) as a polynomial in x
        shifted[0] -= sign
        r = np.roots(shifted[::-1])
        roots += [x.real for x in r if abs(x.imag) < 1e-9 and x.real > 1e-9]
    want = min(roots)
    got = _tsit5_stability_radius(np.array([-1.0 + 0j]))[0]
    assert want - 1e-3 <= got <= want
    # Within 45 degrees of the real axis the magnitude rule's 3.5 holds to 1%.
    angles = np.radians(np.arange(0, 46, 5))
    np.testing.assert_allclose(_tsit5_stability_radius(-np.exp(1j * angles)), 3.5, rtol=1e-2)


def test_matrix_free_above_the_dense_limit():
    r"""Above 1000 state entries only the dominant eigenvalues are found (ARPACK on
    Jacobian-vector products), and the slowest rate is unknown: the ratio is the fastest decay
    over $\max(\text{growth}, 1/T)$. The gradient flow on 1200 parameters with eigenvalues 1
    and 1e3: $10^3 T$. HeavyBall(1) on 600 parameters with eigenvalues 1 and 1e4 (1200
    entries): the dominant modes $-\tfrac12 \pm 100i$ decay at 1/2, ratio $T/2$, Tsit5 (the
    dense Hessian's ratio, 1e4, chose Kvaerno5). ARPACK's tolerance 1e-6 is relative to
    $|\mu| = 100$: 1e-4 on the real part 1/2, within rel 1e-3."""
    T = 2.0
    q = problems.quadratic(np.r_[np.ones(1199), 1e3], diagonal=True)
    assert dynopt.stiffness_ratio(q, q.params0, T, flows.GradientFlow()) == pytest.approx(
        1e3 * T, rel=1e-6
    )
    q = problems.quadratic(np.r_[np.ones(599), 1e4], diagonal=True)
    flow, T = flows.HeavyBall(1.0), 40.0
    assert dynopt.stiffness_ratio(q, q.params0, T, flow) == pytest.approx(0.5 * T, rel=1e-3)
    assert _pick_solver(None, q, q.params0, T, 16_384, flow=flow)[1] == "tsit5"


def test_bad_solver_still_raises():
    q = problems.quadratic([1.0])
    with pytest.raises(ValueError, match="unknown solver 'rk99'"):
        _pick_solver("rk99", q, q.params0, 1.0, flow=flows.HeavyBall(1.0))


@jax.custom_vjp
def _doubled(g):
    return 2.0 * g


_doubled.defvjp(lambda g: (2.0 * g, None), lambda _, cotangent: (2.0 * cotangent,))


class _CustomVJPFlow(flows.AbstractFlow):
    r"""$\dot\theta = -2\nabla L$ through a `jax.custom_vjp` (no forward mode)."""

    def init(self, params):
        return params

    def params(self, state):
        return state

    def vector_field(self, t, state, problem):
        return -_doubled(problem.grad(state))

    def discretize(self, step_size):
        return dynopt.Discretization(optax.sgd, {"learning_rate": 2 * step_size}, dt=step_size)


@pytest.mark.parametrize("size", [2, 1200])
def test_a_field_without_forward_mode_is_read_in_reverse_mode(size):
    """A field through a custom_vjp has no Jacobian-vector products: the Jacobian (dense, or
    its dominant eigenvalues above 1000 entries) is taken in reverse mode; -2H of
    H = diag(1, 1e3) (and ones besides) has ratio 1e3 for T = 2 (dense), and its fastest decay
    2e3 over 1/T above (the slowest rate unknown): 2e3 T."""
    q = problems.quadratic(np.r_[1.0, np.ones(size - 2), 1e3], diagonal=True)
    want = 1e3 if size <= 1000 else 2e3 * 2.0
    got = dynopt.stiffness_ratio(q, q.params0, 2.0, _CustomVJPFlow())
    assert got == pytest.approx(want, rel=1e-6)


def test_a_growing_mode_is_followed_not_stepped_for_stability():
    r"""A mode growing at rate $g$ must be resolved at that rate by any solver, so the ratio's
    denominator includes it: -H with H = diag(1e6, -1e6) decays and grows at 1e6, ratio 1; and
    growth over the horizon (here $e^{10^6}$) says the linearisation at $y_0$ is a transient,
    not a long horizon of settled modes (their stability steps, 1e6/3.5, exceed `max_steps`:
    the old rule chose Kvaerno5). RMSprop from G = 0 on Rosenbrock is such a transient: modes
    of about $\pm 1.4\times10^7$ at $t_0$; Tsit5 takes 269 steps (2.9 ms CPU) where Kvaerno5
    took 3,348 (95 ms)."""
    saddle = problems.quadratic([1e6, -1e6])
    flow = flows.GradientFlow()
    assert dynopt.stiffness_ratio(saddle, saddle.params0, 1.0, flow) == pytest.approx(1.0)
    assert _pick_solver(None, saddle, saddle.params0, 1.0, 16_384, flow=flow)[1] == "tsit5"
    rosenbrock = problems.rosenbrock()
    assert dynopt.solve(flows.RMSPropFlow(3.0, 1e-4), rosenbrock, [0.5]).solver == "tsit5"


def test_new_hyperparameter_values_reuse_the_program_and_are_chosen_for_anew():
    r"""A flow's hyper-parameters are arrays: `solve` with new values of them reuses its compiled
    program (no retrace) and makes the automatic choice for the new values, not the cached
    one of the old: HeavyBall(a) on $\lambda = 1$ over $T = 2000$ is Tsit5 at $a = 1$ and 2
    and Kvaerno5 at $a = 1000$ (overdamped, ratio $\approx a^2$), then Tsit5 again at $a = 1$,
    the first trajectory bit for bit. Each is the closed form to 1e-7 at $T = 5$ (rtol 1e-10
    per step over ~100 steps; the state is O(1))."""
    from dynopt import _solve

    q = problems.quadratic([1.0, 3.0], rotate=True)
    first = dynopt.solve(flows.HeavyBall(1.0), q, [5.0], dense=False)
    compiled, _ = _solve._compiled_solve(
        flows.HeavyBall(1.0), q, _solve._solver("tsit5"), 16_384, False, False
    )
    traces = compiled.run._cache_size()
    second = dynopt.solve(flows.HeavyBall(2.0), q, [5.0], dense=False)
    assert (first.solver, second.solver) == ("tsit5", "tsit5")
    assert compiled.run._cache_size() == traces
    for a, traj in [(1.0, first), (2.0, second)]:
        want = flows.HeavyBall(a).closed_form(q)(jnp.asarray(5.0))[0]
        assert float(jnp.max(jnp.abs(traj.params[-1] - want))) <= 1e-7
    one = problems.quadratic([1.0])
    names = [
        _pick_solver(None, one, one.params0, 2e3, flow=flows.HeavyBall(a))[1]
        for a in (1.0, 1e3, 1.0)
    ]
    assert names == ["tsit5", "kvaerno5", "tsit5"]
    again = dynopt.solve(flows.HeavyBall(1.0), q, [5.0], dense=False)
    for x, y in zip(jax.tree.leaves(again), jax.tree.leaves(first)):
        np.testing.assert_array_equal(x, y)


def test_a_repeated_automatic_choice_reads_the_spectrum_once(monkeypatch):
    """The automatic choice's Jacobian and eigenvalues are computed once per values of the flow,
    the problem and t0 (`_solve._SPECTRA`): equal values in new objects reuse them, a new
    value or t0 computes them anew, and the cached choice is the one computed afresh."""
    from dynopt import _solve

    calls = []
    jacobian = _solve._field_jacobian
    monkeypatch.setattr(
        _solve, "_field_jacobian", lambda *a: calls.append(1) or jacobian(*a), raising=True
    )
    monkeypatch.setattr(_solve, "_SPECTRA", {}, raising=False)  # empty, for the count

    def choice(damping, t0=0.0, eigenvalues=(1.0, 3.0)):
        q = problems.quadratic(jnp.asarray(eigenvalues), rotate=True)
        return _pick_solver(None, q, q.params0, 2.0, 16_384, flow=flows.HeavyBall(damping), t0=t0)

    first = choice(1.0)
    assert len(calls) == 1
    assert choice(1.0)[1:] == first[1:] and len(calls) == 1  # equal values, new arrays
    # (Underdamped modes all decay at rate a/2: eigenvalues (1, 30) gave first's ratio 1 up to
    # rounding, and the test passed or failed by the last bit. An overdamped slow mode does not.)
    assert choice(1.0, eigenvalues=(0.01, 3.0))[2] > 1.5 * first[2] and len(calls) == 2
    choice(2.0)
    choice(1.0, t0=0.5)
    assert len(calls) == 4
    monkeypatch.setattr(_solve, "_SPECTRA", {}, raising=False)
    assert choice(1.0)[1:] == first[1:] and len(calls) == 5


def _coupled_quartic(x):
    """A loss of this test's own (no other test compiles a program of it)."""
    return 0.25 * jnp.sum(x**4) + x[0] * x[1] + 0.5 * jnp.sum(x**2)


def test_the_top_eigenvalue_and_a_gradient_flows_choice_share_one_jacobian(monkeypatch):
    """`top_eigenvalue` (`compare`'s stability limit at θ0) is read off the gradient flow's
    spectrum, -H's (symmetric to rounding: `eigvalsh`), which the automatic choice caches:
    `stiffness_ratio` (`flow=None`), `top_eigenvalue` and a `GradientFlow` solve's choice at
    θ0 compute one Jacobian and compile one program between them, in either order (they were
    a Hessian program of its own and a spectrum for `flow=None` apart from `GradientFlow()`'s),
    and the value is the Hessian's top eigenvalue."""
    from dynopt import _solve
    from dynopt._solve import _hessian_matrix, top_eigenvalue

    from .helpers import count_backend_compiles

    calls = []
    jacobian = _solve._field_jacobian
    monkeypatch.setattr(
        _solve, "_field_jacobian", lambda *a: calls.append(1) or jacobian(*a), raising=True
    )
    monkeypatch.setattr(_solve, "_SPECTRA", {}, raising=False)
    p = dynopt.Problem(_coupled_quartic, jnp.asarray([1.0, -0.5, 2.0]))
    compiled, lam = count_backend_compiles(top_eigenvalue, p, p.params0)
    assert compiled == 1 and len(calls) == 1
    hessian = np.linalg.eigvalsh(np.asarray(_hessian_matrix(p, p.params0)))
    assert lam == pytest.approx(hessian[-1], rel=1e-13)
    choose = lambda: _pick_solver(None, p, p.params0, 2.0, 16_384, flow=flows.GradientFlow())
    assert count_backend_compiles(choose)[0] == 0 and len(calls) == 1
    assert dynopt.stiffness_ratio(p, p.params0, 2.0) > 1 and len(calls) == 1
    # The other order: the choice first, then the top eigenvalue from its cache entry.
    monkeypatch.setattr(_solve, "_SPECTRA", {}, raising=False)
    moved = dynopt.Problem(_coupled_quartic, jnp.asarray([0.5, 1.5, -1.0]))
    _pick_solver(None, moved, moved.params0, 2.0, 16_384, flow=flows.GradientFlow())
    assert len(calls) == 2
    compiled, lam = count_backend_compiles(top_eigenvalue, moved, moved.params0)
    assert compiled == 0 and len(calls) == 2
    hessian = np.linalg.eigvalsh(np.asarray(_hessian_matrix(moved, moved.params0)))
    assert lam == pytest.approx(hessian[-1], rel=1e-13)


def test_the_choices_cache_key_is_the_values():
    """`_values_key` tells apart what the spectrum depends on: an array's values (also a NumPy
    array changed in place), its dtype, a Python number's type and sign of zero; it is the same
    for equal values in new objects, and `None` (no caching) for a traced leaf."""
    from dynopt._solve import _values_key

    a = np.array([1.0, 2.0])
    key = _values_key((a, 0.0))
    assert _values_key((np.array([1.0, 2.0]), 0.0)) == key
    assert _values_key((jnp.asarray(a), 0.0)) == _values_key((jnp.asarray(a), 0.0))
    assert _values_key((a, -0.0)) != key
    assert _values_key((a, 0)) != key
    assert _values_key((a.astype(np.float32), 0.0)) != key
    a[1] = 3.0
    assert _values_key((a, 0.0)) != key
    traced = []
    jax.jit(lambda x: traced.append(_values_key((x,))) or x)(jnp.ones(2))
    assert traced == [None]


@pytest.mark.parametrize("size", [4, 5])
def test_the_key_reads_every_byte_of_small_and_large_arrays(size):
    """An array of at most 32 bytes is keyed by its bytes, a larger one by their SHA-256: either
    way a change of any entry (in place, for a NumPy array) is a new key, and equal values in
    new objects the same key."""
    from dynopt._solve import _values_key

    a = np.arange(size, dtype=np.float64)
    key = _values_key(a)
    assert _values_key(np.arange(size, dtype=np.float64)) == key
    assert _values_key(jnp.asarray(a)) == _values_key(jnp.arange(size, dtype=jnp.float64))
    for i in range(size):
        b = a.copy()
        b[i] = np.nextafter(b[i], np.inf)
        assert _values_key(b) != key
    a[-1] = -0.0 if a[-1] == 0.0 else 0.0
    assert _values_key(a) != key


def test_new_horizons_and_budgets_decide_as_a_fresh_choice(monkeypatch):
    """The automatic choice reads what it needs of a spectrum once (`_Modes`, kept with it): a
    new horizon or step budget on a cached spectrum, the ratio's and the long-horizon rule's
    cases alike, decides as the same call on an empty cache, for a real and a complex
    spectrum."""
    from dynopt import _solve

    cases = [
        (problems.quadratic([1e4]), flows.HeavyBall(1.0)),  # -1/2 +- 100i
        (problems.quadratic([1e-3, 1e3]), flows.GradientFlow()),
        (problems.quadratic([1.0]), flows.HeavyBall(1e3)),  # overdamped: -1e3, -1e-3
    ]
    horizons = [0.5, 10.0, 1e3, 2e4, 3e6]
    names = set()
    for q, flow in cases:
        warm = [
            _pick_solver(None, q, q.params0, T, m, flow=flow)[1:]
            for T in horizons
            for m in (None, 64, 16_384)
        ]
        fresh = []
        for T in horizons:
            for m in (None, 64, 16_384):
                monkeypatch.setattr(_solve, "_SPECTRA", {})
                fresh.append(_pick_solver(None, q, q.params0, T, m, flow=flow)[1:])
        assert warm == fresh
        names |= {name for name, _ in warm}
    assert names == {"tsit5", "kvaerno5"}


def test_tsit5_stability_radius_is_per_ray():
    """The radius depends on each eigenvalue's ray alone (computed once per ray): a vector of
    repeated, conjugate and scaled eigenvalues gives each one's own radius."""
    mu = np.array([-1.0 + 0j, -5.0 + 0j, -1.0 + 2j, -1.0 - 2j, -3.0 + 6j, -0.01 + 100j])
    each = [_tsit5_stability_radius(mu[i : i + 1])[0] for i in range(mu.size)]
    np.testing.assert_array_equal(_tsit5_stability_radius(mu), each)
    assert each[0] == each[1] and each[2] == each[3] == each[4]
