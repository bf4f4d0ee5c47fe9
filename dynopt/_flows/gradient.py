"""Gradient flow and its first-order modified (backward-error-analysis) flow."""

from typing import ClassVar

import jax
import jax.numpy as jnp

from .._custom_types import Array, Params, Scalar, ScalarLike
from .._discretization import Discretization
from .._maps.gradient import GradientDescent
from .._problem import Problem
from .._transforms.adaptive import tree_norm
from .._validation import hyperparameter
from .base import AbstractMappedFlow, check_own_step


class GradientFlow(AbstractMappedFlow):
    r"""Gradient flow $\dot\theta = -\nabla L(\theta)$.

    **Discretization** (`dynopt.maps.GradientDescent`): explicit Euler with step $h$ is gradient
    descent $\theta_{k+1} = \theta_k - \eta\nabla L(\theta_k)$ (`optax.sgd(η)`), with $\eta = h$
    and $t = kh$. Global error $O(h)$; on a quadratic, GD is stable iff $h < 2/\lambda_{\max}$
    while the flow converges for every start.

    **Lyapunov identity:** $\frac{d}{dt}L(\theta(t)) = -\|\nabla L\|^2 \le 0$.
    """

    default_map: ClassVar[type] = GradientDescent

    def init(self, params: Params) -> Params:
        return params

    def vector_field(self, t: ScalarLike, state: Params, problem: Problem) -> Params:
        del t
        return jax.tree.map(jnp.negative, problem.grad(state))

    def params(self, state: Params) -> Params:
        return state

    @classmethod
    def from_hyperparams(cls, learning_rate: ScalarLike) -> tuple["GradientFlow", Array]:
        """Inverse map: GD with learning rate $\\eta$ follows `GradientFlow()` with $dt = \\eta$."""
        return GradientDescent().inverse(learning_rate)

    def loss_rate(self, t: ScalarLike, state: Params, problem: Problem) -> Scalar:
        r"""$-\|\nabla L\|^2$."""
        del t
        return -tree_norm(problem.grad(state), squared=True)

    def closed_form(self, problem: Problem):
        """The quadratic problems' `flow_solution` (eigendecomposition), else `None`."""
        return getattr(problem, "flow_solution", None)


class ModifiedGradientFlow(AbstractMappedFlow):
    r"""The first-order modified flow of gradient descent with step $h$ (backward error analysis,
    Barrett & Dherin 2021):

    $$\dot\theta = -\nabla\tilde L(\theta),\qquad
      \tilde L = L + \tfrac{h}{4}\|\nabla L\|^2,\qquad
      \nabla\tilde L = \nabla L + \tfrac{h}{2}\nabla^2 L\,\nabla L.$$

    GD with step $h$ (`discretize(h)`, the same `optax.sgd(h)` as `GradientFlow`) tracks this flow
    with global error $O(h^2)$ on bounded time intervals, against $O(h)$ for the plain gradient
    flow.
    The Hessian-vector product is a `jax.jvp` of the gradient; no Hessian is formed.

    `compare(GradientFlow(), problem, hs, t1, reference=ModifiedGradientFlow)` measures GD against
    the modified flow of each step size in the sweep.

    **Arguments:**

    - `step_size`: the GD step $h > 0$ whose modified flow this is.
    """

    default_map: ClassVar[type] = GradientDescent

    step_size: Array = hyperparameter("step_size", lower=0.0, lower_open=True)

    def init(self, params: Params) -> Params:
        return params

    def vector_field(self, t: ScalarLike, state: Params, problem: Problem) -> Params:
        del t
        g, hg = jax.jvp(problem.grad, (state,), (problem.grad(state),))
        h = self.step_size
        return jax.tree.map(lambda a, b: -(a + 0.5 * h * b), g, hg)

    def params(self, state: Params) -> Params:
        return state

    def discretize(self, step_size: ScalarLike) -> Discretization:
        r"""GD with step `step_size`, which must be this flow's own $h$ (`self.step_size`).

        GD with another step $h'$ follows `ModifiedGradientFlow(h')`, an $O(|h - h'|)$ different
        flow: as $h' \to 0$ it converges to the gradient flow, not to this one, so a sweep of
        step sizes against one modified flow measures no order. Sweep
        `compare(GradientFlow(), problem, hs, t1, reference=ModifiedGradientFlow)` instead.

        **Raises:** `ValueError` for a concrete `step_size` not equal to `self.step_size`
        (to a relative $10^{-6}$, so a float32 copy of $h$ passes)."""
        check_own_step(
            step_size,
            self.step_size,
            "step_size",
            "GD with step h follows ModifiedGradientFlow(h)",
            "Use ModifiedGradientFlow(h).discretize(h), or compare(GradientFlow(), problem, hs, "
            "t1, reference=ModifiedGradientFlow) for a sweep.",
        )
        return super().discretize(step_size)

    @classmethod
    def from_hyperparams(cls, learning_rate: ScalarLike) -> tuple["ModifiedGradientFlow", Array]:
        """GD with learning rate $\\eta$ tracks `ModifiedGradientFlow(η)` to $O(\\eta^2)$."""
        _, h = GradientDescent().inverse(learning_rate)
        return cls(h), h
