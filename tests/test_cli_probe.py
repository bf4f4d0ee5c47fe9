"""A new user's first hour with `python -m experiments` (session 35's probe): a marker copied into
a user's folder, a result file the user changed, a results page over a result that cannot be
read or over none, an `--out` that names the parent of results, and what `--help` says of
`--seed`."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import types
from pathlib import Path

import numpy as np
import pytest

from experiments import __main__ as cli, _card, _io, _jobs
from experiments._io import check_out, OutError, write_results

from . import test_experiments
from .test_experiments import _fake_experiments, _parallel_run


naps = test_experiments.naps  # (the fixture: fake experiments in the registry)


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
    monkeypatch.setattr(cli, "_check_loads", lambda *a: None)  # (none of gd_flow's sections)
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


# --- SIGTERM, SIGHUP and a parent killed outright ---


@contextlib.contextmanager
def _default_sigterm_fails():
    """SIGTERM in the block raises where the command line left it to Python's default (which
    would end the test run): a test of its handling fails instead."""

    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached the handler the command line found: not handled")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("naps")
def test_sigterm_stops_a_run_as_ctrl_c_does_leaving_no_temporary_folder(
    tmp_path, monkeypatch, capsys
):
    # Before: SIGTERM (`kill`, `timeout`, a batch system cancelling the job) ended Python at once:
    # no line, exit status -15, and the temporary folder of a result being written left behind.
    out = tmp_path / "res" / "nap"
    draw = _card.draw

    def sigterm_while_drawing(module, metrics, arrays, folder, config=None):
        assert folder.name.startswith(".nap.tmp-")  # (the result is being written)
        os.kill(os.getpid(), signal.SIGTERM)
        return draw(module, metrics, arrays, folder, config)

    monkeypatch.setattr(_card, "draw", sigterm_while_drawing)
    with _default_sigterm_fails():
        assert cli.main(["run", "nap", "--out", str(out)]) == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM).__name__ == "unhandled"  # (put back)
    assert capsys.readouterr().err == (
        f"stopped by SIGTERM; finished: none; results kept in {out}\n"
    )
    assert list((tmp_path / "res").iterdir()) == []


def _until_both_run(proc: subprocess.Popen) -> list[str]:
    """The run's output until both experiments have started."""
    said, started = [], set()
    for line in proc.stdout:
        said.append(line)
        if line.startswith(("[first]   [1/1]", "[second]   [1/1]")):
            started.add(line.split("]")[0])
        if len(started) == 2:
            return said
    pytest.fail("".join(said))


def _group_ends(pgid: int, seconds: float) -> bool:
    """Whether every process of the group `pgid` is gone within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_parallel_run_whose_parent_is_killed_stops_its_workers(tmp_path, how):
    # Before: `kill` (SIGTERM) of `run-all --jobs 2` ended the parent alone: its workers ran the
    # experiments on, wrote their results after the run was stopped, then waited forever on
    # the pool's queue (orphans, one per job). SIGTERM now stops the run as Ctrl-C does (exit
    # status 143, one line); a parent killed outright (SIGKILL) has its workers stop and exit.
    registry = _fake_experiments(tmp_path, first=60.0, second=60.0)
    out = tmp_path / "res"
    proc = _parallel_run(tmp_path, registry, out)
    try:
        said = _until_both_run(proc)
        os.kill(proc.pid, getattr(signal, how))  # the parent alone, as `kill PID` does
        rest, _ = proc.communicate(timeout=60)
        said = "".join(said) + rest
        assert _group_ends(proc.pid, _jobs.STOP_GRACE_S + 5), f"workers left behind: {said}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    if how == "SIGTERM":
        assert proc.returncode == 128 + signal.SIGTERM, said
        assert f"stopped by SIGTERM; finished: none; results kept in {out}\n" in said
        assert "Traceback" not in said, said
    else:
        assert proc.returncode == -signal.SIGKILL
    # Nothing of the stopped experiments: no result, no temporary folder.
    assert not out.exists() or sorted(p.name for p in out.iterdir()) in ([], ["index.html"])


def _damaged(out: Path, how: str) -> None:
    """Damage the result `out` of `nap` as a half-written or half-removed one would be."""
    if how == "data.npz missing":
        (out / "data.npz").unlink()
    elif how == "data.npz cut short":
        data = (out / "data.npz").read_bytes()
        (out / "data.npz").write_bytes(data[: len(data) // 2])
    elif how == "a section missing":  # (another version wrote it, or it was edited)
        metrics = json.loads((out / "metrics.json").read_text())
        del metrics["nap"]
        (out / "metrics.json").write_text(json.dumps(metrics))
    else:
        (out / "config.json").unlink()


@pytest.mark.usefixtures("naps")
@pytest.mark.parametrize(
    "how", ["data.npz missing", "data.npz cut short", "config.json missing", "a section missing"]
)
def test_figures_of_a_result_that_cannot_be_read_is_one_line_before_any_work(tmp_path, capsys, how):
    # Before: a traceback from inside the redraw (FileNotFoundError, BadZipFile, KeyError), exit
    # status 1, after the marker had listed the figures as being redrawn.
    out = tmp_path / "res" / "nap"
    assert cli.main(["run", "nap", "--out", str(out)]) == 0
    _damaged(out, how)
    marker = (out / ".dynopt").read_bytes()
    capsys.readouterr()
    assert cli.main(["figures", "nap", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    again = f"make it anew: python -m experiments run nap --out {out}\n"
    edited = {"data.npz cut short": "data.npz", "a section missing": "metrics.json"}.get(how)
    if edited is not None:  # (a run refuses a result holding a file the user changed: s49)
        again = (
            f"{edited} changed since dynopt wrote it, so yours now (a run replaces only dynopt's "
            f"files): move it out of {out}, then {again}"
        )
    assert err.startswith(f"error: {out}: the saved result of nap cannot be read (")
    assert err.endswith(f"so its figures cannot be redrawn; {again}"), err
    assert err.count("\n") == 1 and (out / ".dynopt").read_bytes() == marker


def test_the_page_shows_a_result_whose_data_is_cut_short(naps, tmp_path, capsys):
    # Before: a data.npz cut short (BadZipFile) stopped the page with a traceback where the
    # experiment has tables (continuum), instead of saying so in its section.
    naps["nap"].TABLES = {"numbers": lambda r: (["value"], [[f"{r.nap.seconds:g}"]])}
    assert cli.main(["run-all", "nap", "nap2", "--out", str(tmp_path / "res")]) == 0
    _damaged(tmp_path / "res" / "nap", "data.npz cut short")
    capsys.readouterr()
    assert cli.main(["page", "--out", str(tmp_path / "res")]) == 0
    page = (tmp_path / "res" / "index.html").read_text()
    assert "the saved result cannot be read (BadZipFile: File is not a zip file); rerun" in page
    assert 'id="nap2"' in page


def _forged(folder: Path, marker: str) -> None:
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / ".dynopt").write_text(marker)


def test_a_marker_made_or_edited_by_hand_claims_nothing_not_even_itself(tmp_path, capsys):
    # Before: a `.dynopt` the user wrote (a list of files with digests, no folder recorded) made
    # the folder a result of dynopt's: `clean` deleted that file, the user's, and a run may have
    # replaced the folder's files whose digests it listed.
    root = tmp_path / "P"
    notes = hashlib.sha256(b"mine").hexdigest()
    by_hand = [
        '{"files": ["notes.txt"], "sha256": {}}',
        json.dumps({"files": ["notes.txt"], "sha256": {"notes.txt": notes}}),
        _io._MARKER_HEAD + json.dumps({"files": ["notes.txt"], "sha256": {"notes.txt": notes}}),
    ]
    for i, marker in enumerate(by_hand):
        _forged(root / f"f{i}", marker)
    real = _result(root / "gd_flow", m=1.0)
    edited = _result(root / "edited", m=1.0)
    (edited / ".dynopt").write_text((edited / ".dynopt").read_text().replace(' "files"', '"files"'))
    for folder in (*(root / f"f{i}" for i in range(len(by_hand))), edited):
        with pytest.raises(OutError, match=r"\.dynopt marker is not as dynopt wrote it"):
            check_out(folder, experiment="gd_flow")
    assert cli.main(["clean", "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"removed {real}\n" in out and f"kept {edited}: a folder whose .dynopt marker" in out
    for i, marker in enumerate(by_hand):
        assert (root / f"f{i}" / ".dynopt").read_text() == marker
        assert (root / f"f{i}" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in edited.iterdir()) == [".dynopt", *_EVERY]
    # The markers dynopt writes, and the one it wrote at 5c2a584, stay dynopt's.
    again = _result(root / "gd_flow", m=1.0)
    assert _io.foreign(again) == set() and check_out(again, experiment="gd_flow") == again


_EVERY = ["config.json", "data.npz", "metrics.json"]
