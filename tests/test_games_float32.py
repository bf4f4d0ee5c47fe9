"""Games whose players are float32, or float32 and float64 in one game, through `run`, `solve` and
`compare` under strict dtype promotion: as for a `Problem`, the discrete run keeps each player's
dtype and the continuous reference is float64; the numbers are the float64 game's to float32's
rounding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import games


# Starts exact in float32: the float64 reference of a float32 game starts where the float64
# game's does.
PHI0, THETA0 = (0.25, -0.5), (0.75, 0.125)
A = 0.1  # each player's own damping: the equilibrium 0 attracts, eigenvalues -a ± i
H, STEPS = 0.1, 20
DTYPES = {"f32": (jnp.float32, jnp.float32), "f32+f64": (jnp.float32, jnp.float64)}
SCHEMES = [
    games.Simultaneous(),
    games.Alternating(),
    games.Consensus(0.5),
    games.Extragradient(),
    games.Optimistic(),
]


def _loss(phi, theta):
    # The loss reads both players in float64 (a loss may upcast; the iterates must not).
    phi, theta = phi.astype(jnp.float64), theta.astype(jnp.float64)
    return jnp.dot(phi, theta) - 0.5 * A * jnp.dot(phi, phi) + 0.5 * A * jnp.dot(theta, theta)


def _game(phi_dtype, theta_dtype):
    return games.minmax(
        _loss,
        jnp.array(PHI0, phi_dtype),
        jnp.array(THETA0, theta_dtype),
        equilibrium=(jnp.zeros(2, phi_dtype), jnp.zeros(2, theta_dtype)),
    )


def _dtypes(tree):
    return jax.tree.map(lambda x: jnp.dtype(x.dtype), tree)


def _tolerance(steps):
    # One step rounds each float32 coordinate a few times, by at most eps/2 relative each: the
    # float64 gradient cast to float32, h (weakly typed) times it, the sum, and the scheme's
    # own combinations (extragradient's half step, consensus' J^T v, optimistic's 2g_k - g_{k-1}):
    # at most 2 eps |z| per step for |z|, |xi| <= 1. The step map I + hJ of the linear game is
    # normal with |1 + h(-a ± i)| < 1 at h = 0.1, so errors made earlier do not grow: after N
    # steps at most 2 N eps.
    return 2 * steps * float(jnp.finfo(jnp.float32).eps)


@pytest.mark.parametrize("case", DTYPES, ids=list(DTYPES))
def test_run_keeps_each_players_dtype_and_the_float64_numbers(case):
    game, exact = _game(*DTYPES[case]), _game(jnp.float64, jnp.float64)
    for scheme in SCHEMES:
        disc = scheme.discretize(H)
        traj = dynopt.run(disc, game, STEPS)
        ref = dynopt.run(disc, exact, STEPS)
        assert _dtypes(traj.params) == tuple(map(jnp.dtype, DTYPES[case])), scheme
        # The Hamiltonian of mixed players is summed in float64 (their widest dtype).
        assert traj.loss.dtype == jnp.float64 if case == "f32+f64" else jnp.float32
        for got, want in zip(traj.params, ref.params):
            np.testing.assert_allclose(
                np.asarray(got, np.float64),
                np.asarray(want),
                atol=_tolerance(STEPS),
                err_msg=type(scheme).__name__,
            )
        assert int(traj.diverged_at) == -1


@pytest.mark.parametrize("case", DTYPES, ids=list(DTYPES))
def test_the_reference_of_a_float32_game_is_the_float64_games(case):
    """`solve` integrates the float64 state (the contract's float64 reference), from the same
    start: bit for bit the float64 game's solution, its stiffness read off a float64 Jacobian
    (mixed players raised a strict-promotion error in the stiffness estimate and in the
    Hamiltonian)."""
    game, exact = _game(*DTYPES[case]), _game(jnp.float64, jnp.float64)
    ts = jnp.linspace(0.0, 2.0, 5)
    for flow in (games.GameFlow(), games.GameFlow(games.Consensus(0.5))):
        sol, sol64 = dynopt.solve(flow, game, ts), dynopt.solve(flow, exact, ts)
        assert _dtypes(sol.params) == (jnp.dtype(jnp.float64),) * 2
        for got, want in zip(sol.params, sol64.params):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(game.time_scales(game.params0), exact.time_scales(exact.params0))


def test_compare_of_a_float32_game_is_the_float64_games_to_float32_rounding():
    """The reference is float64 in both; the discrete iterates differ by the rounding above, at
    most that along the whole run (`errors` is a maximum over the matched times). Both dtype
    cases in one test: each comparison of the float64 game, compiled once, serves both (as two
    cases, each test worker that ran one compiled its own)."""
    exact = _game(jnp.float64, jnp.float64)
    hs, t1 = [H, H / 2], 1.0
    steps = round(t1 / min(hs))
    for scheme in (games.Simultaneous(), games.Alternating(), games.Consensus(0.5)):
        flow = games.GameFlow(scheme)
        for reference in (None, flow.modified):
            cmp64 = dynopt.compare(flow, exact, hs, t1, reference=reference)
            for case, dtypes in DTYPES.items():
                cmp = dynopt.compare(flow, _game(*dtypes), hs, t1, reference=reference)
                np.testing.assert_allclose(
                    cmp.errors,
                    cmp64.errors,
                    atol=_tolerance(steps),
                    err_msg=f"{case} {type(scheme).__name__} reference={reference}",
                )


def test_mixed_players_hamiltonian_and_jacobian_are_float64():
    """The Hamiltonian ½‖ξ‖² and the dense Jacobian of players of float32 and float64 are
    computed in float64 (no implicit promotion path under strict promotion), equal to the
    float64 game's at the same (float32-exact) point to the float32 gradient's rounding."""
    game, exact = _game(jnp.float32, jnp.float64), _game(jnp.float64, jnp.float64)
    h, h64 = game.hamiltonian(game.params0), exact.hamiltonian(exact.params0)
    assert h.dtype == jnp.float64
    # ξ_φ is rounded to float32 (relative eps/2), so ½‖ξ‖² moves by at most eps ‖ξ‖².
    np.testing.assert_allclose(h, h64, rtol=float(jnp.finfo(jnp.float32).eps))
    jac = game.jacobian(game.params0)
    assert jac.dtype == jnp.float64
    np.testing.assert_allclose(jac, exact.jacobian(exact.params0), rtol=0, atol=1e-15)
    np.testing.assert_allclose(
        np.sort_complex(game.eigenvalues(game.params0)), [-A - 1j, -A - 1j, -A + 1j, -A + 1j]
    )
    np.testing.assert_array_equal(game.eigenvalues(), exact.eigenvalues())
    for scheme in SCHEMES[:3]:
        growth = games.modified_flow_growth(scheme, game, H)
        assert growth == games.modified_flow_growth(scheme, exact, H)
