"""Two-player games as dynamical systems (post 4): a `Game` is a problem whose gradient oracle is
the simultaneous gradient field, so `dynopt.run`, `dynopt.compare` and `dynopt.solve` step it like
any loss. Here: game flows, GDA-type schemes as optax transforms, their modified flows, weight
averages tracked beside a run, discriminator regularizers, the Dirac GAN and a small mixture GAN."""

from ._games.averaging import (
    averages as averages,
    weight_averages as weight_averages,
    WeightAveragesState as WeightAveragesState,
)
from ._games.dirac import (
    dirac_gan as dirac_gan,
    dirac_linear_solution as dirac_linear_solution,
    DIRAC_VARIANTS as DIRAC_VARIANTS,
    linear_critic as linear_critic,
    normalized_critic as normalized_critic,
    orbit_verdict as orbit_verdict,
    PHI0 as PHI0,
    POST4_CASES as POST4_CASES,
    post4_game as post4_game,
    THETA0 as THETA0,
)
from ._games.flows import (
    GameFlow as GameFlow,
    modified_flow_growth as modified_flow_growth,
    ModifiedGameFlow as ModifiedGameFlow,
)
from ._games.game import Game as Game, minmax as minmax
from ._games.mixture import (
    generate as generate,
    mixture_gan as mixture_gan,
    mixture_modes as mixture_modes,
    mlp_critic as mlp_critic,
    mode_statistics as mode_statistics,
    sample_mixture as sample_mixture,
    sliced_wasserstein as sliced_wasserstein,
)
from ._games.regularizers import (
    AbstractPenalty as AbstractPenalty,
    GradientPenalty as GradientPenalty,
    R1 as R1,
    total_penalty as total_penalty,
    WeightDecay as WeightDecay,
)
from ._games.schemes import (
    AbstractScheme as AbstractScheme,
    Alternating as Alternating,
    alternating_gda as alternating_gda,
    Consensus as Consensus,
    consensus_optimization as consensus_optimization,
    Extragradient as Extragradient,
    extragradient as extragradient,
    measured_growth as measured_growth,
    Optimistic as Optimistic,
    optimistic_gda as optimistic_gda,
    scheme as scheme,
    SCHEMES as SCHEMES,
    Simultaneous as Simultaneous,
    simultaneous_gda as simultaneous_gda,
)
