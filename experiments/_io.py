"""The shared results writer: results/NAME/{config.json, metrics.json, data.npz, *.png, .dynopt}.

A results folder carries a marker file (`.dynopt`, a regular file): a folder is a dynopt result
only if it has one (`is_result`), and the marker lists the files dynopt wrote there with each one's
SHA-256, so a marker copied into a folder of the user's (or a file the user changed since) claims
none of the user's files: a listed file counts as dynopt's only while its content is what dynopt
wrote. Only those are ever replaced or removed: `check_out` refuses, before any work, an `--out`
that is a file, a non-empty folder without the marker, another experiment's result, or a result
that also holds something dynopt did not write (a user's notes), naming it; `remove_results`
(`clean`) removes the listed files and keeps, and reports, the rest. The marker also records the
folder it was written in (its inode number, which `mv` on one disk keeps): a copy of a result
(`cp -r`, or moved to another disk) is the user's, whole, even byte for byte dynopt's, and so is
a result whose marker records no digests (an older dynopt's, whose files the user may have
changed since), and a folder whose marker is not byte for byte one dynopt writes (made or edited
by hand): `check_out` refuses them and `clean` keeps them, each saying how to proceed
(`sealed`); the results page still shows them.
Everything is written into a unique temporary folder beside the target (named with the writer's
pid), then swapped in by renames (Ctrl-C waits until the swap is done); concurrent writers each
swap their own folder in (the last one wins, none fails), and the leftovers of writers that died
(a temporary folder, or the old result moved aside before the final rename) are cleaned up or put
back by the next writer. Where the target became a place dynopt must not write while the run went
on, the finished result goes to a new folder beside it (`Diverted`). Files get the user's umask
(a folder replaced passes its permissions and group on: one the user made stays group-shared),
and `metrics.json` is standard JSON: a non-finite number is written as `null` and its value
("inf", "-inf" or "nan") is recorded under `non_finite` by its path, e.g.
`{"stability/runs/2/final_loss": "inf"}`; `load_results` puts it back.
"""

import contextlib
import dataclasses
import errno
import hashlib
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NamedTuple

import numpy as np


PACKAGES = ("dynopt", "jax", "jaxlib", "optax", "diffrax", "equinox", "numpy", "matplotlib")
MARKER = ".dynopt"  # present in every results folder this writer made
# What a marker says first.
_MARKER_HEAD = (
    "dynopt experiment results. A new run replaces, and `python -m experiments clean` removes,\n"
    "the files listed below, which dynopt wrote; nothing else in this folder.\n"
)
# Then each file's SHA-256 as sha256sum prints it (`sha256sum -c` checks them), then JSON:
# {"files": [...], "folder": the folder's inode number, "sha256": {file: digest}}. Older readers
# take the JSON from the marker's first "{" and read "files" alone, so a name holding "{" (or one
# sha256sum would escape) has its digest in the JSON only.
_DIGESTS_HEAD = "Their SHA-256 (a listed file is dynopt's only while it holds what dynopt wrote):\n"
# A figure being redrawn in place (`figures`) is listed as such until the redraw has finished:
# one cut short leaves figures whose digests nobody wrote, still dynopt's.
_REDRAWING = "(being redrawn)"
_DIGEST_LINE = re.compile(r"^([0-9a-f]{64}|\(being redrawn\))  ([^/\n]+)$", re.MULTILINE)
_PLAIN_NAME = re.compile(r"[^/\n\r\\{]+")  # a name with a digest line (see above)
_EVERY_RESULT = ("config.json", "metrics.json", "data.npz")  # besides the figures and the marker
# Why a result is the user's, whole (`_Listing.sealed`): phrases after "--out DIR is".
_OLDER = (
    "a result of an older dynopt whose marker records no SHA-256 digests, so a file changed "
    "since cannot be told from what dynopt wrote"
)
_COPY = (
    "a copy of a dynopt result (its marker was written in another folder: copied, or moved to "
    "another disk), so its files are yours"
)
_EDITED = (
    "a folder whose .dynopt marker is not as dynopt wrote it (made or edited by hand), so none of "
    "its files is dynopt's"
)
NON_FINITE = "non_finite"  # metrics.json: path -> "inf" | "-inf" | "nan" for each null number


def package_versions() -> dict[str, str]:
    """Python's and each of `PACKAGES`' version, and `dynopt_source`: the commit of the dynopt
    checkout that ran (`source_commit`), since its version number stays the same across
    commits."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["dynopt_source"] = source_commit()
    return out


def source_commit() -> str:
    """The git commit of the checkout that holds the dynopt package imported, `+changes` where
    its tracked files differ from it; "not a git checkout" (an installed copy) or "unknown" (no
    git) otherwise."""
    spec = importlib.util.find_spec("dynopt")  # (where it is, without importing it)
    if spec is None or spec.origin is None:
        return "unknown"
    root = Path(spec.origin).resolve().parents[1]
    if not (root / ".git").exists():  # (not a repository that merely encloses an install)
        return "not a git checkout"
    try:
        # (no optional locks: reading the state must not write the index under another git)
        git = ["git", "--no-optional-locks", "-C", str(root)]
        run = dict(capture_output=True, text=True, timeout=10, check=True)
        commit = subprocess.run([*git, "rev-parse", "HEAD"], **run).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], **run)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+changes" if changed.stdout.strip() else "")


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


class Diverted(OutError):
    """The `--out` became a place the writer must not touch while the run went on; the finished
    result was saved in `saved`, a new folder beside it (the message names it)."""

    def __init__(self, message: str, saved: Path):
        super().__init__(message)
        self.saved = saved

    def __reduce__(self):  # (both arguments survive pickling, e.g. out of a worker process)
        return type(self), (str(self), self.saved)


class _Listing(NamedTuple):
    names: set[str]  # the folder's entries
    ours: set[str] | None  # those dynopt wrote, the marker included; None: not a result
    experiment: str | None  # the experiment its metrics.json names (None: none named)
    unreadable: str | None  # why its metrics.json cannot be read, if it cannot
    # Why none of it is dynopt's to replace or remove (`_OLDER`, `_COPY`, `_EDITED`), though
    # `ours` says which files hold what dynopt wrote (the page shows them); None: a result
    # dynopt wrote here.
    sealed: str | None = None


def check_out(out_dir, *, experiment: str | None = None, redraw: bool = False) -> Path:
    """`out_dir` as a Path if results may be written there: it does not exist, is an empty folder,
    or is a previous dynopt result holding only what dynopt wrote (of `experiment`, where given);
    `OutError` with a one-line reason otherwise. With `redraw` (only figures are drawn into it,
    `figures`), what else the result holds is no obstacle. A concurrent writer swapping its
    result in cannot fool it: the listing is taken from one folder that is still at `out_dir`
    when it ends."""
    if out_dir is None or str(out_dir).strip() == "":
        raise OutError("--out is empty; give a folder for the results.")
    out_dir = Path(out_dir).expanduser()
    if out_dir.name in ("", ".", ".."):
        raise OutError(f"--out {str(out_dir)!r} names no folder of its own; give e.g. out/NAME.")
    if not redraw and out_dir.is_dir() and os.path.ismount(out_dir):
        # A result is swapped in by renaming a finished folder onto `out_dir`, which a mount
        # point refuses (EBUSY): only after the whole run.
        raise OutError(
            f"--out {out_dir} is a mount point, which a finished result cannot be renamed onto; "
            f"give a folder inside it, e.g. --out {out_dir / 'results'}"
        )
    if (why := _refusal(out_dir, _entries(out_dir), experiment, redraw)) is not None:
        raise OutError(why)
    parent = out_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutError(f"--out {out_dir}: cannot create it under {parent} (not a folder).")
    if is_result(parent):  # its new entry would be a file of the user's in that result
        raise OutError(
            f"--out {out_dir} is inside {parent}, a dynopt result itself; put results beside "
            f"it, e.g. --out {parent.absolute().parent / out_dir.name}"
        )
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


def _some(names) -> str:
    names = sorted(names)
    shown = ", ".join(names[:5])
    return shown if len(names) <= 5 else f"{shown} and {len(names) - 5} more"


def _refusal(out_dir: Path, listing: _Listing, experiment, redraw: bool) -> str | None:
    """Why results of `experiment` must not be written over the folder listed (None: they may)."""
    names, ours, other, unreadable, sealed = listing
    if not names:
        return None
    if ours is None:
        if held := sorted(n for n in names if is_result(out_dir / n)):  # a parent of results
            where = f"{out_dir / experiment}" if experiment is not None else f"{out_dir}/NAME"
            return (
                f"--out {out_dir} is a folder that holds dynopt results ({_some(held)}), not one "
                f"result; --out names the experiment's own folder, e.g. --out {where}."
            )
        return (
            f"--out {out_dir} holds files that are not a dynopt result (no {MARKER} marker); "
            "choose a new or empty folder."
        )
    if sealed is not None:
        return f"--out {out_dir} is {sealed}; {_proceed(out_dir)}, or choose another --out."
    if experiment is not None and unreadable is not None:
        # (clean takes the folder that holds results, and removes every one of them there)
        parent = out_dir.absolute().parent
        others = sorted(p.name for p in _results_in(parent) if p.name != out_dir.name)
        also = f" (and every other dynopt result there: {_some(others)})" if others else ""
        return (
            f"--out {out_dir}: cannot read its metrics.json ({unreadable}), so not whose result it "
            "is; choose another --out, or remove it with python -m experiments clean --out "
            f"{shell_path(out_dir.parent)}{also}."
        )
    if experiment is not None and other is not None and other != experiment:
        return (
            f"--out {out_dir} holds the result of {other!r}, not of {experiment!r}; a run replaces "
            "only its own experiment's result: choose another --out, e.g. "
            f"{out_dir.absolute().parent / experiment}"
        )
    if not redraw and (others := names - ours):
        return (
            f"--out {out_dir} is a dynopt result that also holds what dynopt did not write: "
            f"{_some(others)}; a new run replaces the whole folder, so move them out of it first "
            "(or choose another --out)."
        )
    return None


def _regular(fd: int, name: str):
    """The regular file `name` in the folder open as `fd`, open for reading in binary (a link is
    not followed), or None."""
    try:
        file = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        return None
    f = os.fdopen(file, "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        return None  # (a FIFO would block a plain open)
    return f


def _read(fd: int, name: str) -> bytes | None:
    """The regular file `name` in the folder open as `fd` (a link is not followed), or None."""
    if (f := _regular(fd, name)) is None:
        return None
    with f:
        return f.read()


def _digest(fd: int, name: str) -> str | None:
    """The SHA-256 (hex) of the regular file `name` in the folder open as `fd` (a link is not
    followed), or None."""
    if (f := _regular(fd, name)) is None:
        return None
    with f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def shell_path(path) -> str:
    """`path` as one word of a shell command to paste: quoted where it holds a space or another
    character the shell reads (`rm -r results/my copy` would remove results/my and ./copy),
    and not read as an option where it begins with "-"."""
    text = str(path)
    return shlex.quote(f"./{text}" if text.startswith("-") else text)


def _proceed(folder) -> str:
    """What the user does with a `sealed` result `folder`."""
    return (
        "dynopt neither replaces nor removes it: remove it yourself once checked "
        f"(rm -r {shell_path(folder)})"
    )


def _examine(fd: int, names: set[str]) -> _Listing:
    """The listing of the result folder open as `fd` with entries `names`: which are dynopt's
    (those its marker lists whose content is still the digest it lists, where it lists one; for
    a marker without a list, the files every result has and its experiment's figures; only
    regular files), whose result it is, and whether it is `sealed` (a copy: the marker records
    another folder; or a marker without digests)."""
    other = unreadable = None
    try:
        text = _read(fd, "metrics.json")
        metrics = {} if text is None else json.loads(text)
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
        other = metrics.get("experiment")
    except ValueError as e:  # (UnicodeDecodeError too)
        unreadable = str(e)
    other = other if isinstance(other, str) else None
    listed = digests = None
    sealed = _OLDER
    marker = _read(fd, MARKER) or b""
    if (brace := marker.find(b"{")) >= 0:  # the list after the marker's sentence
        try:
            data = json.loads(marker[brace:])
            files, digests = data["files"], data.get("sha256")
            if all(isinstance(n, str) and n not in ("", ".", "..") and "/" not in n for n in files):
                listed = set(files)
            folder = data.get("folder")
        except (ValueError, KeyError, TypeError, AttributeError):
            digests = folder = None
        head = marker[:brace].decode("utf-8", "replace")
        if not isinstance(digests, dict) and _DIGESTS_HEAD in head:  # (written before "sha256")
            digests = {name: hexdigest for hexdigest, name in _DIGEST_LINE.findall(head)}
        if not isinstance(digests, dict):  # (an older dynopt's marker)
            digests = None
        elif type(folder) is int and folder != os.fstat(fd).st_ino:
            sealed = _COPY
        elif listed is not None and not _as_written(marker, data, digests):
            sealed = _EDITED  # (a marker made or changed by hand claims nothing)
        elif listed is not None:
            sealed = None  # (written here, or before markers recorded the folder)
    if listed is None:  # written before markers listed files: the rest is the user's
        from . import figure_names

        listed = {*_EVERY_RESULT, *(figure_names(other) if other is not None else ())}
    ours = {MARKER}
    # A dead writer's temporary file (`dynopt.plotting.save` killed mid-write) is dynopt's too.
    leftovers = {n for n in names if n.startswith(".") and _leftover_kind_of(n, False) == "tmp"}
    for name in ((listed | leftovers) & names) - {MARKER}:
        try:
            if not stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                continue
        except OSError:
            continue
        # A listed file is dynopt's only while it holds what dynopt wrote: a marker copied into
        # a user's folder lists the user's config.json too, with another digest.
        expected = None if digests is None else digests.get(name)
        if digests is None or name in leftovers or expected == _REDRAWING:
            ours.add(name)
        elif expected == _digest(fd, name):
            ours.add(name)
    return _Listing(names, ours, other, unreadable, sealed)


def _entries(out_dir: Path) -> _Listing:
    """The listing of the folder at `out_dir` (empty if there is none): its names, and for a
    result which of them dynopt wrote and whose result it is, read from one folder: a concurrent
    writer moves a previous result aside and deletes it, so a listing taken from a folder that
    is no longer at `out_dir` when the listing ends (part deleted, marker first) is read again.
    `OutError` if `out_dir` is a file."""
    for _ in range(1000):
        try:
            mode = os.lstat(out_dir).st_mode
        except (FileNotFoundError, NotADirectoryError):  # (a file above it: refused later)
            return _Listing(set(), None, None, None)
        if stat.S_ISLNK(mode):  # (a swap would replace the link, not write where it points)
            target = os.readlink(out_dir)
            raise OutError(
                f"--out {out_dir} is a link (to {target}); dynopt writes no result through a "
                "link: give the folder itself, or choose another path."
            )
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
            if MARKER in names and is_result(fd):
                listing = _examine(fd, names)
            else:
                listing = _Listing(names, None, None, None)
        finally:
            os.close(fd)
        try:
            now = os.lstat(out_dir)
        except FileNotFoundError:
            continue
        if (now.st_dev, now.st_ino) == (listed.st_dev, listed.st_ino):
            return listing
    raise OutError(f"--out {out_dir} keeps being replaced by other writers; try again.")


def foreign(folder) -> set[str]:
    """The entries of `folder` that dynopt may not replace or remove: those it did not write, all
    of them if it is no result or a `sealed` one (a copy, or an older dynopt's)."""
    names, ours, *_, sealed = _entries(Path(folder))
    return names if sealed is not None else names - (ours or set())


def written(folder) -> set[str]:
    """The entries of the result `folder` that hold what dynopt wrote (its figures: what the
    results page shows), whether or not it is `sealed`; none if it is no result."""
    _, ours, *_ = _entries(Path(folder))
    return ours or set()


def why_kept(path) -> str:
    """Why `clean` left `path` alone, to follow "kept PATH: "."""
    try:
        *_, sealed = _entries(Path(path))
    except OutError:  # (a file, a link)
        sealed = None
    if sealed is None:
        if _holds_results(Path(path)):  # (a run-all --out PARENT: clean looks one level down)
            return (
                "not a result, a folder that holds results; python -m experiments clean --out "
                f"{shell_path(path)} removes those dynopt wrote"
            )
        return "not written by dynopt"
    return f"{sealed}; {_proceed(path)}"


def _results_in(folder: Path) -> list[Path]:
    """The dynopt results in `folder` (not through a link); none if it is no folder."""
    try:
        return [p for p in folder.iterdir() if not p.is_symlink() and is_result(p)]
    except OSError:
        return []


def _holds_results(folder: Path) -> bool:
    """Whether `folder`, not a link, holds a dynopt result (not through a link)."""
    return not folder.is_symlink() and folder.is_dir() and bool(_results_in(folder))


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


def _marker_text(files: list[str], folder: int, digests: dict[str, str]) -> str:
    """The marker `_mark` writes: its sentences, a digest line per plain name (as sha256sum
    prints it), then the JSON listing."""
    lines = "".join(f"{d}  {n}\n" for n, d in digests.items() if _PLAIN_NAME.fullmatch(n))
    listing = json.dumps({"files": files, "folder": folder, "sha256": digests}, indent=1)
    return f"{_MARKER_HEAD}{_DIGESTS_HEAD}{lines}{listing}\n"


def _as_written(marker: bytes, data, digests: dict) -> bool:
    """Whether `marker` (its JSON `data`, its `digests`) is byte for byte a marker dynopt writes
    (`_marker_text`), or wrote at 5c2a584 (digest lines, then the list of files alone): a marker
    made or edited by hand, even one listing the right digests, claims none of the files."""
    try:
        if isinstance(data, dict) and set(data) == {"files", "folder", "sha256"}:
            text = _marker_text(data["files"], data["folder"], data["sha256"])
        elif isinstance(data, dict) and set(data) == {"files"}:
            files = data["files"]
            lines = "".join(f"{digests[n]}  {n}\n" for n in files if n in digests and "{" not in n)
            listing = json.dumps({"files": files}, indent=1)
            text = f"{_MARKER_HEAD}{_DIGESTS_HEAD}{lines}{listing}\n"
        else:
            return False
    except (TypeError, AttributeError):
        return False
    return marker == text.encode("utf-8")


def _mark(folder: Path, files, redrawing=()) -> None:
    """Write `folder`'s marker listing `files` with their SHA-256 digests, those in `redrawing`
    as being redrawn (atomically: a temporary file renamed over it)."""
    files = sorted(set(files) - {MARKER})
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        digests = {name: _REDRAWING if name in redrawing else _digest(fd, name) for name in files}
        inode = os.fstat(fd).st_ino  # (a rename keeps it; a copy has its own)
    finally:
        os.close(fd)
    digests = {n: d for n, d in digests.items() if d is not None}
    text = _marker_text(files, inode, digests)
    fd, tmp = tempfile.mkstemp(prefix=f"{MARKER}.tmp-{os.getpid()}-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, folder / MARKER)
    finally:
        Path(tmp).unlink(missing_ok=True)


def begin_redraw(folder, files) -> None:
    """Before figures `files` are drawn into the result `folder` in place: list them as being
    redrawn, so a redraw cut short (Ctrl-C, an error) leaves them dynopt's; `add_written`
    afterwards lists their new digests."""
    folder = Path(folder)
    _, ours, *_, sealed = _entries(folder)
    if ours is not None and sealed is None:
        _mark(folder, ours | set(files), redrawing=set(files))


def add_written(folder, files) -> None:
    """Add `files` (just drawn into the result `folder` by dynopt: redrawn figures) to the files
    its marker lists."""
    folder = Path(folder)
    _, ours, *_, sealed = _entries(folder)
    if ours is not None and sealed is None:
        _mark(folder, ours | set(files))


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
    missing (else remove what dynopt wrote in it), and remove their temporary folders."""
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
        if kind == "old":
            _discard(p)
        elif p.is_dir() and not p.is_symlink() and _holds_only_ours(p):
            shutil.rmtree(p, ignore_errors=True)


def _discard(folder: Path) -> tuple[list[Path], list[Path]]:
    """Remove what dynopt wrote in the result `folder` (the marker last: a folder half removed
    is still a result), and the folder if nothing else is in it: `(removed, kept)`, the paths
    removed (the folder alone if it went) and those left (not dynopt's)."""
    try:
        names, ours, *_, sealed = _entries(folder)
    except OutError:
        return [], [folder]
    if ours is None or sealed is not None:  # (a copy, an older dynopt's: the user's, whole)
        return [], [folder]
    removed, kept = [], [folder / n for n in sorted(names - ours)]
    for name in [*sorted(ours - {MARKER}), MARKER]:
        try:
            os.unlink(folder / name)  # (a regular file: `_examine` counts no other as dynopt's)
        except FileNotFoundError:
            continue
        except OSError:
            kept.append(folder / name)
            continue
        removed.append(folder / name)
    if not kept:
        try:
            folder.rmdir()
            return [folder], []
        except OSError:  # something new in it
            kept = sorted(folder.iterdir())
    return removed, kept


# Signals that stop a writer: Ctrl-C, and SIGTERM and SIGHUP, which the command line also turns
# into a clean stop (and whose default ends the process at once).
_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def _interrupts_deferred():
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP wait until the block is done, then act as they would
    have: the renames that swap a result in are never cut in two. A signal ignored stays
    ignored. (Only the main thread can wait for them.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received, previous = [], {}
    for signum in _STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, lambda s, frame: received.append(s))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(received):  # (each once, in the order they came)
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)  # (Python's own SIGINT handler raises KeyboardInterrupt)
            elif handler in (signal.SIG_DFL, None):
                os.kill(os.getpid(), signum)


def _put_back(backup: Path, out_dir: Path) -> bool:
    try:
        os.rename(backup, out_dir)
    except OSError:
        return False
    return True


def _same_access(old: Path, new: Path) -> None:
    """Give the folder `new` the permissions, group and extended attributes of `old`, which it
    replaces: a folder the user made for the results (e.g. group-shared, setgid, with an access
    control list: ACLs are the attributes `system.posix_acl_*`) keeps them through every run."""
    st = os.stat(old)
    with contextlib.suppress(OSError):  # (a group the user is not in: the mode still follows)
        os.chown(new, -1, st.st_gid)
    for name in _xattrs(old):
        with contextlib.suppress(OSError):  # (one the user may not set, e.g. security.*)
            os.setxattr(new, name, os.getxattr(old, name))
    os.chmod(new, stat.S_IMODE(st.st_mode))  # last: setting an ACL rewrites the mode bits


def _xattrs(path: Path) -> list[str]:
    """The names of `path`'s extended attributes ([] where the system or file system has none)."""
    try:
        return os.listxattr(path)
    except (AttributeError, OSError):  # (no os.listxattr off Linux; ENOTSUP)
        return []


def _swap_in(tmp: Path, out_dir: Path, experiment: str | None = None) -> None:
    """Rename `tmp` to `out_dir`, moving a previous result aside first and removing what dynopt
    wrote in it; retried when another writer swaps its folder in between (then the last writer
    wins). `OutError` (the previous result put back) if what was moved aside is no longer only
    dynopt's result of `experiment`: something was added to it since `check_out`."""
    for _ in range(100):
        backup = Path(
            tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{os.getpid()}-", dir=out_dir.parent)
        )
        backup.rmdir()  # a unique name for the rename below
        try:
            os.rename(out_dir, backup)
        except FileNotFoundError:
            backup = None
        if backup is not None:
            # Read where nobody else looks for it: nothing can be added to it unseen any more.
            why = _refusal(out_dir, _entries(backup), experiment, redraw=False)
            if why is not None:
                if not _put_back(backup, out_dir):
                    why += f" (it is at {backup} now)"
                raise OutError(why)
            _same_access(backup, tmp)
        try:
            os.rename(tmp, out_dir)
        except OSError as e:
            if backup is not None and not _put_back(backup, out_dir):
                _discard(backup)  # another writer's result is there: the last one wins
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue  # another writer got in between: move its result aside and retry
        if backup is not None:
            _discard(backup)
        return
    raise OSError(f"could not place results in {out_dir}: too many concurrent writers")


def _set_aside(tmp: Path, out_dir: Path) -> Path:
    """Rename `tmp` to a new folder beside `out_dir`, `NAME.dynopt-DATE-TIME[-N]`; its path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1, 1000):
        target = out_dir.with_name(f"{out_dir.name}.dynopt-{stamp}" + (f"-{i}" if i > 1 else ""))
        try:
            target.mkdir()  # claimed: the rename below replaces only this empty folder
        except FileExistsError:
            continue
        try:
            os.rename(tmp, target)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                continue  # someone put something into it meanwhile: theirs now
            with contextlib.suppress(OSError):
                target.rmdir()
            raise
        return target
    raise OSError(f"could not find a new folder beside {out_dir}")


def _leftover_kind(p: Path) -> str | None:
    """The kind of a dead writer's leftover `p`, else None: "tmp" for a temporary folder or file
    `.NAME.tmp-PID-...` (the results page's is a file), "old" for a result moved aside,
    `.NAME.old-PID-...`."""
    if p.is_symlink() or not (p.is_dir() or p.is_file()):
        return None
    return _leftover_kind_of(p.name, p.is_dir())


# A writer's temporary: `.NAME.tmp-PID-…` (`tempfile` adds the random rest), or a result moved
# aside, `.NAME.old-PID-…`.
_LEFTOVER = re.compile(r"\.(?P<name>.+?)\.(?P<kind>tmp|old)-(?P<pid>\d+)-.+")


def _target(match: re.Match) -> str:
    """The file a temporary `_LEFTOVER` match was written for (the marker's: `.dynopt.tmp-…`)."""
    return MARKER if f".{match['name']}" == MARKER else match["name"]


def _writes(name: str) -> bool:
    """Whether dynopt writes files named `name`: a result's files, its marker and PNG figures,
    the results page, a `make bench` report."""
    return name in {*_EVERY_RESULT, MARKER, "index.html", "bench.json", "bench.md"} or (
        name.endswith(".png")
    )


def _leftover_kind_of(name: str, is_dir: bool) -> str | None:
    """`_leftover_kind` from the entry's name and whether it is a folder. A file's NAME must be
    one dynopt writes (`_writes`): a user's `.notes.tmp-2024-draft` is no leftover (a folder's
    contents are checked where it would be removed, `_holds_only_ours`)."""
    match = _LEFTOVER.fullmatch(name)
    if match is None or (match["kind"] == "old" and not is_dir):
        return None
    if not is_dir and not _writes(_target(match)):
        return None
    return None if _pid_alive(int(match["pid"])) else match["kind"]


def _holds_only_ours(folder: Path) -> bool:
    """Whether a dead writer's temporary `folder` holds nothing but what a result's writer puts
    there (regular files dynopt writes, `_writes`, or their own temporaries), so that removing
    it removes no file of the user's: a user's folder that only happens to be named
    `.NAME.tmp-PID-…` holds anything else, and stays."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    for entry in entries:
        match = _LEFTOVER.fullmatch(entry.name)
        name = _target(match) if match is not None and match["kind"] == "tmp" else entry.name
        if not (entry.is_file(follow_symlinks=False) and _writes(name)):
            return False
    return True


def remove_results(root, is_ours) -> tuple[list[Path], list[Path]]:
    """Remove what dynopt wrote in the results folder `root`, nothing else: in each folder that
    `is_result` the files its marker lists (and the folder, if nothing else is in it), each
    file that `is_ours(path)` recognises (the results page, a benchmark report) and each folder
    holding only such files, and the leftovers of writers that died. `root` itself always stays
    (dynopt cannot tell a folder it made from one the user made), and so does every empty folder
    in it. Links are never followed; a `root` that is a link, not a folder, or a result itself
    is left alone.

    **Returns:** `(removed, kept)`: the paths removed, and those left alone (entries of `root`,
    or of a result in it)."""
    root = Path(root)
    if root.is_symlink() or not root.is_dir() or is_result(root):
        return [], []
    removed, kept = [], []
    for p in sorted(root.iterdir()):
        kind = _leftover_kind(p)
        if p.is_symlink():
            kept.append(p)
        elif p.is_dir() and (kind == "old" or (kind is None and is_result(p))):
            gone, left = _discard(p)
            removed += gone
            kept += left
        elif p.is_dir():
            inside = list(p.iterdir())
            if (kind == "tmp" and _holds_only_ours(p)) or (
                inside and all(not q.is_symlink() and is_ours(q) for q in inside)
            ):
                shutil.rmtree(p)
                removed.append(p)
            else:
                kept.append(p)
        elif kind == "tmp" or (p.is_file() and is_ours(p)):
            p.unlink()
            removed.append(p)
        else:
            kept.append(p)
    return removed, kept


def write_results(
    out_dir: Path, *, config, metrics: dict, arrays: dict, figures, divert: bool = False
) -> Path:
    """Atomically (re)place `out_dir` with config.json, metrics.json, data.npz, the figures and
    the marker listing them. `figures` is a callable `tmp_dir -> list[Path]` that draws into the
    temporary folder, so figures and data always come from the same run. `out_dir` is checked
    (`check_out`, against the experiment `metrics` names) before anything is written and again
    as the result is swapped in; with `divert`, a refusal then (the folder changed while the run
    went on) saves the result in a new folder beside it instead and raises `Diverted` naming
    it."""
    experiment = metrics.get("experiment") if isinstance(metrics, dict) else None
    refused = None
    try:
        out_dir = check_out(out_dir, experiment=experiment)
    except OutError as e:
        if not divert or str(out_dir).strip() == "":
            raise
        out_dir = Path(out_dir).expanduser()
        if out_dir.name in ("", ".", "..") or not out_dir.parent.is_dir():
            raise
        refused = e
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _recover(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        (tmp / "config.json").write_text(dumps(config))
        (tmp / "metrics.json").write_text(dumps(metrics))
        np.savez(tmp / "data.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        figures(tmp)
        _mark(tmp, os.listdir(tmp))  # last: the list of what is in it
        if refused is None:
            try:
                with _interrupts_deferred():
                    _swap_in(tmp, out_dir, experiment)
                return out_dir
            except OutError as e:
                if not divert:
                    raise
                refused = e
        with _interrupts_deferred():
            saved = _set_aside(tmp, out_dir)
        raise Diverted(
            f"{refused} (found once the run had finished: its result was saved to {saved} instead)",
            saved,
        ) from refused
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_results(out_dir: Path) -> tuple[dict, dict]:
    """`(metrics, arrays)` of a saved result folder (non-finite numbers restored)."""
    out_dir = Path(out_dir)
    metrics = _restore(json.loads((out_dir / "metrics.json").read_text()))
    with np.load(out_dir / "data.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return metrics, arrays
