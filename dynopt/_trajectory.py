"""Result containers: `Trajectory` (one run or one reference solve) and `Comparison`."""

import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import Array, Bool, Float, Int, Params, PyTree, ScalarLike


class Trajectory(eqx.Module):
    r"""A trajectory $\theta(t)$ saved at times `ts`.

    **Fields:**

    - `ts`: the save times. For a discrete run these are $k\,\Delta t$ at the saved steps.
    - `params`: the parameters at `ts`, a pytree whose leaves have a leading time axis.
    - `loss`: $L(\theta)$ at `ts`.
    - `diverged_at`: the first step $k$ at which the iterate (or its loss) was non-finite, or $-1$.
      From that step on, the run keeps its last finite iterate instead of flooding with NaNs.
    - `steps`: the discrete step index of each saved point (`None` for reference solves).
    - `interpolation`: the diffrax dense interpolation of a reference solve (`None` for runs),
      used by `evaluate`.
    - `flow`: the flow a reference solve integrated (maps a state to parameters in `evaluate`).
    - `solver`: the diffrax solver's name for reference solves, else `None`.
    - `stats`: solver statistics (`num_steps`, `num_accepted_steps`, ...) or `{}`.
    - `observations`: what `run(..., observe=...)` recorded at the saved points (a pytree whose
      leaves have the time axis after the batch axes), else `None`.

    For a game (`dynopt.games.Game`) `params` is the pair `(phi, theta)` and `loss` the
    Hamiltonian $\frac12\|\xi\|^2$. Batched runs (a vector of step sizes or of keys) carry
    leading batch axes on every array.
    """

    ts: Float[Array, "*batch n"]
    params: PyTree
    loss: Float[Array, "*batch n"]
    diverged_at: Int[Array, "*batch"]
    steps: Int[Array, "*batch n"] | None = None
    interpolation: PyTree | None = None
    flow: PyTree | None = None
    solver: str | None = eqx.field(static=True, default=None)
    stats: dict = eqx.field(default_factory=dict)
    observations: PyTree | None = None

    def evaluate(self, t: ScalarLike) -> Params:
        """Parameters at any time `t` in the solve's interval (dense output of a reference)."""
        if self.interpolation is None or self.flow is None:
            raise ValueError(
                "evaluate() needs the dense output of a reference solve (dynopt.solve); a "
                "discrete run is only defined at its saved steps (use .params)."
            )
        return self.flow.params(self.interpolation.evaluate(t))

    @property
    def diverged(self) -> Bool[Array, "*batch"]:
        return self.diverged_at >= 0

    @property
    def final_params(self) -> Params:
        """The last saved parameters (per batch entry)."""
        index = (slice(None),) * jnp.ndim(self.diverged_at) + (-1,)
        return jax.tree.map(lambda x: x[index], self.params)

    @property
    def valid(self) -> Bool[Array, "*batch n"]:
        """Mask of saved points taken before divergence."""
        if self.steps is None:
            return jnp.isfinite(self.loss)
        div = self.diverged_at[..., None]
        return (div < 0) | (self.steps < div)


class Comparison(eqx.Module):
    r"""Discrete runs against a reference flow, one entry per step size $h$.

    **Fields:**

    - `step_sizes`: the $h$ of each run (the argument of the discretization map).
    - `dts`: the time step $\Delta t$ of each run (`map(flow, h).dt`; $= h$ for most maps).
    - `errors`: $\max_{k \le N_h} \|\theta_k - \theta(k\,\Delta t)\|_2$, the largest error over the
      horizon at matched times (Euclidean norm over all parameters); `inf` if the run diverged.
    - `final_errors`: the same error at $t_1$.
    - `order`: least-squares slope of $\log$ `errors` against $\log \Delta t$ over the runs that
      stayed finite (`nan` if fewer than two): the order in the time step, whatever the map
      from $h$ to $\Delta t$ (e.g. $\Delta t = \sqrt\alpha$ for momentum maps).
    - `final_order`: the same slope for `final_errors`.
    - `diverged_at`: first non-finite step of each run, or $-1$.
    - `num_steps`: $N_h = t_1/\Delta t$.
    - `t1`, `solver`: the horizon and the reference solver's name.
    """

    step_sizes: Float[Array, " k"]
    dts: Float[Array, " k"]
    errors: Float[Array, " k"]
    final_errors: Float[Array, " k"]
    order: Float[Array, ""]
    final_order: Float[Array, ""]
    diverged_at: Int[Array, " k"]
    num_steps: Int[Array, " k"]
    t1: float = eqx.field(static=True)
    solver: str = eqx.field(static=True)

    @property
    def diverged(self) -> Bool[Array, " k"]:
        return self.diverged_at >= 0
