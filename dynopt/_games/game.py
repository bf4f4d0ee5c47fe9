"""`Game`: a two-player differentiable game over pytrees $(\varphi, \theta)$."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Key, PyTree, Scalar
from .._problem import Problem


GameParams = tuple  # (phi, theta): discriminator first, generator second


class _Negated(eqx.Module):
    fn: Callable

    def __call__(self, *args):
        return -self.fn(*args)


class Game(eqx.Module):
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

    **Arguments:**

    - `d_loss_fn`, `g_loss_fn`: `(phi, theta) -> scalar` (or `(phi, theta, key) -> scalar` when
      `stochastic`), the loss each player minimizes.
    - `phi0`, `theta0`: the initial parameters (any pytrees of floating arrays).
    - `name`: a label.
    - `equilibrium`: a known equilibrium `(phi*, theta*)`, or `None`.
    - `stochastic`: whether the losses draw a minibatch from a `key` (third argument).
    - `d_grad_fn`: `None`, or `(phi, theta[, key]) -> pytree` replacing $\nabla_\varphi\ell_D$ for
      fields that are no gradient (e.g. GAN-QP with the original code's normalization).

    **Raises:** `ValueError` if a loss is not scalar-valued or the initial parameters are not
    floating.
    """

    d_loss_fn: Callable
    g_loss_fn: Callable
    phi0: PyTree
    theta0: PyTree
    name: str = eqx.field(static=True, default="game")
    equilibrium: GameParams | None = None
    stochastic: bool = eqx.field(static=True, default=False)
    d_grad_fn: Callable | None = None

    def __check_init__(self):
        for name, tree in (("phi0", self.phi0), ("theta0", self.theta0)):
            leaves = jax.tree.leaves(tree)
            if not leaves or not all(
                jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in leaves
            ):
                raise ValueError(f"{name} must be a non-empty pytree of floating arrays.")
        args = (self.phi0, self.theta0) + ((jax.random.key(0),) if self.stochastic else ())
        for name, fn in (("d_loss_fn", self.d_loss_fn), ("g_loss_fn", self.g_loss_fn)):
            out = jax.eval_shape(fn, *args)
            if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()):
                raise ValueError(f"{name} must return a scalar, got {out}.")

    def _args(self, z: GameParams, key: Key | None):
        if self.stochastic and key is None:
            raise ValueError(f"game {self.name!r} is stochastic: pass a key.")
        return (z[0], z[1]) + ((key,) if self.stochastic else ())

    @property
    def params0(self) -> GameParams:
        """The initial joint parameters $(\\varphi_0, \\theta_0)$."""
        return (self.phi0, self.theta0)

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
        flat, _ = ravel_pytree(self.gradient(z, key))
        return 0.5 * jnp.sum(flat**2)

    def jacobian(self, z: GameParams, key: Key | None = None) -> Array:
        r"""The Jacobian $J = \partial v/\partial z$ of the flow at $z$, a dense matrix in
        `ravel_pytree((phi, theta))` order ($\varphi$ block first)."""
        return _jacobian(self.vector_field, z, key)

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
        return int(ravel_pytree(self.phi0)[0].size)

    @property
    def problem(self) -> Problem:
        """A `dynopt.Problem` over the joint parameters whose loss is the Hamiltonian
        $\\frac12\\|\\xi\\|^2$, so `dynopt.solve(GameFlow(game), game.problem, ts)` works."""
        if self.stochastic:
            raise ValueError(f"game {self.name!r} is stochastic: it has no deterministic problem.")
        return Problem(self.hamiltonian, self.params0, name=self.name, minimizer=self.equilibrium)


@eqx.filter_jit
def _jacobian(field_fn, z, key):
    """Dense Jacobian of `field_fn(z, key)` in raveled order (one compiled program per field)."""
    flat, unravel = ravel_pytree(z)
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
    r"""The zero-sum game $\min_\theta\max_\varphi L(\varphi,\theta)$: $\ell_D = -L$,
    $\ell_G = L$, so the flow is $\dot\varphi = \nabla_\varphi L$, $\dot\theta = -\nabla_\theta L$
    (post 4, eq. 3)."""
    return Game(
        _Negated(loss_fn),
        loss_fn,
        phi0,
        theta0,
        name=name,
        equilibrium=equilibrium,
        stochastic=stochastic,
    )
