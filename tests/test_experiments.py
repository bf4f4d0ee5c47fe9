import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import experiments
from experiments import __main__ as cli
from experiments._io import load_results, write_results


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """`quick_results(name)`: the folder of `name`'s quick run, run at most once per module (per
    test worker) and shared by the generic test and that experiment's golden-value test."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            out = tmp_path_factory.mktemp(name) / name
            cache[name] = experiments.run_experiment(name, quick=True, seed=0, out=out)
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_quick_mode_writes_results_and_figures(name, quick_results):
    out = quick_results(name)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seed"] == 0 and metrics["quick"] is True
    assert {"jax", "optax", "diffrax", "equinox"} <= set(metrics["versions"])
    assert metrics["wall_time_s"] > 0
    assert json.loads((out / "config.json").read_text())["quick"] is True
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.stat().st_size > 10_000 for p in pngs)
    # Figures are a pure function of the saved data.
    before = {p.name for p in pngs}
    assert {p.name for p in experiments.replot(name, out)} == before


def test_gd_flow_headline_numbers(quick_results):
    """Golden values for gd_flow --quick. If this fails after a deliberate change of the
    experiment, rerun `python -m experiments run gd_flow --quick` and update the bounds."""
    out = quick_results("gd_flow")
    m = json.loads((out / "metrics.json").read_text())
    for prob in m["problems"].values():
        assert abs(prob["order_gd_vs_flow"] - 1.0) <= 0.1
        assert abs(prob["order_gd_vs_modified_flow"] - 2.0) <= 0.1
        assert prob["lyapunov_max_rel_deviation"] < 1e-6
    assert m["closed_form"]["max_abs_error"] <= 1e-8
    lo, hi = m["stability"]["found_boundary_interval"]
    assert lo < m["stability"]["predicted_boundary"] < hi


def test_adaptive_headline_numbers(quick_results):
    """Golden values for adaptive --quick. If this fails after a deliberate change of the
    experiment, rerun `python -m experiments run adaptive --quick` and update the bounds."""
    out = quick_results("adaptive")
    m = json.loads((out / "metrics.json").read_text())
    quad = m["orders"]["quadratic"]
    assert abs(quad["order_rmsprop_G0_g0sq"] - 1.0) <= 0.1  # optax.rmsprop vs RMSPropFlow
    assert abs(quad["order_adam"] - 1.0) <= 0.1  # optax.adam vs AdamFlow
    assert abs(m["limits"]["kappa_slope"] + 1.0) <= 0.1  # κ → ∞: O(1/κ) to the sign-like flow
    assert abs(m["limits"]["width_slope"] - 1.0) <= 0.1  # SignFlow(w) is O(w) off the exact flow
    nrm = m["normalization"]
    assert nrm["global"]["max_angle_to_minus_grad_deg"] < 1e-4  # eq. 14 keeps -∇L's direction
    assert nrm["coordinate"]["max_angle_to_minus_grad_deg"] > 30  # eq. 15 turns it
    assert 0.8 < m["displacement"]["quantiles_5_50_95"][1] < 1.2  # steps of length ≈ γ
    assert abs(m["polyak_post3"]["gd_final_x"] - 3.0) < 1e-6


def test_holistic_headline_numbers(quick_results):
    """Golden values for holistic --quick. If this fails after a deliberate change of the
    experiment, rerun `python -m experiments run holistic --quick` and update the bounds."""
    out = quick_results("holistic")
    m = json.loads((out / "metrics.json").read_text())
    for flow, lyap in m["lyapunov"].items():
        assert lyap["max_relative_deviation"] < 1e-6, flow  # dL/dt = predicted identity
        assert (lyap["max_predicted_rate"] > 0) == (flow == "adam"), flow  # Adam: not Lyapunov
    rms = m["rmsprop_plateau"]
    assert abs(rms["plateau_slope_in_gamma"] - 1.0) < 1e-3  # chatter amplitude ∝ γ
    assert np.allclose(rms["plateau_over_gamma"], 2**-0.5, rtol=1e-3)  # period-2 orbit ±γ/2
    assert rms["plateau_vs_eps_max_abs_error_to_theory_over_gamma"] < 1e-6
    for c in rms["crossovers_per_coordinate"]:
        lo, hi = c["found"]
        assert lo < c["predicted"] < hi  # ε* = (γλ/2)²
    assert rms["gd_regime_contraction_max_abs_error"] < 1e-5  # GD with step γ/√ε
    assert m["polyak_decay"]["max_relative_deviation_pointwise"] < 1e-7  # L = L(0)e^{-t}
    p3 = m["post3"]
    assert abs(p3["polyak_final_x"] - p3["global_min_x"]) < 1e-3
    assert abs(p3["gd_final_x"] - 3.0) < 1e-6
    assert 2.5 < p3["polyak_escape_t"] < 3.0


def test_unknown_experiment_lists_available():
    with pytest.raises(ValueError, match=r"unknown experiment 'nope'; available: .*gd_flow"):
        experiments.get("nope")
    assert cli.main(["run", "nope"]) == 2


def test_cli_list(capsys):
    assert cli.main(["list"]) == 0
    assert "gd_flow" in capsys.readouterr().out


def test_cli_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    assert "gd_flow" in proc.stdout


def test_writer_is_atomic_on_failure(tmp_path):
    out = tmp_path / "exp"
    write_results(
        out, config={"a": 1}, metrics={"m": 1.0}, arrays={"x": np.arange(3)}, figures=lambda d: []
    )

    def broken(_):
        raise RuntimeError("interrupted while drawing")

    with pytest.raises(RuntimeError):
        write_results(
            out, config={"a": 2}, metrics={"m": 2.0}, arrays={"x": np.arange(4)}, figures=broken
        )
    metrics, arrays = load_results(out)
    assert metrics == {"m": 1.0} and arrays["x"].shape == (3,)
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]
