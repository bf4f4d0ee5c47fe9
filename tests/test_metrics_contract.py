"""The numbers an experiment's contract names sit at the top of its metrics.json (DESIGN §2:
edge_of_stability's `central_prediction_max_rel_error`, ...), beside their section."""

from experiments import _card, edge_of_stability


CONTRACT = (
    "central_prediction_max_rel_error",
    "central_prediction_mean_rel_error",
    "stable_flow_max_rel_error",
    "eos_onset_step",
    "sharpness_ratio_median",
)


def test_edge_of_stability_names_its_contract_metrics_at_the_top():
    section = {name: float(i) for i, name in enumerate(CONTRACT)}
    section["central_prediction_max_rel_error"] = None  # quick mode: the central flow not run
    metrics = {"eos": section, "anchor": None, "hlambda": {}}
    top = _card.top_level(edge_of_stability, metrics)
    assert top == section  # every contract name, with its section's value (None kept)


def test_a_card_without_contract_metrics_adds_nothing():
    from experiments import gd_flow

    assert _card.top_level(gd_flow, {"x": {"y": 1}}) == {}
