"""jaxtyping aliases shared across dynopt."""

from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, PyTree


Params: TypeAlias = PyTree[Float[Array, "..."]]
State: TypeAlias = PyTree[Any]
Scalar: TypeAlias = Float[Array, ""]
ScalarLike: TypeAlias = float | Float[ArrayLike, ""]
Key: TypeAlias = PRNGKeyArray

__all__ = [
    "Array",
    "ArrayLike",
    "Bool",
    "Float",
    "Int",
    "Key",
    "Params",
    "PyTree",
    "Scalar",
    "ScalarLike",
    "State",
]
