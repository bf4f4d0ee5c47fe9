"""Sweeps split across devices: 4 host CPU devices in a subprocess, checked against 1 device here.

The sharded numbers equal, bit for bit, a single-device run of each device's slice (same local
batch, same compiled kernel); against the whole sweep on one device (`run`'s vmapped; `compare`'s
one step size after another on a CPU) they agree to rounding, since XLA vectorizes a batch of 8
differently from a batch of 2 (reordered sums).
"""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import flows, games, problems

from .helpers import once_per_run, run_on_host_devices


DEVICES = 4
CHILD = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, optax
    import dynopt
    from dynopt import flows, games, problems
    from tests.test_sharding import HS, NUM_KEYS, RUN_HS, _problems

    assert jax.device_count() == 4, jax.devices()
    quad, tree, lin = _problems()
    keys = jax.random.split(jax.random.key(0), NUM_KEYS)
    c8 = dynopt.compare(flows.GradientFlow(), quad, HS, 1.0)
    c6 = dynopt.compare(flows.GradientFlow(), quad, HS[:6], 1.0,
                        reference=flows.ModifiedGradientFlow)
    run = dynopt.run(flows.GradientFlow().discretize(RUN_HS), tree, 40)
    seeds = dynopt.run(optax.sgd(0.05), lin, 10, key=keys)
    game = dynopt.run(games.Alternating().discretize(RUN_HS), games.dirac_gan(), 40)
    out = dict(c8=c8.errors, c8_final=c8.final_errors, c6=c6.errors,
               run_loss=run.loss, run_w=run.params["w"], seeds=seeds.params,
               game_phi=game.params[0], game_loss=game.loss)
    np.savez(sys.argv[1], **{k: np.asarray(v) for k, v in out.items()})
    spec = lambda x: [list(x.sharding.spec), len(x.sharding.device_set)]
    print(json.dumps(dict(c8=spec(c8.errors), run_loss=spec(run.loss),
                          run_w=spec(run.params["w"]), game_phi=spec(game.params[0]))))
    """
)
HS = 1.0 / np.array([10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1280.0])
RUN_HS = np.linspace(0.02, 0.2, 8)
NUM_KEYS = 6  # not a multiple of 4: padded to 8 and trimmed


def _problems():
    return (
        problems.quadratic([1.0, 3.0, 10.0], rotate=True, seed=2),
        problems.quadratic(  # a pytree of parameters
            [0.5, 1.0, 2.0, 4.0, 8.0],
            params0={"w": jnp.ones((2, 2)), "b": jnp.ones(1)},
            rotate=True,
        ),
        problems.linear_regression(num_samples=32, dim=2, batch_size=4),
    )


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    def child():
        out = tmp_path_factory.mktemp("sharded") / "out.npz"
        return run_on_host_devices(CHILD, str(out), devices=DEVICES), str(out)

    specs, out = once_per_run(tmp_path_factory, "sharded_sweeps", child)
    with np.load(out) as data:
        return specs, {k: data[k] for k in data.files}


def test_sweep_outputs_are_sharded_over_all_devices(sharded):
    specs, _ = sharded
    for name in ("c8", "run_loss", "run_w", "game_phi"):
        assert specs[name] == [["sweep"], DEVICES], (name, specs[name])


def test_sharded_sweep_equals_single_device_runs(sharded):
    _, got = sharded
    quad, tree, _ = _problems()
    gf = flows.GradientFlow()
    per = len(HS) // DEVICES
    # Bit for bit: a device's slice, run alone on one device.
    for i in (0, DEVICES - 1):
        sl = slice(per * i, per * (i + 1))
        c = dynopt.compare(gf, quad, HS[sl], 1.0)
        np.testing.assert_array_equal(got["c8"][sl], c.errors)
        np.testing.assert_array_equal(got["c8_final"][sl], c.final_errors)
    # The whole sweep on one device: equal up to rounding (other vectorization of the batch).
    c = dynopt.compare(gf, quad, HS, 1.0)
    np.testing.assert_allclose(got["c8"], c.errors, rtol=1e-12)
    r = dynopt.run(gf.discretize(jnp.asarray(RUN_HS)), tree, 40)
    np.testing.assert_allclose(got["run_loss"], r.loss, rtol=1e-12)
    np.testing.assert_allclose(got["run_w"], r.params["w"], rtol=1e-12, atol=1e-14)


def test_padded_sweeps_are_trimmed_and_correct(sharded):
    _, got = sharded
    quad, _, lin = _problems()
    c6 = dynopt.compare(
        flows.GradientFlow(), quad, HS[:6], 1.0, reference=flows.ModifiedGradientFlow
    )
    assert got["c6"].shape == (6,)
    np.testing.assert_allclose(got["c6"], c6.errors, rtol=1e-12)
    keys = jax.random.split(jax.random.key(0), NUM_KEYS)
    seeds = dynopt.run(optax.sgd(0.05), lin, 10, key=keys)
    assert got["seeds"].shape == (NUM_KEYS, 11, 2)
    np.testing.assert_allclose(got["seeds"], seeds.params, rtol=1e-12, atol=1e-15)


def test_game_sweeps_are_sharded_like_any_run(sharded):
    """A game steps through `run`, so its step-size sweep is split across devices too."""
    _, got = sharded
    game = dynopt.run(games.Alternating().discretize(jnp.asarray(RUN_HS)), games.dirac_gan(), 40)
    np.testing.assert_allclose(got["game_phi"], game.params[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got["game_loss"], game.loss, rtol=1e-12)
