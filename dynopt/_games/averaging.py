r"""Weight averages tracked beside a run: an optax wrapper whose state carries them, and the
observer that records them at `run`'s saved points.

For decays $\alpha_1, \dots, \alpha_m \in [0, 1)$ the averages of the iterates are
$\Theta^{(i)}_0 = \theta_0$, $\Theta^{(i)}_{k+1} = \alpha_i\Theta^{(i)}_k +
(1-\alpha_i)\theta_{k+1}$ (for a GAN: the generator EMA of Yazıcı et al. 2019). They never
change the run: the wrapped transform's updates pass through unchanged.

```python
disc = games.weight_averages(games.Alternating().discretize(0.1), (0.99, 0.999))
traj = dynopt.run(disc, game, 10_000, every=100, observe=games.averages)
theta_ema = traj.observations[1]  # (n_saved, n_decays, *theta.shape)
```
"""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._custom_types import Params
from .._discretization import Discretization
from .._validation import host_validated, interval


class WeightAveragesState(NamedTuple):
    """The wrapped transform's state and the averages (leaves `(num_decays, *leaf.shape)`)."""

    inner: Any
    averages: Params


def _averaged(
    transform: optax.GradientTransformation, decays: tuple[float, ...]
) -> optax.GradientTransformationExtraArgs:
    inner = optax.with_extra_args_support(transform)

    def init_fn(params):
        return WeightAveragesState(inner.init(params), _broadcast(params, len(decays)))

    def update_fn(updates, state, params=None, **extra):
        if params is None:
            raise ValueError("weight_averages needs params in update().")
        updates, inner_state = inner.update(updates, state.inner, params, **extra)
        new_params = optax.apply_updates(params, updates)

        def average(avg, theta):
            a = jnp.asarray(decays, theta.dtype).reshape((-1,) + (1,) * theta.ndim)
            return a * avg + (1 - a) * theta[None]

        averages = jax.tree.map(average, state.averages, new_params)
        return updates, WeightAveragesState(inner_state, averages)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _broadcast(params: Params, num: int) -> Params:
    return jax.tree.map(lambda x: jnp.broadcast_to(x[None], (num, *jnp.shape(x))), params)


class _AveragedFactory(eqx.Module):
    """`factory(**hyperparams)` wrapped: a hashable (static) factory for a `Discretization`."""

    factory: Any = eqx.field(static=True)
    decays: tuple[float, ...] = eqx.field(static=True)

    def __call__(self, **kwargs) -> optax.GradientTransformationExtraArgs:
        return _averaged(self.factory(**kwargs), self.decays)


class _AveragedInit(eqx.Module):
    """The wrapped discretization's own initial state (its `init_fn`), averages at $\\theta_0$."""

    factory: Any = eqx.field(static=True)
    init_fn: Any = eqx.field(static=True)
    decays: tuple[float, ...] = eqx.field(static=True)

    def __call__(self, disc: Discretization, params: Params, problem) -> WeightAveragesState:
        # `disc`'s dt was checked when it was built; rebuilt here inside the run's trace it needs
        # no runtime check (an `eqx.error_if` would keep the program out of JAX's persistent
        # cache: the mixture GAN's run recompiled, 3.2 s, on every `make run`).
        with host_validated():
            inner = Discretization(
                self.factory, disc.hyperparams, disc.dt, disc.options, self.init_fn
            )
        return WeightAveragesState(
            inner.init(params, problem), _broadcast(params, len(self.decays))
        )


def weight_averages(transform, decays) -> Any:
    r"""Wrap `transform` (an optax transform or a `dynopt.Discretization`) so that its state also
    carries the exponential averages of the iterates for each decay in `decays`:
    $\Theta_{k+1} = \alpha\Theta_k + (1-\alpha)\theta_{k+1}$, $\Theta_0 = \theta_0$. The updates
    (hence the run) are unchanged; read the averages with `run(..., observe=averages)`.

    **Arguments:**

    - `transform`: an `optax.GradientTransformation` (extra arguments are passed through to it
      if it takes them), or a `Discretization` (its hyper-parameters, `dt`, options and initial
      state are kept, so batches of step sizes still run under one `vmap`).
    - `decays`: one or more decays $\alpha \in [0, 1)$. They are static (part of the compiled
      program, like `every`): a new set of decays compiles anew.

    **Returns:** the same kind of object as `transform`, whose state is a
    `WeightAveragesState(inner, averages)` (`averages`: leaves `(len(decays), *leaf.shape)`).

    **Raises:** `ValueError` for decays outside $[0, 1)$ or an unsupported `transform`.
    """
    decays = tuple(float(a) for a in np.ravel(np.asarray(decays, dtype=np.float64)))
    if not decays:
        raise ValueError("decays must hold at least one decay in [0, 1).")
    interval("decays", decays, lower=0.0, upper=1.0, upper_open=True)
    if isinstance(transform, Discretization):
        init_fn = (
            None
            if transform.init_fn is None
            else _AveragedInit(transform.factory, transform.init_fn, decays)
        )
        return Discretization(
            _AveragedFactory(transform.factory, decays),
            transform.hyperparams,
            transform.dt,
            transform.options,
            init_fn,
        )
    if isinstance(transform, optax.GradientTransformation):
        return _averaged(transform, decays)
    raise ValueError(
        "transform must be an optax.GradientTransformation or a dynopt.Discretization, got "
        f"{type(transform).__name__}."
    )


def averages(params: Params, opt_state: WeightAveragesState, problem) -> Params:
    """The observer for `run(..., observe=averages)`: the weight averages carried by the state of a
    `weight_averages` transform.

    **Arguments:**

    - `params`: the current parameters (unused: the observer protocol).
    - `opt_state`: the optimizer state, a `WeightAveragesState`.
    - `problem`: the problem (unused).

    **Returns:** `opt_state.averages`, leaves of shape `(num_decays, *leaf.shape)` (one average
    per decay) at each saved point.

    **Raises:** `ValueError` for an `opt_state` that is not a `WeightAveragesState` (a transform
    not wrapped by `weight_averages`).
    """
    del params, problem
    if not isinstance(opt_state, WeightAveragesState):
        raise ValueError(
            "observe=averages needs a transform wrapped by dynopt.games.weight_averages, got "
            f"an optimizer state of type {type(opt_state).__name__}."
        )
    return opt_state.averages
