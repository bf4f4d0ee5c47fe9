"""A new user's first hour with `python -m experiments` (session 35's probe): a marker copied into
a user's folder, a result file the user changed, a results page over a result that cannot be
read or over none, an `--out` that names the parent of results, and what `--help` says of
`--seed`."""

import hashlib
import json
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest

from experiments import __main__ as cli, _io, _jobs
from experiments._io import check_out, OutError, write_results


def _result(out, **metrics):
    return write_results(
        out, config={"a": 1}, metrics={"experiment": "gd_flow", **metrics},
        arrays={"x": np.arange(3)}, figures=lambda d: [],
    )  # fmt: skip


def test_a_marker_copied_into_a_users_folder_claims_none_of_its_files(tmp_path, capsys):
    # Before: the copied marker listed config.json and metrics.json, so `clean` deleted the
    # user's own files of those names and `run --out` would have replaced them.
    real = _result(tmp_path / "gd_flow", m=1.0)
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(real / ".dynopt", mine / ".dynopt")
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "metrics.json").write_text('{"experiment": "gd_flow", "my": "numbers"}')
    # (Since session 36 the marker records the folder it was written in: a copied one makes the
    # folder the user's, whole, the marker too.)
    with pytest.raises(OutError, match=r"is a copy of a dynopt result"):
        check_out(mine, experiment="gd_flow")
    assert _io.foreign(mine) == {".dynopt", "config.json", "metrics.json"}
    assert cli.main(["clean", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"kept {mine}: a copy of a dynopt result" in out
    assert (mine / "config.json").read_text() == '{"my": "settings"}'
    assert (mine / "metrics.json").read_text() == '{"experiment": "gd_flow", "my": "numbers"}'
    assert not real.exists()  # the real result went, whole


def test_a_result_file_the_user_changed_is_kept_and_blocks_a_rerun(tmp_path, capsys):
    out = _result(tmp_path / "gd_flow", m=1.0)
    (out / "metrics.json").write_text('{"experiment": "gd_flow", "m": 1.0, "note": "mine"}')
    assert _io.foreign(out) == {"metrics.json"}
    assert cli.main(["clean", "--out", str(tmp_path)]) == 0
    assert f"kept {out / 'metrics.json'}: not written by dynopt" in capsys.readouterr().out
    assert "mine" in (out / "metrics.json").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_a_marker_lists_each_files_digest_and_a_redraw_adds_its_figures(tmp_path):
    out = _result(tmp_path / "gd_flow", m=1.0)
    marker = (out / ".dynopt").read_text()
    names = ["config.json", "data.npz", "metrics.json"]
    digests = {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in names}
    assert json.loads(marker[marker.index("{") :]) == {  # older dynopt reads it so ("files")
        "files": names, "folder": out.stat().st_ino, "sha256": digests
    }  # fmt: skip
    head = marker[: marker.index("{")]  # the digests, as sha256sum prints them
    lines = [line.split("  ") for line in head.splitlines() if "  " in line]
    assert [n for _, n in lines] == names
    assert all(d == hashlib.sha256((out / n).read_bytes()).hexdigest() for d, n in lines)
    (out / "f.png").write_bytes(b"drawn")  # as `replot` draws a figure, then adds it
    _io.add_written(out, ["f.png"])
    assert _io.foreign(out) == set()
    assert cli.main(["clean", "--out", str(tmp_path)]) == 0 and not out.exists()


def _page_result(root, name, metrics_text):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(metrics_text)
    (folder / "config.json").write_text("{}")
    _io._mark(folder, ["metrics.json", "config.json"])


def test_the_page_shows_every_result_when_one_cannot_be_read(tmp_path, capsys):
    # Before: one unreadable metrics.json and no page at all ("results page not written:
    # Expecting value: line 1 column 1 (char 0)", naming no file); a JSON list: a traceback.
    _page_result(tmp_path, "gd_flow", json.dumps({"experiment": "gd_flow", "quick": True}))
    _page_result(tmp_path, "nesterov", "not json")
    _page_result(tmp_path, "momentum", "[1, 2]")
    assert cli.main(["page", "--out", str(tmp_path)]) == 0
    assert "results page: " in capsys.readouterr().out
    page = (tmp_path / "index.html").read_text()
    for name in ("gd_flow", "nesterov", "momentum"):
        assert f'<section id="{name}">' in page
    assert page.count("The saved result cannot be read") == 2
    assert 'href="nesterov/metrics.json"' in page and "JSONDecodeError" in page
    assert "a JSON list, not an object" in page


def test_a_page_over_no_results_says_so(tmp_path, capsys):
    # Before: a page with a title and nothing under it, and a line that did not say it is empty.
    assert cli.main(["page", "--out", str(tmp_path)]) == 0
    assert f"(no results in {tmp_path} yet: an empty page)" in capsys.readouterr().out
    assert "No results in this folder yet" in (tmp_path / "index.html").read_text()
    written, line = _jobs.page(tmp_path, ["gd_flow"])
    assert written and "no results" in line


def test_run_out_at_the_folder_that_holds_results_names_the_experiments_own(tmp_path, capsys):
    # `run --out results` (as `run-all --out` takes it): before, "holds files that are not a
    # dynopt result (no .dynopt marker)", which a new user cannot act on.
    _result(tmp_path / "results" / "gd_flow", m=1.0)
    assert cli.main(["run", "nesterov", "--quick", "--out", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --out {tmp_path / 'results'} is a folder that holds dynopt results (gd_flow), "
        f"not one result; --out names the experiment's own folder, e.g. --out "
        f"{tmp_path / 'results' / 'nesterov'}.\n"
    )


@pytest.mark.parametrize("command", ["run", "run-all"])
def test_help_says_what_seed_takes_and_does(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "in [0, 2**32) (default 0)" in text
    assert "record seed: null" in text


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_versions_record_the_commit_of_the_checkout_that_ran(tmp_path, monkeypatch):
    # Before: "dynopt": "0.1.0", the same for every commit: no result said which code made it.
    root = Path(_io.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    assert _io.package_versions()["dynopt_source"] in (head, f"{head}+changes")
    (tmp_path / "dynopt").mkdir()  # an installed copy: no repository of its own
    spec = types.SimpleNamespace(origin=str(tmp_path / "dynopt" / "__init__.py"))
    monkeypatch.setattr(_io.importlib.util, "find_spec", lambda name: spec)
    assert _io.source_commit() == "not a git checkout"


def test_ctrl_c_in_figures_is_one_line_and_leaves_the_figures_dynopts(
    tmp_path, monkeypatch, capsys
):
    # Before: Ctrl-C while `figures` ran a missing experiment (minutes, full size) or redrew
    # printed a screenful of JAX traceback; and a figure redrawn before the stop would hold what
    # the marker's digest did not, so `run --out` and `figures` would refuse it as the user's.
    out = _result(tmp_path / "gd_flow", m=1.0)
    (out / "orders.png").write_bytes(b"old")
    _io.add_written(out, ["orders.png"])

    def cut_short(name, folder):
        (folder / "orders.png").write_bytes(b"new")  # one figure redrawn, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "replot", cut_short)
    assert cli.main(["figures", "gd_flow", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted; figures redrawn: none;") and err.count("\n") == 1
    assert _io.foreign(out) == set()
    assert check_out(out, experiment="gd_flow") == out
    _io.add_written(out, ["orders.png"])  # a redraw that finishes lists the new digest
    digest = hashlib.sha256(b"new").hexdigest()
    assert f"{digest}  orders.png\n" in (out / ".dynopt").read_text()
    assert "being redrawn" not in (out / ".dynopt").read_text()


def test_an_out_that_is_a_link_is_called_a_link(tmp_path, capsys):
    # Before: "--out L is a file, not a results folder" for a link to a folder (or to nothing).
    (tmp_path / "mine").mkdir()
    (tmp_path / "to_mine").symlink_to(tmp_path / "mine")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for link, target in (("to_mine", "mine"), ("dangling", "nowhere")):
        out = tmp_path / link
        assert cli.main(["run", "nesterov", "--quick", "--out", str(out)]) == 2
        assert capsys.readouterr().err == (
            f"error: --out {out} is a link (to {tmp_path / target}); dynopt writes no result "
            "through a link: give the folder itself, or choose another path.\n"
        )
    assert not (tmp_path / "nowhere").exists() and not any((tmp_path / "mine").iterdir())


def test_every_command_reads_a_tilde_out_alike(tmp_path, monkeypatch, capsys):
    # `run --out "~/x"` (quoted past the shell) wrote to the home folder, while `clean` and
    # `page` looked for a folder literally named "~" in the working directory.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    result = _result(tmp_path / "home" / "res" / "gd_flow", m=1.0)
    assert cli.main(["clean", "--out", "~/res"]) == 0
    assert f"removed {result}" in capsys.readouterr().out
    assert not result.exists() and not (tmp_path / "~").exists()
