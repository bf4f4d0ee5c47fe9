"""Run cards: an experiment is a Config, a list of sections that return typed results, and figures.

An experiment module defines

- `Config`: a frozen dataclass whose docstring is the run card (the command, the expected runtime,
  the headline numbers), with a field `quick`, a field `seed` only where the experiment draws
  random numbers (a deterministic one records `seed: null`), and each field that `--quick`
  overrides declared once, with both values: `steps: int = by_mode(1000, quick=100)`;
- `SECTIONS`: `{key: section}`, each `section(config) -> result`. A result is typed: a dataclass of
  numbers, strings, lists, nested dicts and arrays (fields annotated `Array`), or a
  `dict[str, result]`; the return annotation says which (`None` for a section a mode skips);
- `FIGURES`: `{file name: draw}`, each `draw(results) -> Figure` a pure function of the results
  (or `None` when a mode has nothing to draw, e.g. a full-mode-only section);
- optionally `TABLES`: `{title: table}`, each `table(results) -> (columns, rows)` (strings; `None`
  when a mode has nothing to show), a pure function of the results as the figures are: printed
  after a run and shown on the results page.

The runner applies the quick values, times each section, writes the numbers to `metrics.json`
under the section's key and the arrays to `data.npz` under `section/field` keys, and rebuilds the
typed results from exactly those two files for the figures: a figure can only show what was saved,
and `python -m experiments figures` redraws it without recomputing.
"""

import dataclasses
import time
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


Array = np.ndarray  # a result field annotated `Array` (or `Array | None`) goes to data.npz
_MISSING = object()


SEED_RANGE = 2**32  # what both jax.random.key and numpy's default_rng take


def check_seed(seed) -> int:
    """`seed` as an int, or `ValueError` naming `--seed` and its valid range."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"--seed must be an integer in [0, 2**32), got {seed!r}")
    if not 0 <= seed < SEED_RANGE:
        raise ValueError(f"--seed must be an integer in [0, 2**32), got {seed}")
    return int(seed)


def uses_seed(config_cls: type) -> bool:
    """Whether the experiment draws random numbers (its Config has a `seed` field)."""
    return "seed" in {f.name for f in dataclasses.fields(config_cls)}


def by_mode(full, *, quick):
    """A Config field's default: `full`, and `quick` under `--quick` (both in one place)."""
    return dataclasses.field(default=full, metadata={"quick": quick})


def quick_values(config_cls: type) -> dict:
    """The fields `--quick` overrides and their quick values (the `by_mode` fields)."""
    fields = dataclasses.fields(config_cls)
    return {f.name: f.metadata["quick"] for f in fields if "quick" in f.metadata}


def configure(config_cls: type, *, quick: bool = False, seed: int = 0):
    """`config_cls(seed=seed)` (no seed for a deterministic experiment), with its quick values
    (`quick_values`) applied when `quick`; `ValueError` for a seed outside [0, 2**32)."""
    seed = check_seed(seed)
    config = config_cls(seed=seed) if uses_seed(config_cls) else config_cls()
    if quick:
        config = dataclasses.replace(config, quick=True, **quick_values(config_cls))
    return config


def _is_array_hint(hint) -> bool:
    if hint is Array:
        return True
    args = typing.get_args(hint)
    return bool(args) and Array in args and all(a in (Array, type(None)) for a in args)


def _optional(hint):
    """`T` for a hint `T | None` (not an array), else `None`."""
    args = typing.get_args(hint)
    if len(args) == 2 and type(None) in args and not _is_array_hint(hint):
        return next(a for a in args if a is not type(None))
    return None


def _split(value, hint, path: str, arrays: dict):
    """The JSON part of `value` (typed by `hint`); its arrays go into `arrays` by path."""
    if _is_array_hint(hint):
        if value is not None:
            arrays[path] = np.asarray(value)
        return _MISSING
    if _optional(hint) is not None:
        return None if value is None else _split(value, _optional(hint), path, arrays)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        out = {}
        for f in dataclasses.fields(hint):
            sub = _split(getattr(value, f.name), hints[f.name], f"{path}/{f.name}", arrays)
            if sub is not _MISSING:
                out[f.name] = sub
        return out
    if typing.get_origin(hint) is dict:
        _, item = typing.get_args(hint)
        out = {str(k): _split(v, item, f"{path}/{k}", arrays) for k, v in value.items()}
        out = {k: v for k, v in out.items() if v is not _MISSING}
        return out if out or not _is_array_hint(item) else _MISSING
    return value


def _join(tree, hint, path: str, arrays: Mapping[str, np.ndarray]):
    """Inverse of `_split`: the typed result at `path` from saved JSON and arrays."""
    if _is_array_hint(hint):
        return arrays.get(path)
    if _optional(hint) is not None:
        return None if tree is None else _join(tree, _optional(hint), path, arrays)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        kwargs = {
            f.name: _join(tree.get(f.name), hints[f.name], f"{path}/{f.name}", arrays)
            for f in dataclasses.fields(hint)
        }
        return hint(**kwargs)
    if typing.get_origin(hint) is dict:
        _, item = typing.get_args(hint)
        if _is_array_hint(item):  # a dict of arrays: its keys are in data.npz alone
            keys = [k[len(path) + 1 :] for k in arrays if k.startswith(f"{path}/")]
            return {k: arrays[f"{path}/{k}"] for k in keys if "/" not in k}
        return {k: _join(v, item, f"{path}/{k}", arrays) for k, v in tree.items()}
    if hint is float:
        # JSON has no inf/nan: the writer stores them as null or as their string.
        return float("nan") if tree is None else float(tree)
    return tree


def _result_hint(section: Callable):
    hint = typing.get_type_hints(section).get("return")
    if hint is None:
        raise TypeError(f"section {section.__name__} needs a return annotation (its result type)")
    return hint


def run_sections(
    sections: Mapping[str, Callable], config, log: Callable[[str], None] | None = None
) -> tuple[dict, dict]:
    """Run each section in order, timed: `(metrics, arrays)` keyed by section. `log` (the CLI
    passes one) hears what starts and how long each section took."""
    metrics: dict[str, Any] = {"section_wall_time_s": {}}
    arrays: dict[str, np.ndarray] = {}
    for i, (key, section) in enumerate(sections.items()):
        if log is not None:
            log(f"  [{i + 1}/{len(sections)}] {key} ...")
        start = time.perf_counter()
        result = section(config)
        elapsed = time.perf_counter() - start
        metrics["section_wall_time_s"][key] = elapsed
        metrics[key] = _split(result, _result_hint(section), key, arrays)
        if log is not None:
            # A section returning None is one this mode skips (e.g. a full-mode-only section).
            said = "skipped in this mode" if result is None else f"done in {elapsed:.1f} s"
            log(f"  [{i + 1}/{len(sections)}] {key} {said}")
    return metrics, arrays


def top_level(module, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The card's `METRICS` (paths `section/name` into its sections' metrics) by their names:
    the numbers an experiment's contract names at the top of metrics.json (edge_of_stability's
    `central_prediction_max_rel_error`, ...; DESIGN §2), kept in their section too."""
    from ._headline import lookup

    return {
        path.rsplit("/", 1)[-1]: lookup(metrics, path) for path in getattr(module, "METRICS", ())
    }


def results_from(sections: Mapping[str, Callable], metrics: dict, arrays: Mapping, config=None):
    """The typed results (attribute per section) rebuilt from saved metrics and arrays; `meta`
    holds the run's metadata (seed, quick, wall times, versions) and `config` its config."""
    missing = [key for key in sections if key not in metrics]
    if missing:  # (a KeyError from inside the rebuild said neither what nor why)
        raise ValueError(
            f"metrics.json lacks the section(s) {', '.join(map(repr, missing))} (written by "
            "another version of the experiment, or edited)"
        )
    typed = {
        key: _join(metrics[key], _result_hint(section), key, arrays)
        for key, section in sections.items()
    }
    meta = {k: v for k, v in metrics.items() if k not in sections}
    return types.SimpleNamespace(**typed, meta=meta, config=config)


def draw(module, metrics: dict, arrays: Mapping, out_dir: Path, config=None) -> list[Path]:
    """Draw and save every figure of `module.FIGURES` from saved results into `out_dir`."""
    from dynopt import plotting

    results = results_from(module.SECTIONS, metrics, arrays, config)
    figures = {name: draw(results) for name, draw in module.FIGURES.items()}
    return [plotting.save(fig, Path(out_dir) / n) for n, fig in figures.items() if fig is not None]


Table = tuple[str, list[str], list[list[str]]]  # (title, column headers, rows of cells)


def load(module, folder: Path):
    """The typed results of `module` saved in `folder` (`results_from` its metrics.json,
    data.npz and config.json); `ValueError` saying why where they cannot be rebuilt (a file
    missing or cut short, a section missing: another version wrote it, or it was changed)."""
    import json
    import zipfile

    from ._io import load_results

    try:
        metrics, arrays = load_results(folder)
        config = json.loads((Path(folder) / "config.json").read_text())
        return results_from(module.SECTIONS, metrics, arrays, config)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from e


def tables(module, folder: Path) -> list[Table]:
    """`module.TABLES` evaluated on the result saved in `folder` (none if it defines none)."""
    specs = getattr(module, "TABLES", {})
    if not specs:
        return []
    try:
        results = load(module, folder)
    except ValueError as e:
        # A result this version cannot rebuild (another version wrote it, a file is gone): the
        # page and the report still render, and say so.
        return [("Tables", ["not shown"], [[f"the saved result cannot be read ({e}); rerun"]])]
    out = []
    for title, table in specs.items():
        made = table(results)
        if made is not None:
            columns, rows = made
            out.append((title, [str(c) for c in columns], [[str(c) for c in r] for r in rows]))
    return out


def table_text(table: Table) -> str:
    """A table as aligned plain text (title, header, rule, rows)."""
    title, columns, rows = table
    widths = [max(len(x) for x in col) for col in zip(columns, *rows)]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(columns), rule, *(line(r) for r in rows)])
