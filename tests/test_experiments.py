import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import experiments
from benchmarks._common import write as write_report
from dynopt import plotting
from experiments import __main__ as cli, _card, _headline, _io, _jobs, _page
from experiments._io import load_results, OutError, write_results

from .helpers import once_per_run


_MACHINE = {"cpu": "x", "cpu_count": 2, "memory_gib": 1, "platform": "cpu", "device_count": 1}
_REPORT = {"machine": _MACHINE, "versions": {}, "config": {}, "rows": []}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """`quick_results(name)`: the folder of `name`'s quick run, run once per test run and shared
    by every test that reads it, in whichever xdist worker (`once_per_run`): the figure-redraw
    test, handed to the worker that did not run gd_flow, read none and ran it again (15.9 s of
    CPU and 121 compilations; reading the other worker's: 1.9 s, none)."""

    def run(name: str) -> str:
        out = tmp_path_factory.mktemp(name) / name
        return str(experiments.run_experiment(name, quick=True, seed=0, out=out))

    return lambda name: Path(once_per_run(tmp_path_factory, f"quick_{name}", lambda: run(name)))


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_quick_mode_writes_results_figures_and_its_headline_numbers(name, quick_results):
    out = quick_results(name)
    metrics = json.loads((out / "metrics.json").read_text())
    seeded = _card.uses_seed(experiments.get(name).Config)
    assert metrics["seed"] == (0 if seeded else None) and metrics["quick"] is True
    assert {"jax", "optax", "diffrax", "equinox"} <= set(metrics["versions"])
    assert metrics["wall_time_s"] > 0
    assert json.loads((out / "config.json").read_text())["quick"] is True
    assert (out / ".dynopt").is_file()  # the marker that lets a later run replace it
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.stat().st_size > 10_000 for p in pngs)
    # The card's headline numbers (golden values with the tolerance the mathematics gives). If
    # one is off after a deliberate change, rerun `python -m experiments run NAME --quick` and
    # update the card's HEADLINES.
    readings = _headline.read(experiments.get(name).HEADLINES, metrics)
    off = [f"{r.headline.key} = {r.value_text()}, expected {r.headline.describe()}"
           for r in readings if r.status not in ("ok", "full mode only")]  # fmt: skip
    assert readings and not off, off
    # An order's verdict is saved where its headline says (a wrong key shows the number bare).
    for r in readings:
        if r.headline.verdict is not None and r.status != "full mode only":
            assert _headline.lookup(metrics, r.headline.verdict) == "asymptotic", r.headline.key


def test_figures_are_redrawn_from_the_saved_results_alone(quick_results):
    """The runner draws from the saved files already; `replot` redraws without recomputing (one
    experiment: redrawing all ten doubles the figure time for no new check)."""
    out = quick_results("gd_flow")
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert {p.name for p in experiments.replot("gd_flow", out)} == set(before)
    assert all(p.stat().st_mtime_ns > before[p.name] for p in out.glob("*.png"))
    assert _io.foreign(out) == set()  # what it drew is on the marker's list: a new run replaces it


def test_seed_is_checked_before_any_work_and_recorded_only_where_it_is_used(tmp_path):
    for bad in (-1, 2**32, 1.5):
        with pytest.raises(ValueError, match=r"^--seed must be an integer in \[0, 2\*\*32\)"):
            experiments.run_experiment("sgd_sde", quick=True, seed=bad, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    deterministic = {"adaptive", "holistic", "momentum", "nesterov"}
    seeded = {"sgd_sde", "path_integral", "gan_dynamics", "characteristics", "rnn_ode"}
    for name in experiments.EXPERIMENTS:
        config_cls = experiments.get(name).Config
        uses = _card.uses_seed(config_cls)
        assert not (name in deterministic and uses) and not (name in seeded and not uses), name
        config = _card.configure(config_cls, quick=True, seed=7)
        assert getattr(config, "seed", None) == (7 if uses else None)


def test_by_mode_fields_are_the_quick_values():
    @dataclasses.dataclass(frozen=True)
    class Config:
        quick: bool = False
        steps: int = _card.by_mode(1000, quick=100)
        sizes: tuple[int, ...] = _card.by_mode((1, 2, 3), quick=(1,))
        rate: float = 0.5

    assert _card.quick_values(Config) == {"steps": 100, "sizes": (1,)}
    full, fast = _card.configure(Config), _card.configure(Config, quick=True)
    assert (full.quick, full.steps, full.sizes, full.rate) == (False, 1000, (1, 2, 3), 0.5)
    assert (fast.quick, fast.steps, fast.sizes, fast.rate) == (True, 100, (1,), 0.5)


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_quick_changes_only_the_declared_fields(name):
    """Every experiment's quick mode changes some field, and only fields declared `by_mode`
    (a class attribute `QUICK`, the old convention, is no longer read)."""
    cls = experiments.get(name).Config
    assert not hasattr(cls, "QUICK"), name
    full, fast = (dataclasses.asdict(_card.configure(cls, quick=q)) for q in (False, True))
    changed = {k for k in full if full[k] != fast[k]} - {"quick"}
    assert changed and changed <= set(_card.quick_values(cls))


def test_cli_refuses_a_bad_seed_in_one_line_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: pytest.fail("work was done"))
    assert cli.main(["run", "sgd_sde", "--quick", "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --seed must be an integer in [0, 2**32), got -1\n"


def test_unknown_experiment_lists_available():
    with pytest.raises(ValueError, match=r"unknown experiment 'nope'; available: .*gd_flow"):
        experiments.get("nope")
    assert cli.main(["run", "nope"]) == 2


def test_cli_list(capsys):
    assert cli.main(["list"]) == 0
    assert "gd_flow" in capsys.readouterr().out


def test_cli_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "experiments", "list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    assert "gd_flow" in proc.stdout


def test_writer_is_atomic_on_failure(tmp_path):
    out = tmp_path / "exp"
    write_results(
        out, config={"a": 1}, metrics={"m": 1.0}, arrays={"x": np.arange(3)}, figures=lambda d: []
    )

    def broken(_):
        raise RuntimeError("interrupted while drawing")

    with pytest.raises(RuntimeError):
        write_results(
            out, config={"a": 2}, metrics={"m": 2.0}, arrays={"x": np.arange(4)}, figures=broken
        )
    metrics, arrays = load_results(out)
    assert metrics == {"m": 1.0} and arrays["x"].shape == (3,)
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]


def _write(out, figures=lambda d: [], **metrics):
    return write_results(
        out, config={"a": 1}, metrics=metrics or {"m": 1.0}, arrays={"x": np.arange(3)},
        figures=figures,
    )  # fmt: skip


def test_out_refuses_a_users_folder_or_file_before_any_work(tmp_path, monkeypatch, capsys):
    user = tmp_path / "project"
    user.mkdir()
    (user / "thesis.tex").write_text("mine")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")

    def no_work(*args, **kwargs):
        raise AssertionError("the experiment ran before --out was checked")

    monkeypatch.setattr(cli, "run_experiment", no_work)
    for out in (user, notes, ""):
        assert cli.main(["run", "gd_flow", "--quick", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out") and err.count("\n") == 1, err
    assert cli.main(["run-all", "--quick", "--out", str(notes)]) == 2
    with pytest.raises(OutError, match="not a dynopt result"):
        experiments.run_experiment("gd_flow", quick=True, out=user)
    assert (user / "thesis.tex").read_text() == "mine" and notes.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "project"]


def test_clean_removes_only_what_dynopt_wrote(tmp_path, capsys):
    """`python -m experiments clean` (what `make clean` runs) removes dynopt's result folders,
    its page and a dead writer's leftover, and keeps a user's files, folders and links in the
    results folder, and whatever such a link points at; the folder itself always stays."""
    root = tmp_path / "results"
    _write(root / "gd_flow")
    _write(root / "nesterov")
    _page.write_page(root, {}, [])
    leftover = root / ".gd_flow.tmp-999999999-abc"  # no such pid: its writer died
    leftover.mkdir()
    write_report(_REPORT, root / "bench")  # `make bench`'s report
    (root / "thesis.tex").write_text("mine")
    (root / "plots").mkdir()  # looks like a pre-marker result, but may be a user's: kept
    (root / "plots" / "metrics.json").write_text("{}")
    (root / "mine").mkdir()
    (root / "mine" / "data.csv").write_text("mine")
    outside = _write(tmp_path / "elsewhere")
    (root / "link").symlink_to(outside, target_is_directory=True)
    assert cli.main(["clean", "--out", str(root)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == ["link", "mine", "plots", "thesis.tex"]
    assert (root / "thesis.tex").read_text() == "mine"
    assert (root / "mine" / "data.csv").read_text() == "mine"
    assert (outside / ".dynopt").is_file()  # a link is not followed
    assert printed.count("kept ") == 4 and printed.count("removed ") == 5, printed
    shutil.rmtree(root / "mine")
    shutil.rmtree(root / "plots")
    (root / "link").unlink()
    (root / "thesis.tex").unlink()
    (root / "index.html").write_text("<html><title>my page</title></html>")  # not dynopt's
    assert cli.main(["clean", "--out", str(root)]) == 0
    assert [p.name for p in root.iterdir()] == ["index.html"]
    (root / "index.html").unlink()
    _write(root / "gd_flow")
    assert cli.main(["clean", "--out", str(root)]) == 0
    assert list(root.iterdir()) == []  # the folder stays: dynopt cannot prove it made it
    capsys.readouterr()
    assert cli.main(["clean", "--out", str(root)]) == 0  # nothing to clean: no error, a reason
    assert capsys.readouterr().out == f"nothing to remove: {root} is empty\n"
    root.rmdir()
    assert cli.main(["clean", "--out", str(root)]) == 0
    assert capsys.readouterr().out == f"nothing to remove: there is no {root}\n"
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["clean", "--out", str(tmp_path / "notes.txt")]) == 0
    assert "a file, not a results folder" in capsys.readouterr().out
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _user_folder(folder: Path) -> Path:
    """A user's folder that looks like a result written before the marker existed."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"my": "tracking"}')
    (folder / "config.json").write_text("{}")
    (folder / "loss_curve.png").write_text("png")
    return folder


def test_a_folder_without_the_marker_is_never_a_result(tmp_path, monkeypatch, capsys):
    """`run --out` used to replace a marker-less folder of metrics.json, config.json and PNGs as
    an old-style result (deleting the user's files) while `clean` kept it as the user's: only
    the marker, a regular file, makes a result, for both."""
    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: pytest.fail("work was done"))
    legacy = _user_folder(tmp_path / "legacy")
    fake = _user_folder(tmp_path / "fake")
    (fake / ".dynopt").mkdir()  # a folder is not the marker
    link = _user_folder(tmp_path / "link")
    (link / ".dynopt").symlink_to(_write(tmp_path / "real") / ".dynopt")  # nor is a link
    for folder in (legacy, fake, link):
        assert cli.main(["run", "nesterov", "--quick", "--out", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"error: --out {folder} holds files that are not a dynopt result (no .dynopt marker);"
            " choose a new or empty folder.\n"
        )
        with pytest.raises(OutError, match="not a dynopt result"):
            _write(folder)
        assert (folder / "loss_curve.png").read_text() == "png"
        assert (folder / "metrics.json").read_text() == '{"my": "tracking"}'
    assert cli.main(["clean", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines() == [
        f"removed {tmp_path / 'real'}",
        *(f"kept {tmp_path / n}: not written by dynopt" for n in ("fake", "legacy", "link")),
    ]


def test_clean_never_removes_the_out_folder_or_a_folder_it_cannot_prove_it_made(tmp_path, capsys):
    """`clean --out DIR` used to remove a user's empty DIR, and DIR itself once all in it was
    dynopt's. Now DIR and empty folders always stay; a page is dynopt's only if it begins as
    dynopt writes it (not a user's page with the same title); a dead page writer's temporary
    file goes; a result folder given as DIR is left alone (its parent is what clean takes)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["clean", "--out", str(empty)]) == 0
    assert empty.is_dir() and capsys.readouterr().out == f"nothing to remove: {empty} is empty\n"
    root = tmp_path / "results"
    result = _write(root / "gd_flow")
    (root / "new").mkdir()  # a user's empty folder
    page = _page.write_page(root, {}, [])
    (root / f".index.html.tmp-{2**22 + 1}-x").write_text("<html>")  # its writer died
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("<html><head><title>dynopt results</title></head></html>")
    assert cli.main(["clean", "--out", str(result)]) == 0
    assert capsys.readouterr().out.startswith(f"left {result} alone: a result folder itself")
    assert (result / ".dynopt").is_file()
    assert cli.main(["clean", "--out", str(root)]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["new"]
    assert not page.exists() and capsys.readouterr().out.count("removed ") == 3
    assert cli.main(["clean", "--out", str(mine)]) == 0
    assert (mine / "index.html").is_file()
    assert capsys.readouterr().out == f"kept {mine / 'index.html'}: not written by dynopt\n"
    with pytest.raises(ValueError, match="not written by dynopt"):
        _page.write_page(mine, {}, [])  # nor is it replaced


def _with_users_files(result: Path) -> Path:
    (result / "my_notes.txt").write_text("notes")
    (result / "mydir").mkdir()
    (result / "mydir" / "f").write_text("x")
    return result


def _users_files_intact(result: Path) -> bool:
    return (result / "my_notes.txt").read_text() == "notes" and (
        result / "mydir" / "f"
    ).read_text() == "x"


def test_a_rerun_refuses_a_result_holding_files_dynopt_did_not_write(tmp_path, monkeypatch, capsys):
    """`run nesterov --out O` a second time used to delete the notes and the folder the user had
    put into O, a result of the first: the marker lists what dynopt wrote, and a result holding
    anything else is refused before any work, naming it (moving the user's files elsewhere, or
    into a temporary folder that a crash would leave to be removed, is not dynopt's to do)."""
    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: pytest.fail("work was done"))
    out = _with_users_files(_write(tmp_path / "o", experiment="nesterov"))
    assert cli.main(["run", "nesterov", "--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --out {out} is a dynopt result that also holds what dynopt did not write: "
        "my_notes.txt, mydir; a new run replaces the whole folder, so move them out of it first "
        "(or choose another --out).\n"
    )
    with pytest.raises(OutError, match=r"my_notes\.txt, mydir"):
        _write(out, experiment="nesterov")
    assert _users_files_intact(out) and load_results(out)[0] == {"experiment": "nesterov"}
    # Added while the new result was being written (after the check): still refused, the
    # previous result and the user's files put back as they were.
    (out / "my_notes.txt").unlink()
    shutil.rmtree(out / "mydir")
    with pytest.raises(OutError, match=r"my_notes\.txt, mydir"):
        _write(out, figures=lambda d: _with_users_files(out), experiment="nesterov", m=2.0)
    assert _users_files_intact(out) and load_results(out)[0] == {"experiment": "nesterov"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    marker = (out / ".dynopt").read_text()
    names = ["config.json", "data.npz", "metrics.json"]
    assert json.loads(marker[marker.index("{") :]) == {
        "files": names,
        "folder": out.stat().st_ino,
        "sha256": {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in names},
    }


def test_clean_keeps_and_reports_what_a_user_put_into_a_result(tmp_path, capsys):
    """`clean --out P` used to delete P/nesterov/my_extra.txt with the result ("never other
    files", says its help): it removes the files the marker lists and keeps, and reports, the
    rest, in the folder."""
    root = tmp_path / "P"
    result = _write(root / "nesterov", experiment="nesterov")
    (result / "my_extra.txt").write_text("mine")
    assert cli.main(["clean", "--out", str(root)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        *(f"removed {result / n}" for n in ("config.json", "data.npz", "metrics.json", ".dynopt")),
        f"kept {result / 'my_extra.txt'}: not written by dynopt",
    ]
    assert [p.name for p in result.iterdir()] == ["my_extra.txt"]
    assert (result / "my_extra.txt").read_text() == "mine"


def test_a_marker_without_digests_makes_the_result_the_users_whole(tmp_path, capsys):
    """A result written before markers held SHA-256 digests (a marker without a list, or with a
    list alone): a file the user changed since cannot be told from dynopt's, so a new run
    refuses it and clean keeps it, whole, each naming it and how to proceed (rm -r); the page
    still shows its figures. (Until session 36 its files were dynopt's by name.)"""
    old = _write(tmp_path / "P" / "nesterov", experiment="nesterov")
    (old / ".dynopt").write_text("dynopt experiment results; safe to replace by a new run\n")
    for name in ("sbc.png", "r_sweep.png", "my_plot.png"):
        (old / name).write_bytes(b"png")
    with pytest.raises(OutError, match=r"is a result of an older dynopt .*\(rm -r "):
        _write(old, experiment="nesterov")
    assert _io.foreign(old) == {p.name for p in old.iterdir()}
    assert _io.written(old) == {".dynopt", "config.json", "data.npz", "metrics.json", "sbc.png",
                                "r_sweep.png"}  # fmt: skip
    assert cli.main(["clean", "--out", str(tmp_path / "P")]) == 0
    assert capsys.readouterr().out.startswith(f"kept {old}: a result of an older dynopt")
    assert len(list(old.iterdir())) == 7
    shutil.rmtree(old)  # as the message says; a result written anew is dynopt's again
    _write(old, experiment="nesterov")
    _write(old, experiment="nesterov", m=2.0)
    assert load_results(old)[0] == {"experiment": "nesterov", "m": 2.0}


def test_run_refuses_an_out_holding_another_experiments_result(tmp_path, monkeypatch, capsys):
    """`run gd_flow --out O` with O a nesterov result used to replace it silently (`figures`
    refused it already): `run` and `run-all` refuse it before any work, naming both; a writer
    that finds one there when its result is ready does not replace it either."""
    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: pytest.fail("work was done"))
    other = _write(tmp_path / "o", experiment="nesterov")
    assert cli.main(["run", "gd_flow", "--quick", "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --out {other} holds the result of 'nesterov', not of 'gd_flow'; a run replaces "
        f"only its own experiment's result: choose another --out, e.g. {tmp_path / 'gd_flow'}\n"
    )
    _write(tmp_path / "P" / "gd_flow", experiment="nesterov")
    assert cli.main(["run-all", "gd_flow", "--out", str(tmp_path / "P")]) == 2
    assert "holds the result of 'nesterov', not of 'gd_flow'" in capsys.readouterr().err
    with pytest.raises(OutError, match="holds the result of 'nesterov', not of 'gd_flow'"):
        _write(other, experiment="gd_flow")
    assert load_results(other)[0] == {"experiment": "nesterov"}


_FAKE_EXPERIMENT = '''"""A fake experiment for the command line's tests: one section that naps for
`Config.seconds`, after calling `DURING()` where a test set it.

Its summary is the whole first paragraph above."""

import dataclasses
import time


DURING = None


@dataclasses.dataclass(frozen=True)
class Config:
    """Run card. `python -m experiments run NAME --quick`."""

    quick: bool = False
    seconds: float = SECONDS


@dataclasses.dataclass
class Nap:
    seconds: float


def nap(config) -> Nap:
    if DURING is not None:
        DURING()
    end = time.monotonic() + config.seconds
    while time.monotonic() < end:
        time.sleep(0.02)
    return Nap(config.seconds)


SECTIONS = {"nap": nap}
FIGURES = {}
HEADLINES = ()
'''


def _fake_experiments(folder: Path, **seconds) -> dict[str, str]:
    """Write a fake experiment module `fake_NAME.py` into `folder` per `NAME=seconds` (each one
    section napping that long): `{NAME: module name}` for the registry."""
    for name, nap in seconds.items():
        (folder / f"fake_{name}.py").write_text(_FAKE_EXPERIMENT.replace("SECONDS", repr(nap)))
    return {name: f"fake_{name}" for name in seconds}


@pytest.fixture
def naps(tmp_path, monkeypatch):
    """Fake experiments `nap` and `nap2` (no JAX work: a section that calls the module's `DURING`
    hook) in the registry, the CLI's compilation cache left alone: their modules."""
    import importlib

    (tmp_path / "fakes").mkdir()
    registry = _fake_experiments(tmp_path / "fakes", nap=0.0, nap2=0.0)
    monkeypatch.syspath_prepend(str(tmp_path / "fakes"))
    for name, module in registry.items():
        monkeypatch.setitem(experiments.EXPERIMENTS, name, module)
    monkeypatch.setattr(cli, "enable_compilation_cache", lambda: None)
    yield {name: importlib.import_module(module) for name, module in registry.items()}
    for module in registry.values():
        sys.modules.pop(module, None)


def test_an_out_that_changes_during_the_run_gets_the_result_beside_it(naps, tmp_path, capsys):
    """`--out` made a user's folder while the experiment ran used to end in an OutError
    traceback, the computed results lost: one `error:` line, the result saved whole in a new
    folder beside it, named, exit status 1, the user's folder untouched."""
    out = tmp_path / "o"

    def users_folder():
        out.mkdir()
        (out / "thesis.tex").write_text("mine")

    naps["nap"].DURING = users_folder
    assert cli.main(["run", "nap", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    [saved] = [p for p in tmp_path.iterdir() if p.name.startswith("o.dynopt-")]
    assert err == (
        f"error: --out {out} holds files that are not a dynopt result (no .dynopt marker); choose "
        "a new or empty folder. (found once the run had finished: its result was saved to "
        f"{saved} instead)\n"
    )
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    assert load_results(saved)[0]["experiment"] == "nap" and _io.foreign(saved) == set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fakes", "o", saved.name]
    # A user's file put into the previous result, and another experiment's result, alike.
    naps["nap"].DURING = None
    assert cli.main(["run-all", "nap", "--out", str(tmp_path)]) == 0
    naps["nap"].DURING = lambda: (tmp_path / "nap" / "notes.txt").write_text("mine")
    naps["nap2"].DURING = lambda: _write(tmp_path / "nap2", experiment="nesterov")
    for name in ("nap", "nap2"):
        assert cli.main(["run-all", name, "--out", str(tmp_path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: --out {tmp_path / name} ") and err.count("\n") == 1, err
        [saved] = tmp_path.glob(f"{name}.dynopt-*")
        assert load_results(saved)[0]["experiment"] == name
    assert (tmp_path / "nap" / "notes.txt").read_text() == "mine"
    assert load_results(tmp_path / "nap2")[0]["experiment"] == "nesterov"


def test_ctrl_c_stops_run_all_keeps_what_finished_and_writes_its_page(
    naps, tmp_path, monkeypatch, capsys
):
    """Ctrl-C in `run-all --jobs 1` used to print a 151-line JAX traceback and write no page:
    one line says what finished and where it is, the page is written over it, exit status 130,
    and the interrupted experiment leaves nothing behind."""
    pages = []
    monkeypatch.setattr(cli, "write_page", lambda parent, names: pages.append(parent))
    naps["nap2"].DURING = lambda: os.kill(os.getpid(), signal.SIGINT)
    out = tmp_path / "res"
    try:
        rc = cli.main(["run-all", "nap", "nap2", "--out", str(out)])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended in a traceback")
    assert rc == 130 and pages == [out]
    err = capsys.readouterr().err
    assert err == f"interrupted; finished: nap; results kept in {out}\n"
    assert [p.name for p in out.iterdir()] == ["nap"]
    # A KeyboardInterrupt that Python drops (raised in a garbage-collector callback, as JAX's
    # one did) still stops the run, at its next section.

    def dropped():
        try:
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass

    naps["nap2"].DURING = dropped
    try:
        rc = cli.main(["run", "nap2", "--out", str(out / "nap2")])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended in a traceback")
    assert rc == 130 and [p.name for p in out.iterdir()] == ["nap"]


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    "signum, handler",
    [
        (signal.SIGINT, signal.default_int_handler),  # Python's own Ctrl-C
        (signal.SIGTERM, _raise_keyboard_interrupt),  # what the command line makes of SIGTERM
    ],
    ids=["ctrl_c", "sigterm"],
)
def test_a_stop_while_a_result_is_swapped_in_waits_for_the_swap(
    tmp_path, monkeypatch, signum, handler
):
    """A Ctrl-C (or a SIGTERM, which the command line turns into one) between the two renames
    that swap a result in left no result at `out` (the old one moved aside until a later writer
    put it back): the swap ends first."""
    out = _write(tmp_path / "exp")
    rename, renames = os.rename, []

    def rename_then_stop(src, dst):
        rename(src, dst)
        renames.append(dst)
        if len(renames) == 1:  # the old result moved aside, the new one not yet in
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(os, "rename", rename_then_stop)
    previous = signal.signal(signum, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            _write(out, m=2.0)
    finally:
        signal.signal(signum, previous)
    monkeypatch.undo()
    assert load_results(out)[0] == {"m": 2.0}
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    """The CLI's results folder (the checkout's own) and README figure moved under `tmp_path` (a
    test never writes the repository's results/ or docs/), figures recorded instead of drawn,
    nothing run, and the page not written: `(results, readme figure, redrawn folders)`."""
    results, figure = tmp_path / "results", tmp_path / "docs" / "figures" / "gd_flow_orders.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"README figure")
    redrawn = []
    monkeypatch.setattr(cli, "DEFAULT_RESULTS", results)
    monkeypatch.setattr(cli, "CHECKOUT_RESULTS", results, raising=False)
    monkeypatch.setattr(cli, "README_FIGURES", {("gd_flow", "orders.png"): figure})
    monkeypatch.setattr(cli, "replot", lambda name, out=None: redrawn.append(out) or [])
    monkeypatch.setattr(cli, "_check_loads", lambda *a: None)  # (fake results: no sections)
    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: pytest.fail("an experiment ran"))
    monkeypatch.setattr(cli, "write_page", lambda parent, names: None)
    return results, figure, redrawn


def _result_of(out: Path, name: str, quick: bool) -> Path:
    def orders(folder):
        (folder / "orders.png").write_bytes(f"{name}, quick={quick}".encode())

    return _write(out, figures=orders, experiment=name, quick=quick)


def test_figures_refresh_a_readme_figure_only_from_a_full_size_result_named(fake_repo, capsys):
    """`figures nesterov` used to copy a quick gd_flow figure over the README's: a README
    figure now comes only from a full-size result of an experiment named (or all, none named)
    in the default results folder, and `figures` says why where it does not."""
    results, figure, redrawn = fake_repo
    _result_of(results / "gd_flow", "gd_flow", quick=True)
    _result_of(results / "nesterov", "nesterov", quick=False)
    assert cli.main(["figures", "nesterov"]) == 0
    assert "README" not in capsys.readouterr().out and figure.read_bytes() == b"README figure"
    assert cli.main(["figures", "gd_flow"]) == 0
    said = f"README figure {figure} not refreshed: {results / 'gd_flow'} is a quick-mode result"
    assert said in capsys.readouterr().out
    assert figure.read_bytes() == b"README figure"
    full = _result_of(results / "gd_flow", "gd_flow", quick=False)
    elsewhere = _result_of(results.parent / "elsewhere", "gd_flow", quick=False)
    assert cli.main(["figures", "gd_flow", "--out", str(elsewhere)]) == 0
    assert "not refreshed: it comes from" in capsys.readouterr().out
    assert figure.read_bytes() == b"README figure"
    assert cli.main(["figures", "gd_flow", "nesterov"]) == 0
    assert capsys.readouterr().out.count(f"README figure refreshed: {figure}") == 1
    assert figure.read_bytes() == b"gd_flow, quick=False"
    assert redrawn == [
        results / "nesterov",
        results / "gd_flow",
        elsewhere,
        full,
        results / "nesterov",
    ]
    assert sorted(p.name for p in figure.parent.iterdir()) == ["gd_flow_orders.png"]


def test_figures_and_page_refuse_in_one_line_with_rc_2_and_figures_takes_out(
    fake_repo, tmp_path, capsys
):
    """`figures nope` and `figures NAME` over a user's results/NAME used to end in tracebacks
    (the latter after starting a full run), `figures` had no `--out`, and `page` exited 0 when
    it could not write the page."""
    results, _, redrawn = fake_repo
    _user_folder(results / "momentum")
    other = _result_of(tmp_path / "other", "nesterov", quick=True)
    for argv, reason in (
        (["nope"], "unknown experiment 'nope'"),
        (["momentum"], f"--out {results / 'momentum'} holds files that are not a dynopt result"),
        (["gd_flow", "--out", str(other)], f"--out {other} holds the result of 'nesterov'"),
        (["--out", str(other)], "--out DIR is one experiment's results folder"),
        (["nesterov", "gd_flow", "--out", str(other)], "give exactly one NAME"),
        (["nesterov", "--out", ""], "--out is empty"),
    ):
        assert cli.main(["figures", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and reason in err and err.count("\n") == 1, err
    assert redrawn == [] and sorted(p.name for p in (results / "momentum").iterdir()) == [
        "config.json", "loss_curve.png", "metrics.json"
    ]  # fmt: skip
    assert cli.main(["figures", "nesterov", "--out", str(other)]) == 0  # as `run --out` wrote it
    assert redrawn == [other]
    user_page = tmp_path / "site" / "index.html"
    user_page.parent.mkdir()
    user_page.write_text("<html>mine</html>")
    for out in (user_page.parent, tmp_path / "absent", ""):
        assert cli.main(["page", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert user_page.read_text() == "<html>mine</html>" and not (tmp_path / "absent").exists()


def test_figures_refresh_a_readme_figure_only_from_the_checkouts_own_results(
    fake_repo, tmp_path, monkeypatch, capsys
):
    """`figures gd_flow` in an unrelated folder with a full-size results/gd_flow used to copy
    its figure over the checkout's README figure: only the checkout's own results/ (as it
    resolves) refreshes it."""
    results, figure, _ = fake_repo
    checkout_results = tmp_path / "checkout" / "results"
    monkeypatch.setattr(cli, "CHECKOUT_RESULTS", checkout_results, raising=False)
    _result_of(results / "gd_flow", "gd_flow", quick=False)
    assert cli.main(["figures", "gd_flow"]) == 0
    assert capsys.readouterr().out.endswith(
        f"README figure {figure} not refreshed: {results / 'gd_flow'} is not in this checkout's "
        f"results folder {checkout_results} (README figures come from there: run figures in "
        f"{cli._CHECKOUT}).\n"
    )
    assert figure.read_bytes() == b"README figure"
    checkout_results.parent.mkdir()
    checkout_results.symlink_to(results, target_is_directory=True)  # the same folder
    assert cli.main(["figures", "gd_flow"]) == 0
    assert f"README figure refreshed: {figure}" in capsys.readouterr().out
    assert figure.read_bytes() == b"gd_flow, quick=False"


def test_run_all_and_page_refuse_a_result_folder_as_their_parent(tmp_path, monkeypatch, capsys):
    """`run-all --out O` and `page --out O` with O a result used to write O/NAME/ and
    O/index.html into it (which the next `run --out O` deleted): refused, as `clean` does,
    and so is any `--out` inside a result."""
    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: pytest.fail("work was done"))
    result = _write(tmp_path / "o", experiment="nesterov")
    for argv in (["run-all", "nesterov", "--quick"], ["run-all", "--jobs", "2"], ["page"]):
        assert cli.main([*argv, "--out", str(result)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert f"{result} is a dynopt result folder itself" in err
    assert cli.main(["run", "gd_flow", "--quick", "--out", str(result / "sub")]) == 2
    assert f"is inside {result}, a dynopt result itself" in capsys.readouterr().err
    assert _io.foreign(result) == set()
    with pytest.raises(ValueError, match="a dynopt result folder itself"):
        _page.write_page(result, {}, [])


def test_out_under_a_folder_that_refuses_writes_is_refused_before_any_work(monkeypatch):
    """The parent's writability is tried by a real write: as root `os.access` says yes to
    everything (simulated here for any user), and /proc refuses new folders to root too; the
    refusal used to come from `write_results` after the whole run."""
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)
    with pytest.raises(OutError, match=r"--out /proc/dynopt-results: cannot create it under /proc"):
        experiments._io.check_out("/proc/dynopt-results")


def test_a_first_quick_run_is_ordered_longest_first(tmp_path):
    """`run-all --jobs` orders by the previous results' wall times; with none (a fresh clone),
    quick mode goes by typical first-run times, which name only existing experiments, and an
    experiment without one (new) goes first; full mode without results keeps the given order."""
    from experiments._jobs import _FIRST_RUN_SECONDS, _previous_wall_time

    assert set(_FIRST_RUN_SECONDS) <= set(experiments.EXPERIMENTS)
    none = tmp_path / "absent"
    assert _previous_wall_time(none, "gd_flow", quick=True) == _FIRST_RUN_SECONDS["gd_flow"]
    assert _previous_wall_time(none, "new_one", quick=True) == math.inf
    assert _previous_wall_time(none, "gd_flow", quick=False) == math.inf
    out = _write(tmp_path / "gd_flow", wall_time_s=3.0)
    assert _previous_wall_time(out, "gd_flow", quick=True) == 3.0


def test_only_a_previous_result_is_replaced(tmp_path):
    out = _write(tmp_path / "exp")
    assert (out / ".dynopt").is_file()
    _write(out, m=2.0)
    assert load_results(out)[0] == {"m": 2.0}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _write(empty) == empty


def test_run_all_takes_out(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "run_experiment", lambda name, **kw: calls.append((name, kw["out"])))
    monkeypatch.setattr(cli, "_report", lambda name, out, elapsed: None)  # nothing was written
    monkeypatch.setattr(cli, "write_page", lambda parent, names: calls.append(parent))
    assert cli.main(["run-all", "--quick", "--out", str(tmp_path / "res")]) == 0
    runs = [(n, tmp_path / "res" / n) for n in sorted(experiments.EXPERIMENTS)]
    assert calls == [*runs, tmp_path / "res"]


def test_run_all_jobs_runs_each_experiment_in_its_own_process(tmp_path, capfd):
    """`run-all NAME --jobs 2`: the experiment runs in a spawned worker (its log lines tagged with
    its name) and its result is whole: its headline numbers are the card's, as in-process."""
    assert cli.main(["run-all", "nesterov", "--quick", "--jobs", "2", "--out", str(tmp_path)]) == 0
    out = capfd.readouterr().out  # the worker writes to the file descriptor, not sys.stdout
    assert "[nesterov] " in out and "nesterov: done in" in out, out
    metrics = json.loads((tmp_path / "nesterov" / "metrics.json").read_text())
    readings = _headline.read(experiments.get("nesterov").HEADLINES, metrics)
    assert readings and all(r.status in ("ok", "full mode only") for r in readings), readings
    assert (tmp_path / "index.html").is_file()


def _parallel_run(tmp_path: Path, registry: dict, out: Path) -> subprocess.Popen:
    """`run-all --jobs 2` of the fake experiments `registry` into `out`, in its own process
    group, its output piped."""
    driver = tmp_path / "driver.py"  # (a spawned worker runs it too, as __mp_main__)
    driver.write_text(
        "import sys\nimport experiments\n"
        f"experiments.EXPERIMENTS.update({registry!r})\n"
        "if __name__ == '__main__':\n"
        "    from experiments.__main__ import main\n"
        "    sys.exit(main(sys.argv[1:]))\n"
    )
    repo = str(Path(experiments.__file__).parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([repo, str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache"),
    }
    argv = ["run-all", *registry, "--jobs", "2", "--out", str(out)]
    return subprocess.Popen(
        [sys.executable, str(driver), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


def test_ctrl_c_stops_a_parallel_run_all_and_its_workers(tmp_path):
    """Ctrl-C in `run-all --jobs 2` (`make run`) used to leave it running: the pool waited for
    every queued experiment, and the workers went on writing results. It stops now: what has
    not started is cancelled, the running experiment stops with nothing of it left, the workers
    exit, one line says what finished, the page is written over it, exit status 130."""
    registry = _fake_experiments(
        tmp_path, quick=0.0, slow=120.0, slower=120.0, queued=120.0, last=120.0
    )
    out = tmp_path / "res"
    proc = _parallel_run(tmp_path, registry, out)
    said = []
    try:
        for line in proc.stdout:  # until `quick` is done and `slower` has its worker
            said.append(line)
            if line.startswith("quick: done in"):
                break
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        start = time.monotonic()
        rest, _ = proc.communicate(timeout=60)
        stopped = time.monotonic() - start
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    said = "".join(said) + rest
    assert proc.returncode == 130, said
    assert f"interrupted; finished: quick; results kept in {out}\n" in said
    assert "Traceback" not in said and "Exception ignored" not in said, said
    assert stopped < _jobs.STOP_GRACE_S, said  # the workers stopped by themselves, unkilled
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "quick"], said
    assert 'id="quick"' in (out / "index.html").read_text()
    for _ in range(100):  # no worker left behind in the job's process group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a process of the run is still there")


def test_a_worker_ends_without_tearing_down_jax(tmp_path):
    """A `run-all --jobs` worker used to spend about a second of CPU at its exit, while the
    parent waited for it: JAX's `atexit` handlers (releasing its backends and caches), then
    Python tearing down every module's objects. It ends at once now: the handlers registered
    before its own (as JAX's are, at import) do not run, those registered later (by an
    experiment) still do, and what it printed unflushed is still written."""
    before, after = tmp_path / "before", tmp_path / "after"
    code = (
        "import atexit, sys, jax\n"
        f"atexit.register(open, {str(before)!r}, 'w')  # (as JAX's handlers)\n"
        "from experiments import _jobs\n"
        "_jobs._exit_at_once_when_done()\n"
        "_jobs._exit_at_once_when_done()  # (registered once)\n"
        f"atexit.register(open, {str(after)!r}, 'w')\n"
        "sys.stdout.write('printed, not flushed')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "printed, not flushed"
    assert after.exists() and not before.exists()


def test_a_parallel_runs_parent_imports_neither_jax_nor_an_experiment():
    """The parent of `run-all --jobs` starts its workers at once: importing JAX and dynopt first
    (over a second of one core) would delay every worker by as much, in every `make run`."""
    code = (
        "import sys, experiments.__main__ as cli; cli.summary('gd_flow'); "
        "print(sorted(m for m in ('jax', 'dynopt', 'experiments.gd_flow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_run_all_refuses_a_bad_jobs_or_name_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: pytest.fail("work was done"))
    for argv in (["--jobs", "0"], ["--jobs", "-2"], ["no_such_experiment"]):
        assert cli.main(["run-all", "--quick", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_results_are_written_with_the_users_umask(tmp_path):
    def draw(folder):
        fig, (ax,) = plotting.panels(1)
        ax.plot([0, 1], [0, 1])
        return [plotting.save(fig, folder / "f.png")]

    old = os.umask(0o022)
    try:
        out = _write(tmp_path / "exp", figures=draw)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        n: 0o644 for n in (".dynopt", "config.json", "metrics.json", "data.npz", "f.png")
    }


def test_concurrent_writers_all_succeed_and_leave_one_whole_result(tmp_path):
    out = tmp_path / "exp"

    def writer(i):
        for j in range(25):
            write_results(
                out, config={"i": i, "j": j}, metrics={"i": i, "j": j},
                arrays={"x": np.full(3, i)}, figures=lambda d: [],
            )  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, range(4)))  # re-raises any writer's error
    metrics, arrays = load_results(out)
    config = json.loads((out / "config.json").read_text())
    assert metrics == config and arrays["x"][0] == metrics["i"]  # one writer's, whole
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]


def test_a_result_swapped_out_while_it_is_listed_is_read_again(tmp_path, monkeypatch):
    # What the concurrent-writers test meets about once in 40 runs, made deterministic: another
    # writer moves the old result aside and deletes it (marker first) while it is being listed.
    out = _write(tmp_path / "exp")
    listdir, seen = os.listdir, []

    def racing(fd):
        names = listdir(fd)
        if not seen:
            seen.append(names)
            os.rename(out, tmp_path / ".exp.old-1")
            _write(out, m=2.0)  # (lists the new folder: `seen` is no longer empty)
            return [n for n in names if n not in (".dynopt", "metrics.json")]
        return names

    monkeypatch.setattr(os, "listdir", racing)
    assert write_results(out, config={}, metrics={"m": 3.0}, arrays={}, figures=lambda d: []) == out
    assert seen and load_results(out)[0] == {"m": 3.0}


def test_leftovers_of_dead_writers_are_recovered(tmp_path):
    out = _write(tmp_path / "exp")
    dead = 2**22 + 4321  # above Linux's pid_max: no such process
    os.rename(out, tmp_path / f".exp.old-{dead}-abc")  # killed between the two renames
    (tmp_path / f".exp.tmp-{dead}-xyz").mkdir()  # killed while drawing

    def broken(_):
        raise RuntimeError("interrupted while drawing")

    with pytest.raises(RuntimeError):
        _write(out, figures=broken, m=2.0)
    assert load_results(out)[0] == {"m": 1.0}  # the old result is back, not lost
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]


def test_metrics_json_is_standard_json_with_the_reason_for_each_null(tmp_path):
    inf = float("inf")
    out = _write(tmp_path / "exp", runs=[{"loss": inf}, {"loss": 1.0}], n=float("nan"),
                 **{"1/N1": {"x": -inf}})  # fmt: skip

    def no_constants(token):
        raise AssertionError(f"non-standard JSON token {token}")

    data = json.loads((out / "metrics.json").read_text(), parse_constant=no_constants)
    assert data["runs"][0]["loss"] is None and data["n"] is None and data["1/N1"]["x"] is None
    assert data["non_finite"] == {"runs/0/loss": "inf", "n": "nan", "1~1N1/x": "-inf"}
    metrics, _ = load_results(out)
    assert metrics["runs"][0]["loss"] == inf and metrics["1/N1"]["x"] == -inf
    assert math.isnan(metrics["n"]) and "non_finite" not in metrics


@dataclasses.dataclass
class _Part:
    name: str
    order: float
    errors: _card.Array
    per_h: dict[str, _card.Array]
    extra: _card.Array | None = None
    note: float | None = None


@dataclasses.dataclass
class _Whole:
    part: _Part | None
    other: _Part | None


def _section_a(config) -> dict[str, _Part]:
    return {"p": _Part("p", float("inf"), np.arange(3.0), {"0.1": np.ones(2), "0.2": np.zeros(1)})}


def _section_b(config) -> _Whole:  # optional parts: one made, one skipped (e.g. in quick mode)
    return _Whole(_Part("q", 1.0, np.ones(2), {}, note=0.5), None)


def _section_c(config) -> _Part | None:  # a section a mode skips
    return None


def test_typed_results_round_trip_through_the_saved_files(tmp_path):
    sections = {"a": _section_a, "b": _section_b, "c": _section_c}
    said = []
    metrics, arrays = _card.run_sections(sections, config=None, log=said.append)
    assert said[-1] == "  [3/3] c skipped in this mode" and said[1].startswith("  [1/3] a done in")
    assert set(metrics["section_wall_time_s"]) == {"a", "b", "c"}
    assert metrics["a"] == {"p": {"name": "p", "order": float("inf"), "note": None}}  # no arrays
    assert metrics["b"]["other"] is None and metrics["c"] is None
    assert set(arrays) == {"a/p/errors", "a/p/per_h/0.1", "a/p/per_h/0.2", "b/part/errors"}
    out = write_results(
        tmp_path / "exp", config={}, metrics=metrics, arrays=arrays, figures=lambda d: []
    )
    results = _card.results_from(sections, *load_results(out))
    part = results.a["p"]
    assert isinstance(part, _Part) and part.order == float("inf") and part.extra is None
    assert part.errors.tolist() == [0.0, 1.0, 2.0] and list(part.per_h) == ["0.1", "0.2"]
    assert isinstance(results.b.part, _Part) and results.b.part.note == 0.5
    assert results.b.part.errors.tolist() == [1.0, 1.0] and results.b.other is None
    assert results.c is None


def test_continuum_order_cells_give_their_own_numbers_in_worker_processes():
    """`continuum.orders` measures its cells in spawned processes (`Config.workers`) compiling as
    this suite does (tests/conftest.py; the worker keeps the caller's choice): each cell's numbers
    are those of the same cell run here, whichever worker ran it."""
    from experiments.continuum import Config, orders

    config = dataclasses.replace(
        Config(), optimizers=("sgd",), problems=("logcosh",), orders=(1, 2)
    )
    pooled, here = (orders(dataclasses.replace(config, workers=w)) for w in (2, 0))
    case, other = pooled["sgd.logcosh"], here["sgd.logcosh"]
    np.testing.assert_array_equal(case.errors, other.errors)
    assert case.fitted_orders[:2] == other.fitted_orders[:2]
    assert case.verdicts == other.verdicts and case.regime == other.regime == "slow"
    assert abs(case.fitted_orders[1] - 2) < 0.15  # the cells ran (not the nan of "not run")


def test_compiled_programs_are_released_once_they_hold_many_mappings(monkeypatch):
    """A process running experiment after experiment keeps their compiled programs (releasing
    costs ~0.25 s each) until it holds over `MAPPINGS_BEFORE_RELEASE` memory mappings, far
    below Linux's 65,530 where XLA's next compilation segfaults; then it releases them."""
    import jax

    from experiments import _jobs

    cleared = []
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(True))
    for limit, expected in ((10**9, []), (0, [True])):
        monkeypatch.setattr(_jobs, "MAPPINGS_BEFORE_RELEASE", limit)
        cleared.clear()
        _jobs.release_programs()
        assert cleared == expected


def test_release_programs_collects_cycles_the_rare_collector_left(monkeypatch):
    """After each experiment the garbage the rarely-run collector left (`collect_rarely`), such
    as a cycle holding compiled programs, is freed before the mappings are counted."""
    import gc
    import weakref

    from experiments import _jobs

    class Node:
        pass

    monkeypatch.setattr(_jobs, "MAPPINGS_BEFORE_RELEASE", 10**9)  # (nothing to clear)
    enabled = gc.isenabled()
    gc.disable()  # no collection but the one under test
    try:
        node = Node()
        node.self = node  # a cycle: freed by the collector only
        gone = weakref.ref(node)
        del node
        assert gone() is not None
        _jobs.release_programs()
        assert gone() is None
    finally:
        if enabled:
            gc.enable()


def test_run_one_collects_garbage_rarely_with_the_imports_frozen(tmp_path, monkeypatch):
    """In the command line's processes `run_one` sets the collector's thresholds to
    `GC_THRESHOLDS` and freezes what was imported (once per process): tracing allocates millions
    of objects, and the default thresholds collected every 700 of them. A library caller's
    process (this test worker) keeps its settings."""
    import gc

    from experiments import _jobs

    def run():
        out, _ = _jobs.run_one(
            "nesterov", True, 0, tmp_path, progress=False, log=None, run=lambda n, **kw: kw["out"]
        )
        assert out == tmp_path

    before = gc.get_threshold()
    monkeypatch.setattr(_jobs, "_collector_tuned", False)
    run()
    assert gc.get_threshold() == before
    monkeypatch.setattr(_jobs, "collector_wanted", True)
    try:
        run()
        assert gc.get_threshold() == _jobs.GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert _jobs.GC_THRESHOLDS[0] >= 10 * before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_save_killed_mid_write_leaves_a_file_the_next_run_replaces(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    out = _write(tmp_path / "exp")
    dead = 2**22 + 4321  # above Linux's pid_max: no such process

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the writer dies after its temporary file exists

    fig = plt.figure()
    with monkeypatch.context() as m:
        m.setattr(os, "getpid", lambda: dead)
        m.setattr(os, "replace", killed)
        m.setattr(os, "remove", lambda path: None)  # SIGKILL: no cleanup runs
        with pytest.raises(KeyboardInterrupt):
            plotting.save(fig, out / "growth.png")
    plt.close(fig)
    (left,) = [p.name for p in out.iterdir() if p.name.startswith(".growth.png")]
    assert _io.foreign(out) == set()  # a dead writer's, not the user's: no refusal
    assert _write(out, m=2.0) == out and load_results(out)[0] == {"m": 2.0}
    assert not (out / left).exists()


def test_full_runs_draw_progress_bars_only_on_a_terminal(naps, tmp_path, monkeypatch):
    """A full run redirected to a file (CI, `nohup`) wrote every redraw of diffrax's and
    `run`'s progress bars into the log (hundreds of kilobytes for one experiment)."""
    import dynopt._progress

    shown = []
    naps["nap"].DURING = lambda: shown.append(dynopt._progress.enabled())
    assert cli.main(["run", "nap", "--out", str(tmp_path / "a")]) == 0
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert cli.main(["run", "nap", "--out", str(tmp_path / "b")]) == 0
    assert cli.main(["run", "nap", "--quick", "--out", str(tmp_path / "c")]) == 0
    assert shown == [False, True, False]


def _manager_thread_reaps_first(monkeypatch):
    """The race CI lost (2026-12-06): the pool's manager thread reaps a killed worker (waitpid)
    before the main thread's `join`, which then finds no such child and returns with the exit
    code unrecorded until the manager thread runs again. Forced here: the main thread's blocking
    waits start late, and the other thread records what it reaped late."""
    import threading
    from multiprocessing import popen_fork

    original = popen_fork.Popen.poll

    def poll(self, flag=os.WNOHANG):
        if self.returncode is not None:
            return self.returncode
        if threading.current_thread() is threading.main_thread():
            if flag == 0:
                time.sleep(0.5)
            return original(self, flag)
        try:
            pid, status = os.waitpid(self.pid, flag)
        except OSError:
            return None
        if pid == self.pid:
            time.sleep(3.0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    monkeypatch.setattr(popen_fork.Popen, "poll", poll)


@pytest.mark.parametrize("race", ["as it comes", "manager thread reaps first"])
def test_ctrl_c_stops_continuums_workers_at_once(race, monkeypatch):
    """continuum's full run measures its cells in a process pool: Ctrl-C waited for every
    running cell (the pool's `with` block), and each worker printed its own traceback."""
    import multiprocessing
    import threading

    from experiments.continuum import map_in_workers

    if race != "as it comes":
        _manager_thread_reaps_first(monkeypatch)

    seen = []
    # Children of this test worker that an earlier test left exiting are not this pool's.
    before = set(multiprocessing.active_children())

    def interrupt():
        time.sleep(3.0)  # the workers are up and sleeping
        seen.extend(set(multiprocessing.active_children()) - before)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        map_in_workers(time.sleep, [60.0, 60.0, 60.0], 2, int, ())
    assert time.monotonic() - start < 20.0
    assert len(seen) == 2 and not any(p.is_alive() for p in seen)


def test_xla_flags_are_set_only_where_this_jaxlib_knows_them():
    # XLA aborts a process on an unknown flag in XLA_FLAGS (jaxlib 0.11 dropped the elemental
    # emitter's flag, and every test worker died at start-up): the flag is probed first.
    from experiments._xla import accepted

    assert not accepted("--xla_dynopt_no_such_flag=true")
    assert accepted("--xla_force_host_platform_device_count=1")
