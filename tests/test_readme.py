"""The README's Python snippets run as written, as a user would run them: in a fresh interpreter
with jax's default configuration (not the test suite's strict promotion)."""

import re
import subprocess
import sys
from pathlib import Path


README = Path(__file__).resolve().parent.parent / "README.md"

_RUNNER = """
import sys
blocks = sys.stdin.read().split("\\n#---block---\\n")
for i, block in enumerate(blocks):
    print(f"--- block {i}", flush=True)
    exec(compile(block, f"README block {i}", "exec"), {"__name__": "__readme__"})
"""


def test_every_python_snippet_in_the_readme_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3  # quick start, your own problem, your own optimizer
    result = subprocess.run(
        [sys.executable, "-W", "error::UserWarning:dynopt", "-c", _RUNNER],
        input="\n#---block---\n".join(blocks),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=README.parent,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    printed = [float(x) for x in re.findall(r"^(-?[\d.]+(?:e-?\d+)?)$", result.stdout, re.M)]
    assert all(x == x for x in printed), result.stdout  # no NaN printed by any snippet


def test_no_source_holds_a_control_character():
    r"""A docstring's LaTeX written into a non-raw string loses its backslash: "\theta" becomes a
    tab and "heta" (two such were in the package). No source file holds a tab or another control
    character except the newline."""
    root = README.parent
    bad = [
        f"{path.relative_to(root)}:{i}"
        for folder in ("dynopt", "experiments", "tests", "benchmarks")
        for path in sorted((root / folder).rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"[\x00-\x09\x0b-\x1f\x7f]", line)
    ]
    assert bad == []
