r"""Explicit Euler for preconditioned gradient flows $\dot\theta = -P(\theta)\nabla L$."""

import dataclasses
from typing import Any, ClassVar

import equinox as eqx
import jax
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
    """`(numbers, static)`: the array leaves of an `eqx.Module` `P` by name (a
    `NewtonPreconditioner`'s by field, `damping`, `rtol`, `atol`; a user's module's as
    `"precondition" + path`, e.g. `"precondition.scale"`), and `P` with them taken out
    (`None`), a hashable static option; a user's function is static whole, as before.

    **Raises:** `ValueError` naming `P` where its static part is not hashable: it is compiled
    into the optimizer.
    """
    numbers = _numbers(P)
    static = _skeleton(P)
    try:
        hash(static)
    except TypeError as e:
        raise ValueError(
            "P must be hashable apart from its arrays (a module-level function, or an "
            "eqx.Module whose other fields are hashable; its arrays are traced): it is "
            "compiled into the optimizer."
        ) from e
    return numbers, static


def check_scalar_numbers(P: Preconditioner) -> dict[str, Array]:
    """`split_preconditioner(P)[0]`, each a scalar: a discretization's hyper-parameters (`run`
    reads a 1-D one as a batch of runs, one per entry).

    **Raises:** `ValueError` naming a non-scalar array leaf of `P`.
    """
    numbers = _numbers(P)
    for name, x in numbers.items():
        if jnp.ndim(x) != 0:
            raise ValueError(
                f"P: the array {name} of shape {jnp.shape(x)} cannot be a hyper-parameter of "
                "the discretization (run reads an array hyper-parameter as a batch of runs, "
                "one per entry). Discretize a preconditioner whose arrays are scalars, or hold "
                "the array in a module-level function (compiled in); solve takes it as it is."
            )
    return numbers


def _numbers(P) -> dict[str, Array]:
    from .._flows.preconditioned import _StaticPreconditioner, NewtonPreconditioner

    if isinstance(P, NewtonPreconditioner):
        return {k: getattr(P, k) for k in _NUMBERS}
    if isinstance(P, _StaticPreconditioner) or not isinstance(P, eqx.Module):
        return {}
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(P, eqx.is_array))[0]
    return {"precondition" + jax.tree_util.keystr(path): x for path, x in leaves}


def _skeleton(P):
    from .._flows.preconditioned import _StaticPreconditioner

    if isinstance(P, _StaticPreconditioner):  # (the flow's holder of a user's function)
        return P.fn
    if isinstance(P, eqx.Module):
        return eqx.partition(P, eqx.is_array)[1]
    return P


def _with_numbers(precondition: Preconditioner, numbers: dict[str, Any]) -> Preconditioner:
    """`precondition` with the given numbers (those not `None`) put back in its fields: by
    field name, or by path (`split_preconditioner`'s names) into a user's module's skeleton."""
    given = {k: v for k, v in numbers.items() if v is not None}
    if not given:
        return precondition
    if not all(k.startswith("precondition") for k in given):
        return eqx.tree_at(
            lambda p: [getattr(p, k) for k in given],
            precondition,
            list(given.values()),
            is_leaf=lambda x: x is None,
        )
    is_none = lambda x: x is None
    flat, treedef = jax.tree_util.tree_flatten_with_path(precondition, is_leaf=is_none)
    leaves = [given.get("precondition" + jax.tree_util.keystr(path), x) for path, x in flat]
    return jax.tree.unflatten(treedef, leaves)


def preconditioned_sgd_split(
    learning_rate: ScalarLike,
    precondition: Preconditioner,
    damping: ScalarLike | None = None,
    rtol: ScalarLike | None = None,
    atol: ScalarLike | None = None,
    **leaves: ScalarLike,
) -> optax.GradientTransformationExtraArgs:
    r"""`preconditioned_sgd(learning_rate, precondition)`, $\theta_{k+1} = \theta_k -
    hP(\theta_k)\nabla L(\theta_k)$, with a `NewtonPreconditioner`'s numbers passed apart
    (`split_preconditioner`): they are the discretization's traced hyper-parameters, so a new
    damping reuses the compiled program, while the rest of `precondition` stays static. The
    numbers are put back unchecked (they were validated when the preconditioner was built).
    `leaves`: a user's module's array leaves, named as `split_preconditioner` names them."""
    # `optax.inject_hyperparams` binds this signature with its defaults and passes the
    # collected keywords back as one, `leaves={...}`: taken apart here.
    leaves = {**leaves.pop("leaves", {}), **leaves}
    numbers = {"damping": damping, "rtol": rtol, "atol": atol, **leaves}
    return preconditioned_sgd(learning_rate, _with_numbers(precondition, numbers))


class PreconditionedStep(AbstractMap):
    r"""Preconditioned GD $\theta_{k+1} = \theta_k - hP(\theta_k)\nabla L(\theta_k)$
    (`dynopt.transforms.preconditioned_sgd`), $t = kh$, first order (damped Newton for the
    Newton preconditioner). $P$ is a static option, but for the scalar arrays of an
    `eqx.Module` $P$ (a `NewtonPreconditioner`'s `damping`, `rtol`, `atol`; a user's module's
    as `"precondition" + path`), which are traced hyper-parameters beside the learning rate.

    **Inverse:** `inverse(learning_rate, precondition, damping=None, rtol=None, atol=None) ->
    (PreconditionedFlow(P), learning_rate)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(preconditioned_sgd_split)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return {"learning_rate": step_size, **check_scalar_numbers(flow.P)}

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
