"""Built-in problems: closed-form quadratics, non-convex landscapes, finite-sum regressions."""

from ._problem import Problem as Problem
from ._problems.finite_sum import (
    finite_sum as finite_sum,
    linear_regression as linear_regression,
    logistic_regression as logistic_regression,
    mlp_regression as mlp_regression,
)
from ._problems.landscapes import (
    double_well as double_well,
    logcosh as logcosh,
    rosenbrock as rosenbrock,
)
from ._problems.quadratic import quadratic as quadratic
from ._sharding import data_mesh as data_mesh, shard_data as shard_data
