"""First-order PDEs by the method of characteristics (post 6): quasilinear and Charpit solvers with
blow-up detection, and density transport along any dynopt flow."""

from ._characteristics.charpit import charpit as charpit
from ._characteristics.density import (
    DensityTransport as DensityTransport,
    transport_density as transport_density,
)
from ._characteristics.quasilinear import quasilinear as quasilinear
from ._characteristics.reference import (
    burgers_crossing as burgers_crossing,
    density_chi2 as density_chi2,
    riccati_blowup as riccati_blowup,
    riccati_solution as riccati_solution,
)
from ._characteristics.solution import (
    BlowUp as BlowUp,
    BlowUpError as BlowUpError,
    Characteristics as Characteristics,
    to_grid as to_grid,
)
