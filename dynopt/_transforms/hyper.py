r"""The transforms' hyper-parameter checks: `dynopt._validation`'s, after refusing a Python
sequence.

A hyper-parameter of an optax-style transform is one number for every parameter, or (as optax
reads it) an array broadcast against every parameter leaf; a traced scalar under `jax.vmap` is
a sweep. A list such as `b1=[0.9, 0.8]` passed the range check entry by entry, then failed
inside the update with an internal `TypeError` (`1 - [0.9, 0.8]`): it is refused here with what
to write instead.
"""

from typing import Any

from .. import _validation


def _not_a_sequence(name: str, value: Any) -> None:
    if isinstance(value, list | tuple):
        raise ValueError(
            f"{name} must be a number (or an array, broadcast against every parameter leaf as "
            f"optax reads it), got a {type(value).__name__} {value!r}. For several values, build "
            "one transform per value, or jax.vmap over a traced value (a sweep)."
        )


def interval(name: str, value: Any, **bounds) -> Any:
    """`dynopt._validation.interval` for a transform's hyper-parameter (use the returned
    value); a list or tuple is a `ValueError`."""
    _not_a_sequence(name, value)
    return _validation.interval(name, value, **bounds)


def nonnegative(name: str, value: Any) -> Any:
    """`interval(name, value, lower=0)`."""
    return interval(name, value, lower=0.0)


def positive(name: str, value: Any) -> Any:
    """`interval(name, value, lower=0, lower_open=True)`."""
    return interval(name, value, lower=0.0, lower_open=True)


def decay(name: str, value: Any) -> Any:
    """`interval(name, value, lower=0, upper=1, upper_open=True)`: a decay in [0, 1)."""
    return interval(name, value, lower=0.0, upper=1.0, upper_open=True)
