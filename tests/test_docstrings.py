"""Every docstring of the package reads as written: no control character from an escape in a
non-raw string (`"\theta"` is a tab and "theta", `"\b"` a backspace); every public name has
one, and every public function of two or more parameters an **Arguments:** section."""

import ast
import dataclasses
import importlib
import inspect
import pathlib
import pkgutil

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


# --- every public name documented in the house style (diffrax/equinox: a summary with the
# equation, then **Arguments:** / **Returns:** / **Raises:**) ----------------------------------

# Public functions without an **Arguments:** section yet. Remove a name once its docstring has
# the section (`test_the_exemptions_are_still_needed` says when); a new public function never
# joins these lists.
_NO_ARGUMENTS_YET = frozenset(
    {
        # In files other helpers own this session (`_sharpness.py`, `_order.py`, `_networks/`):
        # the three with no section at all ...
        "dynopt.sharpness.dense_hessian",
        "dynopt.sharpness.random_start",
        "dynopt.sharpness.sharpness",
        # ... and those with a **Raises:** or **Returns:** section but no **Arguments:**.
        "dynopt.fit_order",
        "dynopt.local_orders",
        "dynopt.networks.gaussian_classes",
        "dynopt.networks.gaussian_regression",
        "dynopt.sharpness.adam_preconditioner",
        "dynopt.sharpness.hvp_operator",
        "dynopt.sharpness.krylov_start",
        "dynopt.sharpness.rmsprop_preconditioner",
        # With a **Raises:** or **Returns:** section but no **Arguments:** (still to write).
    }
)


def _public_modules() -> list:
    """`dynopt` and its public submodules (`dynopt.flows`, ...), found, not listed by hand."""
    names = sorted(m.name for m in pkgutil.iter_modules(dynopt.__path__))
    return [dynopt] + [importlib.import_module(f"dynopt.{n}") for n in names if n[0] != "_"]


def _public_objects() -> list[tuple[str, object]]:
    """`(qualified name, object)` for every public function and class, each object once (under
    the first module that exports it): a module's `__all__`, or, without one, its names that
    dynopt itself defines (not the imports a module without `__all__` shows)."""
    seen, out = set(), []
    for module in _public_modules():
        if hasattr(module, "__all__"):
            names = list(module.__all__)
        else:
            names = [
                n
                for n in dir(module)
                if not n.startswith("_")
                and str(getattr(getattr(module, n), "__module__", "")).startswith("dynopt")
            ]
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            out.append((f"{module.__name__}.{name}", obj))
    return out


def _own_docstring(obj) -> str:
    """The object's own docstring: not one inherited from a base class (`inspect.getdoc` would
    return `eqx.Module`'s), nor the signature `dataclasses` writes for a class without one."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        if dataclasses.is_dataclass(obj) and doc.startswith(f"{obj.__name__}("):
            return ""
        return doc.strip()
    return (inspect.unwrap(obj).__doc__ or "").strip()


def _missing_docstrings(objects) -> list[str]:
    return [name for name, obj in objects if not _own_docstring(obj)]


def _missing_arguments(objects) -> list[str]:
    """Public functions of two or more parameters whose docstring has no **Arguments:**."""
    bad = []
    for name, obj in objects:
        fn = inspect.unwrap(obj)
        if not inspect.isfunction(fn) or len(inspect.signature(fn).parameters) < 2:
            continue
        if "**Arguments:**" not in _own_docstring(fn):
            bad.append(name)
    return bad


def test_every_public_name_has_a_docstring():
    missing = _missing_docstrings(_public_objects())
    assert not missing, f"public names without a docstring: {missing}"


def test_every_public_function_of_several_arguments_documents_them():
    missing = [n for n in _missing_arguments(_public_objects()) if n not in _NO_ARGUMENTS_YET]
    assert not missing, (
        "public functions of >= 2 parameters whose docstring has no **Arguments:** section "
        f"(write one, as dynopt.problems.quadratic's): {missing}"
    )


def test_the_exemptions_are_still_needed():
    # An exempted name that is gone or now documented must leave the list (it only shrinks).
    missing = set(_missing_arguments(_public_objects()))
    stale = sorted(_NO_ARGUMENTS_YET - missing)
    assert not stale, f"remove from _NO_ARGUMENTS_YET (documented or gone): {stale}"


def test_the_checks_catch_what_they_check():
    # The two checks on stand-ins, so that a check which can no longer fail is seen.
    def documented(a, b):
        """Sum.

        **Arguments:**

        - `a`, `b`: numbers.
        """

    def prose_only(a, b):
        """Sum of `a` and `b`. **Returns:** a number."""

    def one_argument(a):
        """Identity."""

    def bare(a, b):
        pass

    objects = [(f.__name__, f) for f in (documented, prose_only, one_argument, bare)]
    assert _missing_docstrings(objects) == ["bare"]
    assert _missing_arguments(objects) == ["prose_only", "bare"]
