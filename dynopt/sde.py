"""Flows with noise: SGD noise as an SDE, Langevin and Kramers dynamics, simulated by diffrax.

Each model is an `AbstractFlow` that declares a `diffusion`: its drift is a deterministic flow's
vector field (`GradientFlow` for `Langevin` and `SGDNoise`, `HeavyBall` for `Kramers`), so
`dynopt.solve` integrates the drift and `simulate(flow, problem, ...)` the SDE.

Gibbs-constant convention: $d\\theta = -\\nabla L\\,dt + \\sigma\\,dW$ has stationary law
$\\propto \\exp(-2L/\\sigma^2) = \\exp(-L/T)$ with $T = \\sigma^2/2$ (see `dynopt._sde.base`).
"""

from ._sde.base import (
    AbstractNoisyFlow as AbstractNoisyFlow,
    AbstractSDE as AbstractSDE,
    temperature_of as temperature_of,
)
from ._sde.closed_forms import (
    eyring_kramers_prefactor as eyring_kramers_prefactor,
    gibbs_bin_probabilities as gibbs_bin_probabilities,
    noisy_quadratic as noisy_quadratic,
)
from ._sde.estimators import (
    arrhenius_fit as arrhenius_fit,
    histogram_tv as histogram_tv,
    mean_with_se as mean_with_se,
    variance_with_se as variance_with_se,
)
from ._sde.langevin import Kramers as Kramers, Langevin as Langevin
from ._sde.moments import (
    quadratic_moments as quadratic_moments,
    quadratic_stationary_covariance as quadratic_stationary_covariance,
    QuadraticMoments as QuadraticMoments,
    scheduled_moments as scheduled_moments,
)
from ._sde.sgd import SGDNoise as SGDNoise
from ._sde.simulate import (
    first_passage as first_passage,
    SDEPaths as SDEPaths,
    simulate as simulate,
)
