"""What dynopt may replace or remove in a results folder (session 36's probe): a copied result, a
result whose marker records no digests, a file name holding "{", `figures` with no NAME, and an
`--out` a new user might type."""

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from experiments import __main__ as cli, _io
from experiments._io import check_out, OutError, write_results


def _result(out, figures=(), experiment="gd_flow", **metrics) -> Path:
    def draw(folder):
        for name in figures:
            (folder / name).write_bytes(f"figure {name}".encode())
        return [folder / name for name in figures]

    return write_results(
        out, config={"a": 1}, metrics={"experiment": experiment, **metrics},
        arrays={"x": np.arange(3)}, figures=draw,
    )  # fmt: skip


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_copied_result_is_the_users_and_a_moved_one_stays_dynopts(tmp_path, capsys):
    # Before: `cp -r results/gd_flow results/gd_flow_mine` (a user keeping a run) counted as
    # dynopt's, byte for byte: `clean` removed the copy and `run --out` replaced it.
    root = tmp_path / "results"
    real = _result(root / "gd_flow", figures=["orders.png"])
    copy = root / "gd_flow_mine"
    shutil.copytree(real, copy)
    kept = _contents(copy)
    assert _io.foreign(copy) == set(kept)
    for redraw in (False, True):  # neither a run nor `figures` writes into it
        with pytest.raises(OutError, match=r"is a copy of a dynopt result .*rm -r "):
            check_out(copy, experiment="gd_flow", redraw=redraw)
    with pytest.raises(OutError, match="a copy of a dynopt result"):
        _result(copy, m=2.0)
    _io.add_written(copy, ["orders.png"])  # adopts nothing
    assert _io.foreign(copy) == set(kept)
    moved = root / "gd_flow_moved"  # `mv` on one disk keeps the folder: still dynopt's
    os.rename(_result(tmp_path / "elsewhere" / "gd_flow"), moved)
    assert _io.foreign(moved) == set()
    assert cli.main(["clean", "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"removed {real}\n" in out and f"removed {moved}\n" in out
    assert f"kept {copy}: a copy of a dynopt result" in out
    assert f"remove it yourself once checked (rm -r {copy})" in out
    assert _contents(copy) == kept and sorted(p.name for p in root.iterdir()) == ["gd_flow_mine"]


def _older_marker(folder: Path, with_list: bool) -> None:
    """Rewrite `folder`'s marker as dynopt wrote it before markers held digests: a sentence
    alone (before 51a73d0), or with the list of files (51a73d0)."""
    text = "dynopt experiment results; safe to replace by a new run\n"
    if with_list:
        files = sorted(p.name for p in folder.iterdir() if p.name != ".dynopt")
        text = _io._MARKER_HEAD + json.dumps({"files": files}, indent=1) + "\n"
    (folder / ".dynopt").write_text(text)


@pytest.mark.parametrize("with_list", [False, True])
def test_a_result_whose_marker_has_no_digests_is_kept_whole(tmp_path, capsys, with_list):
    # Before: its files were dynopt's by name, whatever they held: a metrics.json the user had
    # edited was deleted by `clean` and replaced by a run.
    root = tmp_path / "P"
    old = _result(root / "nesterov", figures=["sbc.png"], experiment="nesterov")
    (old / "metrics.json").write_text('{"experiment": "nesterov", "my": "edit"}')
    _older_marker(old, with_list)
    kept = _contents(old)
    with pytest.raises(OutError, match=r"is a result of an older dynopt whose marker records no"):
        check_out(old, experiment="nesterov")
    assert cli.main(["run-all", "nesterov", "--out", str(root)]) == 2
    assert "an older dynopt" in capsys.readouterr().err
    assert cli.main(["clean", "--out", str(root)]) == 0
    assert capsys.readouterr().out == (
        f"kept {old}: a result of an older dynopt whose marker records no SHA-256 digests, so a "
        "file changed since cannot be told from what dynopt wrote; dynopt neither replaces nor "
        f"removes it: remove it yourself once checked (rm -r {old})\n"
    )
    assert _contents(old) == kept
    assert "sbc.png" in _io.written(old)  # (the results page still shows its figures)


def test_a_marker_written_with_digest_lines_only_still_counts(tmp_path):
    # A marker as 5c2a584 wrote it (digest lines, then {"files": [...]}, no folder recorded)
    # stays dynopt's: only markers without any digest are kept whole.
    out = _result(tmp_path / "gd_flow", figures=["orders.png"])
    marker = (out / ".dynopt").read_text()
    brace = marker.index("{")
    files = json.loads(marker[brace:])["files"]
    (out / ".dynopt").write_text(marker[:brace] + json.dumps({"files": files}, indent=1) + "\n")
    assert _io.foreign(out) == set()
    (out / "orders.png").write_bytes(b"changed")
    assert _io.foreign(out) == {"orders.png"}


def test_a_file_name_with_a_brace_has_its_digest(tmp_path, capsys):
    # Before: "a{b}.png" got no digest (a digest line holding "{" would cut the JSON older
    # readers take from the first "{"), so dynopt refused its own result as the user's.
    out = _result(tmp_path / "P" / "gd_flow", figures=["a{b}.png", "c\\d.png", "plain.png"])
    assert _io.foreign(out) == set()
    marker = (out / ".dynopt").read_text()
    data = json.loads(marker[marker.index("{") :])  # as every older reader takes it
    assert "a{b}.png" in data["files"] and "a{b}.png" in data["sha256"]
    assert "  plain.png\n" in marker and "  a{b}.png\n" not in marker  # (sha256sum's lines)
    _result(out, figures=["a{b}.png"], m=2.0)  # a rerun replaces it
    assert cli.main(["clean", "--out", str(tmp_path / "P")]) == 0
    assert not out.exists() and "kept" not in capsys.readouterr().out


@pytest.fixture
def results(tmp_path, monkeypatch):
    """The CLI's results folder and README figure under `tmp_path`, nothing run or drawn:
    `(results, README figure, redrawn folders, pages written)`."""
    results, figure = tmp_path / "results", tmp_path / "docs" / "gd_flow_orders.png"
    figure.parent.mkdir()
    figure.write_bytes(b"README figure")
    redrawn, pages = [], []
    monkeypatch.setattr(cli, "DEFAULT_RESULTS", results)
    monkeypatch.setattr(cli, "CHECKOUT_RESULTS", results)
    monkeypatch.setattr(cli, "README_FIGURES", {("gd_flow", "orders.png"): figure})
    monkeypatch.setattr(cli, "replot", lambda name, out=None: redrawn.append(out) or [])
    monkeypatch.setattr(cli, "_check_loads", lambda *a: None)  # (fake results: no sections)
    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: pytest.fail("an experiment ran"))
    monkeypatch.setattr(cli, "write_page", lambda parent, names: pages.append(parent))
    return results, figure, redrawn, pages


def test_figures_without_a_name_redraws_what_is_saved_and_runs_nothing(results, capsys):
    # Before: `python -m experiments figures` ran every experiment without a saved result at
    # full size first (half an hour), unasked.
    results, figure, redrawn, pages = results
    assert cli.main(["figures"]) == 0  # nothing saved: says so, writes no page
    out = capsys.readouterr().out
    assert f"saved results (there are none in {results})" in out
    assert f"README figure {figure} not refreshed: no saved result in {results / 'gd_flow'}" in out
    assert redrawn == [] and pages == [] and not results.exists()
    _result(results / "nesterov", experiment="nesterov", quick=False)
    assert cli.main(["figures"]) == 0
    out = capsys.readouterr().out
    assert redrawn == [results / "nesterov"] and pages == [results]
    missing = " ".join(sorted(set(cli.EXPERIMENTS) - {"nesterov"}))
    assert f"python -m experiments run-all {missing} (full size" in out
    assert figure.read_bytes() == b"README figure"


def test_run_all_names_every_refused_out_in_its_one_line(tmp_path, monkeypatch, capsys):
    # Before: only the first (`make run` over results of an older dynopt: one rerun per result).
    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: pytest.fail("work was done"))
    for name in ("gd_flow", "nesterov"):
        _older_marker(_result(tmp_path / name, experiment=name), with_list=True)
    assert cli.main(["run-all", "gd_flow", "nesterov", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path / 'gd_flow'} is a result of an older dynopt")
    assert err.endswith(" (also refused: nesterov)\n") and err.count("\n") == 1


@pytest.mark.parametrize("out", ["~", ".", "REPO"])
def test_an_out_a_new_user_might_type_is_refused_before_any_work(
    out, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: pytest.fail("work was done"))
    monkeypatch.setenv("HOME", str(tmp_path))  # a home with a file of the user's
    (tmp_path / ".bashrc").write_text("mine")
    monkeypatch.chdir(cli._CHECKOUT)  # (the repository root: files of its own)
    out = str(cli._CHECKOUT) if out == "REPO" else out
    assert cli.main(["run", "gd_flow", "--quick", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and err.count("\n") == 1, err


def test_a_folder_made_for_the_results_keeps_its_permissions_and_group(tmp_path):
    # Before: an empty folder the user made for them (mode 2770: group-shared) was replaced by a
    # new one with the umask's mode (755 here), and so on every rerun.
    out = tmp_path / "shared"
    out.mkdir()
    os.chmod(out, 0o2770)
    for m in (1.0, 2.0):  # the first run, and a rerun
        _result(out, m=m)
        assert stat.S_IMODE(out.stat().st_mode) == 0o2770


def test_a_folder_made_for_the_results_keeps_its_extended_attributes(tmp_path):
    # Before: they were lost with the folder at the first run (an ACL is one: system.posix_acl_*).
    out = tmp_path / "tagged"
    out.mkdir()
    try:
        os.setxattr(out, "user.project", b"dynopt-runs")
    except (AttributeError, OSError) as e:
        pytest.skip(f"no user extended attributes here: {e}")
    for m in (1.0, 2.0):
        _result(out, m=m)
        assert os.getxattr(out, "user.project") == b"dynopt-runs"


def test_a_mount_point_is_refused_before_any_work(tmp_path, monkeypatch):
    """An empty folder that is a mount point (a freshly mounted disk) passed every check, and the
    run's final rename onto it failed with EBUSY after the whole run. Refused first now, naming
    a folder inside it; a folder inside a mount point is fine."""
    mount = tmp_path / "disk"
    mount.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(_io.os.path, "ismount", lambda p: Path(p) == mount or real(p))
    with pytest.raises(_io.OutError, match=r"is a mount point.* --out .*disk/results"):
        _io.check_out(mount, experiment="nesterov")
    assert _io.check_out(mount / "results", experiment="nesterov") == mount / "results"
