"""A small real GAN: MLP generator and discriminator on a 2-D mixture of 8 Gaussians."""

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Key
from .._discretization import widest_dtype
from .._validation import interval, is_traced, nonnegative, one_key, positive, positive_int
from .game import Game
from .regularizers import AbstractPenalty, total_penalty


def mixture_modes(num_modes: int = 8, radius: float = 2.0) -> Array:
    r"""The mixture's mode centres on a circle,

    $$\mu_k = r\,(\cos 2\pi k/m,\ \sin 2\pi k/m),\qquad k = 0, \dots, m-1.$$

    **Arguments:**

    - `num_modes`: $m$, a positive integer (default 8).
    - `radius`: $r > 0$ (default 2).

    **Returns:** the centres, shape `(m, 2)`.

    **Raises:** `ValueError` for a `num_modes` that is not a positive integer or a `radius` that
    is not $> 0$.
    """
    num_modes, radius = positive_int("num_modes", num_modes), positive("radius", radius)
    angles = jnp.linspace(0.0, 2 * jnp.pi, num_modes, endpoint=False)
    return radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def sample_mixture(key: Key, n: int, num_modes: int = 8, radius: float = 2.0, std: float = 0.02):
    r"""Samples of the equal-weight mixture of isotropic Gaussians at the modes (`mixture_modes`):
    $x = \mu_k + \sigma\xi$, $k$ uniform on $\{0, \dots, m-1\}$, $\xi \sim \mathcal N(0, I_2)$.

    **Arguments:**

    - `key`: one JAX PRNG key.
    - `n`: the number of samples, a positive integer.
    - `num_modes`, `radius`: as `mixture_modes`.
    - `std`: $\sigma \ge 0$ (a negative one would pass as its absolute value, hence refused).

    **Returns:** the samples, shape `(n, 2)`.

    **Raises:** `ValueError` for a `key` that is not one PRNG key, an `n` or `num_modes` that is
    not a positive integer, a `radius` that is not $> 0$ or a `std` that is not $\ge 0$.
    """
    key, n, std = one_key("key", key), positive_int("n", n), nonnegative("std", std)
    k_mode, k_noise = jax.random.split(key)
    modes = mixture_modes(num_modes, radius)
    idx = jax.random.randint(k_mode, (n,), 0, num_modes)
    return modes[idx] + std * jax.random.normal(k_noise, (n, 2), modes.dtype)


def mlp_init(key: Key, sizes: tuple[int, ...], dtype=jnp.float64) -> list[dict]:
    """Weights of an MLP with layer widths `sizes` (LeCun-normal weights, zero biases)."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "w": jax.random.normal(k, (m, n), dtype) / jnp.sqrt(jnp.asarray(m, dtype)),
            "b": jnp.zeros((n,), dtype),
        }
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]


def mlp(params: list[dict], x: Array) -> Array:
    """tanh hidden layers, linear output; `x` is one sample (vmap for batches).

    Not `eqx.nn.MLP`: its layers compute `weight @ x` with `weight` of shape `(out, in)`, a
    different contraction from `x @ w` here; in float32 the outputs differ by about one ulp
    (1.8e-7 measured on this network), and the GAN's training amplifies that, so the published
    mixture metrics of `experiments/gan_dynamics.py` would move. The parameters also stay a
    plain pytree of arrays (no activation functions among the leaves) for optax."""
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def mlp_critic(phi, x):
    r"""The discriminator's logit $D_\varphi(x)$ for one sample: the `mlp` (tanh hidden layers,
    linear output) with one output unit.

    **Arguments:**

    - `phi`: the discriminator's parameters, a list of `{"w", "b"}` dicts (`mlp_init`).
    - `x`: one sample, shape `(2,)` (vmap for batches).

    **Returns:** the scalar logit.
    """
    return mlp(phi, x)[0]


class _MixtureLoss(eqx.Module):
    """Non-saturating GAN losses on one minibatch drawn from `key` (both players see the same
    real batch, latent batch and penalty randomness)."""

    player: str = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    latent_dim: int = eqx.field(static=True)
    radius: float = eqx.field(static=True)
    std: float = eqx.field(static=True)
    penalties: tuple[AbstractPenalty, ...]

    def __call__(self, phi, theta, key):
        k_real, k_latent, k_pen = jax.random.split(key, 3)
        dtype = jax.tree.leaves(theta)[0].dtype
        z = jax.random.normal(k_latent, (self.batch_size, self.latent_dim), dtype)
        x_fake = jax.vmap(mlp, in_axes=(None, 0))(theta, z)
        d_fake = jax.vmap(mlp_critic, in_axes=(None, 0))(phi, x_fake)
        if self.player == "g":
            return jnp.mean(jax.nn.softplus(-d_fake))
        x_real = sample_mixture(k_real, self.batch_size, radius=self.radius, std=self.std)
        x_real = x_real.astype(dtype)
        d_real = jax.vmap(mlp_critic, in_axes=(None, 0))(phi, x_real)
        loss = jnp.mean(jax.nn.softplus(-d_real)) + jnp.mean(jax.nn.softplus(d_fake))
        return loss + total_penalty(self.penalties, mlp_critic, phi, x_real, x_fake, k_pen)


def mixture_gan(
    key: Key,
    *,
    hidden: int = 64,
    depth: int = 2,
    latent_dim: int = 2,
    batch_size: int = 128,
    radius: float = 2.0,
    std: float = 0.02,
    penalties: tuple[AbstractPenalty, ...] = (),
    dtype=jnp.float64,
) -> Game:
    r"""A non-saturating GAN on the 8-Gaussian ring (radius `radius`, mode std `std`): MLPs
    $G_\theta: \mathbb R^{\text{latent}} \to \mathbb R^2$, $D_\varphi: \mathbb R^2 \to \mathbb R$
    with `depth` tanh layers of width `hidden`; `penalties` are added to D's loss. A stochastic
    `Game`: each step draws one minibatch of `batch_size` real and latent samples.

    **Arguments:**

    - `key`: one JAX PRNG key (the initial weights).
    - `hidden`: the hidden layers' width, a positive integer.
    - `depth`: the number of tanh hidden layers, a positive integer.
    - `latent_dim`: the generator's input size, a positive integer.
    - `batch_size`: the real and latent samples per step, a positive integer.
    - `radius`, `std`: the ring's radius and the modes' standard deviation, $> 0$.
    - `penalties`: `AbstractPenalty`s added to D's loss.
    - `dtype`: the parameters' floating dtype (default float64).

    **Returns:** a stochastic `Game` (losses of `(phi, theta, key)`).

    **Raises:** `ValueError` for a `key` that is not one PRNG key, sizes that are not positive
    integers, or a `radius` or `std` that is not > 0."""
    one_key("key", key)
    hidden, depth = positive_int("hidden", hidden), positive_int("depth", depth)
    latent_dim = positive_int("latent_dim", latent_dim)
    batch_size = positive_int("batch_size", batch_size)
    radius, std = float(positive("radius", radius)), float(positive("std", std))
    k_d, k_g = jax.random.split(key)
    phi0 = mlp_init(k_d, (2, *(hidden,) * depth, 1), dtype)
    theta0 = mlp_init(k_g, (latent_dim, *(hidden,) * depth, 2), dtype)
    common = dict(
        batch_size=batch_size,
        latent_dim=latent_dim,
        radius=radius,
        std=std,
        penalties=tuple(penalties),
    )
    return Game(
        _MixtureLoss("d", **common),
        _MixtureLoss("g", **{**common, "penalties": ()}),
        phi0,
        theta0,
        name="8-gaussians gan",
        stochastic=True,
    )


def generate(theta, key: Key, n: int, latent_dim: int | None = None) -> Array:
    """`n` samples of the generator with parameters `theta` (from `mixture_gan`).

    `latent_dim`: `None` (read off `theta`'s first layer), or the latent size, checked
    against it.

    **Arguments:**

    - `theta`: the generator's parameters (from a `mixture_gan` game).
    - `key`: one JAX PRNG key (for the latent samples).
    - `n`: the number of samples, a positive integer.
    - `latent_dim`: the latent size, or `None` (read off `theta`'s first layer).

    **Returns:** the samples, shape `(n, 2)`.

    **Raises:** `ValueError` for a `key` that is not one PRNG key, an `n` that is not a
    positive integer, a `theta` that is no `mixture_gan` generator, or a `latent_dim` other
    than its input size."""
    key, n = one_key("key", key), positive_int("n", n)
    try:
        w_in = theta[0]["w"]
    except (TypeError, KeyError, IndexError) as e:
        raise ValueError(
            "theta must be a mixture_gan generator's parameters (a list of {'w', 'b'} layers, "
            f"e.g. game.theta0), got a {type(theta).__name__}."
        ) from e
    # The latent size is the first layer's input width: a default of 2 would fail (as a raw
    # dot_general error) on a GAN built with another `latent_dim`.
    expected = jnp.shape(w_in)[0]
    if latent_dim is None:
        latent_dim = expected
    elif latent_dim != expected:
        raise ValueError(
            f"latent_dim must be the generator's input size {expected} (theta[0]['w'] has shape "
            f"{jnp.shape(w_in)}), got {latent_dim!r}; leave it None to read it from theta."
        )
    dtype = jax.tree.leaves(theta)[0].dtype
    z = jax.random.normal(key, (n, latent_dim), dtype)
    return jax.vmap(mlp, in_axes=(None, 0))(theta, z)


def mode_statistics(samples: Array, num_modes: int = 8, radius: float = 2.0, std: float = 0.02):
    r"""Mode coverage as in the unrolled-GAN benchmark: a sample is *high quality* if it lies
    within $3\sigma$ of its nearest mode; a mode is *covered* if it receives at least
    $\frac14$ of its share ($n/(4m)$) of the high-quality samples. Returns
    `(modes_covered, fraction_high_quality)`.

    **Arguments:**

    - `samples`: generated points, shape `(n, 2)`, $n \ge 1$.
    - `num_modes`: $m$, a positive integer (default 8).
    - `radius`, `std`: the ring's radius and the modes' standard deviation $\sigma$, $> 0$.

    **Raises:** `ValueError` for `samples` that are not `(n, 2)` with $n \\ge 1$ (or, given
    concretely, not finite), a `num_modes` that is not a positive integer, or a `radius` or
    `std` that is not > 0."""
    if jnp.ndim(samples) != 2 or jnp.shape(samples)[1] != 2 or jnp.shape(samples)[0] < 1:
        raise ValueError(
            f"samples must be an (n, 2) array of 2-D points with n >= 1, got shape "
            f"{jnp.shape(samples)}."
        )
    if not is_traced(samples):  # a NaN sample counted as a low-quality one, silently
        interval("samples", samples)
    num_modes = positive_int("num_modes", num_modes)
    radius, std = positive("radius", radius), positive("std", std)
    modes = mixture_modes(num_modes, radius).astype(samples.dtype)
    dist = jnp.linalg.norm(samples[:, None, :] - modes[None], axis=-1)
    nearest, d_min = jnp.argmin(dist, axis=1), jnp.min(dist, axis=1)
    good = d_min < 3 * std
    counts = jnp.sum((nearest[:, None] == jnp.arange(num_modes)[None]) & good[:, None], axis=0)
    covered = jnp.sum(4 * num_modes * counts >= samples.shape[0])
    return covered, jnp.mean(good.astype(samples.dtype))


def sliced_wasserstein(key: Key, x: Array, y: Array, num_projections: int = 128) -> Array:
    r"""Sliced 1-Wasserstein distance between two equal-size samples of points in
    $\mathbb R^d$, `(n, d)` arrays: the mean over `num_projections` random unit directions $u$
    of $W_1(u\cdot x, u\cdot y)$ (sorted differences).

    **Arguments:**

    - `key`: one JAX PRNG key (the directions).
    - `x`, `y`: the two samples, arrays of one shape `(n, d)`, $n, d \ge 1$.
    - `num_projections`: the number of random directions, a positive integer (default 128).

    **Returns:** the distance, a scalar.

    **Raises:** `ValueError` for a `key` that is not one PRNG key, `x` and `y` that are not
    `(n, d)` arrays of one shape with $n, d \ge 1$ (or, given concretely, not finite: a NaN
    point made the distance NaN), or a `num_projections` that is not a positive integer (none
    would average nothing: NaN)."""
    key = one_key("key", key)  # an int was JAX's TypeError 'invalid PRNG key data'
    num_projections = positive_int("num_projections", num_projections)
    if jnp.ndim(x) != 2 or jnp.shape(x) != jnp.shape(y) or 0 in jnp.shape(x):
        raise ValueError(
            "x and y must be (n, d) arrays of points of the same shape with n, d >= 1, got "
            f"{jnp.shape(x)}, {jnp.shape(y)}."
        )
    for name, points in (("x", x), ("y", y)):
        if not is_traced(points):  # (traced: inside the experiments' programs, no callback)
            interval(name, points)
    # In the wider of the two dtypes (a float32 generator's samples against float64 data: the
    # distance in float64, and no strict-promotion error).
    dtype = widest_dtype((jnp.asarray(x), jnp.asarray(y)))
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    u = jax.random.normal(key, (num_projections, x.shape[1]), dtype)
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    px, py = jnp.sort(x @ u.T, axis=0), jnp.sort(y @ u.T, axis=0)
    return jnp.mean(jnp.abs(px - py))
