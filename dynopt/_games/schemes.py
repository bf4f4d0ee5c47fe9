r"""Discrete game dynamics as optax transforms over the joint pytree $z = (\varphi, \theta)$, and
each scheme's continuous limit, first-order modified flow and linear one-step map.

Every transform is fed the game gradient $\xi(z_k) = (\nabla_\varphi\ell_D, \nabla_\theta\ell_G)$
as `updates` (so `optax.apply_updates` gives the next iterate). Schemes that evaluate $\xi$ at
another point are `optax.GradientTransformationExtraArgs` and take `grad_fn` ($z \mapsto \xi(z)$
on the same minibatch) as an extra argument, as optax's line searches take `value_fn`.

With $v = -\xi$, $J = \partial v/\partial z$ and step $h$ (Rosca et al. 2021, backward error
analysis at $O(h)$), each scheme follows $\dot z = w + h\,w_1$ with global error $O(h^2)$:

- simultaneous GDA, $z + hv(z)$: $w = v$, $w_1 = -\tfrac12 Jv$;
- alternating GDA (D first), $\varphi^+ = \varphi + hv_\varphi(z)$,
  $\theta^+ = \theta + hv_\theta(\varphi^+,\theta)$: $w = v$,
  $w_1 = -\tfrac12 Jv + (0, J_{\theta\varphi}v_\varphi)$;
- consensus, $z + h(v - \gamma J^\top v)$: $w = v - \gamma J^\top v$, $w_1 = -\tfrac12 J_w w$;
- extragradient, $z + hv(z + hv(z))$: $w = v$, $w_1 = +\tfrac12 Jv$;
- optimistic GDA, $z + h(2v_k - v_{k-1})$: $w = v$, $w_1 = +\tfrac12 Jv$ (principal root).
"""

import abc
import dataclasses
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import numpy as np
import optax

from .._custom_types import Array, ScalarLike
from .._discretization import Discretization
from .._validation import (
    check_unbatched,
    flag,
    hyperparameter,
    is_traced,
    nonnegative,
    positive,
)
from .game import Game, GameParams


def _with_grad_fn(name: str, step: Callable) -> optax.GradientTransformationExtraArgs:
    """The stateless transform whose update is `step(updates, params, grad_fn)`: it needs the
    parameters and the game-gradient function `grad_fn` (an extra argument)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, grad_fn, **extra):
        del extra
        if params is None:
            raise ValueError(f"{name} needs params=(phi, theta) in update().")
        return step(updates, params, grad_fn), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _learning_rate(value):
    """`value` checked finite and > 0 where concrete (a zero, negative or NaN rate silently
    stood still, ran the game backwards or made it NaN); an optax schedule, or a traced rate,
    as is: a scheme's `discretize` checked its step size on the host, and a runtime check here
    would put a host callback in every run's program (out of JAX's persistent cache)."""
    if callable(value) or is_traced(value):
        return value
    return positive("learning_rate", value)


def simultaneous_gda(learning_rate: ScalarLike) -> optax.GradientTransformationExtraArgs:
    r"""Simultaneous gradient descent–ascent $z_{k+1} = z_k - h\,\xi(z_k)$: this *is*
    `optax.sgd(learning_rate)` applied to the game gradient, and is returned as such.

    **Raises:** `ValueError` for a `learning_rate` that is not finite and > 0."""
    return optax.sgd(_learning_rate(learning_rate))


def alternating_gda(
    learning_rate: ScalarLike, d_first: bool = True
) -> optax.GradientTransformationExtraArgs:
    r"""Alternating GDA: one player steps, then the other sees the new parameters,
    $\varphi^+ = \varphi - h\xi_\varphi(\varphi,\theta)$,
    $\theta^+ = \theta - h\xi_\theta(\varphi^+,\theta)$ (`d_first=True`; else $\theta$ first).
    Needs `grad_fn` (extra argument).

    **Arguments:**

    - `learning_rate`: $h$, finite and $> 0$.
    - `d_first`: `True`: the discriminator $\varphi$ steps first; `False`: $\theta$ first.

    **Returns:** an `optax.GradientTransformationExtraArgs`; `update` needs `grad_fn`.

    **Raises:** `ValueError` for a `learning_rate` that is not finite and > 0 or a `d_first`
    that is not `True` or `False`."""
    learning_rate = _learning_rate(learning_rate)
    d_first = flag("d_first", d_first)

    def step(updates, params, grad_fn):
        phi, theta = params
        if d_first:
            d_phi = optax.tree.scale(-learning_rate, updates[0])
            d_theta = optax.tree.scale(
                -learning_rate, grad_fn((optax.apply_updates(phi, d_phi), theta))[1]
            )
        else:
            d_theta = optax.tree.scale(-learning_rate, updates[1])
            d_phi = optax.tree.scale(
                -learning_rate, grad_fn((phi, optax.apply_updates(theta, d_theta)))[0]
            )
        return d_phi, d_theta

    return _with_grad_fn("alternating_gda", step)


def consensus_optimization(
    learning_rate: ScalarLike, gamma: ScalarLike
) -> optax.GradientTransformationExtraArgs:
    r"""Consensus optimization (Mescheder et al. 2017): $z_{k+1} = z_k - h(\xi + \gamma\nabla
    \mathcal H)$ with $\mathcal H = \frac12\|\xi\|^2$, $\nabla\mathcal H = J_\xi^\top\xi$ (one
    vector–Jacobian product of `grad_fn`, the extra argument).

    **Arguments:**

    - `learning_rate`: $h$, finite and $> 0$.
    - `gamma`: $\gamma \ge 0$, finite, the weight of $\nabla\mathcal H$.

    **Returns:** an `optax.GradientTransformationExtraArgs`; `update` needs `grad_fn`.

    **Raises:** `ValueError` for a `learning_rate` that is not finite and > 0 or a `gamma` that
    is not finite and >= 0."""
    learning_rate = _learning_rate(learning_rate)
    if not is_traced(gamma):  # (traced: `Consensus` checked it, as `_learning_rate` says)
        gamma = nonnegative("gamma", gamma)

    def step(updates, params, grad_fn):
        _, pullback = jax.vjp(grad_fn, params)
        (grad_h,) = pullback(updates)
        return optax.tree.scale(-learning_rate, optax.tree.add_scale(updates, gamma, grad_h))

    return _with_grad_fn("consensus_optimization", step)


def extragradient(learning_rate: ScalarLike) -> optax.GradientTransformationExtraArgs:
    r"""Extragradient (Korpelevich): $z_{k+1/2} = z_k - h\xi(z_k)$,
    $z_{k+1} = z_k - h\xi(z_{k+1/2})$. Needs `grad_fn` (extra argument).

    **Raises:** `ValueError` for a `learning_rate` that is not finite and > 0."""
    learning_rate = _learning_rate(learning_rate)

    def step(updates, params, grad_fn):
        half = optax.apply_updates(params, optax.tree.scale(-learning_rate, updates))
        return optax.tree.scale(-learning_rate, grad_fn(half))

    return _with_grad_fn("extragradient", step)


def optimistic_gda(learning_rate: ScalarLike) -> optax.GradientTransformationExtraArgs:
    r"""Optimistic GDA $z_{k+1} = z_k - h(2\xi_k - \xi_{k-1})$ (first step: $\xi_{-1} = \xi_0$,
    plain GDA). This *is* `optax.optimistic_gradient_descent(learning_rate)` (alpha = beta = 1)
    applied to the game gradient, and is returned as such.

    **Raises:** `ValueError` for a `learning_rate` that is not finite and > 0."""
    return optax.optimistic_gradient_descent(_learning_rate(learning_rate))


# ---------------------------------------------------------------------------------------------
# Schemes: the transform, its continuous limit, drift and linear one-step map in one object.


def _jvp_field(game: Game, z: GameParams, tangent: GameParams) -> GameParams:
    return jax.jvp(game.vector_field, (z,), (tangent,))[1]


def _spectral_radius(m: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(m))))


def require_game(problem, who: str) -> Game:
    r"""`ValueError` unless `problem` is a `Game`: a game scheme reads the two players' blocks
    $(\varphi, \theta)$ and the game's field, which a plain `Problem` has not."""
    if not isinstance(problem, Game):
        raise ValueError(
            f"{who} needs a dynopt.games.Game (two players' losses over (phi, theta)), got a "
            f"{type(problem).__name__}. For a loss, use a dynopt flow (e.g. "
            "dynopt.flows.GradientFlow) or an optax optimizer; a loss as a game is "
            "dynopt.games.Game(d_loss_fn, g_loss_fn, phi0, theta0)."
        )
    return problem


def _game_init(disc: Discretization, params, problem):
    """The `init_fn` of a scheme that needs the players' blocks or the game's field
    (alternating, consensus): its transform's own state, once the problem is known to be a game
    (`run` and `compare` call it before the first step, which on a plain `Problem` fails with a
    raw TypeError or silently runs another method)."""
    name = getattr(disc.factory, "__name__", type(disc.factory).__name__)
    require_game(problem, f"a dynopt.games scheme's discretization ({name})")
    return disc.transform.init(params)


def scalar_step_size(step_size) -> float:
    """`step_size` as a Python float, if it is one real number > 0 (else `ValueError`)."""
    positive("step_size", step_size)
    if np.ndim(step_size) != 0:
        raise ValueError(
            f"step_size must be a scalar > 0 (one step size per call), got shape "
            f"{np.shape(step_size)}."
        )
    return float(step_size)


class AbstractScheme(eqx.Module):
    r"""A discrete game dynamic: `discretize(h)` (the optax transform and its clock $t = kh$),
    `field(game, z)` (its $h \to 0$ limit $w$), `drift(game, z)` (the $O(h)$ term $w_1$ of its
    modified flow $\dot z = w + h w_1$) and `step_matrix(J, h, num_phi)` (its exact one-step
    map on the linear game $v(z) = Jz$)."""

    name: ClassVar[str]

    @abc.abstractmethod
    def discretize(self, step_size: ScalarLike) -> Discretization:
        raise NotImplementedError

    @abc.abstractmethod
    def field(self, game: Game, z: GameParams) -> GameParams:
        raise NotImplementedError

    @abc.abstractmethod
    def drift(self, game: Game, z: GameParams) -> GameParams:
        raise NotImplementedError

    @abc.abstractmethod
    def step_matrix(self, jac: np.ndarray, step_size: float, num_phi: int) -> np.ndarray:
        raise NotImplementedError

    def growth(self, jac, step_size: float, num_phi: int) -> float:
        """The predicted per-step growth factor of $\\|z_k - z^*\\|$ near an equilibrium with
        Jacobian `jac`: the spectral radius of `step_matrix` (> 1: diverges, < 1: converges).

        **Arguments:** `jac`: the $n \\times n$ Jacobian $J$ of the flow (`Game.jacobian`);
        `step_size` $h > 0$ (one scalar); `num_phi`: the size of the $\\varphi$ block,
        $1 \\le$ `num_phi` $< n$ (`Game.num_phi`).

        **Raises:** `ValueError` for a `jac` that is not square or not finite, a `step_size` or
        `num_phi` out of range (a negative $h$ would return the factor of a step backwards), or
        a scheme with a batch of hyper-parameters (`Consensus` with an array `gamma`)."""
        jac = np.asarray(jac)
        if jac.ndim != 2 or jac.shape[0] != jac.shape[1] or jac.shape[0] < 2:
            raise ValueError(
                f"jac must be a square n x n Jacobian with n >= 2, got shape {jac.shape}."
            )
        step_size = scalar_step_size(step_size)
        check_unbatched(self, "growth", what="scheme")  # one factor: one gamma
        if not np.all(np.isfinite(jac)):  # (numpy's LinAlgError named no argument)
            raise ValueError("jac must be finite (a Jacobian at a point where the field is).")
        n = jac.shape[0]
        if isinstance(num_phi, bool) or not isinstance(num_phi, int | np.integer):
            raise ValueError(f"num_phi must be an integer in [1, {n - 1}], got {num_phi!r}.")
        if not 1 <= num_phi < n:
            raise ValueError(f"num_phi must be in [1, {n - 1}] (jac is {n} x {n}), got {num_phi}.")
        return _spectral_radius(self.step_matrix(jac, step_size, int(num_phi)))


class AbstractGradientScheme(AbstractScheme):
    r"""A scheme that is `factory(learning_rate=h)` on the game gradient, on the clock $t = kh$:
    its $h \to 0$ limit is the game's field $v$ and its drift is $\pm\frac12 Jv$, the sign
    `drift_sign`."""

    factory: eqx.AbstractClassVar[Callable[..., optax.GradientTransformation]]
    drift_sign: eqx.AbstractClassVar[float]

    def discretize(self, step_size):
        # No `_game_init`: a plain gradient method, meaningful on a loss too (GD, extragradient).
        step_size = positive("step_size", step_size)
        return Discretization(self.factory, {"learning_rate": step_size}, dt=step_size)

    def field(self, game, z):
        return game.vector_field(z)

    def drift(self, game, z):
        return optax.tree.scale(0.5 * self.drift_sign, _jvp_field(game, z, game.vector_field(z)))


class Simultaneous(AbstractGradientScheme):
    """Simultaneous GDA, `optax.sgd(h)` on the game gradient; drift $-\\frac12 Jv$."""

    name: ClassVar[str] = "simultaneous"
    factory: ClassVar = staticmethod(simultaneous_gda)
    drift_sign: ClassVar[float] = -1.0

    def step_matrix(self, jac, step_size, num_phi):
        return np.eye(len(jac)) + step_size * jac


class Alternating(AbstractScheme):
    r"""Alternating GDA (`d_first`: the discriminator steps first); drift
    $-\frac12 Jv + (0, J_{\theta\varphi}v_\varphi)$ (D first) or $-\frac12 Jv +
    (J_{\varphi\theta}v_\theta, 0)$ (G first)."""

    d_first: bool = eqx.field(
        static=True, default=True, converter=lambda x: bool(x) if isinstance(x, np.bool_) else x
    )
    name: ClassVar[str] = "alternating"

    def __check_init__(self):
        # Any truthy value would pass `if d_first` silently (e.g. "no").
        if not isinstance(self.d_first, bool):
            raise ValueError(
                "d_first must be a bool (True: the discriminator steps first), got "
                f"{self.d_first!r} (a {type(self.d_first).__name__})."
            )

    def discretize(self, step_size):
        step_size = positive("step_size", step_size)
        return Discretization(
            alternating_gda,
            {"learning_rate": step_size},
            dt=step_size,
            options=(("d_first", self.d_first),),
            init_fn=_game_init,
        )

    def field(self, game, z):
        return game.vector_field(z)

    def drift(self, game, z):
        v_phi, v_theta = game.vector_field(z)
        jv = _jvp_field(game, z, (v_phi, v_theta))
        if self.d_first:
            cross = _jvp_field(game, z, (v_phi, optax.tree.zeros_like(v_theta)))[1]
            return (optax.tree.scale(-0.5, jv[0]), optax.tree.add_scale(cross, -0.5, jv[1]))
        cross = _jvp_field(game, z, (optax.tree.zeros_like(v_phi), v_theta))[0]
        return (optax.tree.add_scale(cross, -0.5, jv[0]), optax.tree.scale(-0.5, jv[1]))

    def step_matrix(self, jac, step_size, num_phi):
        n, h = len(jac), step_size
        first = np.arange(num_phi) if self.d_first else np.arange(num_phi, n)
        m1 = np.eye(n)
        m1[first] += h * jac[first]  # the first player moves ...
        m2 = np.eye(n)
        second = np.setdiff1d(np.arange(n), first)
        m2[second] += h * jac[second]  # ... then the second sees its new parameters
        return m2 @ m1


class Consensus(AbstractScheme):
    r"""Consensus optimization with weight $\gamma \ge 0$: Euler on $w = v - \gamma J^\top v$,
    drift $-\frac12 J_w w$. On the Dirac GAN the flow's eigenvalues are $-\gamma/4 \pm i/2$.
    `gamma` is an array leaf: a new value does not recompile."""

    gamma: Array = hyperparameter("gamma", default=1.0, lower=0.0)
    name: ClassVar[str] = "consensus"

    def discretize(self, step_size):
        step_size = positive("step_size", step_size)
        return Discretization(
            consensus_optimization,
            {"learning_rate": step_size, "gamma": self.gamma},
            dt=step_size,
            init_fn=_game_init,
        )

    def field(self, game, z):
        v, pullback = jax.vjp(game.vector_field, z)
        (jtv,) = pullback(v)
        return optax.tree.add_scale(v, -self.gamma, jtv)

    def drift(self, game, z):
        w = self.field(game, z)
        return optax.tree.scale(-0.5, jax.jvp(lambda x: self.field(game, x), (z,), (w,))[1])

    def step_matrix(self, jac, step_size, num_phi):
        return np.eye(len(jac)) + step_size * (jac - float(self.gamma) * jac.T @ jac)


class Extragradient(AbstractGradientScheme):
    """Extragradient; drift $+\\frac12 Jv$ (the opposite of simultaneous GDA's)."""

    name: ClassVar[str] = "extragradient"
    factory: ClassVar = staticmethod(extragradient)
    drift_sign: ClassVar[float] = 1.0

    def step_matrix(self, jac, step_size, num_phi):
        hj = step_size * jac
        return np.eye(len(jac)) + hj + hj @ hj


class Optimistic(AbstractGradientScheme):
    """Optimistic GDA (`optax.optimistic_gradient_descent`); principal-root drift
    $+\\frac12 Jv$. Its step matrix acts on $(z_k, z_{k-1})$."""

    name: ClassVar[str] = "optimistic"
    factory: ClassVar = staticmethod(optimistic_gda)
    drift_sign: ClassVar[float] = 1.0

    def step_matrix(self, jac, step_size, num_phi):
        n, hj = len(jac), step_size * jac
        return np.block([[np.eye(n) + 2 * hj, -hj], [np.eye(n), np.zeros((n, n))]])


SCHEMES: dict[str, type[AbstractScheme]] = {
    cls.name: cls for cls in (Simultaneous, Alternating, Consensus, Extragradient, Optimistic)
}


def scheme(name: str, **kwargs) -> AbstractScheme:
    """The game scheme called `name`, with its options, e.g. `scheme("consensus", gamma=0.5)`.

    **Arguments:**

    - `name`: `"simultaneous"`, `"alternating"`, `"consensus"`, `"extragradient"` or
      `"optimistic"`.
    - `**kwargs`: the options that scheme's class takes (its fields).

    **Returns:** an `AbstractScheme` instance.

    **Raises:** `ValueError` for an unknown name or an option the scheme does not take (and as
    the scheme's constructor, for an option's value out of range).
    """
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; valid schemes: {', '.join(SCHEMES)}.")
    cls = SCHEMES[name]
    # An option of another scheme (gamma for simultaneous GDA) would be a raw TypeError.
    options = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        takes = f"takes {', '.join(options)}" if options else "takes no options"
        raise ValueError(f"scheme {name!r} {takes}; got {', '.join(unknown)}.")
    return cls(**kwargs)


def measured_growth(norms, *, ceiling: float = 1e-4) -> float:
    r"""The per-step growth factor of a run's distance to an equilibrium,
    $\exp(\text{slope})$ of a least-squares line through $\log\|z_k - z^*\|$ over the steps
    $k \ge n/10$ (past the transient) where $0 < \|z_k - z^*\| <$ `ceiling` (the linear regime).

    **Arguments:** `norms`: $\|z_k - z^*\|$, $k = 0, \dots, n$; `ceiling`: where the
    linearization stops holding.

    **Returns:** the fitted factor, to compare with `AbstractScheme.growth`; NaN when the run
    diverged (a NaN norm) before it left the linear regime, whose factor it cannot measure (a
    NaN after the norm passed `ceiling`, e.g. from an overflow, leaves the fit alone).

    **Raises:** `ValueError` for `norms` that are not 1-D or have a negative entry, a `ceiling`
    that is not finite and > 0, or with fewer than two steps in the linear regime (the run
    left it, or never entered it: lower the start or raise `ceiling`).
    """
    norms = np.asarray(norms, float)
    if norms.ndim != 1:
        raise ValueError(f"norms must be a 1-D array of distances, got shape {norms.shape}.")
    ceiling = float(positive("ceiling", ceiling))
    if np.any(norms < 0):  # (signed coordinates, not distances, were fitted on their positives)
        k = int(np.argmax(norms < 0))
        raise ValueError(
            f"norms must be distances >= 0 (NaN where a run diverged), got norms[{k}] = "
            f"{norms[k]:g}."
        )
    nan = np.isnan(norms)
    if nan.any():
        # The comparisons below drop NaN steps: a run that broke down inside the fitted regime
        # would get a finite factor from its steps before the NaN. NaN says it diverged (the
        # gan_dynamics experiment tabulates several step sizes: one NaN, not a failed run).
        k = int(np.argmax(nan))
        if not np.any(norms[:k] >= ceiling):
            return float("nan")
    ks = np.arange(norms.size)
    ok = (ks >= (norms.size - 1) // 10) & (norms < ceiling) & (norms > 1e-300)
    if np.count_nonzero(ok) < 2:
        raise ValueError(
            f"norms has {np.count_nonzero(ok)} step(s) past the first tenth with 0 < norm < "
            f"ceiling = {ceiling:g}; a growth factor needs at least two: start nearer the "
            "equilibrium, run more steps, or raise ceiling."
        )
    return float(np.exp(np.polyfit(ks[ok], np.log(norms[ok]), 1)[0]))
