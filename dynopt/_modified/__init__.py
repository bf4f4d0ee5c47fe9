"""Automatic backward error analysis: the modified flows of any optax update map."""

from .flow import (
    as_flow as as_flow,
    modified_flow as modified_flow,
    ModifiedFlow as ModifiedFlow,
    slow_manifold_init as slow_manifold_init,
    Terms as Terms,
)
from .recursion import modified_values as modified_values
from .slow import ModifiedState as ModifiedState
from .taylor import taylor_coefficients as taylor_coefficients
