r"""Sharpness: the top-$k$ eigenpairs of the Hessian $H = \nabla^2 L(\theta)$, or of the
preconditioned Hessian $D^{-1/2} H D^{-1/2}$ (diagonal $D \succ 0$, an adaptive optimizer's
preconditioner), from Hessian-vector products only, by `jax.experimental.sparse.linalg.
lobpcg_standard` (or `matfree`'s Lanczos decomposition, the cheaper warm tracker); and
`track_sharpness`, a wrapper of an optax transform or a `Discretization` (a sweep over learning
rates: one compiled run) that carries them, warm-started, through a `run` (recorded at saved
points by the observer `sharpness`)."""

import numbers
import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import matfree.decomp
import matfree.eig
import optax
from jax.experimental.sparse.linalg import lobpcg_standard
from jax.flatten_util import ravel_pytree

from ._batching import lane_by_lane, map_batch
from ._custom_types import Array, Float, Int, Key, Params, PyTree, Scalar
from ._discretization import Discretization, widest_dtype
from ._transforms.adaptive import ScaleByGlobalRmsState
from ._validation import (
    choice,
    decay as _decay,
    flag,
    function,
    host_validated,
    interval,
    is_traced,
    nonnegative,
    one_key,
    positive_int,
    seed as _seed,
)


Method = Literal["lobpcg", "lanczos"]
METHODS: tuple[str, ...] = ("lobpcg", "lanczos")


class Eigenpairs(NamedTuple):
    """Top-$k$ eigenpairs, largest first: `values` $(k,)$, `vectors` $(n, k)$ orthonormal
    columns in `ravel_pytree` order of the parameters, `iterations` used by LOBPCG (0 on the
    dense route; the Krylov depth for `method="lanczos"`, LOBPCG's count where it took over)."""

    values: Float[Array, " k"]
    vectors: Float[Array, "n k"]
    iterations: Int[Array, ""]


def ravel(tree: PyTree):
    """`ravel_pytree` as under standard promotion: a tree of mixed float dtypes (float32 biases
    beside float64 weights) ravels to its widest dtype and unravels to each leaf's own; under
    strict promotion JAX's `ravel_pytree` has no promotion path for it (a
    `TypePromotionError` from every eigen-solve and `dense_hessian`)."""
    with jax.numpy_dtype_promotion("standard"):
        return ravel_pytree(tree)


def check_params(params: Params, *, finite: bool = True) -> None:
    """`ValueError` unless `params` is a non-empty pytree of real numbers, with `finite`
    finite where concrete (a NaN point gave NaN eigenpairs or a NaN Hessian without a word, a
    string JAX's `TypeError`); traced leaves (a tracker inside `run`) pass unchecked: no
    callback. `finite=False` for `top_eigenpairs`, whose `checked` decides what a NaN point
    does (an error inside the program, or NaN out)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise ValueError("params must be a non-empty pytree of real arrays, got no leaves.")
    for path, leaf in leaves:
        name = f"params{jax.tree_util.keystr(path)}"
        if is_traced(leaf):
            continue
        if finite:
            interval(name, leaf)
            continue
        try:
            dtype = jnp.result_type(leaf)
        except TypeError:  # a string, None, a ragged list
            dtype = None
        if dtype is None or not (
            jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
        ):
            raise ValueError(f"{name} must be an array of real numbers, got {leaf!r:.60}.")


def check_start_shape(start: Array, n: int) -> None:
    """`ValueError` unless `start` is an $(n, k)$ block with $1 \\le k \\le n$."""
    if jnp.ndim(start) != 2 or start.shape[0] != n or not 1 <= start.shape[1] <= n:
        raise ValueError(
            f"start must be an (n, k) block with n = {n} (the number of parameters) and "
            f"1 <= k <= n, got shape {jnp.shape(start)}."
        )


def check_k(k: int, num_params: int) -> int:
    """`k` must satisfy $1 \\le k \\le n$ (`top_eigenpairs`: LOBPCG for $5k < n$, a dense
    `eigh` below)."""
    positive_int("k", k)
    if k > num_params:
        raise ValueError(f"k must be in [1, {num_params}] (the number of parameters), got k={k}.")
    return k


def lobpcg_fits(k: int, num_params: int) -> bool:
    """Whether `lobpcg_standard` takes a block of `k` columns in dimension `num_params`: its
    search space of $3k$ vectors needs $5k < n$. Smaller models take the dense route."""
    return 5 * k < num_params


def block_operator(column: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """`V -> [column(v) for v in V's columns]` for a block $V$ of shape $(n, m)$
    (`map_batch`: one column after another on a CPU)."""
    return lambda block: map_batch(column, block.T).T


def check_callable(name: str, fn) -> None:
    """`ValueError` unless `fn` is callable (`top_eigenpairs(3, ...)` was Python's `TypeError`
    "'int' object is not callable" from inside the linearization)."""
    function(name, fn, f"a function params -> {_RETURNS[name]}")


_RETURNS = {"grad_fn": "gradient (e.g. problem.grad)", "loss_fn": "scalar loss"}


def check_diag(diag: Params | None, params: Params) -> None:
    """`ValueError` unless `diag` is `None`, a scalar or a pytree like `params`, with (given
    concretely) positive, finite entries."""
    if diag is None:
        return
    scalar = jax.tree.structure(diag).num_nodes == 1 and jnp.ndim(diag) == 0  # D = d I
    like = jax.tree.structure(diag) == jax.tree.structure(params) and all(
        jnp.shape(d) == jnp.shape(x) for d, x in zip(jax.tree.leaves(diag), jax.tree.leaves(params))
    )
    if not (scalar or like):
        raise ValueError(
            "diag must be a pytree like params (the same structure and leaf shapes) or a "
            "scalar: the diagonal preconditioner D; got structure "
            f"{jax.tree.structure(diag)} for params' {jax.tree.structure(params)}."
        )
    if not is_traced(diag):
        with jax.ensure_compile_time_eval():  # concrete, also when called under a jit
            d = ravel(diag)[0]
            ok = bool(jnp.all(jnp.isfinite(d) & (d > 0)))
        if not ok:
            raise ValueError(
                "diag (the preconditioner D of D^-1/2 H D^-1/2) must have positive, finite "
                f"entries; its smallest is {float(jnp.min(d)):.3g}."
            )


def hvp_operator(grad_fn: Callable[[Params], Params], params: Params, diag: Params | None = None):
    r"""`V -> A V` for a block $V$ of shape $(n, m)$: $A = H$ or $D^{-1/2} H D^{-1/2}$, with $H$
    the Jacobian of `grad_fn` at `params` (one `jax.linearize`, then its Jacobian-vector
    product on each column, `block_operator`; no matrix is formed).

    **Raises:** `ValueError` for a `grad_fn` that is not callable or a `diag` that is not
    `top_eigenpairs`'s (a scalar or a pytree like `params`, entries positive and finite)."""
    check_callable("grad_fn", grad_fn)
    check_diag(diag, params)
    return block_operator(hvp_column(grad_fn, params, diag))


def hvp_column(grad_fn: Callable[[Params], Params], params: Params, diag: Params | None = None):
    r"""`v -> A v` for one vector $v$ of shape $(n,)$, as `hvp_operator` (one `jax.linearize`).
    Lanczos' one product at a time takes this one: through a `vmap` over a single column, the
    anchor MLP's warm tracked step cost 9% more (`make bench`)."""
    flat, unravel = ravel(params)

    def flat_grad(x):
        return ravel(grad_fn(unravel(x)))[0]

    _, hvp = jax.linearize(flat_grad, flat)
    if diag is None:
        return hvp
    # D^{-1/2} in the wider of D's and the parameters' precisions, then in theirs: a bfloat16 D
    # on float64 parameters had its rsqrt rounded to bfloat16 (eigenvalues 7e-4 off).
    d = ravel(diag)[0]
    scale = jax.lax.rsqrt(d.astype(widest_dtype([jnp.dtype(d.dtype), flat.dtype])))
    scale = scale.astype(flat.dtype)
    return lambda v: scale * hvp(scale * v)


def _lanczos_top(
    op, start: Array, num_matvecs: int, *, matvec: Callable[[Array], Array] | None = None
) -> tuple[Array, Array, Array]:
    # matfree's Lanczos tridiagonalization (full reorthogonalization) from the sum of the start
    # columns, then `eigh` of the tridiagonal: the top-k Ritz pairs of the Krylov space.
    # `matvec`, where given, is `op` on one vector (cheaper than `op` on a one-column block).
    k = start.shape[1]
    v0 = jnp.sum(start, axis=1)
    if matvec is None:
        matvec = lambda v: op(v[:, None])[:, 0]
    eigh = matfree.eig.eigh_partial(matfree.decomp.tridiag_sym(num_matvecs))
    values, vectors = eigh(matvec, v0)
    return values[::-1][:k], vectors[::-1][:k].T, jnp.asarray(num_matvecs)


def _lanczos_once_top(
    op, start: Array, num_matvecs: int, *, matvec: Callable[[Array], Array]
) -> tuple[Array, Array, Array]:
    r"""`_lanczos_top` with each Krylov vector orthogonalized once against the basis (classical
    Gram-Schmidt: `matfree.decomp.hessenberg` without reorthogonalization), then Rayleigh-Ritz
    on the symmetric part of the Hessenberg matrix $H = Q^\top A Q$. Where the basis lost
    semi-orthogonality, $\delta = \max|Q^\top Q - I| > \sqrt{\epsilon}$ (a Ritz value moves by
    about $\delta|\lambda|$), `_lanczos_top` (orthogonalized twice) from the same start.

    Orthogonalizing twice, matfree's products $Q^\top v$ (two a product, which XLA:CPU emits
    as a slow loop) took ~135 of its loop's ~200 µs a tracked step (`make bench`'s MLP, 16
    products); once, half of them. Along that run $\delta \le$ 9e-13, and the eigenvalues of a
    step equal twice's from the same start to 1e-15."""
    k = start.shape[1]
    v0 = jnp.sum(start, axis=1)
    # `reortho` and `reortho_vjp` both "none": matfree 0.6's forward pass reads the latter.
    arnoldi = matfree.decomp.hessenberg(
        num_matvecs, reortho="none", reortho_vjp="none", custom_vjp=False
    )
    basis, hessenberg, *_ = arnoldi(matvec, v0)  # basis: (m, n), rows the Krylov vectors
    gram = basis @ basis.T
    lost = jnp.max(jnp.abs(gram - jnp.eye(num_matvecs, dtype=gram.dtype)))

    def ritz(_, basis, hessenberg):
        values, vectors = jnp.linalg.eigh(0.5 * (hessenberg + hessenberg.T))
        return values[::-1][:k], (vectors[:, ::-1][:, :k].T @ basis).T, jnp.asarray(num_matvecs)

    return lane_cond(
        ~(lost <= jnp.sqrt(jnp.finfo(gram.dtype).eps)),  # (NaN: twice, then `lanczos_broke`)
        lambda start, *_: _lanczos_top(op, start, num_matvecs, matvec=matvec),
        ritz,
        start,
        basis,
        hessenberg,
    )


def top_eigenpairs(
    grad_fn: Callable[[Params], Params],
    params: Params,
    start: Float[Array, "n k"],
    *,
    diag: Params | None = None,
    max_iters: int = 100,
    tol: float | None = None,
    checked: bool = True,
    method: Method = "lobpcg",
) -> Eigenpairs:
    r"""The $k$ largest eigenvalues of $A = H$ (or $D^{-1/2}HD^{-1/2}$ with `diag` $= D$),
    largest algebraically (a negative eigenvalue ranks below every positive one, whatever its
    magnitude), and their eigenvectors, $H$ the Hessian $\partial_\theta$ `grad_fn` at
    `params`, by LOBPCG (`lobpcg_standard`) from the block `start` (warm start: the previous
    vectors).

    **Arguments:**

    - `grad_fn`: `params -> gradient` (a `Problem.grad`, or the oracle's `grad_fn`).
    - `start`: $(n, k)$ linearly independent columns, $1 \le k \le n$. For $5k \ge n$ (a
      model too small for LOBPCG's $3k$-vector search space) the matrix is formed from $n$
      products and `eigh` gives the exact eigenpairs (`start` then sets only $k$).
    - `diag`: the diagonal preconditioner $D$ (a pytree like `params`, or a scalar $d$ for
      $D = dI$; entries $> 0$) or `None`.
    - `max_iters`, `tol`: LOBPCG's iteration cap and tolerance (its residual test
      $\|Av - \lambda v\| \le 10\,n\,\mathrm{tol}\,(\lambda + \|Av\|)$, which a negative
      $\lambda$ never meets: such pairs run to `max_iters`; `None`: machine epsilon).
    - `checked`: `False` returns NaN eigenpairs where a Hessian-vector product is not finite,
      instead of the runtime error: the compiled program then holds no host callback, so JAX's
      persistent compilation cache can store it (check the values on the host).
    - `method`: `"lobpcg"` (`lobpcg_standard`, to `tol` or `max_iters` iterations; each forms
      $4k$ products, $5k$ the first) or `"lanczos"` (`matfree`'s Lanczos decomposition with
      full reorthogonalization from the sum of the start columns, $m$ = `max_iters` products,
      $k \le m \le n$, `tol` unused): the top-$k$ Ritz pairs of a Krylov space of depth $m$.
      From a warm start (the previous step's vectors) $m = 16$ tracks as closely as two LOBPCG
      iterations (45 products at $k = 5$), which is what `track_sharpness` is for. One Krylov
      sequence holds one vector per distinct eigenvalue: an exactly repeated top eigenvalue
      (a point with a symmetry, such as identical hidden units) shows once; use LOBPCG for
      those. One more product checks the top pair: a residual above $|\lambda|/2$ (a Krylov
      space that closed early: a Hessian of low rank) hands the block to LOBPCG.

    **Returns:** `Eigenpairs` (values largest first; `iterations` 0 on the dense route).

    **Warns:** `RuntimeWarning` when LOBPCG, called eagerly, stops at `max_iters` (under a
    trace, read `iterations`).

    **Raises:** `ValueError` for a `start` that is not $(n, k)$ with $1 \le k \le n$ (or,
    given concretely, not finite or not of full rank), `params` that are not real numbers, a
    `diag` that is not a pytree like
    `params` (or, given concretely, has an entry that is not positive and finite), `max_iters
    < 1`, a `tol` that is not positive or a `checked` that is not a bool; a runtime error
    (`eqx.error_if`) when a Hessian-vector product is not finite (with `checked=True`), read
    off the result: non-finite eigenpairs.
    """
    return _validated_top(grad_fn, params, start, diag, max_iters, tol, checked, method, False)


def _validated_top(grad_fn, params, start, diag, max_iters, tol, checked, method, once: bool):
    # `top_eigenpairs`, and with `once` the tracker's warm Lanczos (`_lanczos_once_top`).
    check_callable("grad_fn", grad_fn)
    positive_int("max_iters", max_iters)
    check_tol(tol)
    flag("checked", checked)
    check_params(params, finite=False)
    flat = ravel(params)[0]
    # The block in the parameters' precision (`random_start` draws float64; float32 params
    # would otherwise meet a float64 tangent in the Hessian-vector product).
    start = jnp.asarray(start)
    if jnp.issubdtype(flat.dtype, jnp.floating) and start.dtype != flat.dtype:
        start = start.astype(flat.dtype)
    check_diag(diag, params)
    n = flat.shape[0]
    check_start_shape(start, n)
    if not is_traced(start):
        with jax.ensure_compile_time_eval():
            finite = bool(jnp.all(jnp.isfinite(start)))
        if not finite:  # (an SVD of NaN said "linearly dependent columns")
            raise ValueError(
                "start must be finite: it holds NaN or inf (a warm start taken from a diverged "
                "or unconverged eigen-solve?)."
            )
        with jax.ensure_compile_time_eval():
            singular = jnp.linalg.svd(start, compute_uv=False)
            ok = bool(singular[-1] > singular[0] * n * jnp.finfo(start.dtype).eps)
        if not ok:
            raise ValueError(
                f"start must have linearly independent columns; its {start.shape[1]} columns "
                "span fewer dimensions (draw one with dynopt.sharpness.random_start)."
            )
    found = _top_eigenpairs(
        grad_fn, params, start, diag=diag, max_iters=max_iters, tol=tol, checked=checked,
        method=method, once=once,
    )  # fmt: skip
    if (
        method == "lobpcg"
        and lobpcg_fits(start.shape[1], n)
        and not isinstance(found.iterations, jax.core.Tracer)
        and int(found.iterations) >= max_iters
        and bool(jnp.all(jnp.isfinite(found.values)))  # NaN (checked=False) says more
    ):
        # Called eagerly (under a trace, e.g. a tracker's capped warm steps, `iterations` says it).
        # The default tol (machine epsilon) is out of reach for most n, so the cap alone says
        # little: each value lies within its residual ||Av - lambda v|| of an eigenvalue (for a
        # symmetric A, unit v). Said where a tol was asked, or where that bound passes
        # `CAP_RESIDUAL` of the largest |lambda| (the spectrum's scale, as `eigh`'s own error:
        # relative to each |lambda| a tracked eigenvalue at 0, k above the Hessian's rank, warned
        # "within 2.2e+00" of values exact to 5e-16).
        bound = float(_residual_bound(grad_fn, params, diag, found.vectors, found.values))
        if tol is not None or not bound <= CAP_RESIDUAL:
            warnings.warn(
                f"top_eigenpairs: LOBPCG stopped at its cap max_iters={max_iters} before every "
                f"pair met its tolerance: the eigenpairs are approximate (each value within "
                f"{bound:.1e} of the largest |value| of an eigenvalue). Raise max_iters (a cold "
                "random start needs far more iterations than a warm one), loosen tol, or start "
                "from nearby vectors.",
                RuntimeWarning,
                stacklevel=2,
            )
    return found


@eqx.filter_jit
def _residual_bound(grad_fn, params, diag, vectors, values) -> Scalar:
    r"""$\max_i\|Av_i - \lambda_i v_i\| / \max_i|\lambda_i|$, one compiled program (eagerly, the
    linearization and its products compiled 5 programs at every capped call)."""
    op = block_operator(hvp_column(grad_fn, params, diag))  # (checked by the caller)
    residual = jnp.linalg.norm(op(vectors) - vectors * values[None, :], axis=0)
    return jnp.max(residual) / jnp.max(jnp.abs(values))


def check_tol(tol) -> None:
    """`ValueError` unless `tol` (LOBPCG's tolerance) is `None` or a positive finite number."""
    if tol is not None and not (
        isinstance(tol, numbers.Real) and not isinstance(tol, bool) and 0 < tol < float("inf")
    ):
        raise ValueError(f"tol must be None or a positive finite number, got {tol!r}.")


NOT_FINITE = (
    "the loss's Hessian-vector product is not finite at these parameters (a non-finite loss or "
    "gradient, or a non-twice-differentiable operation), or the preconditioner diag has an "
    "entry that is not positive (an optimizer state read before its first step), or the start "
    "block is not of full rank."
)


# At LOBPCG's cap with the default tol, the relative residual bound below which the eigenpairs
# are taken as converged (no warning): the 1e-8 to which they must match a dense `eigh`.
CAP_RESIDUAL = 1e-8


@eqx.filter_jit
def _top_eigenpairs(grad_fn, params, start, *, diag, max_iters, tol, checked, method, once):
    n = ravel(params)[0].shape[0]
    choice("method", method, METHODS)
    k = start.shape[1]
    if method == "lanczos" and not k <= max_iters <= n:
        raise ValueError(
            f"max_iters (the Krylov depth for method='lanczos') must be in [k, n] = [{k}, {n}], "
            f"got {max_iters}."
        )
    column = hvp_column(grad_fn, params, diag)
    op = block_operator(column)  # = hvp_operator, one linearization for both
    if lobpcg_fits(k, n) and method == "lanczos":
        lanczos = _lanczos_once_top if once else _lanczos_top
        values, vectors, iterations = lanczos(op, start, max_iters, matvec=column)
        # A Krylov space that closes before `max_iters` products (a Hessian of low rank: flat
        # directions) breaks matfree's Lanczos: NaN where the residual is exactly 0, else Ritz
        # pairs of round-off (a rank-2 Hessian with top eigenvalue 4 gave 62.2), and LOBPCG
        # from the same block takes over. Only the lanes that broke down run it (`lane_cond`).
        values, vectors, iterations = lane_cond(
            lanczos_broke(column, values, vectors),
            lambda block, *_: lobpcg_standard(op, block, m=max_iters, tol=tol),
            lambda _, *found: found,
            start,
            values,
            vectors,
            iterations,
        )
    elif lobpcg_fits(k, n):
        values, vectors, iterations = lobpcg_standard(op, start, m=max_iters, tol=tol)
    else:
        values, vectors, iterations = _dense_top(column, n, start.shape[1], start.dtype)
    # Checked on the result, not by probing the start (k more products, 10% of a warm step): a
    # non-finite entry in any product LOBPCG forms, at any iteration, makes every value NaN.
    bad = ~(jnp.all(jnp.isfinite(values)) & jnp.all(jnp.isfinite(vectors)))
    if checked:
        values, vectors = eqx.error_if((values, vectors), bad, NOT_FINITE)
    else:
        values, vectors = jnp.where(bad, jnp.nan, values), jnp.where(bad, jnp.nan, vectors)
    return Eigenpairs(values, vectors, iterations)


def lanczos_broke(column, values: Array, vectors: Array) -> Array:
    r"""Whether Lanczos' Ritz pairs `(values, vectors)` of the operator `column` (one vector at
    a time) are not eigenpairs: a non-finite entry, a Ritz vector that is not of unit norm
    (to $\sqrt{\epsilon}$ of the dtype), or a top pair whose relative residual
    $\|Av - \lambda v\|/\|v\|$ is above $|\lambda|/2$ (for a symmetric $A$ some eigenvalue
    lies within it of $\lambda$, so none is near $\lambda$). One product.

    A Krylov space that closes early (a Hessian of low rank) leaves matfree's basis of
    round-off: Ritz vectors of norm 0.13-0.2 and values such as 290 for a top eigenvalue of
    3.17 (rank 4 in 60 dimensions, indefinite), whose residual, not divided by the norm, passed
    the test of $|\lambda|/2$."""
    norms = jnp.linalg.norm(vectors, axis=0)
    top = vectors[:, 0]
    residual = jnp.linalg.norm(column(top) - values[0] * top)
    fine = jnp.all(jnp.isfinite(values)) & jnp.all(jnp.isfinite(vectors))
    unit = jnp.all(jnp.abs(norms - 1) <= jnp.sqrt(jnp.finfo(vectors.dtype).eps))
    return ~(fine & unit & (residual <= 0.5 * jnp.abs(values[0]) * norms[0]))


def _dense_top(column, n: int, k: int, dtype) -> tuple[Array, Array, Array]:
    # A model too small for LOBPCG (5k >= n): the matrix from n products (`column` on each, one
    # vmapped batch: n is small), then `eigh` (exact).
    matrix = jax.vmap(column, in_axes=1, out_axes=1)(jnp.eye(n, dtype=dtype))
    values, vectors = jnp.linalg.eigh(0.5 * (matrix + matrix.T))
    return values[::-1][:k], vectors[:, ::-1][:, :k], jnp.asarray(0)


def lane_cond(pred, true_fn, false_fn, *operands):
    """`lax.cond(pred, true_fn, false_fn, *operands)` that stays a branch under `vmap`.

    Under `vmap` a `lax.cond` with a batched predicate becomes a `select`: every lane runs both
    branches. A `lax.while_loop` with a batched predicate instead runs its body while *any*
    lane needs it. So this is a loop that runs `true_fn` at most once: unbatched it is exactly
    the `cond`; vmapped (over learning rates, say) it skips the costly branch (an eigen-solve,
    the central flow's third derivatives and complementarity solve) wherever no lane needs it,
    and lanes with `pred` false keep `false_fn`'s value.

    The operands go round the loop (through an optimization barrier): what `true_fn` computes
    from values the loop only forwards, XLA treats as loop invariant and hoists out of the
    loop, where it runs whatever `pred` says (measured under `vmap`: a 153 × 153 `eigvalsh`
    branch cost 120 ms per call with every lane false; 0.08 ms this way). So pass everything
    the costly branch depends on as `operands`, not by closure.

    **Arguments:** `pred`, a boolean scalar; `true_fn`, `false_fn`, functions of `*operands`
    returning the same pytree structure (`false_fn` always runs: keep it cheap); `operands`,
    pytrees (their non-array leaves are static).

    **Returns:** `true_fn(*operands)` where `pred`, else `false_fn(*operands)`.
    """
    dynamic, static = eqx.partition(operands, eqx.is_array)

    def call(fn, dyn):
        return fn(*eqx.combine(dyn, static))

    def body(carry):
        _, dyn, _ = carry
        return jax.lax.optimization_barrier((jnp.zeros((), bool), dyn, call(true_fn, dyn)))

    init = (jnp.asarray(pred), dynamic, call(false_fn, dynamic))
    return jax.lax.while_loop(lambda carry: carry[0], body, init)[2]


def krylov_depth(k: int, num_params: int) -> int:
    r"""The Krylov depth of `krylov_start`: $m = \min(n, 10(k + 1))$ products."""
    return min(num_params, 10 * (k + 1))


def krylov_start(
    grad_fn: Callable[[Params], Params], params: Params, start: Float[Array, "n k"]
) -> Float[Array, "n k"]:
    r"""A cold start for LOBPCG (`top_eigenpairs`) from a random block: the top-$k$ Ritz vectors
    of the Hessian's Krylov space $\mathcal K_m(H, v_0)$, $v_0$ the sum of `start`'s columns,
    $m$ = `krylov_depth` products (`matfree`'s Lanczos, `_lanczos_once_top`), or `start`
    itself where that Lanczos broke down (`lanczos_broke`: a Hessian of low rank).

    Lanczos resolves the top of the spectrum in far fewer products than LOBPCG from a random
    block ($4k$ products an iteration): on the 433-parameter MLP of `make bench` ($k = 5$, tol
    1e-9) LOBPCG from the random block took 29 iterations (about 600 products, 34 ms of CPU),
    from these Ritz vectors ($m = 60$) one (6.6 ms with the Lanczos). LOBPCG's tolerance still
    decides the result. One Krylov sequence holds one vector per distinct eigenvalue, and
    LOBPCG from a block inside it stays there: an exactly repeated eigenvalue shows once, as
    with `method="lanczos"` itself (the only tracker that starts here).

    **Returns:** an $(n, k)$ block, in `start`'s dtype.

    **Raises:** `ValueError` for a `grad_fn` that is not callable, `params` that are not
    finite real numbers, or a `start` that is not an $(n, k)$ block, $1 \\le k \\le n$."""
    check_callable("grad_fn", grad_fn)
    check_params(params)
    start = jnp.asarray(start)
    # (The parameter count from the leaves' shapes: no program for a ravel.)
    check_start_shape(start, sum(int(jnp.size(x)) for x in jax.tree.leaves(params)))
    return _krylov_start(grad_fn, params, start)


@eqx.filter_jit
def _krylov_start(grad_fn, params, start):
    column = hvp_column(grad_fn, params)
    k, n = start.shape[1], start.shape[0]
    values, vectors, _ = _lanczos_once_top(None, start, krylov_depth(k, n), matvec=column)
    return jnp.where(lanczos_broke(column, values, vectors), start, vectors.astype(start.dtype))


def random_start(key: Key, num_params: int, k: int, dtype=jnp.float64) -> Float[Array, "n k"]:
    """An $(n, k)$ block of standard normal columns (a cold LOBPCG start): `key` one PRNG key,
    `num_params` $= n$ a positive integer and `k` an integer in $[1, n]$ (more columns than
    dimensions span no more: the block would be rank-deficient); else `ValueError`."""
    key = one_key("key", key)
    check_k(k, positive_int("num_params", num_params))
    return jax.random.normal(key, (num_params, k), dtype)


def dense_hessian(loss_fn: Callable[[Params], Scalar], params: Params) -> Float[Array, "n n"]:
    """The symmetrized dense Hessian in `ravel_pytree` order (a reference for small models);
    `loss_fn` must be a function returning a scalar and `params` finite real numbers (else
    `ValueError`)."""
    check_callable("loss_fn", loss_fn)
    check_params(params)
    flat, unravel = ravel(params)
    shape = jax.eval_shape(loss_fn, params).shape
    if shape != ():
        raise ValueError(f"loss_fn must return a scalar (the loss), got shape {shape}.")
    hess = jax.hessian(lambda x: loss_fn(unravel(x)))(flat)
    return 0.5 * (hess + hess.T)


class SharpnessState(NamedTuple):
    """State of `track_sharpness`: the inner optimizer's state, the update count, the
    eigenpairs at the last tracked iterate (`values` NaN before the first), and the update
    count at which they were computed (`tracked_at`)."""

    inner: Any
    count: Int[Array, ""]
    values: Float[Array, " k"]
    vectors: Float[Array, "n k"]
    iterations: Int[Array, ""]
    tracked_at: Int[Array, ""]


def _no_diag(inner_state) -> None:
    del inner_state
    return None


def _same(a: Any, b: Any) -> bool:
    """Whether two settings of a tracker give the same program: equal pytree structure, arrays
    the same objects (a compiled program holds them as constants), other leaves equal. So
    `problem.grad`, a new bound method at each access, is the same `init_grad_fn` each time."""
    if a is b:
        return True
    (leaves_a, tree_a), (leaves_b, tree_b) = jax.tree.flatten(a), jax.tree.flatten(b)
    try:
        if tree_a != tree_b:
            return False
    except Exception:  # a structure whose static parts do not compare
        return False

    def leaf_same(x, y) -> bool:
        if x is y:
            return True
        if eqx.is_array(x) or eqx.is_array(y):
            return False
        try:
            return bool(x == y)
        except Exception:  # an array-valued or failing ==
            return False

    return all(leaf_same(x, y) for x, y in zip(leaves_a, leaves_b))


def _same_hash(a: Any) -> int:
    """A hash consistent with `_same` (arrays by identity; an unhashable leaf by identity too,
    at worst a cache miss): the type and the leaves, not the structure, whose static parts
    need not hash (an `eqx` bound method's does not)."""

    def leaf_hash(x) -> int:
        if eqx.is_array(x):
            return id(x)
        try:
            return hash(x)
        except TypeError:
            return id(x)

    return hash((type(a).__qualname__, *(leaf_hash(x) for x in jax.tree.leaves(a))))


class _Held:
    """A function among a tracker's settings, compared by `_same` (a static field of a
    `Discretization` is part of its compiled program's key)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other) -> bool:
        return isinstance(other, _Held) and _same(self.value, other.value)

    def __hash__(self) -> int:
        return _same_hash(self.value)


class _Tracking(eqx.Module):
    """`track_sharpness`'s settings, validated: static, equal for equal settings."""

    k: int = eqx.field(static=True)
    every: int = eqx.field(static=True)
    preconditioner: _Held = eqx.field(static=True)
    init_grad_fn: _Held = eqx.field(static=True)
    max_iters: int = eqx.field(static=True)
    tol: float | None = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    init_iters: int = eqx.field(static=True)
    method: str = eqx.field(static=True)


def _tracked_init(inner: PyTree, params: Params, tracking: _Tracking) -> SharpnessState:
    r"""The tracker's state at $\theta_0$ around the inner optimizer's state `inner`."""
    k, preconditioner = tracking.k, tracking.preconditioner.value
    init_grad_fn = tracking.init_grad_fn.value
    flat = ravel(params)[0]
    check_k(k, flat.shape[0])
    start = random_start(jax.random.key(tracking.seed), flat.shape[0], k, flat.dtype)
    values = jnp.full((k,), jnp.nan, flat.dtype)
    iterations = jnp.asarray(0)
    precond = _no_diag if preconditioner is None else preconditioner
    precond(inner)  # its errors (a state of another optimizer) here, not inside `run`
    if init_grad_fn is not None:

        def cold(params, start):
            if tracking.method == "lanczos" and lobpcg_fits(k, flat.shape[0]):
                start = krylov_start(init_grad_fn, params, start)
            return top_eigenpairs(
                init_grad_fn, params, start, max_iters=tracking.init_iters, tol=tracking.tol
            )

        found, start, iterations = lane_by_lane(cold, params, start)
        if preconditioner is None:  # (with one: no D yet, the values stay NaN)
            values = found
    return SharpnessState(inner, jnp.asarray(0), values, start, iterations, jnp.asarray(0))


def _tracked(
    tx: optax.GradientTransformation, tracking: _Tracking
) -> optax.GradientTransformationExtraArgs:
    """`tx` wrapped by `track_sharpness` with these settings."""
    inner_tx = optax.with_extra_args_support(tx)
    every, preconditioner = tracking.every, tracking.preconditioner.value
    precond = _no_diag if preconditioner is None else preconditioner

    def init_fn(params):
        return _tracked_init(inner_tx.init(params), params, tracking)

    def update_fn(updates, state, params=None, *, grad_fn=None, **extra):
        if params is None or grad_fn is None:
            raise ValueError(
                "track_sharpness needs params and grad_fn (run passes both; by hand: "
                "tx.update(g, state, params, grad_fn=problem.grad))."
            )
        updates, inner = inner_tx.update(updates, state.inner, params, grad_fn=grad_fn, **extra)
        new_params = optax.apply_updates(params, updates)
        count = state.count + 1

        def track(params, vectors, inner):
            found = lane_by_lane(
                lambda params, vectors, diag: _validated_top(
                    grad_fn,
                    params,
                    vectors,
                    diag,
                    tracking.max_iters,
                    tracking.tol,
                    False,  # checked
                    tracking.method,
                    True,  # Lanczos orthogonalizing once (`_lanczos_once_top`)
                ),
                params,
                vectors,
                precond(inner),
            )
            # A diverging run (a gradient that is not finite at the new iterate) records NaN and
            # is left to `run`, which stops it and says so: the error raised inside `run`, and a
            # sweep over learning rates lost every lane to one that diverged. A finite gradient
            # with a non-finite Hessian-vector product is still the error (`NOT_FINITE`); the
            # gradient is evaluated only where the values are not finite (`lane_cond`).
            bad = ~jnp.all(jnp.isfinite(found.values))
            grad_ok = lane_cond(
                bad,
                lambda p: jnp.all(jnp.isfinite(ravel(grad_fn(p))[0])),
                lambda p: jnp.zeros((), bool),
                params,
            )
            values = eqx.error_if(found.values, bad & grad_ok, NOT_FINITE)
            return values, found.vectors, found.iterations

        def keep(params, vectors, inner):
            return state.values, vectors, state.iterations

        # `lane_cond`, not `lax.cond`: under a `vmap` over learning rates the count is batched,
        # and a batched `cond` would run the eigen-solve at every step.
        tracked = count % every == 0
        values, vectors, iterations = lane_cond(
            tracked, track, keep, new_params, state.vectors, inner
        )
        at = jnp.where(tracked, count, state.tracked_at)
        return updates, SharpnessState(inner, count, values, vectors, iterations, at)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class _TrackedFactory(eqx.Module):
    """`factory(**hyperparams)` tracked: the static factory of a tracked `Discretization`,
    equal for equal factories and settings (a new learning rate reuses the compiled run)."""

    factory: Any = eqx.field(static=True)
    tracking: _Tracking = eqx.field(static=True)

    def __call__(self, **kwargs) -> optax.GradientTransformationExtraArgs:
        return _tracked(self.factory(**kwargs), self.tracking)


class _TrackedInit(eqx.Module):
    """A tracked `Discretization`'s initial state: its own `init_fn`'s state (a slow manifold, a
    half-step velocity), with the tracker around it."""

    factory: Any = eqx.field(static=True)
    init_fn: Any = eqx.field(static=True)
    tracking: _Tracking = eqx.field(static=True)

    def __call__(self, disc: Discretization, params: Params, problem) -> SharpnessState:
        # `disc`'s dt was checked when it was built: rebuilt inside the run's trace it needs no
        # runtime check (as `games.weight_averages`).
        with host_validated():
            inner = Discretization(
                self.factory, disc.hyperparams, disc.dt, disc.options, self.init_fn
            )
        return _tracked_init(inner.init(params, problem), params, self.tracking)


def track_sharpness(
    tx: optax.GradientTransformation | Discretization,
    k: int = 1,
    *,
    every: int = 1,
    preconditioner: Callable[[Any], Params | None] | None = None,
    init_grad_fn: Callable[[Params], Params] | None = None,
    max_iters: int = 100,
    tol: float | None = None,
    seed: int = 0,
    init_iters: int | None = None,
    method: Method = "lobpcg",
) -> Any:
    r"""Wrap `tx` so that its state carries the top-$k$ eigenpairs of the Hessian (or of the
    preconditioned Hessian $D^{-1/2}HD^{-1/2}$), recomputed every `every` steps at the new
    iterate, warm-started from the previous vectors.

    At update $j$ (0-based), after `tx` produced $\theta_{j+1}$, if $(j+1) \bmod$ `every` $= 0$
    the eigenpairs at $\theta_{j+1}$ are computed from the oracle's `grad_fn` (the same
    minibatch as the step; `run` passes it) and the state's previous vectors. With
    `run(..., every=m·every, observe=sharpness)` the recorded values are exactly those at the
    saved iterates; other steps cost nothing extra (`lane_cond`, also under `vmap`). At a saved
    iterate the tracker skipped, `sharpness` records NaN.

    A sweep over learning rates wraps a `dynopt.Discretization`: its hyper-parameters stay
    traced, so a run at a new learning rate reuses the compiled program, and a `Discretization`
    with a 1-D batch of learning rates is tracked in one `run`, each member its single run's
    values to rounding (the batched kernels round otherwise: 2.5e-15 relative on a SmallCNN;
    on a CPU the eigen-solves of a batch run one lane after another, `lane_by_lane`):

    ```python
    gd = lambda lr: dynopt.Discretization(optax.sgd, {"learning_rate": lr}, dt=lr)
    tracked = track_sharpness(gd(jnp.asarray([0.1, 0.2])), 2, every=10)
    traj = dynopt.run(tracked, problem, 1000, every=10, observe=sharpness)
    ```

    A new optax transform object (`optax.sgd(lr)` for each `lr`) is a new program: on a
    `networks.SmallCNN` (1,954 parameters, 64 digits, $k = 2$ by Lanczos every 10 of 20 steps)
    the second learning rate took 18.5 s of CPU time (recompiled), against 0.30 s as a
    `Discretization`, with the same eigenvalues.

    **Arguments:**

    - `tx`: the optimizer: an `optax.GradientTransformation`, or a `dynopt.Discretization`
      (its factory, hyper-parameters, `dt`, options and initial state `init_fn` are kept; the
      settings below are static: equal settings, and the same `preconditioner` and
      `init_grad_fn`, find the compiled run; `adam_preconditioner(...)` and
      `rmsprop_preconditioner(...)` are equal for equal arguments, and `problem.grad` is the
      same function at each access).
    - `k`: the number of eigenpairs, $1 \le k \le n$ (dense `eigh` for $5k \ge n$).
    - `every`: the tracking period in steps.
    - `preconditioner`: `None` (the Hessian) or `inner_state -> D` (e.g. `adam_preconditioner`),
      read from `tx`'s state *after* the update.
    - `init_grad_fn`: optional `params -> gradient` (e.g. `problem.grad`) to compute the
      eigenpairs at $\theta_0$ in `init` (else they are NaN until the first tracked step).
      With a `preconditioner` only the vectors are computed (the Hessian's: the warm start)
      and the values stay NaN: an optimizer's state holds no $D$ before its first update
      (Adam's $\nu = 0$ gave $D = \epsilon$, and values $\lambda/\epsilon$: $10^8\times$ the
      Hessian's).
    - `max_iters`, `tol`, `seed`: LOBPCG's cap (per tracked step, from the warm start) and
      tolerance; the cold start's seed.
    - `init_iters`: the cap of the cold start at $\theta_0$ (with `init_grad_fn`); default
      `max(max_iters, 100)`: a random block needs far more iterations than a warm one (with
      `max_iters=2`, the anchor MLP's 2nd–5th eigenvalues at $\theta_0$ were 21–26% low, and
      exact to 2e-5 from step 20 on).
    - `method`: the warm steps' eigen-solver (`top_eigenpairs`; `max_iters` is the Krylov depth
      for `"lanczos"`); the cold start at $\theta_0$ is LOBPCG's (for `"lanczos"` from the Ritz
      vectors of `krylov_start`, not the random block: 1 iteration instead of 29, 34 → 7 ms of CPU,
      on the MLP below). The warm Lanczos steps orthogonalize each Krylov vector once
      (`_lanczos_once_top`: twice, matfree's full reorthogonalization, only where the basis lost
      semi-orthogonality), not as `top_eigenpairs` does. On an MLP with 433 parameters (k = 5,
      GD η = 0.1, every step, 200 steps and the cold start, `make bench`): `"lanczos"` with
      `max_iters=16` costs 19.2–20.5× a plain step's average (20.7–21.4× orthogonalizing twice,
      in processes alternating with those, load 11–14; a plain 200-step `run` holds ~3 ms of
      fixed cost per call, 35 µs a step beyond it): 17 products, the linearization and the step
      itself 11–12× (a product costs about one gradient), matfree's Arnoldi loop about 3× (5×
      with full reorthogonalization: its 32 products `Q.T @ v` a call took ~135 of its ~200 µs
      on XLA:CPU, 3× what `v @ Q` takes: scratch-patched that way, 19.6× for 23.2×, eigenvalues
      equal to 3e-15), the cold start at $\theta_0$ (tol 1e-9) under 1× since it starts from
      `krylov_start` (7 ms once per `run`; 30–40 ms and 4–4.5× from the random block, about 30
      LOBPCG iterations: 21.0–21.5× for 24.5–25.1×, the same load); eigenvalues within 4.7e-4
      of converged ones (the largest deviation, in the first steps, where the 2nd-5th
      eigenvalues are clustered; 8.5e-4 from the random block; median 1.1e-8, 7e-9
      orthogonalizing twice); one LOBPCG iteration 31× (7.4e-3), two 52× (1.8e-3). (24×, 44×
      and 68× with LOBPCG's block products batched, before `map_batch`.)

    **Returns:** an `optax.GradientTransformationExtraArgs` with state `SharpnessState`; for a
    `Discretization`, a `Discretization` whose transform is that one.

    **Raises:** `ValueError` for a `tx` of another type, a `k`, `every`, `max_iters` or
    `init_iters` that is not a positive integer, a `tol` that is not `None` or positive and
    finite, an unknown `method`, a Lanczos depth `max_iters` below `k`, a `seed` that is not
    an integer in $[0, 2^{32})$, or a `preconditioner` or `init_grad_fn` that is not callable;
    at `init`, for $k$ above the parameter count and a `preconditioner` that does not match the
    optimizer's state.
    """
    positive_int("k", k)
    every = positive_int("every", every)
    positive_int("max_iters", max_iters)
    init_iters = max(max_iters, 100) if init_iters is None else init_iters
    positive_int("init_iters", init_iters)
    choice("method", method, METHODS)
    check_tol(tol)
    if method == "lanczos" and max_iters < k:
        raise ValueError(
            f"max_iters (the Krylov depth for method='lanczos') must be at least k = {k}, got "
            f"{max_iters}."
        )
    seed = _seed("seed", seed)  # the cold start's jax.random.key
    function(
        "preconditioner",
        preconditioner,
        "None or a function inner_state -> D (e.g. dynopt.sharpness.adam_preconditioner(...))",
        allow_none=True,
    )
    function(
        "init_grad_fn",
        init_grad_fn,
        "None or a function params -> gradient (e.g. problem.grad)",
        allow_none=True,
    )
    tracking = _Tracking(
        int(k), int(every), _Held(preconditioner), _Held(init_grad_fn), int(max_iters),
        None if tol is None else float(tol), int(seed), int(init_iters), method,
    )  # fmt: skip
    if isinstance(tx, Discretization):
        init_fn = None if tx.init_fn is None else _TrackedInit(tx.factory, tx.init_fn, tracking)
        return Discretization(
            _TrackedFactory(tx.factory, tracking), tx.hyperparams, tx.dt, tx.options, init_fn
        )
    if isinstance(tx, optax.GradientTransformation):
        return _tracked(tx, tracking)
    raise ValueError(
        "tx must be an optax.GradientTransformation or a dynopt.Discretization, got "
        f"{type(tx).__name__}."
    )


def _find(opt_state) -> SharpnessState:
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, SharpnessState))
        if isinstance(s, SharpnessState)
    ]
    if len(found) != 1:
        raise ValueError(
            f"sharpness: the optimizer state must hold exactly one SharpnessState (wrap the "
            f"optimizer with track_sharpness), found {len(found)}."
        )
    return found[0]


def sharpness(params: Params, opt_state: PyTree, problem: Any) -> Float[Array, " k"]:
    """Observer for `run(..., observe=sharpness)`: the tracked top-$k$ eigenvalues held by the
    `track_sharpness` state at the observed iterate; NaN before the first tracked step, and at
    an iterate the tracker skipped (a `run` `every` that its `every` does not divide): the
    values held there belong to an earlier iterate."""
    del params, problem
    state = _find(opt_state)
    return jnp.where(state.tracked_at == state.count, state.values, jnp.nan)


def _moment_state(inner_state: PyTree, name: str) -> tuple:
    """The one `NamedTuple` in `inner_state` holding a second moment `nu` (found by field, so
    the `count` beside it is that transform's own: `inject_hyperparams` holds a second one)."""

    def holds_nu(node) -> bool:
        return isinstance(node, tuple) and "nu" in getattr(node, "_fields", ())

    found = [s for s in jax.tree.leaves(inner_state, is_leaf=holds_nu) if holds_nu(s)]
    if not found:
        raise ValueError(
            f"{name}: the optimizer state holds no second moment `nu` (not an Adam or RMSprop "
            "state): a preconditioner that does not match the optimizer would give the plain "
            "Hessian's sharpness under its name. Use it with optax.adam/rmsprop-style states, "
            "or track the plain Hessian (preconditioner=None)."
        )
    if len(found) > 1:
        raise ValueError(
            f"{name}: the optimizer state holds {len(found)} second moments `nu` "
            f"({', '.join(type(s).__name__ for s in found)}); pass preconditioner=lambda "
            "state: D for the one that scales the step."
        )
    return found[0]


def _bias_corrected(moment: Params, decay, count) -> Params:
    # Before the first step (count 0, a zero moment) the correction is 0/0: left uncorrected.
    # 1 - decay**count in the decay's own precision, then in each moment's dtype, as optax's
    # `bias_correction` forms it: the decay cast to the moment's dtype first put 1.3e-5 into
    # 1 - b2 in float32 (0.999 -> 0.99900001; D off by 6e-6, optax's own by 2e-8) and made it
    # 0 in bfloat16 (0.999 -> 1.0: D = inf).
    count = jnp.maximum(count, 1)
    precision = jnp.result_type(decay, float)
    correction = 1 - jnp.asarray(decay, precision) ** count.astype(precision)
    return jax.tree.map(lambda v: v / correction.astype(v.dtype), moment)


_ADAM_STATES = ("ScaleByAdamState", "ScaleByAmsgradState")
_RMS_STATES = ("ScaleByRmsState", "ScaleByRmsWithCountState")
_CENTERED_STATES = ("ScaleByRStdDevState", "ScaleByRStdDevWithCountState")


def adam_preconditioner(
    b2: float = 0.999, eps: float = 1e-8, *, eps_root: float = 0.0, bias_correction: bool = True
):
    r"""`inner_state -> D` for the state of `optax.adam` (also `adamw`, `nadam`, `yogi`, a chain
    around `scale_by_adam`, `inject_hyperparams`), `optax.amsgrad`, or
    `optax.rmsprop(eps_in_sqrt=False)`: the diagonal that divides the step,

    $$D = \sqrt{\hat\nu + \epsilon_{\rm root}} + \epsilon,\qquad
      \hat\nu = \nu/(1-\beta_2^t)\ \text{(with `bias_correction`)},$$

    read from the state's `nu` and the `count` $t$ beside it (AMSGrad: $\hat\nu$ is its
    `nu_max`, already corrected). Pass the optimizer's own `b2`, `eps`, `eps_root`. Not for
    `optax.adamax`: its state is Adam's type, but its `nu` is an infinity norm that divides the
    step as it is ($D = \nu$: pass `preconditioner=lambda state: state[0].nu`). Adam's
    preconditioned sharpness $\lambda_{\max}(D^{-1}H)$ stabilizes at
    $(2+2\beta_1)/((1-\beta_1)\eta)$.

    **Raises:** `ValueError` when the state holds no `nu`, several, or one of another
    optimizer (a centered RMSprop's), or when `bias_correction` disagrees with it: optax's
    Adam always corrects, `optax.rmsprop` keeps a `count` exactly when it corrects.
    """
    flag("bias_correction", bias_correction)
    b2, eps, eps_root = _decay("b2", b2), nonnegative("eps", eps), nonnegative("eps_root", eps_root)
    return _AdamDiag(b2, eps, eps_root, bias_correction)


class _AdamDiag(eqx.Module):
    """`adam_preconditioner`'s `inner_state -> D`, equal for equal settings: a tracker built anew
    for each learning rate (`track_sharpness` of a `Discretization`) finds its compiled run."""

    b2: Any
    eps: Any
    eps_root: Any
    bias_correction: bool = eqx.field(static=True)

    def __call__(self, inner_state) -> Params:
        b2, eps, eps_root, bias_correction = self.b2, self.eps, self.eps_root, self.bias_correction
        state = _moment_state(inner_state, "adam_preconditioner")
        kind = type(state).__name__
        if kind not in _ADAM_STATES + _RMS_STATES:
            raise ValueError(
                f"adam_preconditioner: the second moment `nu` sits in a {kind}, not an Adam "
                f"or RMSprop state ({', '.join(_ADAM_STATES + _RMS_STATES)}): its D is not "
                "sqrt(nu_hat) + eps (centered RMSprop: rmsprop_preconditioner; otherwise pass "
                "preconditioner=lambda state: D)."
            )
        if kind == "ScaleByAmsgradState":
            nu = state.nu_max
        else:
            counts = "count" in state._fields
            if bias_correction != counts:
                raise ValueError(
                    f"adam_preconditioner: bias_correction must be {counts} for a {kind}: "
                    + (
                        "the optimizer corrects its second moment with the count it keeps."
                        if counts
                        else "the optimizer keeps no count and does not correct (optax."
                        "rmsprop(eps_in_sqrt=False) without bias_correction)."
                    )
                )
            nu = _bias_corrected(state.nu, b2, state.count) if counts else state.nu
        return jax.tree.map(
            lambda v: jnp.sqrt(v + jnp.asarray(eps_root, v.dtype)) + jnp.asarray(eps, v.dtype), nu
        )


def rmsprop_preconditioner(eps: float = 1e-8, *, decay: float | None = None, eps_in_sqrt=True):
    r"""`inner_state -> D` for any `optax.rmsprop` state (and `dynopt.transforms.
    global_rmsprop`'s scalar one): the diagonal that divides the step,

    $$D = \sqrt{\hat\nu - \hat\mu^2 + \epsilon}\quad\text{or, with `eps_in_sqrt=False`,}\quad
      D = \sqrt{\hat\nu - \hat\mu^2} + \epsilon,$$

    $\hat\mu = 0$ unless the state is centered (`centered=True`: it holds `mu`), and
    $\hat\nu = \nu/(1-\lambda^t)$, $\hat\mu = \mu/(1-\lambda^t)$ where the state keeps a count
    (`bias_correction=True`; then `decay` $\lambda$ is needed), else the raw moments. Pass the
    optimizer's own `eps`, `decay`, `eps_in_sqrt`. RMSProp with step $\eta$ is stable on $H$
    iff $\eta\lambda_{\max}(D^{-1}H) < 2$.

    **Raises:** `ValueError` when the state holds no `nu`, several, or an Adam state's
    (`adam_preconditioner`), or keeps a count with `decay=None`.
    """
    flag("eps_in_sqrt", eps_in_sqrt)
    eps, decay = nonnegative("eps", eps), None if decay is None else _decay("decay", decay)
    return _RmsDiag(eps, decay, eps_in_sqrt)


class _RmsDiag(eqx.Module):
    """`rmsprop_preconditioner`'s `inner_state -> D`, equal for equal settings (`_AdamDiag`)."""

    eps: Any
    decay: Any
    eps_in_sqrt: bool = eqx.field(static=True)

    def __call__(self, inner_state) -> Params:
        eps, decay, eps_in_sqrt = self.eps, self.decay, self.eps_in_sqrt
        state = _moment_state(inner_state, "rmsprop_preconditioner")
        kind = type(state).__name__
        if not (kind in _RMS_STATES + _CENTERED_STATES or isinstance(state, ScaleByGlobalRmsState)):
            raise ValueError(
                f"rmsprop_preconditioner: the second moment `nu` sits in a {kind}, not an "
                f"RMSprop state ({', '.join(_RMS_STATES + _CENTERED_STATES)}, "
                "ScaleByGlobalRmsState)"
                + (": use adam_preconditioner." if kind in _ADAM_STATES else ".")
            )
        nu, mu = state.nu, getattr(state, "mu", None)
        if "count" in state._fields:
            if decay is None:
                raise ValueError(
                    f"rmsprop_preconditioner: decay must be the optimizer's decay in [0, 1): "
                    f"its {kind} keeps a count (optax.rmsprop(bias_correction=True)), got None."
                )
            nu = _bias_corrected(nu, decay, state.count)
            mu = None if mu is None else _bias_corrected(mu, decay, state.count)
        if mu is not None:
            nu = jax.tree.map(lambda v, m: v - m**2, nu, mu)
        if eps_in_sqrt:
            return jax.tree.map(lambda v: jnp.sqrt(v + jnp.asarray(eps, v.dtype)), nu)
        return jax.tree.map(lambda v: jnp.sqrt(v) + jnp.asarray(eps, v.dtype), nu)
