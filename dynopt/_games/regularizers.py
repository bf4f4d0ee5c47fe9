r"""Discriminator regularizers as composable pieces: each is a penalty
$R(\varphi) \ge 0$ added to D's loss, `penalty(critic, phi, x_real, x_fake, key) -> scalar`,
with `critic(phi, x) -> scalar` for one sample $x$ and sample batches `x_real`, `x_fake`.

They change the trajectory (unlike the weight averages of `dynopt.games.weight_averages`,
tracked beside the run). On the Dirac GAN ($D(x) = \varphi\cdot x$, so $\nabla_x D = \varphi$):
`GradientPenalty(λ, c)` is $\lambda(\|\varphi\| - c)^2$ (post 4, eq. 15), `R1(γ)` and
`WeightDecay(γ)` are both $\frac\gamma2\|\varphi\|^2$, adding $-\gamma\varphi$ to $\dot\varphi$.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._custom_types import Array
from .._validation import hyperparameter, nonnegative


def _input_gradients(critic, phi, xs):
    return jax.vmap(jax.grad(critic, argnums=1), in_axes=(None, 0))(phi, xs)


class AbstractPenalty(eqx.Module):
    """A discriminator penalty $R(\\varphi; x_{real}, x_{fake})$ with a non-negative weight
    (an array leaf, validated on construction: a new weight does not recompile)."""

    weight: eqx.AbstractVar[Array]
    name: ClassVar[str]

    @abc.abstractmethod
    def __call__(self, critic, phi, x_real, x_fake, key=None):
        raise NotImplementedError


def _one_number(center):
    """`center`, a static field, as one Python number: an array failed on its ambiguous truth
    value (and was set as a static field, which equinox warns of)."""
    if np.ndim(center) != 0:
        raise ValueError(
            "GradientPenalty center must be one real number >= 0 and finite, got shape "
            f"{np.shape(center)}."
        )
    is_number = isinstance(center, int | float | np.number | np.ndarray | jax.Array)
    return float(center) if is_number and not isinstance(center, bool) else center


class GradientPenalty(AbstractPenalty):
    r"""$\lambda\,\mathbb E_{x\sim r}\big(\|\nabla_x D_\varphi(x)\| - c\big)^2$: one-centred
    ($c = 1$, WGAN-GP, Gulrajani et al.) or zero-centred ($c = 0$, WGAN-div / Mescheder et al.;
    then $\lambda\,\mathbb E\|\nabla_x D\|^2$ without a square root).

    **Arguments:** `weight` $\lambda \ge 0$; `center` $c \in \{0, 1\}$ (any $c \ge 0$);
    `points`: where $r$ samples: `"interpolates"` ($\epsilon x_{real} + (1-\epsilon)x_{fake}$,
    $\epsilon \sim U(0,1)$ from `key`, or $\frac12$ without a key), `"real"` or `"fake"`.
    """

    weight: Array = hyperparameter("weight", lower=0.0)
    center: float = eqx.field(static=True, default=0.0, converter=_one_number)
    points: str = eqx.field(static=True, default="interpolates")
    name: ClassVar[str] = "gp"

    def __check_init__(self):
        # A string failed with a raw TypeError, and c = inf made every penalty inf.
        nonnegative("GradientPenalty center", self.center)
        if self.points not in ("interpolates", "real", "fake"):
            raise ValueError(
                f"GradientPenalty points must be 'interpolates', 'real' or 'fake', got "
                f"{self.points!r}."
            )

    def __call__(self, critic, phi, x_real, x_fake, key=None):
        if self.points == "real":
            xs = x_real
        elif self.points == "fake":
            xs = x_fake
        else:
            if key is None:
                eps = jnp.full((x_real.shape[0], 1), 0.5, x_real.dtype)
            else:
                eps = jax.random.uniform(key, (x_real.shape[0], 1), x_real.dtype)
            xs = eps * x_real + (1 - eps) * x_fake
        sq = jnp.sum(_input_gradients(critic, phi, xs) ** 2, axis=-1)
        weight = self.weight.astype(sq.dtype)
        if self.center == 0:
            return weight * jnp.mean(sq)
        return weight * jnp.mean((jnp.sqrt(sq) - self.center) ** 2)


class R1(AbstractPenalty):
    r"""R1 (Mescheder et al. 2018): $\frac\gamma2\mathbb E_{x\sim p_{data}}\|\nabla_x
    D_\varphi(x)\|^2$, the zero-centred penalty on real data. Dirac GAN: adds $-\gamma\varphi$
    to $\dot\varphi$ (their `GAN_GradPenalty`)."""

    weight: Array = hyperparameter("weight", lower=0.0)
    name: ClassVar[str] = "r1"

    def __call__(self, critic, phi, x_real, x_fake, key=None):
        del x_fake, key
        sq = jnp.sum(_input_gradients(critic, phi, x_real) ** 2, -1)
        return 0.5 * self.weight.astype(sq.dtype) * jnp.mean(sq)


class WeightDecay(AbstractPenalty):
    r"""L2 on the discriminator's weights, $\frac\gamma2\|\varphi\|^2$ (post 4's cheap
    alternative to a gradient penalty): adds $-\gamma\varphi$ to $\dot\varphi$."""

    weight: Array = hyperparameter("weight", lower=0.0)
    name: ClassVar[str] = "l2"

    def __call__(self, critic, phi, x_real, x_fake, key=None):
        del critic, x_real, x_fake, key
        sq = optax.tree.norm(phi, squared=True)
        return 0.5 * self.weight.astype(sq.dtype) * sq


def total_penalty(penalties, critic, phi, x_real, x_fake, key=None):
    r"""The sum of the discriminator penalties, $\sum_i R_i(\varphi; x_{real}, x_{fake})$, each with
    its own key `fold_in(key, i)`.

    **Arguments:**

    - `penalties`: a sequence of `AbstractPenalty` (empty: 0).
    - `critic`: the discriminator `(phi, x) -> scalar` for one sample.
    - `phi`: the discriminator's parameters.
    - `x_real`, `x_fake`: the real and generated samples the penalties are evaluated on.
    - `key`: a PRNG key for the penalties' randomness, or `None`.

    **Returns:** a scalar in the widest dtype of `phi`'s leaves.
    """
    total = jnp.zeros((), jnp.result_type(*jax.tree.leaves(phi)))
    for i, pen in enumerate(penalties):
        k = None if key is None else jax.random.fold_in(key, i)
        total = total + pen(critic, phi, x_real, x_fake, k)
    return total
