"""`AbstractProblem`, the gradient oracle that `run` steps, and `Problem`, a loss over a pytree
of parameters plus what is known about it."""

import abc
import inspect
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._custom_types import Array, Float, Key, Params, Scalar
from ._validation import function, positive_int


def array_leaves(tree):
    """`tree` with its Python and NumPy scalar leaves as JAX arrays (a float in the default
    floating type, not weakly typed), so that `params0 = 1.0` or `[1.0, 2.0]` step as arrays do
    (`run` indexes its leaves); every other leaf as given (checked by the caller)."""

    def one(x):
        if isinstance(x, bool):
            return x
        if isinstance(x, float):
            return jnp.asarray(x, dtype=jnp.result_type(float))
        if isinstance(x, (int, np.generic)):
            return jnp.asarray(x)
        return x

    return jax.tree.map(one, tree)


def check_loss_output(name: str, out) -> None:
    """`ValueError` naming `name` unless `out` (an `eval_shape`) is a real floating scalar."""
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()):
        shape = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise ValueError(
            f"{name} must return a scalar, got shape {shape}. Reduce it, e.g. with jnp.mean or "
            "jnp.sum."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(
            f"{name} must return a real floating scalar, got dtype {out.dtype}: a gradient needs "
            "a real-valued loss (cast an integer count with .astype(float); for a complex "
            "value, return e.g. its squared modulus)."
        )


class _Label:
    """A problem's name as its pytree holds it, in the static part that keys every compiled
    program (`eqx.filter_jit`, `jax.jit`, `jax.tree.structure`): equal to every other label, so
    that problems that differ in name alone have one structure and share their programs (a
    labelled experiment paid one compile of `run`, `solve`, `compare`, ... per name)."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __eq__(self, other) -> bool:
        return isinstance(other, _Label)

    def __hash__(self) -> int:
        return hash(_Label)

    def __repr__(self) -> str:
        return repr(self.text)


class _NameField:
    """The `name` attribute of a problem: reads as the text given (a `str`), while the instance
    holds it as a `_Label` (equinox flattens a module from its `__dict__`, and rebuilds it by
    setting the attribute: both go through here). As a dataclass field's default, it is also
    the default name."""

    def __init__(self, default: str):
        self.default = default

    def __get__(self, obj, owner=None):
        if obj is None:
            return self.default
        try:
            return obj.__dict__["name"].text
        except KeyError:
            raise AttributeError("name") from None

    def __set__(self, obj, value):
        if value is self:  # not given: the dataclass passes its default, this descriptor
            value = self.default
        obj.__dict__["name"] = value if isinstance(value, _Label) else _Label(value)


def name_field(default: str):
    """The `name` field of an `AbstractProblem`: a label, static but no part of the problem's
    structure (see `_Label`). A compiled program traces under the name of the call that
    compiled it, so nothing traced may keep the name: no message of a runtime check
    (`eqx.error_if`) and no output that carries the problem names it. Messages raised while
    tracing are right (a failed trace is not cached), and so is the host's `problem.name`."""
    return eqx.field(static=True, default=_NameField(default))


def _is_concrete(tree) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


class AbstractProblem(eqx.Module):
    r"""What `run`, `compare` and `solve` ask of a problem: initial parameters and an oracle.

    The oracle is a *gradient field* $g(\theta)$ together with a scalar *value* $V(\theta)$:
    for a loss (`Problem`) $g = \nabla L$ and $V = L$; for a two-player game
    (`dynopt.games.Game`) $g = \xi$, the simultaneous gradient $(\nabla_\varphi\ell_D,
    \nabla_\theta\ell_G)$, and $V = \mathcal H = \frac12\|\xi\|^2$. An optimizer steps with
    $g$ (`run` feeds it to the optax transform as `updates`, and passes `value`, `grad`,
    `value_fn`, `grad_fn` to a `GradientTransformationExtraArgs`); a flow's vector field reads
    `grad` (e.g. gradient flow $\dot\theta = -g(\theta)$); $V$ is what a `Trajectory` records
    (its `loss`) and what `run` checks for finiteness.

    A stochastic oracle draws one minibatch from a `key`: `run(..., key=key)` calls it with
    `fold_in(key, k)` at step $k$, the same minibatch for every evaluation inside the step.

    Subclasses are final and implement:

    - `params0`: the initial parameters $\theta_0$ (any pytree of floating arrays); `name` (a
      `name_field`: a label, kept out of the compiled programs' keys).
    - `loss(params) -> scalar`: the deterministic value $V(\theta)$ recorded at saved points.
    - `value(params, key=None) -> scalar` and `value_and_grad(params, key=None)`: the oracle at
      $\theta$ on the minibatch drawn with `key` (`None`: the deterministic oracle).
    - `check_key(key)`: raise `ValueError` unless the oracle accepts `key` (`None` or one key).

    and may override `time_scales(params)` (the rates `solve` reads its stiffness from).
    """

    def time_scales(self, params: Params) -> np.ndarray | None:
        r"""The magnitudes of the decay rates of the gradient field's linearisation at `params`
        (the stiffness test of `solve`'s automatic solver choice), or `None`: those read off
        the solved flow's own vector-field Jacobian (`dynopt.stiffness_ratio`)."""
        del params
        return None

    params0: eqx.AbstractVar[Params]
    name: eqx.AbstractVar[str]

    @abc.abstractmethod
    def loss(self, params: Params) -> Scalar:
        raise NotImplementedError

    @abc.abstractmethod
    def value(self, params: Params, key: Key | None = None) -> Scalar:
        raise NotImplementedError

    @abc.abstractmethod
    def value_and_grad(self, params: Params, key: Key | None = None) -> tuple[Scalar, Params]:
        raise NotImplementedError

    @abc.abstractmethod
    def check_key(self, key: Key | None) -> None:
        raise NotImplementedError

    def grad(self, params: Params, key: Key | None = None) -> Params:
        r"""The gradient field $g(\theta)$ (on the minibatch of `key`), a pytree like `params`."""
        return self.value_and_grad(params, key)[1]

    @property
    def num_params(self) -> int:
        """The number of scalar parameters."""
        return sum(int(np.prod(jnp.shape(x))) for x in jax.tree.leaves(self.params0))


class Problem(AbstractProblem):
    r"""An objective $L(\theta)$ over a pytree of parameters $\theta$.

    **Arguments:**

    - `loss_fn`: `params -> scalar`. Must return a scalar (checked at construction).
    - `params0`: the initial parameters $\theta_0$; any pytree of floating arrays.
    - `name`: a label used in results and figures. It is no part of the problem's structure:
      problems that differ in name alone are equal pytrees and share every compiled program.
      (A function you compile that returns a problem returns it under the name of the call
      that compiled it: rename on the host, with `dataclasses.replace`.)
    - `minimizer`: a known minimizer $\theta^*$ (same tree structure as `params0`), or `None`.
    - `stochastic_loss_fn`: `(params, key) -> scalar`, the loss on one random minibatch, or
      `None` for deterministic problems. `run(..., key=...)` differentiates this.
    - `hessian`: for quadratics, the constant Hessian $H$ acting on the raveled parameters
      (`jax.flatten_util.ravel_pytree` order), else `None`.
    - `flow_solution`: `t -> params`, the closed-form gradient-flow solution $\theta(t)$ from
      `params0`, when one is known (quadratics), else `None`.
    - `data`: for finite sums $L = \frac1n\sum_i \ell(\theta; x_i)$, the per-sample data (a pytree
      with a leading sample axis), else `None`.
    - `sample_loss_fn`: `(params, sample) -> scalar`, the per-sample loss $\ell$, or `None`.
    - `batch_size`: the minibatch size used by `stochastic_loss_fn`, or `None`.

    As an oracle (`AbstractProblem`): the gradient field is $\nabla L$, the value $L$; with a
    `key`, both on the minibatch `stochastic_loss_fn(params, key)`.

    **Raises:** `ValueError` if the loss is not scalar, `params0` holds non-finite, complex or
    non-floating values, `minimizer` has another tree structure than `params0` or non-finite or
    non-floating values, `hessian` is not a finite symmetric $n \times n$ array ($n$ the number
    of parameters), `batch_size` is not a positive integer, `name` not a string,
    `stochastic_loss_fn`, `flow_solution` or `sample_loss_fn` is neither `None` nor callable,
    or `stochastic_loss_fn` does not take `(params, key)` or returns no real scalar.
    """

    loss_fn: Callable[[Params], Scalar]
    params0: Params = eqx.field(converter=array_leaves)
    name: str = name_field("problem")
    minimizer: Params | None = None
    stochastic_loss_fn: Callable[[Params, Key], Scalar] | None = None
    hessian: Array | None = None
    flow_solution: Callable[[Array], Params] | None = None
    data: Params | None = None
    sample_loss_fn: Callable[[Params, Params], Scalar] | None = None
    batch_size: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        function("loss_fn", self.loss_fn)
        leaves = jax.tree.leaves(self.params0)
        if not leaves:
            raise ValueError("params0 must contain at least one array.")
        for path, leaf in jax.tree_util.tree_leaves_with_path(self.params0):
            # "params0" itself where it is one leaf (an empty key path).
            where = f"the leaf at {jax.tree_util.keystr(path)}" if path else "params0 itself"
            if not (eqx.is_array_like(leaf) and not callable(leaf)):
                raise ValueError(
                    f"params0 must hold arrays only; {where} is a {type(leaf).__name__} (e.g. an "
                    "equinox model's activation). Optimize "
                    "its arrays and close over the rest: `params0, static = "
                    "eqx.partition(model, eqx.is_inexact_array)` and `loss_fn = lambda p: "
                    "loss(eqx.combine(p, static))`; for a network on data (x, y), "
                    "`dynopt.networks.network_problem(model, (x, y))` does this."
                )
            dtype = jnp.result_type(leaf)
            if jnp.issubdtype(dtype, jnp.complexfloating):
                # jax.grad of a real loss of z is the *conjugate* of the steepest-ascent
                # direction, so a flow or an optax step along it can grow |z|.
                raise ValueError(
                    f"params0 must hold real floating arrays; got dtype {dtype}. Complex "
                    "parameters are not supported: write each as its real and imaginary parts, "
                    "e.g. {'re': z.real, 'im': z.imag}, and the loss in terms of them."
                )
            if not jnp.issubdtype(dtype, jnp.floating):
                raise ValueError(
                    f"params0 must hold floating arrays; {where} has dtype {dtype}. "
                    "Write e.g. jnp.array([1.0, 2.0]) instead of jnp.array([1, 2])."
                )
        if _is_concrete(self.params0):
            if not all(bool(np.all(np.isfinite(np.asarray(x)))) for x in leaves):
                raise ValueError("params0 contains NaN or inf; every initial value must be finite.")
        try:
            out = jax.eval_shape(self.loss_fn, self.params0)
        except (
            jax.errors.ConcretizationTypeError,
            jax.errors.TracerIntegerConversionError,
            jax.errors.TracerArrayConversionError,
        ) as e:
            # A Python `if`/`while` on an array (TracerBoolConversionError), float()/int() of
            # one (ConcretizationTypeError, TracerIntegerConversionError), np.asarray of one.
            raise ValueError(
                f"loss_fn branches on or converts a traced value ({type(e).__name__}): dynopt "
                "differentiates and compiles the loss, so inside it the parameters (and what is "
                "computed from them) are JAX tracers with no concrete value. Write a branch as "
                "jnp.where(cond, a, b) or jax.lax.cond(cond, f, g, x), and keep values as JAX "
                "arrays (no float(), int(), bool() or np.asarray of them)."
            ) from e
        check_loss_output("loss_fn", out)
        if self.minimizer is not None:
            s0, s1 = jax.tree.structure(self.params0), jax.tree.structure(self.minimizer)
            if s0 != s1:
                raise ValueError(
                    f"minimizer must have the tree structure of params0: got {s1}, expected {s0}."
                )
            for a, b in zip(jax.tree.leaves(self.params0), jax.tree.leaves(self.minimizer)):
                if jnp.shape(a) != jnp.shape(b):
                    raise ValueError(
                        f"minimizer leaf shape {jnp.shape(b)} does not match params0 leaf shape "
                        f"{jnp.shape(a)}."
                    )
            for path, leaf in jax.tree_util.tree_leaves_with_path(self.minimizer):
                where = f"minimizer{jax.tree_util.keystr(path)}"
                if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                    raise ValueError(
                        f"{where} must be a real floating array, got dtype {jnp.result_type(leaf)}."
                    )
                if _is_concrete(leaf) and not np.all(np.isfinite(np.asarray(leaf))):
                    raise ValueError(f"{where} contains NaN or inf; a minimizer is finite.")
        if not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {self.name!r}.")
        # A Python int: it sizes the minibatch's arrays (2.5 or True would be taken as given).
        positive_int("batch_size", self.batch_size, allow_none=True)
        for field in ("stochastic_loss_fn", "flow_solution", "sample_loss_fn"):
            function(field, getattr(self, field), "None or a function", allow_none=True)
        if self.stochastic_loss_fn is not None:
            self._check_stochastic_loss()
        if self.hessian is not None:
            self._check_hessian()

    def _check_stochastic_loss(self) -> None:
        """`ValueError` unless `stochastic_loss_fn(params0, key)` can be called and returns a
        real floating scalar (an `eval_shape`, nothing runs): as for `loss_fn`, where it failed
        only inside the first `run(..., key=...)`, from JAX's `grad` or the call's `TypeError`."""
        fn, key = self.stochastic_loss_fn, jax.random.key(0)
        try:
            inspect.signature(fn).bind(self.params0, key)
        except TypeError as e:
            raise ValueError(
                "stochastic_loss_fn must take (params, key) and return the loss on the "
                f"minibatch drawn with key: {e}."
            ) from e
        except ValueError:  # a signature that cannot be read: the trace below tells
            pass
        # The function's own arrays abstract too, as `run` passes them (a finite sum's NumPy
        # data, indexed by a traced minibatch, cannot be a constant).
        check_loss_output("stochastic_loss_fn", eqx.filter_eval_shape(fn, self.params0, key))

    def _check_hessian(self) -> None:
        """`ValueError` unless `hessian` is a finite symmetric `(n, n)` array, `n` the number of
        parameters (concrete values only): `HeavyBall.closed_form` diagonalizes it with
        `eigh`, which reads one triangle, so a non-symmetric matrix would give silently wrong
        modes."""
        n = self.num_params
        shape = jnp.shape(self.hessian)
        if shape != (n, n):
            raise ValueError(
                f"hessian must have shape ({n}, {n}) (params0 has {n} scalars, raveled with "
                f"jax.flatten_util.ravel_pytree), got shape {shape}."
            )
        if not _is_concrete(self.hessian):
            return
        h = np.asarray(self.hessian, dtype=np.float64)
        if not np.all(np.isfinite(h)):
            raise ValueError("hessian contains NaN or inf; it must be finite.")
        # Rounding leaves an autodiff Hessian asymmetric by O(n eps) relative, far below
        # sqrt(eps); a matrix that is not a Hessian is off by O(1).
        asym = float(np.max(np.abs(h - h.T), initial=0.0))
        if asym > np.sqrt(np.finfo(np.float64).eps) * float(np.max(np.abs(h), initial=0.0)):
            raise ValueError(
                f"hessian must be symmetric, got max |H - H^T| = {asym:.3g}; a Hessian of a "
                "twice-differentiable loss is (pass (H + H.T) / 2)."
            )

    def __repr__(self) -> str:
        # One line: equinox's default prints every field, a network's model and data included
        # (about 150 lines for a 369-parameter MLP).
        leaves = jax.tree.leaves(self.params0)
        dtypes = "/".join(sorted({str(jnp.result_type(x)) for x in leaves}))
        parts = [
            f"name={self.name!r}",
            f"params={self.num_params} scalars in {len(leaves)} "
            f"{'leaf' if len(leaves) == 1 else 'leaves'} ({dtypes})",
        ]
        if self.data is not None:
            parts.append(f"data={jnp.shape(jax.tree.leaves(self.data)[0])[0]} samples")
        if self.batch_size is not None:
            parts.append(f"batch_size={self.batch_size}")
        known = ("minimizer", "stochastic_loss_fn", "hessian", "flow_solution")
        given = [name for name in known if getattr(self, name) is not None]
        if given:
            parts.append("with " + ", ".join(given))
        return f"{type(self).__name__}({', '.join(parts)})"

    def loss(self, params: Params) -> Scalar:
        """The full (deterministic) loss $L(\\theta)$."""
        return self.loss_fn(params)

    def _loss_on(self, key: Key | None) -> Callable[[Params], Scalar]:
        if key is None:
            return self.loss_fn
        return lambda params: self.stochastic_loss(params, key)

    def value(self, params: Params, key: Key | None = None) -> Scalar:
        """$L(\\theta)$, or the loss on the minibatch drawn with `key`."""
        return self._loss_on(key)(params)

    def value_and_grad(self, params: Params, key: Key | None = None) -> tuple[Scalar, Params]:
        """$(L, \\nabla L)$ at $\\theta$, or on the minibatch drawn with `key`.

        Called on concrete values (from user code) it runs one compiled program, traced once
        per problem structure; inside a trace (`run`, `solve`) it is the plain autodiff."""
        if _is_concrete((self, params, key)):
            return _compiled_value_and_grad(self, _scalars_as_arrays(params), key)
        return jax.value_and_grad(self._loss_on(key))(params)

    def check_key(self, key: Key | None) -> None:
        """A key needs a `stochastic_loss_fn`; `None` (full batch) is always accepted."""
        if key is not None and self.stochastic_loss_fn is None:
            raise ValueError(
                f"key was given but problem {self.name!r} has no stochastic_loss_fn; pass "
                "key=None for full-batch gradients."
            )

    def stochastic_loss(self, params: Params, key: Key) -> Scalar:
        """The loss on one random minibatch drawn with `key`."""
        if self.stochastic_loss_fn is None:
            raise ValueError(
                f"Problem {self.name!r} has no stochastic_loss_fn; build it with a finite-sum "
                "factory (e.g. problems.linear_regression) or pass stochastic_loss_fn=."
            )
        return self.stochastic_loss_fn(params, key)


def _scalars_as_arrays(tree):
    # Python scalars would be static in `filter_jit` (a program per value); `jnp.asarray` keeps
    # them weakly typed, as the plain autodiff sees them.
    scalar = (int, float, complex)
    return jax.tree.map(lambda x: jnp.asarray(x) if type(x) in scalar else x, tree)


@eqx.filter_jit
def _compiled_value_and_grad(problem: Problem, params: Params, key: Key | None):
    # Eagerly, `jax.value_and_grad` traces the loss and dispatches its operations one by one on
    # every call (9 ms for a 10-d quadratic, 0.25 s for a minibatch of linear regression).
    return jax.value_and_grad(problem._loss_on(key))(params)


def raveled_loss(
    problem: AbstractProblem, params: Params
) -> tuple[Float[Array, " n"], Callable[[Float[Array, " n"]], Scalar]]:
    """`(flat, f)`: the parameters raveled in float64 and the loss as a function of the flat
    vector, for Hessians and stiffness estimates.

    Each leaf is cast to float64 *before* raveling: `ravel_pytree` of a mixed tree (bfloat16
    weights, float32 biases) ravels to the widest dtype and its `unravel` refuses any other, so
    casting the flat vector afterwards would fail. On a single-dtype tree this is the same as
    raveling and casting (the loss then sees float64 leaves either way).
    """
    flat, unravel = ravel_pytree(jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params))
    return flat, lambda x: problem.loss(unravel(x))
