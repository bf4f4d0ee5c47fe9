"""A number that was not measured is saved as such (null), not as NaN: metrics.json records a
NaN under "non_finite", the way a diverged run's loss is recorded."""

import json

import jax

from experiments import _card, _io, sgd_sde


def test_quick_schedules_save_no_monte_carlo_loss_rather_than_nan(tmp_path):
    """Before: quick mode (no Monte Carlo paths for the schedules) saved
    `schedules/*/final_mc_loss: null` with `non_finite: {...: "nan"}`, read as a run gone
    NaN."""
    jax.config.update("jax_enable_x64", True)
    config = _card.configure(sgd_sde.Config, quick=True)
    assert config.schedule_paths == 0
    metrics, arrays = _card.run_sections({"schedules": sgd_sde.schedules}, config)
    out = _io.write_results(
        tmp_path / "sgd_sde", config={}, figures=lambda d: [], arrays=arrays,
        metrics={"experiment": "sgd_sde", **metrics},
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["schedules"]["lr_decay"]["final_mc_loss"] is None
    assert "non_finite" not in metrics, metrics.get("non_finite")
