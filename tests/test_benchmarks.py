"""The benchmark code (not its timings): the report schema, the ratio/target logic, and the
equivalences the transform-overhead rows rely on."""

import json
from pathlib import Path

import jax
import pytest

from benchmarks import transform_overhead
from benchmarks.__main__ import main
from benchmarks._common import markdown, row
from dynopt.correspondences import REGISTRY


REQUIRED = {"benchmark", "case", "dynopt_s", "baseline", "baseline_s", "ratio", "target", "met"}


def test_bench_cli_writes_json_and_markdown(tmp_path, capsys):
    with jax.numpy_dtype_promotion("standard"):  # an entry point, like `make bench`
        assert (
            main(["--tiny", "--repeats", "1", "--only", "bandwidth", "--out", str(tmp_path)]) == 0
        )
    report = json.loads((tmp_path / "bench.json").read_text())
    assert {"machine", "versions", "rows"} <= set(report)
    assert report["machine"]["cpu_count"] >= 1 and "jax" in report["versions"]
    assert len(report["rows"]) == 2
    for r in report["rows"]:
        assert REQUIRED <= set(r), REQUIRED - set(r)
        assert r["dynopt_s"] > 0 and r["baseline_s"] > 0 and 0 < r["ratio"]
        assert r["met"] == (r["ratio"] >= r["target"])
    md = (tmp_path / "bench.md").read_text()
    assert md.count("\n| bandwidth |") == 2 and "| benchmark | case |" in md
    assert "| bandwidth |" in capsys.readouterr().out
    with jax.numpy_dtype_promotion("standard"):  # its own report is replaced
        assert (
            main(["--tiny", "--repeats", "1", "--only", "bandwidth", "--out", str(tmp_path)]) == 0
        )


def test_bench_cli_refuses_a_users_report_files_before_any_work(tmp_path, capsys):
    """`--out` may hold only this command's own bench.json and bench.md: a user's file of that
    name (or an `--out` that is a file) stops it before any benchmark runs, untouched."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "bench.md").write_text("my notes")
    (tmp_path / "file").write_text("mine")
    cases = (
        (mine, "bench.md that is not"),
        (tmp_path / "file", "is a file"),
        (Path("/proc/bench"), "cannot write under /proc"),  # refused only at the end before
    )
    for out, match in cases:
        with pytest.raises(SystemExit) as info:
            main(["--tiny", "--only", "bandwidth", "--out", str(out)])
        assert info.value.code == 2
        assert match in capsys.readouterr().err
    assert (mine / "bench.md").read_text() == "my notes"
    assert sorted(p.name for p in mine.iterdir()) == ["bench.md"]


def test_row_ratio_and_target_logic():
    r = row("b", "c", dynopt_s=1.0, baseline="x", baseline_s=4.0, target=3.0)
    assert r["ratio"] == 4.0 and r["met"] is True
    r = row(
        "b",
        "c",
        dynopt_s=1.1,
        baseline="x",
        baseline_s=1.0,
        ratio=1.1,
        target=1.05,
        higher_is_better=False,
    )
    assert r["met"] is False and r["target_is"] == "<="
    r = row("b", "c", dynopt_s=None, baseline="—", baseline_s=None, note="failed")
    assert r["ratio"] is None and r["met"] is None
    text = markdown(
        {
            "machine": {
                "cpu": "x",
                "cpu_count": 2,
                "memory_gib": 1,
                "platform": "cpu",
                "device_count": 1,
            },
            "versions": {},
            "rows": [r],
        }
    )
    assert "| b | c | — | — | — | — | — | — | failed |" in text


def test_pairs_read_the_registry():
    names = {p.label.split(" ")[0] for p in transform_overhead.PAIRS if p.identical}
    assert names == {r.name for r in REGISTRY if r.baseline is not None}


@pytest.mark.parametrize(
    "pair", [p for p in transform_overhead.PAIRS if p.identical], ids=lambda p: p.label.split()[0]
)
def test_transform_pairs_equal_their_optax_transform(pair):
    """`check` (the benchmark's equivalence step, no timing loop) raises unless dynopt's
    discretization and the optax baseline give the same iterates (float32, 1000 steps from the
    same start); traced hyper-parameters compile to as many fused kernels per update as optax's
    constants."""
    with jax.numpy_dtype_promotion("standard"):
        m = transform_overhead.check(pair, 1000)
    assert m["max_abs_diff"] <= 1e-5 and m["checked_steps"] == 1000
    assert m["kernels"][0] == m["kernels"][1] > 0
