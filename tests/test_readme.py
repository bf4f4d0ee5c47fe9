import re
from pathlib import Path


def test_readme_quick_start_runs_as_written(capsys):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    orders = [float(x) for x in capsys.readouterr().out.split()[1:]]
    assert abs(orders[0] - 1.0) < 0.1 and abs(orders[1] - 2.0) < 0.1
