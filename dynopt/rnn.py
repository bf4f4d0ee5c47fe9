"""RNNs as ODE integrators (post 5): `ODECell`, parameter inference two ways, identifiability."""

from ._rnn.cell import ODECell as ODECell, ORDERS as ORDERS, TABLEAUS as TABLEAUS
from ._rnn.identifiability import (
    Identifiability as Identifiability,
    identifiability as identifiability,
    loss_profile as loss_profile,
    sensitivity_analysis as sensitivity_analysis,
)
from ._rnn.inference import (
    diffrax_model as diffrax_model,
    Fit as Fit,
    fit as fit,
    ObservationModel as ObservationModel,
    Observations as Observations,
    unrolled_model as unrolled_model,
)
from ._rnn.models import (
    competitive_lotka_volterra as competitive_lotka_volterra,
    POST5_PARAM_NAMES as POST5_PARAM_NAMES,
    POST5_PARAMS as POST5_PARAMS,
    POST5_Y0 as POST5_Y0,
)
