r"""`AbstractSDE`: an Itô SDE $dY = f(t, Y)\,dt + g(t, Y)\,dW$ on a flat state vector.

**The constant convention (used everywhere in `dynopt.sde`).** The overdamped SDE
$d\theta = -\nabla L(\theta)\,dt + \sigma\,dW$ has the stationary (Gibbs) law
$$p_\infty(\theta) \propto \exp\!\big(-2L(\theta)/\sigma^2\big) = \exp\!\big(-L(\theta)/T\big),
\qquad T = \sigma^2/2 .$$
Post 1's eq. (9), $\exp(-L/\sigma^2)$, drops the 2. `Langevin(potential, temperature=T)` is
parametrised by $T$, i.e. its diffusion is $\sigma = \sqrt{2T}$; `temperature_of(sigma)` converts.
For SGD with learning rate $\eta$, batch $B$ and per-sample gradient variance $\sigma^2$ the
diffusion is $\eta\sigma^2/B$, so $T = \eta\sigma^2/(2B)$.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx

from .._custom_types import Array, Float, Params, ScalarLike


class AbstractSDE(eqx.Module):
    r"""An Itô SDE $dY = f(t, Y)\,dt + g(t, Y)\,dW$ whose state $Y$ is a flat vector of length
    $n$, driven by an $m$-dimensional Brownian motion $W$.

    Subclasses are final `eqx.Module`s implementing:

    - `init(x0) -> y0`: the state vector for initial parameters `x0` (any pytree).
    - `drift(t, y, args) -> f`: shape $(n,)$.
    - `diffusion(t, y, args) -> g`: an $n\times m$ matrix or a `lineax` operator.
    - `noise_dim(y0) -> m`.
    - `params(y) -> params`: the parameter part of a state (unravelled to the pytree of `x0`).
    - `additive` (class variable): `True` when $g$ does not depend on $Y$. Then Itô and
      Stratonovich agree and `simulate` defaults to `diffrax.ShARK` (weak order 2); otherwise
      to Euler–Maruyama (`diffrax.Euler`, Itô, weak order 1).

    `log_stationary_density(y)` returns the unnormalised log-density of the stationary law when it
    is known in closed form.
    """

    additive: ClassVar[bool]

    @abc.abstractmethod
    def init(self, x0: Params) -> Float[Array, " n"]:
        raise NotImplementedError

    @abc.abstractmethod
    def drift(self, t: ScalarLike, y: Float[Array, " n"], args) -> Float[Array, " n"]:
        raise NotImplementedError

    @abc.abstractmethod
    def diffusion(
        self, t: ScalarLike, y: Float[Array, " n"], args
    ) -> Float[Array, "n m"] | lx.AbstractLinearOperator:
        raise NotImplementedError

    @abc.abstractmethod
    def noise_dim(self, y0: Float[Array, " n"]) -> int:
        raise NotImplementedError

    @abc.abstractmethod
    def params(self, y: Float[Array, " n"]) -> Params:
        raise NotImplementedError

    def log_stationary_density(self, y: Float[Array, " n"]) -> Float[Array, ""]:
        raise NotImplementedError(f"{type(self).__name__} has no closed-form stationary law.")

    def check(self, y0: Float[Array, " n"]) -> None:
        """Trace-time checks on a concrete initial state (raise `ValueError`)."""
        del y0


def temperature_of(sigma: ScalarLike) -> Array:
    r"""$T = \sigma^2/2$: the temperature whose Gibbs law $\exp(-L/T)$ is the stationary law of
    $d\theta = -\nabla L\,dt + \sigma\,dW$ (the factor 2 that post 1's eq. (9) drops)."""
    sigma = jnp.asarray(sigma)
    return 0.5 * sigma * sigma


def check_scalar_potential(name: str, potential, x) -> None:
    """`ValueError` unless `potential(x)` is a real scalar."""
    if not callable(potential):
        raise ValueError(f"{name} must be callable x -> scalar, got {type(potential).__name__}.")
    out = jax.eval_shape(potential, x)
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()):
        shape = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise ValueError(
            f"{name} must return a scalar, got shape {shape}; reduce it, e.g. with jnp.sum."
        )
