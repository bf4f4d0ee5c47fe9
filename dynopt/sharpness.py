"""Top-k Hessian (and preconditioned-Hessian) eigenpairs from Hessian-vector products, and their
warm-started tracking inside `run`."""

from ._sharpness import (
    adam_preconditioner as adam_preconditioner,
    dense_hessian as dense_hessian,
    Eigenpairs as Eigenpairs,
    hvp_operator as hvp_operator,
    krylov_start as krylov_start,
    random_start as random_start,
    rmsprop_preconditioner as rmsprop_preconditioner,
    sharpness as sharpness,
    SharpnessState as SharpnessState,
    top_eigenpairs as top_eigenpairs,
    track_sharpness as track_sharpness,
)
