"""A new user's first hour with `python -m experiments` and `python -m benchmarks` (session 49's
probe, after test_cli_probe.py and test_results_safety.py): a results page over a result the user
pruned or edited by hand, `figures` over a metrics.json the user changed, and the benchmarks'
`--out` read as the experiments' is."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from experiments import __main__ as cli

from . import test_experiments


naps = test_experiments.naps  # (the fixture: fake experiments in the registry)


def _links(page: str) -> set[str]:
    return set(re.findall(r'href="([^"#]+)"', page))


@pytest.mark.usefixtures("naps")
def test_the_page_links_no_file_the_user_removed(tmp_path, capsys):
    # Before: config.json removed by hand, and the page still linked nap/config.json (a link
    # to nothing).
    root = tmp_path / "res"
    assert cli.main(["run-all", "nap", "nap2", "--out", str(root)]) == 0
    (root / "nap" / "config.json").unlink()
    assert cli.main(["page", "--out", str(root)]) == 0
    page = (root / "index.html").read_text()
    links = _links(page)
    assert "nap/config.json" not in links and "config.json missing" in page
    assert {"nap/metrics.json", "nap2/metrics.json", "nap2/config.json"} <= links
    assert all((root / link).is_file() for link in links)


def _edit_metrics(folder, change) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    change(metrics)
    (folder / "metrics.json").write_text(json.dumps(metrics))


def _figure(results):
    import matplotlib.pyplot as plt

    if results.nap.seconds < 0:  # as a figure meets numbers no run can give
        raise ValueError(f"a nap of {results.nap.seconds} s")
    fig, ax = plt.subplots()
    ax.plot([0, results.nap.seconds])
    return fig


def test_figures_over_a_metrics_json_edited_by_hand_is_one_line(naps, tmp_path, capsys):
    # Before: numbers that still read but that a figure cannot draw (gd_flow with "problems": {}
    # drew no panels: `ValueError: panels needs an integer n >= 1`) ended `figures` in a
    # traceback from inside the drawing, exit status 1, the other experiments not redrawn.
    naps["nap"].FIGURES = naps["nap2"].FIGURES = {"f.png": _figure}
    root = tmp_path / "res"
    assert cli.main(["run-all", "nap", "nap2", "--out", str(root)]) == 0
    out = root / "nap"
    _edit_metrics(out, lambda m: m["nap"].update(seconds=-1.0))
    capsys.readouterr()
    assert cli.main(["figures", "nap", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"error: {out}: the figures of nap cannot be drawn from its saved result (ValueError: a "
        "nap of -1.0 s): metrics.json changed since dynopt wrote it, so yours now (a run "
        f"replaces only dynopt's files): move it out of {out}, then make it anew: python -m "
        f"experiments run nap --out {out}\n"
    )
    # (as it says: once the edited file is moved out, the run makes the result anew)
    (out / "metrics.json").rename(tmp_path / "my-metrics.json")
    assert cli.main(["run", "nap", "--out", str(out)]) == 0
    assert cli.main(["figures", "nap", "--out", str(out)]) == 0
    assert "Traceback" not in captured.out
    # A result as dynopt wrote it that cannot be drawn is dynopt's bug: its traceback stays.
    naps["nap2"].FIGURES = {"f.png": lambda results: 1 / 0}
    with pytest.raises(ZeroDivisionError):
        cli.main(["figures", "nap2", "--out", str(root / "nap2")])


@pytest.mark.usefixtures("naps")
def test_the_page_says_which_file_was_changed_since_dynopt_wrote_it(tmp_path, capsys):
    # Before: a metrics.json edited by hand was shown as the run's numbers ("ok" where they
    # matched the card), with nothing on the page saying they are not what the run computed.
    root = tmp_path / "res"
    assert cli.main(["run-all", "nap", "nap2", "--out", str(root)]) == 0
    _edit_metrics(root / "nap", lambda m: m["nap"].update(seconds=1e9))
    assert cli.main(["page", "--out", str(root)]) == 0
    page = (root / "index.html").read_text()
    nap, nap2 = page.split('<section id="nap2">')
    note = "metrics.json changed since dynopt wrote it: what is shown from it is not what the run"
    assert note in nap and "changed since" not in nap2


@pytest.fixture
def one_bench(monkeypatch):
    """`python -m benchmarks`' registry holding one fake benchmark, `fake` (one row, no JAX
    work; its `DURING(config)` hook runs where a test sets it): its module."""
    from benchmarks import __main__ as bench
    from benchmarks._common import row

    module = types.ModuleType("fake_bench")
    module.DURING = None

    def run(config):
        if module.DURING is not None:
            module.DURING(config)
        return [row("fake", "one", dynopt_s=1.0, baseline="itself", baseline_s=1.0)]

    module.run = run
    monkeypatch.setitem(sys.modules, "fake_bench", module)
    monkeypatch.setattr(bench, "BENCHMARKS", {"fake": "fake_bench"})
    return module


def test_bench_out_empty_or_a_quoted_tilde_is_read_as_the_experiments_out(
    one_bench, tmp_path, monkeypatch, capsys
):
    # Before: `--out ""` (`--out "$DIR"`, DIR unset) wrote bench.json and bench.md into the
    # working folder, and `--out "~/b"` made a folder named "~" there (whose `rm -r ~` ...),
    # where `python -m experiments` refuses the one and reads the other as the home folder.
    from benchmarks import __main__ as bench

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(SystemExit) as stop:
        bench.main(["--tiny", "--out", ""])
    assert stop.value.code == 2
    assert "error: --out is empty; give a folder" in capsys.readouterr().err
    assert list(work.iterdir()) == []
    assert bench.main(["--tiny", "--out", "~/b"]) == 0
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in (home / "b").iterdir()) == ["bench.json", "bench.md"]


def test_a_bench_md_the_user_saved_during_the_run_is_not_overwritten(
    one_bench, tmp_path, monkeypatch, capsys
):
    # Before: --out was checked once, before the first benchmark (a default run takes 16 min);
    # a bench.md saved there meanwhile (the last report, edited in an editor) was overwritten.
    from benchmarks import __main__ as bench

    out = tmp_path / "bench"
    assert bench.main(["--tiny", "--out", str(out)]) == 0
    one_bench.DURING = lambda config: (out / "bench.md").write_text("my notes")
    capsys.readouterr()
    assert bench.main(["--tiny", "--out", str(out)]) == 1
    assert (out / "bench.md").read_text() == "my notes"
    [beside] = [p for p in tmp_path.iterdir() if p.name.startswith("bench.dynopt-")]
    assert sorted(p.name for p in beside.iterdir()) == ["bench.json", "bench.md"]
    assert bench.is_report(beside / "bench.json") and bench.is_report(beside / "bench.md")
    err = capsys.readouterr().err
    assert err == (
        f"error: {out / 'bench.md'} exists, not a report this command wrote: not overwriting it; "
        f"the report goes to {beside} instead\n"
    )


def test_the_commands_an_error_gives_to_paste_work_on_a_path_with_spaces(naps, tmp_path, capsys):
    # Before: "make it anew: python -m experiments run nap --out /tmp/.../my results/nap",
    # which the shell splits in two (`unrecognized arguments`); and a result whose metrics.json
    # cannot be read was to be removed with `clean --out PARENT`, without a word that this
    # removes every other result in PARENT too.
    root = tmp_path / "my results ü"
    assert cli.main(["run-all", "nap", "nap2", "--out", str(root)]) == 0
    out = root / "nap"
    (out / "config.json").unlink()
    capsys.readouterr()
    assert cli.main(["figures", "nap", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    command = shlex.split(err.split("make it anew: ")[1])
    assert command == ["python", "-m", "experiments", "run", "nap", "--out", str(out)]
    (out / "metrics.json").write_text("{cut sh")
    assert cli.main(["run", "nap", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    advice = err.split("remove it with ")[1]
    assert shlex.split(advice.split(" (")[0]) == [
        "python", "-m", "experiments", "clean", "--out", str(root)
    ]  # fmt: skip
    assert advice.endswith(" (and every other dynopt result there: nap2).\n")
    # (the folder is left as it was, the other result too)
    assert (out / "metrics.json").read_text() == "{cut sh" and (root / "nap2" / ".dynopt").exists()


_BENCH_WITH_A_CHILD = """
import signal, subprocess, sys, types
# The signals' default dispositions, as from a terminal, whatever the tests run under: a suite
# started with `nohup` hands SIGHUP down ignored, and an ignored SIGHUP stays ignored, on purpose.
signal.signal(signal.SIGHUP, signal.SIG_DFL)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
from benchmarks import __main__ as bench
module = types.ModuleType("fake_bench")
def run(config):
    code = "import os, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    subprocess.run([sys.executable, "-c", "import sys; " + code, sys.argv[1]], check=True)
    return []
module.run = run
sys.modules["fake_bench"] = module
bench.BENCHMARKS = {"fake": "fake_bench"}
sys.exit(bench.main(["--tiny", "--out", sys.argv[2]]))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_bench_stopped_by_sigterm_stops_its_child_and_says_so(tmp_path, signum):
    # Before: SIGTERM (`kill`, `timeout`, a batch system) or SIGHUP (the terminal closed) ended
    # `python -m benchmarks` at once and left its child (an experiment of the suite, up to 30
    # min) running on alone, its temporary folder with it.
    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", _BENCH_WITH_A_CHILD, str(pidfile), str(tmp_path / "bench")],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = None
    try:
        assert _wait_for(lambda: pidfile.exists() and pidfile.read_text(), 60)
        child = int(pidfile.read_text())
        parent.send_signal(signum)
        _, err = parent.communicate(timeout=30)
        assert parent.returncode == 128 + signum
        name = signal.Signals(signum).name
        assert err == f"stopped by {name}; benchmarks finished: none\n"
        assert _wait_for(lambda: not _alive(child), 10)
    finally:
        parent.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_bench_child_ends_when_the_benchmark_is_killed_outright():
    # Before: `kill -9` of `python -m benchmarks` left the suite's experiment (or the sweep's
    # host-device run) timing on alone: nothing passes a SIGKILL on.
    child_code = (
        "from benchmarks._common import exit_with_parent; exit_with_parent(0.05); "
        "print('watching', flush=True); import time; time.sleep(60)"
    )
    code = (
        "import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', sys.argv[1]]); "
        "print(c.pid, flush=True); c.wait()"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code, child_code],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    try:
        assert parent.stdout.readline() == "watching\n"  # (the child's, past its imports)
        parent.kill()
        parent.wait()
        assert _wait_for(lambda: not _alive(child), 10)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("where", ["the result", "a new folder in it"])
def test_bench_out_in_an_experiments_result_is_refused_before_any_work(
    naps, one_bench, tmp_path, capsys, where
):
    # Before: bench.json and bench.md were written into the result (or a folder made in it):
    # files dynopt's marker does not list, so that result's next run refused it and `clean`
    # kept them and the result's folder.
    from benchmarks import __main__ as bench

    result = tmp_path / "res" / "nap"
    assert cli.main(["run", "nap", "--out", str(result)]) == 0
    before = sorted(p.name for p in result.iterdir())
    out = result if where == "the result" else result / "bench"
    with pytest.raises(SystemExit) as stop:
        bench.main(["--tiny", "--out", str(out)])
    assert stop.value.code == 2
    inside = "" if out == result else f"inside {result}, "
    assert f"error: --out {out} is {inside}a dynopt experiment result;" in capsys.readouterr().err
    assert sorted(p.name for p in result.iterdir()) == before
