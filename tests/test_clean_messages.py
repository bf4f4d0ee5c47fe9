"""What `clean` and `--out` tell a user to do: a command printed to paste is one that does what
it says, on a path with a space too; a folder kept because it holds results says how to clean it."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from experiments import __main__ as cli
from experiments._io import check_out, OutError, shell_path, write_results


def _result(out: Path) -> Path:
    return write_results(
        out, config={"a": 1}, metrics={"experiment": "gd_flow", "m": 1.0},
        arrays={"x": np.arange(3)}, figures=lambda d: [],
    )  # fmt: skip


def _rm_command(printed: str) -> str:
    return printed.split("(rm -r ", 1)[1].split(")", 1)[0]


@pytest.mark.parametrize("name", ["my copy", "it's mine"])
def test_the_printed_rm_command_removes_the_copied_result_alone(tmp_path, capsys, name):
    """Before: `clean` and `run --out` printed `(rm -r /…/results/my copy)`, which a shell runs
    as `rm -r /…/results/my copy`: the user's folder results/my and ./copy removed, the copy
    kept."""
    results, cwd = tmp_path / "results", tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "copy").write_text("the user's")
    shutil.copytree(_result(tmp_path / "original"), results / name)
    (results / "my").mkdir()
    (results / "my" / "notes.txt").write_text("the user's")
    with pytest.raises(OutError) as refused:
        check_out(results / name, experiment="gd_flow")
    assert cli.main(["clean", "--out", str(results)]) == 0
    printed = capsys.readouterr().out
    for text in (str(refused.value), printed):
        command = f"rm -r {_rm_command(text)}"
        assert (results / name).is_dir()
        subprocess.run(["bash", "-c", command], cwd=cwd, check=True, capture_output=True)
        assert not (results / name).exists(), command
        assert (results / "my" / "notes.txt").read_text() == "the user's"
        assert (cwd / "copy").read_text() == "the user's"
        shutil.copytree(tmp_path / "original", results / name)  # again: a copy


def test_clean_says_how_to_clean_a_folder_it_kept_because_it_holds_results(tmp_path, capsys):
    """`clean --out DIR` cleans DIR's results, one level down; a `run-all --out DIR/all` parent in
    it was kept as "not written by dynopt", though it held nothing but dynopt's results."""
    _result(tmp_path / "all" / "gd_flow")
    assert cli.main(["clean", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out == (
        f"kept {tmp_path / 'all'}: not a result, a folder that holds results; python -m "
        f"experiments clean --out {tmp_path / 'all'} removes those dynopt wrote\n"
    )
    assert cli.main(["clean", "--out", str(tmp_path / "all")]) == 0
    assert capsys.readouterr().out.startswith(f"removed {tmp_path / 'all' / 'gd_flow'}")
    assert list((tmp_path / "all").iterdir()) == []


def test_a_relative_path_that_begins_with_a_dash_is_no_option_of_rm():
    assert shell_path(Path("-rf")) == "./-rf"
    assert shell_path("results/my copy") == "'results/my copy'"
    assert shell_path("results/gd_flow") == "results/gd_flow"
