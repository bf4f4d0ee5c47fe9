r"""`Game`: a two-player differentiable game over pytrees $(\varphi, \theta)$."""

import inspect
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Key, PyTree, Scalar
from .._discretization import widest_dtype
from .._problem import AbstractProblem, array_leaves, check_loss_output, name_field
from .._validation import flag, function, is_traced


GameParams = tuple  # (phi, theta): discriminator first, generator second


def _is_floating(x) -> bool:
    return eqx.is_array_like(x) and jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _floating_leaves(tree) -> bool:
    """Whether `tree` is a non-empty pytree of real floating arrays (or Python floats)."""
    leaves = jax.tree.leaves(tree)
    return bool(leaves) and all(map(_is_floating, leaves))


def _not_floating(name: str, tree) -> str:
    """Why `tree` is no pytree of floating arrays: its first other leaf, by path and type, and
    what to do for an equinox network (its activation functions, integer fields and the like
    are leaves too: the gradient field and the optax state have no place for them)."""
    bad = [
        (path, x) for path, x in jax.tree_util.tree_leaves_with_path(tree) if not _is_floating(x)
    ]
    if not bad:
        return f"{name} must be a non-empty pytree of real floating arrays, got no leaves."
    path, leaf = bad[0]
    kind = f"{leaf.dtype} array" if hasattr(leaf, "dtype") else type(leaf).__name__
    where = jax.tree_util.keystr(path) or "(the tree itself)"
    hint = (
        " For an equinox network, pass its floating arrays, `params, static = "
        "eqx.partition(model, eqx.is_inexact_array)`, and rebuild it in the losses with "
        "`eqx.combine(params, static)`."
        if isinstance(tree, eqx.Module)
        else ""
    )
    return (
        f"{name} must be a non-empty pytree of real floating arrays; {len(bad)} of its "
        f"leaves {'is' if len(bad) == 1 else 'are'} not, the first at {where} (a {kind}).{hint}"
    )


def _shapes(tree) -> str:
    """The leaf shapes of `tree` for a message: `(2,)` for one array, else the tree of shapes."""
    if isinstance(tree, jax.Array | np.ndarray | jax.ShapeDtypeStruct):
        return str(tuple(tree.shape))
    return str(jax.tree.map(lambda x: tuple(jnp.shape(x)), tree))


def _check_like(what: str, ref: PyTree, got: PyTree) -> None:
    """`ValueError("{what}: ...")` unless `got` has the tree structure and leaf shapes of `ref`."""
    s_ref, s_got = jax.tree.structure(ref), jax.tree.structure(got)
    if s_ref != s_got:
        raise ValueError(f"{what}: expected the tree structure {s_ref}, got {s_got}.")
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree.leaves(got)):
        if jnp.shape(a) != jnp.shape(b):
            where = f" (the leaf at {jax.tree_util.keystr(path)})" if path else ""
            raise ValueError(
                f"{what}: expected leaf shapes {_shapes(ref)}, got {_shapes(got)}{where}."
            )


def in_one_dtype(tree: PyTree) -> PyTree:
    """`tree` with every leaf in its widest dtype (`widest_dtype`): players of float32 and
    float64 in one game have no implicit promotion path under strict dtype promotion, and a
    sum over both (the Hamiltonian, a raveled Jacobian) is computed in float64, as standard
    promotion would. A tree of one dtype is returned as it is (the same program)."""
    dtype = widest_dtype(tree)
    if all(jnp.result_type(x) == dtype for x in jax.tree.leaves(tree)):
        return tree
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


def _half_squared_norm(tree: PyTree) -> Scalar:
    r"""$\frac12\|\xi\|^2$ over all leaves, in the widest leaf dtype."""
    return 0.5 * optax.tree.norm(in_one_dtype(tree), squared=True)


class _Negated(eqx.Module):
    fn: Callable

    def __call__(self, *args):
        return -self.fn(*args)


class Game(AbstractProblem):
    r"""A two-player game: player D (parameters $\varphi$) minimizes $\ell_D(\varphi, \theta)$,
    player G (parameters $\theta$) minimizes $\ell_G(\varphi, \theta)$.

    Its flow (post 4, eqs. 3–4, with $\ell_D = -L_1$, $\ell_G = L_2$) is simultaneous gradient
    descent on each player's own loss,

    $$\dot\varphi = -\nabla_\varphi \ell_D(\varphi,\theta),\qquad
      \dot\theta = -\nabla_\theta \ell_G(\varphi,\theta),$$

    i.e. $\dot z = v(z) = -\xi(z)$ for the joint pytree $z = (\varphi, \theta)$ and the *game
    gradient* $\xi = (\nabla_\varphi\ell_D, \nabla_\theta\ell_G)$. A zero-sum game
    $\min_\theta\max_\varphi L$ is `minmax(L, ...)` ($\ell_D = -L$, $\ell_G = L$). The discrete
    schemes (`dynopt.games.simultaneous_gda`, ...) are optax transforms fed with $\xi$.

    **As a problem** (`dynopt.AbstractProblem`): a game *is* the oracle that `dynopt.run`,
    `dynopt.compare` and `dynopt.solve` step. Its gradient field is $\xi$ (so `run` feeds $\xi$
    to the transform, and `grad_fn` evaluates $\xi$ elsewhere on the same minibatch) and its
    value is the Hamiltonian $\mathcal H = \frac12\|\xi\|^2$, zero exactly at stationary
    points: the `loss` column of a game's `Trajectory`, checked for finiteness like a loss. A
    stochastic game records $\mathcal H$ on the fixed evaluation minibatch of
    `jax.random.key(0)` at saved points. `dynopt.flows.GradientFlow()` on a game is its flow
    $\dot z = -\xi$; `GameFlow(scheme)` is a scheme's continuous limit.

    **Arguments:**

    - `d_loss_fn`, `g_loss_fn`: `(phi, theta) -> scalar` (or `(phi, theta, key) -> scalar` when
      `stochastic`), the loss each player minimizes.
    - `phi0`, `theta0`: the initial parameters (any pytrees of floating arrays).
    - `name`: a label.
    - `equilibrium`: a known equilibrium `(phi*, theta*)`, or `None`.
    - `stochastic`: whether the losses draw a minibatch from a `key` (third argument).
    - `d_grad_fn`: `None`, or `(phi, theta[, key]) -> pytree` replacing $\nabla_\varphi\ell_D$ for
      fields that are no gradient (e.g. GAN-QP with the original code's normalization).

    **Raises:** `ValueError` if a loss is not scalar-valued or fails on the initial parameters
    (e.g. takes other arguments than `(phi, theta[, key])`), the initial parameters are not
    floating or not finite, `d_grad_fn` returns no pytree like `phi0`, or `equilibrium` is not
    a pair with the tree structures and leaf shapes of `(phi0, theta0)`.
    """

    d_loss_fn: Callable
    g_loss_fn: Callable
    phi0: PyTree = eqx.field(converter=array_leaves)
    theta0: PyTree = eqx.field(converter=array_leaves)
    name: str = name_field("game")
    equilibrium: GameParams | None = None
    stochastic: bool = eqx.field(static=True, default=False)
    d_grad_fn: Callable | None = None

    def __check_init__(self):
        for name, tree in (("phi0", self.phi0), ("theta0", self.theta0)):
            if not _floating_leaves(tree):
                raise ValueError(_not_floating(name, tree))
            # As `Problem.params0`: a NaN start would run as a silently NaN trajectory.
            leaves = jax.tree.leaves(tree)
            concrete = not any(isinstance(x, jax.core.Tracer) for x in leaves)
            if concrete and not all(np.all(np.isfinite(np.asarray(x))) for x in leaves):
                raise ValueError(f"{name} contains NaN or inf; every initial value must be finite.")
        for name in ("d_loss_fn", "g_loss_fn", "d_grad_fn"):
            function(name, getattr(self, name), allow_none=name == "d_grad_fn")
        if not isinstance(self.name, str):  # as a Problem's: a label for results and figures
            raise ValueError(f"name must be a string, got {self.name!r}.")
        flag("stochastic", self.stochastic)  # a string such as "no" read as True
        args = (self.phi0, self.theta0) + ((jax.random.key(0),) if self.stochastic else ())
        for name in ("d_loss_fn", "g_loss_fn"):
            check_loss_output(name, self._trace(name, args))
        if self.d_grad_fn is not None:
            # It replaces ∇_φ ℓ_D: anything but phi0's structure and shapes would fail only
            # inside `run`/`solve`, where it is added to phi.
            _check_like(
                "d_grad_fn must return a pytree like phi0 (it replaces the gradient of d_loss_fn)",
                self.phi0,
                self._trace("d_grad_fn", args),
            )
        if self.equilibrium is not None:
            self._check_equilibrium()
            self._check_stationary()

    def _trace(self, name: str, args: tuple):
        """`eval_shape` of the callable field `name` at the initial point; a failure is raised
        as a `ValueError` naming it and the shapes it was called with."""
        fn = getattr(self, name)
        try:
            return jax.eval_shape(fn, *args)
        except Exception as e:
            # minmax's D loss is -loss_fn: name (and read the signature of) the user's function.
            inner, label = (
                (fn.fn, f"{name} (minmax's -loss_fn)") if isinstance(fn, _Negated) else (fn, name)
            )
            called = f"phi of shape {_shapes(self.phi0)}, theta of shape {_shapes(self.theta0)}"
            called += " and a key" if self.stochastic else ""
            try:
                inspect.signature(inner).bind(*args)
            except TypeError:  # the wrong number of arguments: say what a game's losses take
                if self.stochastic:
                    raise ValueError(
                        f"{label} must take (phi, theta, key): a stochastic game's losses draw "
                        f"their minibatch from the key. Called with {called}: {e}"
                    ) from e
                raise ValueError(
                    f"{label} must take (phi, theta) (a loss that draws a minibatch from a key "
                    f"needs stochastic=True). Called with {called}: {e}"
                ) from e
            except ValueError:  # no signature to read
                pass
            raise ValueError(
                f"{label} failed on the initial point ({called}): {type(e).__name__}: {e}"
            ) from e

    def _check_equilibrium(self) -> None:
        eq = self.equilibrium
        if not (isinstance(eq, tuple | list) and len(eq) == 2):
            raise ValueError(
                "equilibrium must be a pair (phi*, theta*) like (phi0, theta0), got a value of "
                f"type {type(eq).__name__}."
            )
        for name, ref, part in (("phi*", self.phi0, eq[0]), ("theta*", self.theta0, eq[1])):
            init = "phi0" if name == "phi*" else "theta0"
            if not _floating_leaves(part):
                raise ValueError(
                    f"equilibrium's {name} must hold real floating arrays like {init}."
                )
            _check_like(f"equilibrium's {name} must be like {init}", ref, part)
            # As phi0/theta0: a NaN equilibrium passed the stationarity test (Python's `max`
            # skips a NaN after a finite value) and linearized the game at a NaN point.
            if not is_traced(part) and not all(
                np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(part)
            ):
                raise ValueError(
                    f"equilibrium's {name} contains NaN or inf; an equilibrium must be finite "
                    "(pass equilibrium=None if none is known)."
                )

    def _check_stationary(self) -> None:
        r"""`ValueError` unless the game gradient vanishes at `equilibrium`:
        $\|\xi(z^*)\|_\infty \le \sqrt\epsilon\,\max(1, \|\xi(z_0)\|_\infty)$, with $\epsilon$
        the machine epsilon of the players' widest dtype. The scale is the field's own at the
        initial point (so a loss scaled by $c$ scales both sides), at least 1 where $z_0$ is
        itself (nearly) stationary; $\sqrt\epsilon$ accepts an equilibrium known to about half
        the working precision (rounded digits, a solver's output), and refuses one that is no
        stationary point. Skipped for a stochastic game (one minibatch's $\xi$ does not vanish
        at the expected game's equilibrium) and for a traced field (a game built inside `jit`
        or `vmap`, e.g. a sweep over a penalty weight, a module leaf or a closure's)."""
        eq = tuple(self.equilibrium)
        if self.stochastic or is_traced(self):  # (its losses' leaves too: a vmapped weight)
            return
        xi_eq, xi_start = self.gradient(eq), self.gradient(self.params0)
        # A loss closing over a traced value (`lambda p, t: L(p, t) + w * p @ p` under
        # `jax.vmap` over w) has no traced leaf: its field is traced all the same.
        if is_traced((xi_eq, xi_start)):
            return
        dtype = widest_dtype((eq, self.params0))

        def sup(xi) -> float:
            # NaN if any entry is (Python's `max` over the leaves kept a finite value before a
            # NaN one: a field undefined in the theta block passed as stationary).
            leaves = jax.tree.leaves(xi)
            return float(np.max([np.max(np.abs(np.asarray(x, np.float64))) for x in leaves]))

        at_eq, at_start = sup(xi_eq), sup(xi_start)
        tol = math.sqrt(float(jnp.finfo(dtype).eps)) * max(1.0, at_start)
        if not at_eq <= tol:
            found = (
                "is NaN (not defined there)"
                if math.isnan(at_eq)
                else f"has max |xi| = {at_eq:.3g}, above sqrt(eps) * max(1, max |xi(phi0, "
                f"theta0)|) = {tol:.3g} ({jnp.dtype(dtype).name})"
            )
            raise ValueError(
                f"equilibrium must be a stationary point of the game: the game gradient there "
                f"{found}. Pass equilibrium=None if none is known."
            )

    def _args(self, z: GameParams, key: Key | None):
        if self.stochastic and key is None:
            # Reached by `solve` (and flows' fields), which take no key.
            raise ValueError(
                f"game {self.name!r} is stochastic: its losses need a key (its minibatch). "
                "`run(..., key=key)` passes one; `solve` and `compare` take none and need a "
                "deterministic game (stochastic=False, losses of (phi, theta))."
            )
        self._check_point(z)
        return (z[0], z[1]) + ((key,) if self.stochastic else ())

    def _check_point(self, z) -> None:
        """`ValueError` (at trace time: structure and shapes only) unless `z` is a pair
        `(phi, theta)` like `(phi0, theta0)`: `gradient(1.0)` was Python's TypeError, and
        players of other shapes were differentiated silently."""
        if not (isinstance(z, tuple | list) and len(z) == 2):
            raise ValueError(
                "z must be a pair (phi, theta) like the game's (phi0, theta0), got a value of "
                f"type {type(z).__name__}."
            )
        _check_like("z's phi must be like phi0", self.phi0, z[0])
        _check_like("z's theta must be like theta0", self.theta0, z[1])

    @property
    def params0(self) -> GameParams:
        """The initial joint parameters $(\\varphi_0, \\theta_0)$."""
        return (self.phi0, self.theta0)

    def loss(self, params: GameParams) -> Scalar:
        """$\\mathcal H(z)$ (a stochastic game: on the minibatch of `jax.random.key(0)`)."""
        return self.hamiltonian(params, jax.random.key(0) if self.stochastic else None)

    def value(self, params: GameParams, key: Key | None = None) -> Scalar:
        """The oracle's value $\\mathcal H(z) = \\frac12\\|\\xi(z)\\|^2$ (minibatch of `key`)."""
        return self.hamiltonian(params, key)

    def value_and_grad(
        self, params: GameParams, key: Key | None = None
    ) -> tuple[Scalar, GameParams]:
        """$(\\mathcal H(z), \\xi(z))$ from one evaluation of $\\xi$."""
        xi = self.gradient(params, key)
        return _half_squared_norm(xi), xi

    def check_key(self, key: Key | None) -> None:
        """A stochastic game needs a key (its minibatch); a deterministic one takes none."""
        if self.stochastic and key is None:
            # `compare` checks with no key (it has none to give): say what it needs instead.
            raise ValueError(
                f"key must be given iff the game is stochastic; game {self.name!r} has "
                "stochastic=True and no key was given. `run(..., key=key)` draws its "
                "minibatches from one; `compare` and `solve` take no key and need a "
                "deterministic game (stochastic=False, losses of (phi, theta))."
            )
        if not self.stochastic and key is not None:
            raise ValueError(
                f"key must be given iff the game is stochastic; game {self.name!r} has "
                "stochastic=False and takes no key: drop key=, or build the game with "
                "stochastic=True and losses of (phi, theta, key)."
            )

    def losses(self, z: GameParams, key: Key | None = None) -> tuple[Scalar, Scalar]:
        """$(\\ell_D, \\ell_G)$ at $z$."""
        args = self._args(z, key)
        return self.d_loss_fn(*args), self.g_loss_fn(*args)

    def gradient(self, z: GameParams, key: Key | None = None) -> GameParams:
        r"""The game gradient $\xi(z) = (\nabla_\varphi\ell_D, \nabla_\theta\ell_G)$."""
        args = self._args(z, key)
        if self.d_grad_fn is None:
            g_phi = jax.grad(self.d_loss_fn, argnums=0)(*args)
        else:
            g_phi = self.d_grad_fn(*args)
        g_theta = jax.grad(self.g_loss_fn, argnums=1)(*args)
        return (g_phi, g_theta)

    def vector_field(self, z: GameParams, key: Key | None = None) -> GameParams:
        r"""The game flow $v(z) = -\xi(z)$ (descent for each player on its own loss)."""
        return jax.tree.map(jnp.negative, self.gradient(z, key))

    def hamiltonian(self, z: GameParams, key: Key | None = None) -> Scalar:
        r"""$\mathcal H(z) = \tfrac12\|\xi(z)\|^2$: zero exactly at stationary points; its gradient
        $J^\top v$ is the consensus-optimization correction."""
        return _half_squared_norm(self.gradient(z, key))

    def jacobian(self, z: GameParams, key: Key | None = None) -> Array:
        r"""The Jacobian $J = \partial v/\partial z$ of the flow at $z$, a dense matrix in
        `ravel_pytree((phi, theta))` order ($\varphi$ block first), in the players' widest dtype
        (players of float32 and float64: evaluated at $z$ in float64)."""
        self._check_point(z)  # (before the dtype cast, which failed on a string)
        return _jacobian(self.vector_field, z, key)

    def time_scales(self, params: GameParams) -> np.ndarray | None:
        r"""$|\mathrm{Re}\,\mu|$ for the eigenvalues $\mu$ of the Jacobian $J$ at `params`
        (the stiffness test of `solve`): a rotation ($\mathrm{Re}\,\mu = 0$) is resolved for
        accuracy, not a stiff mode. The value's Hessian would give $J^\top J$ near a
        stationary point, squaring the spread. `None` (the Hessian) above 1,000 parameters,
        where no dense Jacobian is formed. Evaluated in the default float dtype (float64 under
        x64): the state `solve` integrates, whatever the players' dtypes, as a `Problem`'s
        stiffness estimate."""
        if optax.tree.size(params) > 1000:
            return None
        key = jax.random.key(0) if self.stochastic else None
        params = jax.tree.map(lambda x: jnp.asarray(x, float), params)
        return np.abs(np.linalg.eigvals(np.asarray(self.jacobian(params, key))).real)

    def eigenvalues(self, z: GameParams | None = None, key: Key | None = None) -> np.ndarray:
        """Eigenvalues of `jacobian(z)` (default: at `equilibrium`), sorted by real part. The
        equilibrium is locally attracting for the flow iff all real parts are negative."""
        if z is None:
            if self.equilibrium is None:
                raise ValueError(f"game {self.name!r} has no equilibrium; pass z.")
            z = self.equilibrium
        eig = np.linalg.eigvals(np.asarray(self.jacobian(z, key)))
        return eig[np.lexsort((eig.imag, eig.real))]

    @property
    def num_phi(self) -> int:
        """The number of scalar discriminator parameters (the size of the $\\varphi$ block)."""
        return int(optax.tree.size(self.phi0))


@eqx.filter_jit
def _jacobian(field_fn, z, key):
    """Dense Jacobian of `field_fn(z, key)` in raveled order (one compiled program per field)."""
    flat, unravel = ravel_pytree(in_one_dtype(z))
    return jax.jacfwd(lambda x: ravel_pytree(field_fn(unravel(x), key))[0])(flat)


def minmax(
    loss_fn: Callable,
    phi0: PyTree,
    theta0: PyTree,
    *,
    name: str = "minmax",
    equilibrium: GameParams | None = None,
    stochastic: bool = False,
) -> Game:
    r"""The zero-sum game $\min_\theta\max_\varphi L(\varphi,\theta)$: $\ell_D = -L$, $\ell_G = L$,
    so the flow is (post 4, eq. 3)

    $$\dot\varphi = \nabla_\varphi L,\qquad \dot\theta = -\nabla_\theta L.$$

    **Arguments:**

    - `loss_fn`: $L$, `(phi, theta) -> scalar` (or `(phi, theta, key) -> scalar` when
      `stochastic`).
    - `phi0`, `theta0`: the initial parameters (any pytrees of finite floating arrays).
    - `name`: a label.
    - `equilibrium`: a known equilibrium `(phi*, theta*)`, or `None`.
    - `stochastic`: whether $L$ draws a minibatch from a `key` (third argument).

    **Returns:** a `Game` with `d_loss_fn` $= -L$ and `g_loss_fn` $= L$.

    **Raises:** `ValueError` as `Game`: a loss that is not scalar-valued or fails on the initial
    parameters, initial parameters that are not floating or not finite, or an `equilibrium` that
    does not match `(phi0, theta0)`.
    """
    return Game(
        _Negated(loss_fn),
        loss_fn,
        phi0,
        theta0,
        name=name,
        equilibrium=equilibrium,
        stochastic=stochastic,
    )
