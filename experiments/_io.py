"""The shared results writer: results/NAME/{config.json, metrics.json, data.npz, *.png, .dynopt}.

A results folder carries a marker file (`.dynopt`, a regular file): a folder is a dynopt result
only if it has one (`is_result`). `check_out` refuses, before any work, an `--out` that is a file
or a non-empty folder without it, and `remove_results` (`clean`) removes no such folder as a
result, so a user's folder is never replaced or removed, whatever it holds.
Everything is written into a unique temporary folder beside the target (named with the writer's
pid), then swapped in by renames; concurrent writers each swap their own folder in (the last one
wins, none fails), and the leftovers of writers that died (a temporary folder, or the old result
moved aside before the final rename) are cleaned up or put back by the next writer. Files get the
user's umask, and `metrics.json` is standard JSON: a non-finite number is written as `null` and its
value ("inf", "-inf" or "nan") is recorded under `non_finite` by its path, e.g.
`{"stability/runs/2/final_loss": "inf"}`; `load_results` puts it back.
"""

import dataclasses
import errno
import json
import os
import platform
import shutil
import stat
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np


PACKAGES = ("dynopt", "jax", "jaxlib", "optax", "diffrax", "equinox", "numpy", "matplotlib")
MARKER = ".dynopt"  # present in every results folder this writer made
NON_FINITE = "non_finite"  # metrics.json: path -> "inf" | "-inf" | "nan" for each null number


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


class OutError(ValueError):
    """An `--out` that the writer must not touch; the message is one line for the user."""


def check_out(out_dir) -> Path:
    """`out_dir` as a Path if results may be written there: it does not exist, is an empty folder,
    or is a previous dynopt result; `OutError` with a one-line reason otherwise. A concurrent
    writer swapping its result in cannot fool it: the listing is taken from one folder that is
    still at `out_dir` when it ends."""
    if out_dir is None or str(out_dir).strip() == "":
        raise OutError("--out is empty; give a folder for the results.")
    out_dir = Path(out_dir).expanduser()
    if out_dir.name in ("", ".", ".."):
        raise OutError(f"--out {str(out_dir)!r} names no folder of its own; give e.g. out/NAME.")
    names, marked = _entries(out_dir)
    if names and not marked:
        raise OutError(
            f"--out {out_dir} holds files that are not a dynopt result (no {MARKER} marker); "
            "choose a new or empty folder."
        )
    parent = out_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutError(f"--out {out_dir}: cannot create it under {parent} (not a folder).")
    # A real write, not `os.access`: as root every permission test passes, and a folder such as
    # /proc or a full disk refuses anyway, which would surface only after the whole run. The
    # probe has a writer's temporary name, so `_recover` and `clean` know it if we die here.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise OutError(
            f"--out {out_dir}: cannot create it under {parent} ({e.strerror or e})."
        ) from e
    return out_dir


def _entries(out_dir: Path) -> tuple[set[str], bool]:
    """`(names, marked)`: the names in the folder at `out_dir` (empty if there is none) and
    whether it carries the marker, read from one folder: a concurrent writer moves a previous
    result aside and deletes it, so a listing taken from a folder that is no longer at `out_dir`
    when the listing ends (part deleted, marker first) is read again. `OutError` if `out_dir` is
    a file."""
    for _ in range(1000):
        try:
            mode = os.lstat(out_dir).st_mode
        except (FileNotFoundError, NotADirectoryError):  # (a file above it: refused later)
            return set(), False
        if not stat.S_ISDIR(mode):
            raise OutError(f"--out {out_dir} is a file, not a results folder; choose another path.")
        try:
            fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except PermissionError as e:
            raise OutError(f"--out {out_dir}: cannot read the folder ({e.strerror}).") from e
        except OSError:
            continue  # replaced between the two calls: look again
        try:
            names, listed = set(os.listdir(fd)), os.fstat(fd)
            marked = MARKER in names and is_result(fd)
        finally:
            os.close(fd)
        try:
            now = os.lstat(out_dir)
        except FileNotFoundError:
            continue
        if (now.st_dev, now.st_ino) == (listed.st_dev, listed.st_ino):
            return names, marked
    raise OutError(f"--out {out_dir} keeps being replaced by other writers; try again.")


def is_result(folder) -> bool:
    """Whether `folder` (a path, or an open folder's descriptor) is a dynopt result: it carries
    the marker as a regular file. The only test: `check_out`, `remove_results` and the page all
    use it. (Folders without the marker are never results, even if they hold only metrics.json
    and PNGs: the writer has always written it, and such a folder may be a user's.)"""
    try:
        if isinstance(folder, int):
            mode = os.stat(MARKER, dir_fd=folder, follow_symlinks=False).st_mode
        else:
            mode = os.lstat(Path(folder) / MARKER).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode)


def _key(k) -> str:  # a path segment, "/" and "~" escaped as in JSON Pointer (RFC 6901)
    return str(k).replace("~", "~0").replace("/", "~1")


def _unkey(k: str) -> str:
    return k.replace("~1", "/").replace("~0", "~")


def _jsonable(x, path: str, non_finite: dict):
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x), path, non_finite)
    if isinstance(x, dict):
        return {str(k): _jsonable(v, f"{path}/{_key(k)}", non_finite) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v, f"{path}/{i}", non_finite) for i, v in enumerate(x)]
    if isinstance(x, np.generic | np.ndarray) or type(x).__module__.startswith("jax"):
        arr = np.asarray(x)
        return _jsonable(arr.item() if arr.ndim == 0 else arr.tolist(), path, non_finite)
    if isinstance(x, float) and not np.isfinite(x):
        non_finite[path.lstrip("/")] = str(x)  # "inf", "-inf" or "nan"
        return None
    return x


def dumps(tree) -> str:
    """Standard JSON (no NaN/Infinity tokens, no "inf" strings): see the module docstring."""
    non_finite: dict[str, str] = {}
    data = _jsonable(tree, "", non_finite)
    if non_finite and isinstance(data, dict):
        data[NON_FINITE] = non_finite
    return json.dumps(data, indent=2, allow_nan=False)


def _restore(data: dict) -> dict:
    for path, value in data.pop(NON_FINITE, {}).items():
        *parents, last = (_unkey(k) for k in path.split("/"))
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = float(value)
    return data


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover(out_dir: Path) -> None:
    """Clean up after writers that died: put an old result moved aside back if the target is
    missing, and remove their temporary folders."""
    prefix = f".{out_dir.name}."
    for p in sorted(out_dir.parent.glob(f"{prefix}*-*")):
        kind, _, rest = p.name[len(prefix) :].partition("-")
        pid = rest.split("-", 1)[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if kind == "old" and not out_dir.exists() and is_result(p):
            try:
                os.rename(p, out_dir)  # the old result is never left unreachable
                continue
            except OSError:
                pass
        shutil.rmtree(p, ignore_errors=True)


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Rename `tmp` to `out_dir`, moving a previous result aside first; retried when another
    writer swaps its folder in between (then the last writer wins)."""
    for _ in range(100):
        backup = Path(
            tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{os.getpid()}-", dir=out_dir.parent)
        )
        backup.rmdir()  # a unique name for the rename below
        try:
            os.rename(out_dir, backup)
        except FileNotFoundError:
            backup = None
        try:
            os.rename(tmp, out_dir)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue  # another writer got in between: move its result aside and retry
        finally:
            if backup is not None:
                shutil.rmtree(backup, ignore_errors=True)
        return
    raise OSError(f"could not place results in {out_dir}: too many concurrent writers")


def _writer_leftover(p: Path) -> bool:
    """A temporary or moved-aside folder `.NAME.{tmp,old}-PID-...`, or a temporary file
    `.NAME.tmp-PID-...` (the results page's), of a writer that died."""
    name = p.name
    if not name.startswith(".") or p.is_symlink():
        return False
    if p.is_dir():
        kinds = ("tmp", "old")
    elif p.is_file():
        kinds = ("tmp",)
    else:
        return False
    for kind in kinds:
        _, sep, rest = name.partition(f".{kind}-")
        pid = rest.split("-", 1)[0]
        if sep and pid.isdigit():
            return not _pid_alive(int(pid))
    return False


def remove_results(root, is_ours) -> tuple[list[Path], list[Path]]:
    """Remove what dynopt wrote in the results folder `root`, nothing else: each folder that
    `is_result` (the marker: the folders `check_out` lets `run` replace), each file that
    `is_ours(path)` recognises (the results page, a benchmark report) and each folder holding
    only such files, and the leftovers of writers that died. `root` itself always stays (dynopt
    cannot tell a folder it made from one the user made), and so does every empty folder in it.
    Links are never followed; a `root` that is a link, not a folder, or a result itself is left
    alone.

    **Returns:** `(removed, kept)`: the paths removed, and the entries of `root` left alone."""
    root = Path(root)
    if root.is_symlink() or not root.is_dir() or is_result(root):
        return [], []
    removed, kept = [], []
    for p in sorted(root.iterdir()):
        if p.is_symlink():
            ours = False
        elif p.is_dir():
            inside = list(p.iterdir())
            ours = (
                is_result(p)
                or _writer_leftover(p)
                or (bool(inside) and all(not q.is_symlink() and is_ours(q) for q in inside))
            )
        else:
            ours = _writer_leftover(p) or (p.is_file() and is_ours(p))
        if not ours:
            kept.append(p)
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
        removed.append(p)
    return removed, kept


def write_results(out_dir: Path, *, config, metrics: dict, arrays: dict, figures) -> Path:
    """Atomically (re)place `out_dir` with config.json, metrics.json, data.npz, the figures and
    the marker. `figures` is a callable `tmp_dir -> list[Path]` that draws into the temporary
    folder, so figures and data always come from the same run."""
    out_dir = check_out(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _recover(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        (tmp / MARKER).write_text("dynopt experiment results; safe to replace by a new run\n")
        (tmp / "config.json").write_text(dumps(config))
        (tmp / "metrics.json").write_text(dumps(metrics))
        np.savez(tmp / "data.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        figures(tmp)
        _swap_in(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load_results(out_dir: Path) -> tuple[dict, dict]:
    """`(metrics, arrays)` of a saved result folder (non-finite numbers restored)."""
    out_dir = Path(out_dir)
    metrics = _restore(json.loads((out_dir / "metrics.json").read_text()))
    with np.load(out_dir / "data.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return metrics, arrays
