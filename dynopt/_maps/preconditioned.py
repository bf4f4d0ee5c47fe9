r"""Explicit Euler for preconditioned gradient flows $\dot\theta = -P(\theta)\nabla L$."""

import dataclasses
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import optax

from .._custom_types import Array, ScalarLike
from .._transforms.adaptive import preconditioned_sgd, Preconditioner
from .._validation import positive
from .base import AbstractMap


# A NewtonPreconditioner's numbers: the discretization's traced hyper-parameters (named, as
# optax names its factories' numbers, so `optax.inject_hyperparams` can inject them).
_NUMBERS = ("damping", "rtol", "atol")


def split_preconditioner(P: Preconditioner) -> tuple[dict[str, Array], Preconditioner]:
    """`(numbers, static)`: a `NewtonPreconditioner`'s numbers (array leaves) by name, and `P`
    with them taken out (`None`), a hashable static option; any other `P` is static whole, as
    before (a user's function, a `DiagonalPreconditioner`).

    **Raises:** `ValueError` naming `P` where its static part is not hashable (e.g. a user's
    `eqx.Module` holding arrays): it is compiled into the optimizer.
    """
    from .._flows.preconditioned import _StaticPreconditioner, NewtonPreconditioner

    numbers: dict[str, Array] = {}
    static = P
    if isinstance(P, _StaticPreconditioner):  # (the flow's holder of a user's function)
        static = P.fn
    elif isinstance(P, NewtonPreconditioner):
        numbers = {k: getattr(P, k) for k in _NUMBERS}
        static = eqx.partition(P, eqx.is_array)[1]
    try:
        hash(static)
    except TypeError as e:
        raise ValueError(
            "P must be hashable (a module-level function, or an eqx.Module with static "
            "fields; NewtonPreconditioner's numbers are traced): it is compiled into the "
            "optimizer, not traced."
        ) from e
    return numbers, static


def _with_numbers(precondition: Preconditioner, numbers: dict[str, Any]) -> Preconditioner:
    """`precondition` with the given numbers (those not `None`) put back in its fields."""
    given = {k: v for k, v in numbers.items() if v is not None}
    if not given:
        return precondition
    return eqx.tree_at(
        lambda p: [getattr(p, k) for k in given],
        precondition,
        list(given.values()),
        is_leaf=lambda x: x is None,
    )


def preconditioned_sgd_split(
    learning_rate: ScalarLike,
    precondition: Preconditioner,
    damping: ScalarLike | None = None,
    rtol: ScalarLike | None = None,
    atol: ScalarLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""`preconditioned_sgd(learning_rate, precondition)`, $\theta_{k+1} = \theta_k -
    hP(\theta_k)\nabla L(\theta_k)$, with a `NewtonPreconditioner`'s numbers passed apart
    (`split_preconditioner`): they are the discretization's traced hyper-parameters, so a new
    damping reuses the compiled program, while the rest of `precondition` stays static. The
    numbers are put back unchecked (they were validated when the preconditioner was built)."""
    numbers = {"damping": damping, "rtol": rtol, "atol": atol}
    return preconditioned_sgd(learning_rate, _with_numbers(precondition, numbers))


class PreconditionedStep(AbstractMap):
    r"""Preconditioned GD $\theta_{k+1} = \theta_k - hP(\theta_k)\nabla L(\theta_k)$
    (`dynopt.transforms.preconditioned_sgd`), $t = kh$, first order (damped Newton for the
    Newton preconditioner). $P$ is a static option, but for a `NewtonPreconditioner`'s numbers
    (`damping`, `rtol`, `atol`), which are traced hyper-parameters beside the learning rate.

    **Inverse:** `inverse(learning_rate, precondition, damping=None, rtol=None, atol=None) ->
    (PreconditionedFlow(P), learning_rate)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(preconditioned_sgd_split)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return {"learning_rate": step_size, **split_preconditioner(flow.P)[0]}

    def options(self, flow):
        return (("precondition", split_preconditioner(flow.P)[1]),)

    def inverse(self, learning_rate, precondition, damping=None, rtol=None, atol=None):
        from .._flows.preconditioned import PreconditionedFlow

        lr = positive("learning_rate", jnp.asarray(learning_rate))
        given = {"damping": damping, "rtol": rtol, "atol": atol}
        given = {k: v for k, v in given.items() if v is not None}
        if given:  # rebuilt by its constructor: the numbers are validated as a user's are
            precondition = dataclasses.replace(precondition, **given)
        return PreconditionedFlow(precondition), lr
