"""Game flows as `AbstractFlow`s: a scheme's continuous limit and its first-order modified flow.

The game is the problem: `dynopt.solve(GameFlow(scheme), game, ts)` and
`dynopt.compare(GameFlow(scheme), game, step_sizes, t1)` read the game's field through the
`problem` argument of `vector_field`, as every flow reads its problem's gradient.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, ScalarLike
from .._discretization import Discretization
from .._flows.base import AbstractFlow
from .._validation import check_unbatched, host_validated, hyperparameter
from .game import Game, GameParams, in_one_dtype
from .schemes import AbstractScheme, require_game, scalar_step_size, SCHEMES, Simultaneous


def _check_scheme(scheme) -> None:
    """`ValueError` unless `scheme` is a scheme object (a name would fail only inside `solve`)."""
    if isinstance(scheme, str):
        fix = (
            f"pass games.scheme({scheme!r})"
            if scheme in SCHEMES
            else f"pass games.scheme(name) with a name in {', '.join(SCHEMES)}"
        )
        raise ValueError(
            f"scheme must be a dynopt.games scheme object, got the name {scheme!r}: {fix} (or "
            "the class, e.g. games.Simultaneous())."
        )
    if not isinstance(scheme, AbstractScheme):
        raise ValueError(
            "scheme must be a dynopt.games scheme (an AbstractScheme, e.g. games.Simultaneous() "
            f"or games.scheme('consensus', gamma=0.5)), got a {type(scheme).__name__}."
        )


class _AbstractGameFlow(AbstractFlow):
    r"""A flow on a game's parameters $z = (\varphi, \theta)$ (the state is the parameters),
    driven by a game scheme, whose optax transform is also the flow's discretization."""

    scheme: eqx.AbstractVar[AbstractScheme]

    def __check_init__(self):
        _check_scheme(self.scheme)

    def init(self, params: GameParams) -> GameParams:
        return params

    def params(self, state: GameParams) -> GameParams:
        return state

    def discretize(self, step_size: ScalarLike) -> Discretization:
        return self.scheme.discretize(step_size)


class GameFlow(_AbstractGameFlow):
    r"""The continuous-time limit of a game scheme: $\dot z = w(z)$, where $w = v$ is the game
    flow $(\dot\varphi, \dot\theta) = (-\nabla_\varphi\ell_D, -\nabla_\theta\ell_G)$ (post 4,
    eqs. 3–4) for GDA, extragradient and optimistic GD, and $w = v - \gamma J^\top v$ for
    consensus optimization.

    **Discretization:** `discretize(h)` is the scheme's optax transform with learning rate $h$ and
    $t = kh$ (global error $O(h)$). The game is the `problem` of `solve`/`run`/`compare`.

    **Arguments:** `scheme` (default `Simultaneous()`).
    """

    scheme: AbstractScheme = Simultaneous()

    def vector_field(self, t: ScalarLike, state: GameParams, problem: Game) -> GameParams:
        del t
        # The first place `solve`/`compare` hand this flow its problem.
        return self.scheme.field(require_game(problem, "GameFlow"), state)

    def modified(self, step_size: ScalarLike) -> "ModifiedGameFlow":
        """The scheme's modified flow at step size $h$, which it tracks to $O(h^2)$: pass the
        bound method as `dynopt.compare(flow, game, hs, t1, reference=flow.modified)`."""
        return ModifiedGameFlow(self.scheme, step_size)


class ModifiedGameFlow(_AbstractGameFlow):
    r"""The first-order modified flow of a game scheme with step $h$ (discretization drift,
    Rosca et al. 2021): $\dot z = w(z) + h\,w_1(z)$, which the scheme tracks with global error
    $O(h^2)$. E.g. simultaneous GDA: $\dot z = v - \frac h2 Jv$; on the Dirac GAN's
    linearization $J^2 = -\frac14 I$, so $\dot z = (J + \frac h8 I)z$ grows as $e^{ht/8}$, the
    per-step factor $\sqrt{1 + h^2/4} \approx 1 + h^2/8$ of the discrete map.

    **Arguments:** `scheme`, `step_size` $h > 0$ (an array leaf: a new $h$ does not recompile).
    """

    scheme: AbstractScheme
    step_size: Array = hyperparameter("step_size", lower=0.0, lower_open=True)

    def vector_field(self, t: ScalarLike, state: GameParams, problem: Game) -> GameParams:
        del t
        problem = require_game(problem, "ModifiedGameFlow")
        w = self.scheme.field(problem, state)
        w1 = self.scheme.drift(problem, state)
        return jax.tree.map(lambda a, b: a + self.step_size.astype(b.dtype) * b, w, w1)


@eqx.filter_jit
def _modified_jacobian(game: Game, scheme: AbstractScheme, step_size: Array) -> Array:
    # `step_size` is traced: one compilation serves every h.
    flow = ModifiedGameFlow(scheme, step_size)
    flat, unravel = ravel_pytree(in_one_dtype(game.equilibrium))  # (players of two dtypes)
    return jax.jacfwd(lambda x: ravel_pytree(flow.vector_field(0.0, unravel(x), game))[0])(flat)


def modified_flow_growth(scheme: AbstractScheme, game: Game, step_size: float) -> float:
    r"""The per-step growth factor of $\|z - z^*\|$ that the scheme's modified flow
    $\dot z = w + h\,w_1$ predicts near the game's equilibrium: $\exp(h\max\mathrm{Re}\,\lambda)$
    over the eigenvalues $\lambda$ of its Jacobian there. E.g. simultaneous GDA on the Dirac GAN:
    $e^{h^2/8}$, against the step matrix's exact $\sqrt{1 + h^2/4}$.

    **Arguments:** `scheme`, `game` (with an `equilibrium`), `step_size` $h > 0$.

    **Returns:** the growth factor per step (> 1: the modified flow spirals out).

    **Raises:** `ValueError` for a game with no `equilibrium`, a `step_size` that is not one
    number > 0, a `scheme` with a batch of hyper-parameters, or a `scheme` or `game` of another
    type.
    """
    _check_scheme(scheme)
    check_unbatched(scheme, "modified_flow_growth", what="scheme")  # one factor: one gamma
    require_game(game, "modified_flow_growth")
    if game.equilibrium is None:
        raise ValueError(
            f"game {game.name!r} has no equilibrium: give one (`equilibrium=(phi*, theta*)`) to "
            "linearize the modified flow there."
        )
    step_size = scalar_step_size(step_size)  # one h: the factor exp(h max Re λ) is a float
    # h was checked on the host: no runtime check of it in the program (an `eqx.error_if`, a
    # host callback that would keep the program out of JAX's persistent cache).
    with host_validated():
        jac = np.asarray(_modified_jacobian(game, scheme, jnp.asarray(step_size)))
    return float(np.exp(step_size * float(np.max(np.linalg.eigvals(jac).real))))
