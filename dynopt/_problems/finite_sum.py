r"""Finite sums $L(\theta) = \frac1n \sum_i \ell(\theta; x_i) + R(\theta)$, with minibatches."""

import functools as ft
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._custom_types import Array, Int, Key, Params, Scalar
from .._discretization import widest_dtype
from .._problem import check_loss_output, Problem
from .._sharding import data_mesh, shard_data
from .._validation import flag, function, nonnegative, positive_int, seed as check_seed


def data_like_params(data: Params, params: Params) -> Params:
    """`data` with its floating leaves narrower than the parameters' widest float widened to
    it (others as they are): the per-sample loss sees one precision where dynopt evaluates a
    float32 data set at float64 parameters (`solve`'s float64 copies of the state), as JAX's
    standard promotion would compute it, and without a strict-promotion error. Integer leaves
    (labels) and data at least as wide as the parameters are left alone (no new operation)."""
    widest = widest_dtype(params)

    def widen(x):
        floating = jnp.issubdtype(x.dtype, jnp.floating)
        narrower = floating and x.dtype != widest and widest_dtype((x, widest)) == widest
        return x.astype(widest) if narrower else x

    return jax.tree.map(widen, data)


def _batch_loss(params: Params, data: Params, sample_loss_fn, regularizer) -> Scalar:
    data = data_like_params(data, params)
    per_sample = jax.vmap(sample_loss_fn, in_axes=(None, 0))(params, data)
    # No regularizer adds nothing (a zero in some leaf's dtype would mix dtypes with a loss in
    # another: float32 biases beside float64 weights, under strict promotion).
    mean = jnp.mean(per_sample)
    return mean if regularizer is None else mean + regularizer(params)


def _floyd(key: Key, n: int, batch_size: int) -> Int[Array, " batch"]:
    r"""Floyd's algorithm: a uniformly random `batch_size`-subset of `range(n)` in
    $O(B^2)$ work, independent of $n$. For $j = n-B, \dots, n-1$ draw $t \sim U\{0..j\}$ and
    take $t$, or $j$ if $t$ is already taken: every subset comes out with probability
    $1/\binom nB$ (induction on $j$)."""
    offset = n - batch_size
    draws = jax.random.randint(key, (batch_size,), 0, jnp.arange(offset, n) + 1)

    def take(i, idx):
        t = draws[i]
        return idx.at[i].set(jnp.where(jnp.any(idx == t), offset + i, t))

    return jax.lax.fori_loop(0, batch_size, take, jnp.full((batch_size,), -1, draws.dtype))


# Floyd's B sequential membership tests cost ~B^2 compares (a few ns each on a CPU); a
# permutation of n sorts n keys (~0.4-2 us each on a CPU, measured at n = 256 ... 65536). The
# permutation is cheaper only when B is close to n: B^2 > 100 n.
_FLOYD_MAX_RATIO = 100


def sample_indices(key: Key, n: int, batch_size: int, *, replace: bool = False) -> Array:
    r"""`batch_size` sample indices out of `range(n)`: a uniformly random subset without
    replacement (default; Floyd's algorithm, $O(B^2)$ and independent of $n$, or a permutation
    of all $n$ when $B^2 > 100n$, whichever is cheaper; at $B = n$ the subset is the whole set,
    `arange(n)`, no draw), or i.i.d. uniform draws with replacement. A minibatch mean of
    per-sample gradients $g_i$ then has covariance $c\,\Sigma/B$ with $c = (n-B)/(n-1)$
    without replacement and $c = 1$ with (`sde.SGDNoise.finite_population_factor`).
    """
    if flag("replace", replace):
        return jax.random.randint(key, (batch_size,), 0, n)
    if batch_size == n:  # every sample once: the mean is the same in any order
        return jnp.arange(n)
    if batch_size * batch_size <= _FLOYD_MAX_RATIO * n:
        return _floyd(key, n, batch_size)
    return jax.random.choice(key, n, (batch_size,), replace=False)


def _minibatch_loss(
    params: Params,
    key: Key,
    data: Params,
    sample_loss_fn,
    regularizer,
    batch_size: int,
    replace: bool = False,
) -> Scalar:
    n = jax.tree.leaves(data)[0].shape[0]
    if batch_size == n and not replace:
        # The whole set, in its own order: the full-batch loss itself (no draw, no gather; a
        # permutation of all n rows would cost O(n log n) per step for the same mean).
        return _batch_loss(params, data, sample_loss_fn, regularizer)
    # Without replacement the minibatch gradient is unbiased with covariance
    # (1/B)(n-B)/(n-1) Sigma, the finite-population correction of the per-sample covariance Sigma.
    idx = sample_indices(key, n, batch_size, replace=replace)
    # (`jnp.asarray`: NumPy data, e.g. a user's own `finite_sum`, indexed by a traced `idx`.)
    batch = jax.tree.map(lambda x: jnp.asarray(x)[idx], data)
    return _batch_loss(params, batch, sample_loss_fn, regularizer)


def _l2(params: Params, strength: Array) -> Scalar:
    return 0.5 * strength * optax.tree.norm(params, squared=True)


def _seed(seed: int) -> int:
    """`seed` as an `int` in $[0, 2^{32})$, the one rule of dynopt's data constructors
    (`_validation.seed`: what NumPy and JAX both take); else `ValueError`."""
    return check_seed("seed", seed)


def _sizes(num_samples: int, dim: int, seed: int) -> tuple[int, int, int]:
    """`(num_samples, dim, seed)` validated, for `_gaussian_design`."""
    return positive_int("num_samples", num_samples), positive_int("dim", dim), _seed(seed)


def _gaussian_design(num_samples: int, dim: int, seed) -> tuple[Array, Key, Key]:
    r"""Inputs $x_i \sim \mathcal N(0, I_d)$ and two keys for the rest (traced inside
    `_logistic_data`'s one program: eagerly, each draw and operation compiles one of its own;
    `linear_regression` runs it eagerly, its data bit for bit as before: the same operations in
    one program round $y$ and the least-squares solution differently)."""
    kx, k1, k2 = jax.random.split(jax.random.key(seed), 3)
    return jax.random.normal(kx, (num_samples, dim)), k1, k2


def _zeros(n: int) -> Array:
    """`jnp.zeros(n)`, built on the host and transferred: no compiled program of its own."""
    return jax.device_put(np.zeros(n, jnp.result_type(float)))


def _process_rows(data: Params, shard: bool, num_samples: int) -> Params:
    """The synthetic `data` as is, or (`shard=True`) split over `data_mesh()`: each process
    generates the whole set (it is synthetic) and passes only its block of rows to
    `shard_data(..., local=True)`, as a host with its own part of a real data set would;
    `num_samples` must be a multiple of the device count."""
    if not flag("shard", shard):
        return data
    mesh = data_mesh()
    if num_samples % mesh.size:
        raise ValueError(
            f"num_samples must be a multiple of the {mesh.size} devices when shard=True, got "
            f"{num_samples}."
        )
    rows = num_samples // jax.process_count()
    start = jax.process_index() * rows
    return shard_data(jax.tree.map(lambda x: x[start : start + rows], data), mesh, local=True)


def finite_sum(
    sample_loss_fn: Callable[[Params, Params], Scalar],
    data: Params,
    params0: Params,
    *,
    batch_size: int,
    replace: bool = False,
    regularizer: Callable[[Params], Scalar] | None = None,
    minimizer: Params | None = None,
    name: str = "finite_sum",
) -> Problem:
    r"""A finite-sum problem $L(\theta) = \frac1n\sum_{i=1}^n \ell(\theta; x_i) + R(\theta)$.

    `stochastic_loss(params, key)` averages $\ell$ over `batch_size` samples drawn without
    replacement (default) or with (`replace=True`), plus the full regularizer $R$. A draw costs
    $O(B^2)$ whatever $n$ (`sample_indices`); $B = n$ without replacement is the whole set, the
    full loss itself (no draw). A minibatch step of SGD is then $O(B)$, but `run` also
    evaluates the full loss, $O(n)$, at every saved point: with its default `every=1` each step
    costs $O(n)$ (see `run`'s `every`); a large `every` keeps SGD at the minibatch's cost.

    **Arguments:**

    - `sample_loss_fn`: $\ell$, `(params, sample) -> scalar`, where `sample` is one slice of `data`
      (a scalar: a vector output is a `ValueError`, not averaged over its entries).
    - `data`: a pytree of arrays (JAX or NumPy) sharing a leading sample axis of length
      $n \ge 1$ (convert lists with `jnp.asarray`).
    - `batch_size`: $B$, an integer with $1 \le B \le n$ ($B \ge 1$ with `replace=True`).
    - `replace`: `True` to sample the minibatch with replacement (i.i.d. indices) instead of
      without (`False`); nothing else (a NumPy bool is taken).
    - `regularizer`: $R$, `params -> scalar`, added to the full and the minibatch loss alike, or
      `None` ($R = 0$).
    - `params0`, `minimizer`, `name`: as in `Problem`.

    **Raises:** `ValueError` for a `sample_loss_fn` or `regularizer` that is not a function or
    does not return a scalar, `data` without a shared leading sample axis, or a `batch_size`
    outside the range above.

    **Data-parallel:** `data` may be global arrays split over devices and processes
    (`shard_data`; with `local=True` each process feeds only its rows). The full-batch loss
    then runs each device on its rows plus an all-reduce of the partial sums (equal to one
    device's to summation-order rounding); a minibatch draws global indices (the same `key`
    gives every process the same subset) and each device gathers the ones it holds, joined by
    an all-reduce of the $B$ rows: $O(B)$ traffic per step, whatever $n$, after which every
    device evaluates the minibatch loss whole (the same numbers as one device).
    """
    function("sample_loss_fn", sample_loss_fn, "a function (params, sample) -> scalar")
    function("regularizer", regularizer, "None or a function params -> scalar", allow_none=True)
    leaves = jax.tree_util.tree_flatten_with_path(data)[0]
    if not leaves:
        raise ValueError("data must be a pytree of arrays, got one with no arrays in it.")
    for path, x in leaves:
        if not (isinstance(x, jax.Array | np.ndarray) and x.ndim >= 1):
            what = f"shape {x.shape}" if isinstance(x, jax.Array | np.ndarray) else type(x).__name__
            raise ValueError(
                f"data must be a pytree of arrays with a leading sample axis (ndim >= 1), got "
                f"data{jax.tree_util.keystr(path)} of {what}. Convert lists with jnp.asarray; "
                "a constant shared by all samples belongs in sample_loss_fn (e.g. eqx.Partial)."
            )
    sizes = {x.shape[0] for _, x in leaves}
    if len(sizes) != 1:
        raise ValueError(f"every data array must share the leading sample axis; got sizes {sizes}.")
    (n,) = sizes
    if n < 1:
        raise ValueError("data must hold at least one sample (its leading axis is empty).")
    # One sample's loss must be a scalar: the mean over the batch would silently average the
    # entries of a vector too.
    sample = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), data)

    # The sample widened as the built loss widens it (`_batch_loss`): a float32 data set at
    # float64 parameters is valid under strict promotion too.
    def widened(params, sample):
        return sample_loss_fn(params, data_like_params(sample, params))

    try:
        out = jax.eval_shape(widened, params0, sample)
    except TypeError as e:  # (e.g. a loss of (params, x, y): one sample is one argument)
        raise ValueError(
            f"sample_loss_fn must be a function (params, sample) -> scalar, where sample is one "
            f"slice of data (its whole pytree); calling it on one sample raised: {e}"
        ) from e
    check_loss_output("sample_loss_fn", out)
    # A Python int: it sizes the minibatch's arrays (a NumPy or JAX integer would become a
    # traced leaf of the stochastic loss).
    batch_size = positive_int("batch_size", batch_size)
    replace = flag("replace", replace)
    # With replacement any B draws i.i.d. indices; without, a subset holds at most n samples.
    if not replace and batch_size > n:
        raise ValueError(
            f"batch_size must be in [1, {n}] (the number of samples) without replacement, got "
            f"{batch_size}; replace=True draws any number of samples with replacement."
        )
    if regularizer is not None:
        check_loss_output("regularizer", jax.eval_shape(regularizer, params0))
    loss_fn = eqx.Partial(
        _batch_loss, data=data, sample_loss_fn=sample_loss_fn, regularizer=regularizer
    )
    # The minibatch loss is the full-batch loss on a drawn subset: the same keywords plus the
    # draw's (as `SGDNoise.sgd_problem` rebuilds it with another batch size).
    stochastic = eqx.Partial(
        _minibatch_loss, **loss_fn.keywords, batch_size=batch_size, replace=replace
    )
    return Problem(
        loss_fn=loss_fn,
        params0=params0,
        name=name,
        minimizer=minimizer,
        stochastic_loss_fn=stochastic,
        data=data,
        sample_loss_fn=sample_loss_fn,
        batch_size=batch_size,
    )


def _squared_error(w: Array, sample: tuple[Array, Array]) -> Scalar:
    x, y = sample
    return 0.5 * (x @ w - y) ** 2


def linear_regression(
    num_samples: int = 256,
    dim: int = 10,
    *,
    batch_size: int = 32,
    noise: float = 0.1,
    seed: int = 0,
    shard: bool = False,
) -> Problem:
    r"""Least squares on synthetic data:

    $$L(w) = \frac{1}{2n}\sum_i (x_i^\top w - y_i)^2,$$

    $x_i \sim \mathcal N(0, I_d)$, $y_i = x_i^\top w_\star + \text{noise}\cdot\xi_i$ with
    $w_\star, \xi_i$ standard normal; start $w_0 = 0$. The minimizer is the least-squares
    solution $(X^\top X)^{-1}X^\top y$ (exact, `problem.minimizer`).

    **Arguments:**

    - `num_samples`: $n$, a positive integer.
    - `dim`: $d$, a positive integer.
    - `noise`: the label noise's standard deviation, $\ge 0$.
    - `batch_size`: the minibatch size of the stochastic loss, an integer in $[1, n]$ (drawn
      without replacement).
    - `seed`: the data's PRNG seed, an integer in $[0, 2^{32})$.
    - `shard`: if true, split the samples over all devices of all processes (`_process_rows`;
      $n$ must be a multiple of the device count).

    **Returns:** a finite-sum `Problem` (see `finite_sum`): full-batch `loss`, minibatch
    `stochastic_loss_fn`, the data in `problem.data`.

    **Raises:** `ValueError` for an argument out of its range.
    """
    noise = nonnegative("noise", noise)
    x, kw, kn = _gaussian_design(*_sizes(num_samples, dim, seed))
    w_true = jax.random.normal(kw, (dim,))
    y = x @ w_true + noise * jax.random.normal(kn, (num_samples,))
    w_ls = jnp.linalg.lstsq(x, y)[0]
    return finite_sum(
        _squared_error,
        _process_rows((x, y), shard, num_samples),
        _zeros(dim),
        batch_size=batch_size,
        minimizer=w_ls,
        name=f"linear_regression(n={num_samples}, d={dim})",
    )


def _logistic(w: Array, sample: tuple[Array, Array]) -> Scalar:
    x, y = sample  # y in {-1, +1}
    return jnp.logaddexp(0.0, -y * (x @ w))


def logistic_regression(
    num_samples: int = 256,
    dim: int = 10,
    *,
    batch_size: int = 32,
    l2: float = 1e-2,
    seed: int = 0,
    shard: bool = False,
) -> Problem:
    r"""$L_2$-regularized logistic regression on synthetic data:

    $$L(w) = \frac1n\sum_i \log(1 + e^{-y_i x_i^\top w}) + \frac{\lambda}{2}\|w\|^2.$$

    $x_i \sim \mathcal N(0, I_d)$, labels $y_i = \pm1$ drawn from the logistic model with a
    random $w_\star$ (so the data are not separable); start $w_0 = 0$. With $\lambda > 0$ the
    loss is strongly convex; its minimizer is not known in closed form (`minimizer=None`).

    **Arguments:**

    - `num_samples`: $n$, a positive integer.
    - `dim`: $d$, a positive integer.
    - `l2`: $\lambda \ge 0$.
    - `batch_size`, `seed`, `shard`: as `linear_regression`.

    **Returns:** a finite-sum `Problem`, as `linear_regression`.

    **Raises:** `ValueError` for an argument out of its range.
    """
    l2 = nonnegative("l2", l2)
    num_samples, dim, seed = _sizes(num_samples, dim, seed)
    x, y = _logistic_data(seed, num_samples, dim)
    return finite_sum(
        _logistic,
        _process_rows((x, y), shard, num_samples),
        _zeros(dim),
        batch_size=batch_size,
        regularizer=eqx.Partial(_l2, strength=jnp.asarray(l2)),
        name=f"logistic_regression(n={num_samples}, d={dim})",
    )


@ft.partial(jax.jit, static_argnums=(1, 2))
def _logistic_data(seed, num_samples: int, dim: int) -> tuple[Array, Array]:
    """`logistic_regression`'s data: one program."""
    x, kw, ky = _gaussian_design(num_samples, dim, seed)
    w_true = 2.0 * jax.random.normal(kw, (dim,)) / jnp.sqrt(dim)
    p = jax.nn.sigmoid(x @ w_true)
    return x, jnp.where(jax.random.uniform(ky, (num_samples,)) < p, 1.0, -1.0)


def _mlp_apply(params: Params, x: Array) -> Array:
    h = x
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    last = params[-1]
    return (h @ last["w"] + last["b"])[0]


def _mlp_sample_loss(params: Params, sample: tuple[Array, Array]) -> Scalar:
    x, y = sample
    return 0.5 * (_mlp_apply(params, x) - y) ** 2


def mlp_regression(
    num_samples: int = 256,
    dim: int = 4,
    *,
    width: int = 32,
    depth: int = 2,
    batch_size: int = 32,
    seed: int = 0,
    shard: bool = False,
) -> Problem:
    r"""Half the mean squared error of a tanh MLP $f_\theta$ on a synthetic target:

    $$L(\theta) = \frac{1}{2n}\sum_i (f_\theta(x_i) - y_i)^2,\qquad
    y = \sin(x^\top a) + \tfrac12\cos(x^\top b),$$

    $x_i \sim \mathcal N(0, I_d)$, $a, b \sim \mathcal N(0, I_d/d)$. The parameters are a list
    of `{"w", "b"}` dicts (weights $\mathcal N(0, 1/\text{fan-in})$, zero biases), a non-trivial
    pytree; no known minimizer.

    **Arguments:**

    - `num_samples`: $n$, a positive integer.
    - `dim`: $d$, a positive integer.
    - `width`: the hidden layers' width, a positive integer.
    - `depth`: the number of hidden layers, a positive integer.
    - `batch_size`, `seed`, `shard`: as `linear_regression`.

    **Returns:** a finite-sum `Problem`, as `linear_regression`.

    **Raises:** `ValueError` for an argument out of its range.
    """
    sizes = {"num_samples": num_samples, "dim": dim, "width": width, "depth": depth}
    for arg, value in sizes.items():
        positive_int(arg, value)
    keys = jax.random.split(jax.random.key(_seed(seed)), depth + 4)
    x = jax.random.normal(keys[0], (num_samples, dim))
    a = jax.random.normal(keys[1], (dim,)) / jnp.sqrt(dim)
    b = jax.random.normal(keys[2], (dim,)) / jnp.sqrt(dim)
    y = jnp.sin(x @ a) + 0.5 * jnp.cos(x @ b)
    sizes = [dim] + [width] * depth + [1]
    params0 = [
        {
            "w": jax.random.normal(k, (m, n)) / jnp.sqrt(m),
            "b": jnp.zeros(n),
        }
        for k, m, n in zip(keys[3:], sizes[:-1], sizes[1:])
    ]
    return finite_sum(
        _mlp_sample_loss,
        _process_rows((x, y), shard, num_samples),
        params0,
        batch_size=batch_size,
        name=f"mlp_regression(n={num_samples}, d={dim}, width={width}, depth={depth})",
    )
