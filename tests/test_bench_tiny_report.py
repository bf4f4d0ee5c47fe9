"""`python -m benchmarks --tiny` times toy sizes to test the code; its bench.md says so and
judges no target (a tiny run's "**no**" and "yes" read as measurements of dynopt's speed)."""

from benchmarks._common import markdown, row


_MACHINE = {"cpu": "x", "cpu_count": 2, "memory_gib": 1, "platform": "cpu", "device_count": 1}


def _report(tiny: bool) -> dict:
    rows = [
        row("b", "slow", dynopt_s=1.2, baseline="x", baseline_s=1.0, ratio=1.2, target=1.05,
            higher_is_better=False),
        row("b", "fast", dynopt_s=1.0, baseline="x", baseline_s=4.0, target=3.0),
    ]  # fmt: skip
    return {"machine": _MACHINE, "versions": {}, "config": {"tiny": tiny}, "rows": rows}


def test_a_tiny_report_says_it_measures_nothing_and_judges_no_target():
    """Before: a `--tiny` bench.md began "Measured on ..." and marked toy-size ratios
    "**no**" / "yes" against the targets, like `make bench`'s report."""
    full, tiny = markdown(_report(False)), markdown(_report(True))
    assert "| **no** |" in full and "| yes |" in full and "TINY" not in full
    assert tiny.startswith("**TINY: toy sizes (`--tiny`), a smoke test of the code, not a")
    table = [line for line in tiny.splitlines() if line.startswith("| b |")]
    assert len(table) == 2 and all(line.split(" | ")[-2] == "—" for line in table), table
