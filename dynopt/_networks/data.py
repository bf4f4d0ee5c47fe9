r"""Data sets that need no download: scikit-learn's digits (shipped in its wheel) and synthetic
Gaussian data (a classification mixture and the standard-normal regression set of the central-flow
reference example)."""

import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array
from .._validation import flag, nonnegative, positive_int, seed as check_seed


def digits(
    num_samples: int | None = None, *, image: bool = False, seed: int = 0
) -> tuple[Array, Array]:
    r"""The 8×8 handwritten digits of scikit-learn (`sklearn.datasets.load_digits`: 1,797 images
    read from the installed wheel, no download), pixels scaled to $[0, 1]$ then centred and
    scaled per pixel to mean 0, standard deviation 1 (constant pixels stay 0).

    **Arguments:**

    - `num_samples`: `None` (all 1,797) or the size of a class-stratified subset: the first
      `num_samples` images after a seeded shuffle within each class, interleaved by class.
    - `image`: `False` for flat inputs of shape `(n, 64)`, `True` for `(n, 1, 8, 8)` (a CNN).
    - `seed`: the shuffle's seed, an integer in $[0, 2^{32})$ (as every data constructor's).

    **Returns:** `(x, labels)`: inputs in JAX's default float dtype (float64 with
    `jax_enable_x64`, else float32; computed in float64 first) and int32 labels in
    $\{0,\dots,9\}$.

    **Raises:** `ValueError` for a `num_samples` not in $[1, 1797]$, a `seed` that is not an
    integer in $[0, 2^{32})$ or an `image` that is not `True` or `False`.
    """
    # None would seed NumPy from fresh entropy: a different subset on every call.
    seed = check_seed("seed", seed)
    image = flag("image", image)  # a string such as "no" reshaped silently
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = np.asarray(raw.data, np.float64) / 16.0
    labels = np.asarray(raw.target, np.int32)
    mean, std = x.mean(0), x.std(0)
    x = (x - mean) / np.where(std > 0, std, 1.0)
    if num_samples is not None:
        positive_int("num_samples", num_samples)
        if num_samples > len(labels):
            raise ValueError(f"num_samples must be in [1, {len(labels)}], got {num_samples}.")
        rng = np.random.default_rng(seed)
        # Interleave the classes (one of each, then the next of each, ...): a prefix is balanced.
        per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(10)]
        order = [
            idx[i] for i in range(max(map(len, per_class))) for idx in per_class if i < len(idx)
        ]
        keep = np.asarray(order[:num_samples])
        x, labels = x[keep], labels[keep]
    if image:
        x = x.reshape(-1, 1, 8, 8)
    return jnp.asarray(x), jnp.asarray(labels)


def gaussian_classes(
    num_samples: int = 256,
    dim: int = 16,
    num_classes: int = 4,
    *,
    separation: float = 2.0,
    seed: int = 0,
) -> tuple[Array, Array]:
    r"""A Gaussian mixture: class $c$ (uniform) has inputs $x \sim \mathcal N(\mu_c, I_d)$ with
    $\mu_c \sim \mathcal N(0, (s^2/d) I_d)$, $s$ = `separation` $\ge 0$ (finite).

    **Raises:** `ValueError` for a count that is not a positive integer, a `separation` that
    is negative or not finite, or a `seed` that is not an integer in $[0, 2^{32})$.

    **Returns:** `(x, labels)`, `(n, dim)` in JAX's default float dtype (float64 with
    `jax_enable_x64`, else float32) and int32 `(n,)`.
    """
    for name, value in (("num_samples", num_samples), ("dim", dim), ("num_classes", num_classes)):
        positive_int(name, value)
    # A NaN separation would make every input NaN.
    separation = nonnegative("separation", separation)
    kc, km, kx = jax.random.split(jax.random.key(check_seed("seed", seed)), 3)
    labels = jax.random.randint(kc, (num_samples,), 0, num_classes, dtype=jnp.int32)
    means = separation * jax.random.normal(km, (num_classes, dim)) / np.sqrt(dim)
    x = means[labels] + jax.random.normal(kx, (num_samples, dim))
    return x, labels


def gaussian_regression(
    num_samples: int = 128, in_dim: int = 8, out_dim: int = 1, *, seed: int = 0
) -> tuple[Array, Array]:
    r"""Standard-normal inputs and targets, $x_i \sim \mathcal N(0, I)$, $y_i \sim \mathcal
    N(0, I)$ independently: the kind of data of the public central-flow reference code's
    example (n = 128, 8 → 1; its own draw and initial weights: `central_flows_example`).
    Fitting noise makes the network sharpen.

    **Returns:** `(x, y)`, `(n, in_dim)` and `(n, out_dim)` in JAX's default float dtype
    (float64 with `jax_enable_x64`, else float32).

    **Raises:** `ValueError` for a size that is not a positive integer or a `seed` that is not
    an integer in $[0, 2^{32})$.
    """
    for name, value in (("num_samples", num_samples), ("in_dim", in_dim), ("out_dim", out_dim)):
        positive_int(name, value)
    kx, ky = jax.random.split(jax.random.key(check_seed("seed", seed)))
    return (
        jax.random.normal(kx, (num_samples, in_dim)),
        jax.random.normal(ky, (num_samples, out_dim)),
    )
