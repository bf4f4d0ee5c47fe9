"""dynopt: optimization algorithms as discretized dynamical systems.

Problem -> Flow -> `solve` (diffrax reference) and `Flow.discretize` (optax) -> `run` -> `compare`.
"""

from importlib.metadata import PackageNotFoundError as _NotInstalled, version as _version

from . import (
    characteristics as characteristics,
    correspondences as correspondences,
    densities as densities,
    flows as flows,
    games as games,
    lyapunov as lyapunov,
    maps as maps,
    networks as networks,
    problems as problems,
    rnn as rnn,
    sde as sde,
    sharpness as sharpness,
    transforms as transforms,
    validation as validation,
)
from ._compare import compare as compare, OutsideSeriesRegime as OutsideSeriesRegime
from ._discretization import Discretization as Discretization
from ._modified import modified_flow as modified_flow
from ._order import (
    assess_order as assess_order,
    fit_order as fit_order,
    local_orders as local_orders,
    OrderAssessment as OrderAssessment,
)
from ._problem import AbstractProblem as AbstractProblem, Problem as Problem
from ._progress import show_progress as show_progress
from ._run import run as run
from ._sharding import gather as gather
from ._solve import solve as solve, SolveError as SolveError, stiffness_ratio as stiffness_ratio
from ._trajectory import Comparison as Comparison, Trajectory as Trajectory


try:
    __version__ = _version("dynopt")
except _NotInstalled:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
