"""Game flows as `AbstractFlow`s: a scheme's continuous limit and its first-order modified flow."""

import jax

from .._custom_types import ScalarLike
from .._discretization import check_positive, Discretization
from .._flows.base import AbstractFlow
from .._problem import Problem
from .game import Game, GameParams
from .schemes import AbstractScheme, Simultaneous


class GameFlow(AbstractFlow):
    r"""The continuous-time limit of a game scheme: $\dot z = w(z)$, where $w = v$ is the game
    flow $(\dot\varphi, \dot\theta) = (-\nabla_\varphi\ell_D, -\nabla_\theta\ell_G)$ (post 4,
    eqs. 3–4) for GDA, extragradient and optimistic GD, and $w = v - \gamma J^\top v$ for
    consensus optimization.

    **Discretization:** `discretize(h)` is the scheme's optax transform with learning rate $h$ and
    $t = kh$ (global error $O(h)$). Solve with `dynopt.solve(flow, game.problem, ts)`; the flow
    reads the game from `self.game` (the `problem` argument only carries the Hamiltonian).

    **Arguments:** `game`; `scheme` (default `Simultaneous()`).
    """

    game: Game
    scheme: AbstractScheme = Simultaneous()

    def init(self, params: GameParams) -> GameParams:
        return params

    def vector_field(self, t: ScalarLike, state: GameParams, problem: Problem) -> GameParams:
        del t, problem
        return self.scheme.field(self.game, state)

    def params(self, state: GameParams) -> GameParams:
        return state

    def discretize(self, step_size: ScalarLike) -> Discretization:
        return self.scheme.discretize(step_size)


class ModifiedGameFlow(AbstractFlow):
    r"""The first-order modified flow of a game scheme with step $h$ (discretization drift,
    Rosca et al. 2021): $\dot z = w(z) + h\,w_1(z)$, which the scheme tracks with global error
    $O(h^2)$. E.g. simultaneous GDA: $\dot z = v - \frac h2 Jv$; on the Dirac GAN's
    linearization $J^2 = -\frac14 I$, so $\dot z = (J + \frac h8 I)z$ grows as $e^{ht/8}$, the
    per-step factor $\sqrt{1 + h^2/4} \approx 1 + h^2/8$ of the discrete map.

    **Arguments:** `game`, `scheme`, `step_size` $h > 0$.
    """

    game: Game
    scheme: AbstractScheme
    step_size: ScalarLike

    def __check_init__(self):
        check_positive("step_size", self.step_size)

    def init(self, params: GameParams) -> GameParams:
        return params

    def vector_field(self, t: ScalarLike, state: GameParams, problem: Problem) -> GameParams:
        del t, problem
        w = self.scheme.field(self.game, state)
        w1 = self.scheme.drift(self.game, state)
        return jax.tree.map(lambda a, b: a + self.step_size * b, w, w1)

    def params(self, state: GameParams) -> GameParams:
        return state

    def discretize(self, step_size: ScalarLike) -> Discretization:
        return self.scheme.discretize(step_size)
