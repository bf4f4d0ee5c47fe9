"""Every docstring of the package reads as written: no control character from an escape in a
non-raw string (`"\theta"` is a tab and "theta", `"\b"` a backspace)."""

import ast
import pathlib

import dynopt


_CONTROL = "\t\v\b\f\a\r\x00"


def test_no_docstring_holds_a_control_character():
    root = pathlib.Path(dynopt.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node, clean=False)
                if doc and any(c in doc for c in _CONTROL):
                    bad.append(f"{path.relative_to(root)}:{getattr(node, 'lineno', 1)}")
    assert not bad, f"non-raw docstrings with escapes (prefix r): {bad}"
