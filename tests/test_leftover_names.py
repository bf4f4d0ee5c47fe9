"""A dead writer's leftovers are named `.NAME.tmp-PID-…` and removed by `clean` and by the next
run beside them; a user's file or folder that only shares that pattern is not dynopt's and
stays (a file's NAME must be one dynopt writes, a folder must hold only what a writer puts in
a result)."""

import numpy as np

from experiments import __main__ as cli
from experiments._io import write_results


DEAD = 2**22 + 4321  # above Linux's pid_max: no such process


def _users_files(root):
    (root / f".notes.tmp-{DEAD}-draft").write_text("my draft")
    photos = root / f".backup.tmp-{DEAD}-2026" / "sub"
    photos.mkdir(parents=True)
    (photos / "a.jpg").write_text("years of photos")
    (root / f".res.tmp-{DEAD}-keep").mkdir()
    (root / f".res.tmp-{DEAD}-keep" / "f").write_text("mine")
    return {
        root / f".notes.tmp-{DEAD}-draft": "my draft",
        photos / "a.jpg": "years of photos",
        root / f".res.tmp-{DEAD}-keep" / "f": "mine",
    }


def test_clean_removes_dead_writers_leftovers_but_no_user_file_named_like_one(tmp_path, capsys):
    """Before: `clean` removed all three of the user's (the folder with its photos too)."""
    root = tmp_path / "results"
    root.mkdir()
    mine = _users_files(root)
    leftover = root / f".gd_flow.tmp-{DEAD}-k2j4x9_a"  # a writer killed while drawing
    leftover.mkdir()
    (leftover / "metrics.json").write_text("{}")
    (leftover / f".orders.png.tmp-{DEAD}-q0w9e8r7").write_bytes(b"\x89PNG")
    page = root / f".index.html.tmp-{DEAD}-z8y7x6w5"  # the page's writer killed
    page.write_text("<html>")
    assert cli.main(["clean", "--out", str(root)]) == 0
    printed = capsys.readouterr().out
    assert not leftover.exists() and not page.exists(), printed
    assert {p: p.read_text() for p in mine} == mine, printed


def test_a_run_beside_a_users_folder_named_like_a_leftover_keeps_it(tmp_path):
    """Before: writing tmp/res removed the user's tmp/.res.tmp-PID-keep (its writer "dead")."""
    mine = _users_files(tmp_path)
    write_results(
        tmp_path / "res", config={"a": 1}, metrics={"experiment": "gd_flow"},
        arrays={"x": np.arange(3)}, figures=lambda d: [],
    )  # fmt: skip
    assert {p: p.read_text() for p in mine} == mine
    assert (tmp_path / "res" / "metrics.json").is_file()
