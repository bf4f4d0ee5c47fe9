"""Files dynopt writes whole and alone (the results page, a benchmark report): a stamp inside
each ties it to the file dynopt wrote, so that `clean` and the next write tell it from a
user's copy or edit.

A text holds `PLACEHOLDER` once (in a comment, or as a JSON string); `write_stamped` writes it
with the placeholder replaced by `dynopt-written-file inode=N sha256=D`: N the inode of the
file written, D the SHA-256 of the text with the stamp read as `dynopt-written-file inode=N`.
`is_stamped` checks both: a `cp` of the file has a new inode, and an edit changes the digest,
so either is the user's; a `mv` on one file system keeps both, as it keeps a result folder's
(`_io`'s marker records that folder's inode alike).
"""

import hashlib
import os
import re
import tempfile
from pathlib import Path

from ._io import _umask


PLACEHOLDER = "dynopt-written-file"
_STAMP = re.compile(PLACEHOLDER + r" inode=(\d+) sha256=([0-9a-f]{64})")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_stamped(path: Path, text: str) -> Path:
    """Write `text` to `path` with its stamp, atomically: through a temporary file of a unique
    name in the same folder (`.NAME.tmp-PID-…`: `clean` removes it if the writer died) and
    `os.replace`, which keeps the temporary file's inode. Permissions as the umask gives.

    **Arguments:** `path`, the file; `text`, holding `PLACEHOLDER` exactly once.

    **Returns:** `path`."""
    path = Path(path)
    if text.count(PLACEHOLDER) != 1:
        raise ValueError(f"text must hold {PLACEHOLDER!r} once, found {text.count(PLACEHOLDER)}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    try:
        head = f"{PLACEHOLDER} inode={os.fstat(fd).st_ino}"
        stamp = f"{head} sha256={_digest(text.replace(PLACEHOLDER, head))}"
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make the file private
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text.replace(PLACEHOLDER, stamp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def is_stamped(path: Path) -> bool:
    """Whether `path` is a regular file (not a link) that `write_stamped` wrote, unchanged: one
    stamp, naming this file's inode, with the digest of this file's text."""
    path = Path(path)
    try:
        if path.is_symlink() or not path.is_file():
            return False
        inode = path.stat().st_ino
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    found = list(_STAMP.finditer(text))
    if len(found) != 1 or int(found[0].group(1)) != inode:
        return False
    m = found[0]
    unstamped = f"{text[: m.start()]}{PLACEHOLDER} inode={m.group(1)}{text[m.end() :]}"
    return _digest(unstamped) == m.group(2)
