r"""The validators dynopt's own flows and discretization maps use, for yours.

Three tiers: **construction** (a concrete value out of range raises `ValueError` naming the
argument and the valid range, before anything compiles), **trace time** (a traced value inside
`jit`/`vmap`/`grad` cannot be inspected, so the same call) wraps it **inside `jit`** in
`eqx.error_if`: a bad value raises when the compiled program runs (under `vmap`, if any entry
is bad). Use the value a validator returns, or the runtime check is dropped.

- `hyperparameter(name, default=..., **bounds)`: a flow's field, an array leaf (new values do
  not recompile), checked by `interval` on construction or inside `jit`;
- `interval(name, value, lower=, upper=, lower_open=, upper_open=, allow_inf=, hint=)`: every
  entry a real number in the range; all three tiers;
- `positive` (> 0), `nonnegative` (>= 0), `decay` (an EMA decay or momentum in [0, 1)):
  shorthands of `interval`, all three tiers;
- `rate_decay(name, rate, step_size)`: a map's EMA decay $1 - a h$ checked in [0, 1) (returns
  it), all three tiers;
- `check(value, bad, msg)`: inside `jit`, for a condition your code computes (`eqx.error_if`);
- `choice`, `flag`, `positive_int`, `solver_options`: static options, construction only;
- `is_traced(value)`: whether a value is a tracer (for a check of your own).

```python
class MyFlow(dynopt.flows.AbstractFlow):  # with init, params and vector_field
    kappa: jax.Array = validation.hyperparameter("kappa", lower=0.0, lower_open=True)
    eps: jax.Array = validation.hyperparameter("eps", default=1e-8, lower=0.0)

class MyMap(dynopt.maps.AbstractMap):  # heavy ball: optax.sgd(h**2, momentum=1 - kappa h)
    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(optax.sgd)

    def hyperparams(self, flow, h):
        return {"learning_rate": h**2, "momentum": validation.rate_decay("kappa", flow.kappa, h)}
```
"""

from ._maps.base import rate_decay as rate_decay
from ._validation import (
    check as check,
    choice as choice,
    decay as decay,
    flag as flag,
    hyperparameter as hyperparameter,
    interval as interval,
    is_traced as is_traced,
    nonnegative as nonnegative,
    positive as positive,
    positive_int as positive_int,
    solver_options as solver_options,
)
