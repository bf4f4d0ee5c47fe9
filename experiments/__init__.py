"""dynopt's experiments: a registry and one shared runner.

Each experiment module is a run card (`experiments/_card.py`): a frozen `Config` (its docstring
the card; each field's quick-mode value declared with it, `by_mode`), `SECTIONS` that return
typed results, and `FIGURES` (and optionally `TABLES`) drawn from the saved results alone.
`python -m experiments list|run NAME [--quick] [--seed N] [--out DIR]|run-all|figures`.
"""

import ast
import functools
import importlib
import importlib.util
import time
from pathlib import Path
from types import ModuleType

from . import _card


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
    "continuum": "experiments.continuum",
    "edge_of_stability": "experiments.edge_of_stability",
}
DEFAULT_RESULTS = Path("results")


def check_name(name: str) -> str:
    """`name` if it is an experiment's; `ValueError` listing the available ones otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(
            f"unknown experiment {name!r}; available: {', '.join(sorted(EXPERIMENTS))}."
        )
    return name


def get(name: str) -> ModuleType:
    """The experiment module called `name`; `ValueError` listing the available ones otherwise."""
    return importlib.import_module(EXPERIMENTS[check_name(name)])


def _source(name: str) -> ast.Module:
    """The parsed source of `name`'s module, without importing it (an import is JAX and dynopt,
    over a second)."""
    origin = importlib.util.find_spec(EXPERIMENTS[check_name(name)]).origin
    return ast.parse(Path(origin).read_text(encoding="utf-8"))


def first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph on one line: an experiment's description (`list`, the
    results page and the run headers all show this one)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def summary(name: str) -> str:
    """The experiment's whole one-line description: the first paragraph of its docstring, read
    from its source (listing experiments, or a parallel run's parent, imports none of them)."""
    return first_paragraph(ast.get_docstring(_source(name)))


@functools.cache
def figure_names(name: str) -> frozenset[str]:
    """The file names of `name`'s figures (the keys of its `FIGURES`), read from its source as
    `summary` is; none for a name the registry does not know. (A result whose marker lists no
    files, written before markers did, holds these as dynopt's.)"""
    if name not in EXPERIMENTS:
        return frozenset()
    for node in _source(name).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            keys = node.value.keys
            if any(isinstance(t, ast.Name) and t.id == "FIGURES" for t in targets) and all(
                isinstance(k, ast.Constant) and isinstance(k.value, str) for k in keys
            ):
                return frozenset(k.value for k in keys)
    return frozenset(get(name).FIGURES)  # not a literal: ask the module


def run_experiment(
    name: str, *, quick: bool = False, seed: int = 0, out: Path | None = None, log=None
) -> Path:
    """Run one experiment and write its results folder atomically; returns the folder. An `out`
    that is not new, empty or a previous result of this experiment holding only what dynopt
    wrote (`_io.OutError`) and a seed outside [0, 2**32) (`ValueError`) are refused first. If
    `out` turns into such a place while the experiment runs, the finished result goes to a new
    folder beside it (`_io.Diverted`, an `OutError` naming it). A deterministic experiment
    records `seed: null`: no result of it depends on the seed. `log(message)` (the CLI passes
    `print`) hears each section start and end with its wall time."""
    from ._io import check_out, device_info, package_versions, write_results

    module = get(name)
    _card.check_seed(seed)
    out = Path(out) if out is not None else DEFAULT_RESULTS / name
    out = check_out(out, experiment=name)  # before any work
    import jax

    jax.config.update("jax_enable_x64", True)  # an entry point: references run in float64

    config = _card.configure(module.Config, quick=quick, seed=seed)
    start = time.perf_counter()
    metrics, arrays = _card.run_sections(module.SECTIONS, config, log)
    wall = time.perf_counter() - start
    metrics = {
        "experiment": name,
        "seed": seed if _card.uses_seed(module.Config) else None,
        "quick": quick,
        "wall_time_s": wall,
        "versions": package_versions(),
        "device": device_info(),
        **_card.top_level(module, metrics),
        **metrics,
    }
    return write_results(
        out,
        config=config,
        metrics=metrics,
        arrays=arrays,
        figures=lambda tmp: _figures(module, tmp),
        divert=True,
    )


def check_redraw(name: str, out: Path) -> None:
    """`_io.OutError` if redrawing `name`'s figures in `out` would replace a file there that
    dynopt did not write (a figure's name, e.g. one a quick run does not draw)."""
    from ._io import foreign, OutError

    if clash := sorted(figure_names(name) & foreign(out)):
        raise OutError(
            f"{out} holds {', '.join(clash)}, not written by dynopt: redrawing {name}'s figures "
            "would replace them; move them out of it first."
        )


def replot(name: str, out: Path | None = None) -> list[Path]:
    """Redraw an experiment's figures from its saved results (no recomputation), and add them to
    the files its marker lists. `_io.OutError` if a figure would replace a file there that dynopt
    did not write."""
    from ._io import add_written

    module = get(name)
    out = Path(out) if out is not None else DEFAULT_RESULTS / name
    check_redraw(name, out)
    paths = _figures(module, out, source=out)
    add_written(out, [p.name for p in paths])
    return paths


def _figures(module: ModuleType, out_dir: Path, source: Path | None = None) -> list[Path]:
    """Draw `module`'s figures into `out_dir` from the results saved in `source` (default: the
    same folder), so figures only ever see saved data."""
    import json

    from ._io import load_results

    source = out_dir if source is None else source
    metrics, arrays = load_results(source)
    config = json.loads((Path(source) / "config.json").read_text())
    return _card.draw(module, metrics, arrays, out_dir, config)
