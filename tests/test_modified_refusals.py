"""`modified_flow`'s refusals of optax optimizers say a true reason and what to change, and the
change they name is accepted: SM3's accumulators on a matrix never forget (no `state='slow'`
for them), ADOPT's maximum takes another branch at the zero state than on its manifold,
`optax.lookahead` steps other parameters than the gradient's and cycles."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import dynopt
from dynopt._modified import modified_flow


def matrix_problem() -> dynopt.Problem:
    """A tanh layer on `{"W": (3, 2), "b": (2,)}` (float64): a matrix and a vector leaf."""
    k = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(k[0], (8, 3))
    y = jnp.tanh(jax.random.normal(k[1], (8, 2)))

    def loss(p):
        pred = jnp.tanh(x @ p["W"] + p["b"][None, :])
        return 0.5 * jnp.mean(jnp.sum((pred - y) ** 2, axis=-1))

    p0 = {"W": 0.7 * jax.random.normal(k[2], (3, 2)), "b": jnp.asarray([0.3, -0.2])}
    return dynopt.Problem(loss, p0, name="tanh layer")


def refusal(optimizer, problem, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        modified_flow(optimizer, 0.01, problem=problem, **kwargs)
    return str(info.value)


def test_sm3_on_a_matrix_never_forgets_and_is_not_sent_to_the_slow_regime():
    """SM3 (b2 = 1) keeps row and column maxima of min(row, column) + g^2 on a matrix: nonlinear
    in itself, and it grows with the step count. It was told to use state='slow', which has no
    decay to scale with h and refuses it (a running maximum); now it is named an accumulator,
    and the average it points to is accepted."""
    problem = matrix_problem()
    message = refusal(lambda h: optax.sm3(h), problem)
    assert "never forget" in message and "mu['W'][0]" in message
    assert "state='slow'" not in message
    with pytest.raises(ValueError, match="running maximum"):
        modified_flow(lambda h: optax.sm3(h), 0.01, problem=problem, state="slow")
    assert modified_flow(lambda h: optax.rmsprop(h, decay=0.9), 0.01, problem=problem)


def test_a_nonlinear_leaf_that_forgets_still_gets_the_nonlinear_message():
    """SM3 with a fixed b2 < 1 contracts (|ds'/ds| <= b2): not an accumulator."""
    problem = matrix_problem()
    message = refusal(lambda h: optax.chain(optax.scale_by_sm3(b2=0.9), optax.scale(-h)), problem)
    assert "nonlinear in itself" in message and "never forget" not in message


def test_yogi_is_still_sent_to_the_slow_regime_which_takes_it():
    """Yogi's v also has |ds'/ds| = 1 off its sign's kink, but its rate 1 - b2 scales with h:
    the advice state='slow' stays, and is accepted (the accumulator message would be false)."""
    problem = matrix_problem()
    message = refusal(lambda h: optax.yogi(h), problem)
    assert "state='slow'" in message and "never forget" not in message
    yogi = lambda h: optax.yogi(h, b1=1 - h, b2=1 - 2 * h)
    assert modified_flow(yogi, 0.01, problem=problem, state="slow").spec.regime == "slow"


def test_adafactor_refusal_names_a_remedy_that_is_accepted():
    """optax.adafactor's decay reads the counter and tends to 1 (refused, true). Its remedy was
    decay_rate=0.0 alone, refused in turn: with no memory its updates have RMS 1, the kink of
    the default clipping_threshold=1. The remedy now drops the clipping and is accepted."""
    problem = matrix_problem()
    message = refusal(lambda h: optax.adafactor(h), problem)
    assert "optax.adafactor(h, decay_rate=0.0, clipping_threshold=None)" in message
    remedy = lambda h: optax.adafactor(h, decay_rate=0.0, clipping_threshold=None)
    assert modified_flow(remedy, 0.01, problem=problem).spec.regime == "fast"
    with pytest.raises(ValueError, match="kink"):
        modified_flow(lambda h: optax.adafactor(h, decay_rate=0.0), 0.01, problem=problem)


def test_mechanize_is_not_sent_to_the_slow_regime_which_refuses_it():
    """mechanize's nonlinear state was told state='slow', which refuses it (its step counter);
    it now names its scale and the scaled base optimizer, which is accepted."""
    problem = matrix_problem()
    message = refusal(lambda h: optax.contrib.mechanize(optax.sgd(h)), problem)
    assert "state='slow' does not apply" in message and "optax.scale(c)" in message
    with pytest.raises(ValueError, match="step counter"):
        modified_flow(
            lambda h: optax.contrib.mechanize(optax.sgd(h)), 0.01, problem=problem, state="slow"
        )
    c = 0.3
    assert modified_flow(lambda h: optax.chain(optax.sgd(h), optax.scale(c)), 0.01, problem=problem)


def test_adopt_refusal_names_the_branch_and_a_change_that_is_accepted():
    """ADOPT's max(sqrt(nu), eps) is eps at optax's zero state and |g| on its manifold: the
    refusal said "not supported" alone; it now says so and names a smooth chain, accepted."""
    problem = matrix_problem()
    message = refusal(lambda h: optax.contrib.adopt(h), problem)
    assert "max(sqrt(nu), eps)" in message and "optax.scale_by_rms(decay=b2, eps=eps**2)" in message
    b1, b2, eps = 0.9, 0.9999, 1e-6
    flow = modified_flow(
        lambda h: optax.chain(
            optax.scale_by_rms(decay=b2, eps=eps**2), optax.ema(b1, debias=False), optax.scale(-h)
        ),
        0.01,
        order=2,
        problem=problem,
    )
    # Its order-1 field, -g/sqrt(g^2 + eps^2), is ADOPT's h -> 0 update on the manifold
    # nu = g^2, -g/max(|g|, eps), to within a relative eps^2/(2 g^2) where |g| > eps.
    g = problem.grad(problem.params0)
    f1 = flow.terms(problem.params0, problem).fields[0]
    for leaf, gl in zip(jax.tree.leaves(f1), jax.tree.leaves(g)):
        np.testing.assert_allclose(leaf, -gl / jnp.sqrt(gl**2 + eps**2), rtol=1e-12)
        adopt = -gl / jnp.maximum(jnp.abs(gl), eps)
        # 1 - 1/sqrt(1 + x) <= x/2 with x = eps^2/g^2; the 1e-12 is f1's rounding, as above.
        np.testing.assert_allclose(leaf, adopt, rtol=float(np.max(eps**2 / (2 * gl**2))) + 1e-12)


@pytest.mark.parametrize("given", [True, False])
def test_lookahead_refusal_says_what_to_model_instead(given):
    """optax.lookahead cannot step on `tx.update(grad, state, params)` with any parameters
    (with or without a problem the refusal said to pass one or blamed the structure); it
    now says why and what to model. Its sync_period=1 remedy is exact: lookahead(tx, 1, a)
    on synced LookaheadParams moves the slow parameters as optax.chain(tx, optax.scale(a)),
    and that chain is accepted."""
    problem = matrix_problem()
    a = 0.5
    message = refusal(
        lambda h: optax.lookahead(optax.sgd(h), sync_period=3, slow_step_size=a),
        problem if given else None,
    )
    assert "LookaheadParams neither" in message and "sync_period=1" in message
    assert ("your problem (tanh layer)" in message) == given

    h = 0.05
    inner = optax.adamw(h, weight_decay=0.1)
    look = optax.lookahead(inner, sync_period=1, slow_step_size=a)
    plain = optax.chain(inner, optax.scale(a))
    lp = optax.LookaheadParams.init_synced(problem.params0)
    p = problem.params0
    ls, ps = look.init(lp), plain.init(p)
    with jax.numpy_dtype_promotion("standard"):  # optax's own arithmetic, as a user runs it
        for _ in range(5):
            u, ls = look.update(problem.grad(lp.fast), ls, lp)
            lp = optax.apply_updates(lp, u)
            v, ps = plain.update(problem.grad(p), ps, p)
            p = optax.apply_updates(p, v)
            for x, y in zip(jax.tree.leaves(lp.slow), jax.tree.leaves(p)):
                np.testing.assert_allclose(x, y, rtol=1e-13, atol=1e-15)
    assert modified_flow(lambda h: optax.chain(optax.sgd(h), optax.scale(a)), 0.01, problem=problem)
