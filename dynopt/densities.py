r"""Transition densities of $dx = p(x,t)\,dt + \sqrt\alpha\,dW$ by four routes that agree
(posts 7–8 of the path-integral series): Monte Carlo (diffrax), Fokker–Planck (method of lines,
implicit diffrax solver), the time-sliced path integral (Itô and midpoint conventions, each with
its Jacobian) and the asymmetric random walk; the Onsager–Machlup action and its boundary form
(eq. 66 ⇔ 68–69); Itô's lemma by autodiff; geometric Brownian motion and Black–Scholes.

Every route is written once, on tensor grids in $\mathbb R^d$ (`*_nd`); the 1-D functions are its
$d = 1$ case, returning a `GridDensity`. A route takes a `VectorSDE`, a `ScalarSDE` (1-D), or any
flow with constant additive noise together with its problem (`problem=`; e.g.
`dynopt.sde.Langevin(T)`, $\alpha = 2T$, via `VectorSDE.from_flow`).

Convention: $\alpha$ is the variance rate; $dx = b\,dt + \sigma\,dW$ has $\alpha = \sigma^2$.
Anisotropic noise $dx = p\,dt + B\,dW$ is a `VectorSDE` whose `alpha` is the diffusion matrix
$D = BB^\top$ (symmetric positive definite; $\alpha$ is $D = \alpha I$): every route but the
random walk (diagonal $D$ only) takes it.
"""

from ._densities.actions import (
    action_eq66 as action_eq66,
    action_eq68 as action_eq68,
    boundary_term as boundary_term,
    mehler_kernel as mehler_kernel,
    onsager_machlup_action as onsager_machlup_action,
    potential_V as potential_V,
)
from ._densities.base import (
    antiderivative as antiderivative,
    GridDensity as GridDensity,
    linear_cdf as linear_cdf,
    linear_density as linear_density,
    linear_sde as linear_sde,
    Polynomial as Polynomial,
    ScalarSDE as ScalarSDE,
)
from ._densities.fokker_planck import (
    fokker_planck as fokker_planck,
    fokker_planck_nd as fokker_planck_nd,
)
from ._densities.gbm import (
    black_scholes_call as black_scholes_call,
    discounted_payoff as discounted_payoff,
    GBM as GBM,
    lognormal_density as lognormal_density,
)
from ._densities.ito import ito_lemma as ito_lemma
from ._densities.monte_carlo import (
    bin_probabilities as bin_probabilities,
    histogram_density as histogram_density,
    histogram_density_nd as histogram_density_nd,
    monte_carlo_density as monte_carlo_density,
    monte_carlo_density_nd as monte_carlo_density_nd,
    monte_carlo_samples as monte_carlo_samples,
    monte_carlo_samples_nd as monte_carlo_samples_nd,
    total_variation as total_variation,
    total_variation_nd as total_variation_nd,
)
from ._densities.path_integral import (
    path_integral as path_integral,
    path_integral_nd as path_integral_nd,
    short_time_propagator as short_time_propagator,
    short_time_propagator_nd as short_time_propagator_nd,
)
from ._densities.random_walk import random_walk as random_walk, random_walk_nd as random_walk_nd
from ._densities.vector import (
    as_vector_sde as as_vector_sde,
    gaussian_density as gaussian_density,
    linear_density_nd as linear_density_nd,
    linear_moments as linear_moments,
    linear_vector_sde as linear_vector_sde,
    LinearDrift as LinearDrift,
    mesh_points as mesh_points,
    short_time_density as short_time_density,
    short_time_density_nd as short_time_density_nd,
    stationary_density as stationary_density,
    stationary_density_nd as stationary_density_nd,
    TensorDensity as TensorDensity,
    VectorSDE as VectorSDE,
)
