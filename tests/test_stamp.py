"""The results page and a benchmark report are dynopt's only as written: a user's copy of either
(a new inode) or an edit of it (a new digest) is the user's, kept by `clean` and never
replaced (experiments/_stamp.py)."""

import os
import shutil

import pytest

from benchmarks.__main__ import is_report, main as bench_main
from benchmarks._common import write as write_report
from experiments import __main__ as cli, _page
from experiments._stamp import is_stamped, PLACEHOLDER, write_stamped


_MACHINE = {"cpu": "x", "cpu_count": 2, "memory_gib": 1, "platform": "cpu", "device_count": 1}
_REPORT = {"machine": _MACHINE, "versions": {}, "config": {}, "rows": []}


def test_a_stamp_names_its_file_and_its_text(tmp_path):
    path = write_stamped(tmp_path / "f.html", f"<p>a</p>\n<!-- {PLACEHOLDER} -->\n")
    assert is_stamped(path)
    assert PLACEHOLDER + " inode=" in path.read_text()
    os.link(path, tmp_path / "hard")  # the same file under a second name
    assert is_stamped(tmp_path / "hard")
    shutil.copy2(path, tmp_path / "copy.html")  # byte-identical, a new inode
    assert not is_stamped(tmp_path / "copy.html")
    os.rename(path, tmp_path / "moved.html")  # `mv` on one file system: still the file written
    assert is_stamped(tmp_path / "moved.html")
    (tmp_path / "link.html").symlink_to(tmp_path / "moved.html")
    assert not is_stamped(tmp_path / "link.html")
    with open(tmp_path / "moved.html", "a") as f:  # an edit in place keeps the inode
        f.write("<p>my note</p>\n")
    assert not is_stamped(tmp_path / "moved.html")
    for text in ("no placeholder", PLACEHOLDER * 2):
        with pytest.raises(ValueError, match="once"):
            write_stamped(tmp_path / "g", text)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "copy.html", "hard", "link.html", "moved.html"
    ]  # fmt: skip


def test_clean_keeps_a_users_copies_of_the_page_and_of_a_report(tmp_path, capsys):
    """`cp results/index.html results/archive/` and a copy of results/bench: `clean` removed
    both copies with the originals (each matched by its content alone)."""
    root = tmp_path / "results"
    root.mkdir()
    page = _page.write_page(root, {}, [])
    write_report(_REPORT, root / "bench")
    (root / "archive").mkdir()
    shutil.copy2(page, root / "archive" / "index.html")
    text = page.read_bytes()
    shutil.copytree(root / "bench", root / "bench-2026-12-06")
    assert cli.main(["clean", "--out", str(root)]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["archive", "bench-2026-12-06"]
    assert sorted(p.name for p in (root / "bench-2026-12-06").iterdir()) == [
        "bench.json", "bench.md"
    ]  # fmt: skip
    assert (root / "archive" / "index.html").read_bytes() == text
    out = capsys.readouterr().out
    assert out.count("removed ") == 2 and out.count("kept ") == 2, out


def test_an_edited_page_or_report_is_the_users(tmp_path, capsys):
    root = tmp_path / "results"
    root.mkdir()
    page = _page.write_page(root, {}, [])
    assert _page.written_by_dynopt(page)
    assert _page.write_page(root, {}, []) == page  # its own page it replaces
    with open(page, "a") as f:
        f.write("<p>my notes on this run</p>\n")
    assert not _page.written_by_dynopt(page)
    with pytest.raises(ValueError, match="not written by dynopt"):
        _page.write_page(root, {}, [])
    js, md = write_report(_REPORT, root / "bench")
    assert is_report(js) and is_report(md)
    md.write_text(md.read_text() + "\nmy notes\n")
    with pytest.raises(SystemExit) as info:  # refused before any work, the file untouched
        bench_main(["--tiny", "--only", "bandwidth", "--out", str(root / "bench")])
    assert info.value.code == 2 and "not a dynopt benchmark report" in capsys.readouterr().err
    assert md.read_text().endswith("my notes\n")
    assert cli.main(["clean", "--out", str(root)]) == 0
    assert page.read_text().endswith("my notes on this run</p>\n")
    # (a folder is removed only whole, where everything in it is dynopt's)
    assert sorted(p.name for p in (root / "bench").iterdir()) == ["bench.json", "bench.md"]
