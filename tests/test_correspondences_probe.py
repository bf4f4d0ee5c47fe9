"""Probe of the correspondence registry's rows as a user writes them.

An `AutomaticCorrespondence` whose measurements list no truncation order had nothing to measure,
and the battery's order check passed on the empty set: a check that cannot fail. Its options
given as a dict (the natural spelling of keywords) failed inside the battery's cache with
"unhashable type: 'dict'". Each is now refused, or taken, where the row is written.
"""

import jax.numpy as jnp
import optax
import pytest

from dynopt import problems
from dynopt.correspondences import AutomaticCorrespondence, Measurement


def _bowl():
    return problems.quadratic(jnp.array([1.0, 2.0]), params0=jnp.array([1.0, -1.0]))


def _sgd(h):
    return optax.sgd(h)


def _heavy_ball(h):
    return optax.sgd(h, momentum=0.5)


_LADDER = (0.02, 0.01, 0.005)


def test_an_automatic_row_with_nothing_to_measure_is_refused():
    """No orders on any measurement, or no measurement: `verify(row, ["order"])` passed
    (no fit to fail), and `verify(row)` raised `max() arg is an empty sequence`."""
    with pytest.raises(ValueError, match=r"orders.*at least one"):
        AutomaticCorrespondence("sgd", _sgd, (Measurement(_bowl, 0.4, _LADDER),))
    with pytest.raises(ValueError, match=r"measurements must be a non-empty tuple of Measurement"):
        AutomaticCorrespondence("sgd", _sgd, ())
    with pytest.raises(ValueError, match=r"measurements must be a non-empty tuple of Measurement"):
        AutomaticCorrespondence("sgd", _sgd, Measurement(_bowl, 0.4, _LADDER, (1,)))


def test_an_automatic_row_names_what_modified_flow_cannot_do():
    """An order past `modified_flow`'s, or an optimizer that is a transform instead of a
    callable of the step size, is refused with the row, not inside the battery's compare."""
    with pytest.raises(ValueError, match=r"orders must be integers in \[1, 4\]"):
        AutomaticCorrespondence("sgd", _sgd, (Measurement(_bowl, 0.4, _LADDER, (5,)),))
    with pytest.raises(ValueError, match=r"optimizer must be a callable h ->"):
        AutomaticCorrespondence("sgd", optax.sgd(0.1), (Measurement(_bowl, 0.4, _LADDER, (1,)),))


def test_automatic_row_options_as_a_dict_or_pairs_are_one_row():
    """`options={"state": "fast"}` is the row of `options=(("state", "fast"),)`: the same
    hashable tuple (the battery caches the reference by it), and the same flow."""
    m = (Measurement(_bowl, 0.4, _LADDER, (2,)),)
    as_dict = AutomaticCorrespondence("hb", _heavy_ball, m, options={"state": "fast"})
    as_pairs = AutomaticCorrespondence("hb", _heavy_ball, m, options=(("state", "fast"),))
    assert as_dict.options == as_pairs.options == (("state", "fast"),)
    hash(as_dict.options)
    assert as_dict.reference(2) is as_pairs.reference(2)
    assert as_dict.flow(0.01, 2).spec.regime == "fast"


def test_automatic_row_options_name_modified_flows_keywords():
    m = (Measurement(_bowl, 0.4, _LADDER, (1,)),)
    with pytest.raises(ValueError, match=r"options.*'stat'.*state, state_map, time_unit"):
        AutomaticCorrespondence("hb", _heavy_ball, m, options={"stat": "fast"})
    with pytest.raises(ValueError, match=r"options must be a dict or a tuple of"):
        AutomaticCorrespondence("hb", _heavy_ball, m, options=("state", "fast"))
    with pytest.raises(ValueError, match=r"options.*hashable.*state_map"):
        AutomaticCorrespondence(
            "hb", _heavy_ball, m, options={"state_map": [lambda s, t: s, lambda z, t: z]}
        )


def test_measurement_orders_and_step_sizes_written_wrongly_are_refused():
    """`orders=(True,)` was taken as order 1; an empty ladder or a repeated step size was
    taken, to fail later inside `compare`."""
    with pytest.raises(ValueError, match=r"orders must be integers >= 1"):
        Measurement(_bowl, 0.4, _LADDER, (True,))
    with pytest.raises(ValueError, match=r"step_sizes must be a non-empty sequence"):
        Measurement(_bowl, 0.4, ())
    with pytest.raises(ValueError, match=r"step_sizes must be distinct"):
        Measurement(_bowl, 0.4, (0.02, 0.01, 0.02))
