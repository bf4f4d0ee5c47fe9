"""dynopt's experiments: a registry and one shared runner.

Each experiment module defines a frozen `Config` dataclass (with `seed` and `quick` fields, its
docstring the run card), `make_config(quick, seed) -> Config`, a pure `run(config) ->
(metrics, arrays)`, and `plot(metrics, arrays, out_dir) -> list[Path]` that only reads results.
`python -m experiments list|run NAME [--quick] [--seed N] [--out DIR]|run-all|figures`.
"""

import importlib
import time
from pathlib import Path
from types import ModuleType


# name -> module; an experiment is one module plus one line here.
EXPERIMENTS: dict[str, str] = {
    "gd_flow": "experiments.gd_flow",
    "sgd_sde": "experiments.sgd_sde",
    "momentum": "experiments.momentum",
    "nesterov": "experiments.nesterov",
    "rnn_ode": "experiments.rnn_ode",
    "adaptive": "experiments.adaptive",
    "gan_dynamics": "experiments.gan_dynamics",
    "path_integral": "experiments.path_integral",
    "characteristics": "experiments.characteristics",
    "holistic": "experiments.holistic",
}
DEFAULT_RESULTS = Path("results")


def get(name: str) -> ModuleType:
    """The experiment module called `name`; `ValueError` listing the available ones otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(
            f"unknown experiment {name!r}; available: {', '.join(sorted(EXPERIMENTS))}."
        )
    return importlib.import_module(EXPERIMENTS[name])


def run_experiment(
    name: str, *, quick: bool = False, seed: int = 0, out: Path | None = None
) -> Path:
    """Run one experiment and write its results folder atomically; returns the folder."""
    import jax

    jax.config.update("jax_enable_x64", True)  # an entry point: references run in float64
    from ._io import device_info, package_versions, write_results

    module = get(name)
    config = module.make_config(quick=quick, seed=seed)
    out = Path(out) if out is not None else DEFAULT_RESULTS / name
    start = time.perf_counter()
    metrics, arrays = module.run(config)
    wall = time.perf_counter() - start
    metrics = {
        "experiment": name,
        "seed": seed,
        "quick": quick,
        "wall_time_s": wall,
        "versions": package_versions(),
        "device": device_info(),
        **metrics,
    }
    return write_results(
        out,
        config=config,
        metrics=metrics,
        arrays=arrays,
        figures=lambda tmp: module.plot(metrics, arrays, tmp),
    )


def replot(name: str, out: Path | None = None) -> list[Path]:
    """Redraw an experiment's figures from its saved results (no recomputation)."""
    from ._io import load_results

    module = get(name)
    out = Path(out) if out is not None else DEFAULT_RESULTS / name
    metrics, arrays = load_results(out)
    return module.plot(metrics, arrays, out)
