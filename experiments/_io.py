"""The shared results writer: results/NAME/{config.json, metrics.json, data.npz, *.png}.

Everything is first written into a fresh temporary folder beside the target, then swapped in with
renames, so an interrupted run never leaves a half-written result folder."""

import dataclasses
import json
import os
import platform
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np


PACKAGES = ("dynopt", "jax", "jaxlib", "optax", "diffrax", "equinox", "numpy", "matplotlib")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_info() -> dict[str, str]:
    import jax

    dev = jax.devices()[0]
    return {
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": str(jax.device_count()),
        "machine": platform.machine(),
        "cpu_count": str(os.cpu_count()),
    }


def _jsonable(x):
    if dataclasses.is_dataclass(x):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic | np.ndarray) or type(x).__module__.startswith("jax"):
        arr = np.asarray(x)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)  # JSON has no inf/nan
    return x


def _clean_floats(x):
    if isinstance(x, dict):
        return {k: _clean_floats(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean_floats(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


def write_results(out_dir: Path, *, config, metrics: dict, arrays: dict, figures) -> Path:
    """Atomically (re)place `out_dir` with config.json, metrics.json, data.npz and the figures.

    `figures` is a callable `tmp_dir -> list[Path]` that draws into the temporary folder, so
    figures and data always come from the same run.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(_clean_floats(_jsonable(config)), indent=2))
        (tmp / "metrics.json").write_text(json.dumps(_clean_floats(_jsonable(metrics)), indent=2))
        np.savez(tmp / "data.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        figures(tmp)
        backup = out_dir.with_name(f".{out_dir.name}.old")
        if backup.exists():
            shutil.rmtree(backup)
        if out_dir.exists():
            os.replace(out_dir, backup)
        os.replace(tmp, out_dir)
        if backup.exists():
            shutil.rmtree(backup)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def load_results(out_dir: Path) -> tuple[dict, dict]:
    """`(metrics, arrays)` of a saved result folder."""
    out_dir = Path(out_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    with np.load(out_dir / "data.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return metrics, arrays
