import subprocess
import sys


def test_imports_from_a_source_tree_that_was_never_installed():
    # `PYTHONPATH=repo python -c "import dynopt"` (no package metadata) raised
    # PackageNotFoundError at import.
    code = (
        "import importlib.metadata as m\n"
        "real = m.version\n"
        "def version(name):\n"
        "    if name == 'dynopt':\n"
        "        raise m.PackageNotFoundError(name)\n"
        "    return real(name)\n"
        "m.version = version\n"
        "import dynopt\n"
        "print(dynopt.__version__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip() == "0+unknown"
