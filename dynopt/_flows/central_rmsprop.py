r"""The central flow of scalar RMSProp (Cohen, Damian, Talwalkar, Kolter, Lee, ICLR 2025, §4),
in the time of `GlobalRMSPropFlow` ($t = kh$, $\kappa = (1-\beta_2)/h$).

Scalar RMSProp, $G_{k+1} = \beta_2 G_k + (1-\beta_2)\|g_k\|^2$, $\theta_{k+1} = \theta_k -
h\,g_k/\sqrt{G_{k+1}+\epsilon}$, is stable while its effective sharpness $h S(\theta)/\sqrt{G +
\epsilon}$ stays below 2, i.e. the top eigenvalues of $H$ below $\tau = 2\sqrt{G+\epsilon}/h$. At
the edge it oscillates along the top eigenvectors with covariance $\Sigma = UXU^\top$, and its
time average follows

$$\dot\theta = -\frac{\nabla L + \frac12\nabla_\theta\langle H, \Sigma\rangle}{\sqrt{G+\epsilon}},
\qquad \dot G = \kappa\big(\|\nabla L\|^2 + \langle\Sigma, H^2\rangle - G\big):$$

the second-moment equation gains the oscillation's gradient energy $\langle\Sigma, H^2\rangle =
\sum_a X_{aa}\lambda_a^2$, which raises $G$ and so the threshold $\tau$ (the optimizer adapts its
step to the edge). $X$ solves the complementarity problem of `CentralFlow` for the gaps $B =
\tau - \Lambda$: with $\sqrt{G+\epsilon}\,\dot B = g + \frac12\mathcal M(X) + \frac{\kappa}{h}
(\|\nabla L\|^2 + \langle\Sigma,H^2\rangle - G)\,I$,

$$X \succeq 0,\quad K(X) = c + \tfrac12\mathcal M(X) + \tfrac{\kappa\tau^2}{h}\,\mathrm{tr}(X)\,I
\succeq 0,\quad \langle X, K\rangle = 0,\qquad c = g + \tfrac{\kappa}{h}(\|\nabla L\|^2 - G)\,I +
r\sqrt{G+\epsilon}\,B,$$

where the solve's operator takes $\lambda_a = \tau$ in $\langle\Sigma, H^2\rangle$ (exact on the
directions where the constraint binds, and what keeps the operator symmetric positive
semi-definite: the convex program of `solve_complementarity` with the Gram tensor plus
$\frac{2\kappa\tau^2}{h}\delta_{ij}\delta_{ab}$); the $G$ equation itself uses the eigenvalues.
One direction: $\sigma^2 = \max(0, -c/(\frac12\|\nabla S\|^2 + \kappa\tau^2/h))$. As for
`CentralFlow`, the directions enter the solve decoupled by their relative gaps $\delta_i = B_i/\tau$
(`dynopt._flows.central`'s module docstring: a tracked direction far below the threshold cannot
tilt $\Sigma$). The stationary preconditioner: $\sqrt{G+\epsilon} = \max(hS(\theta)/2,
\sqrt{\|\nabla L\|^2+\epsilon})$, at the edge $hS/2$ (the threshold pinned to the sharpness),
`stationary_scale`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Params, Scalar, ScalarLike
from .._problem import Problem
from .._sharpness import Eigenpairs
from .._validation import hyperparameter, is_traced
from .adaptive import RMSPropState
from .base import AbstractFlow
from .central import check_sizes, hessian_derivative, oscillation, warm_eigenpairs


class AbstractRMSPropCentralFlow(AbstractFlow):
    """The hyper-parameters and options shared by RMSProp's two central flows (state
    `RMSPropState(θ, G)`)."""

    learning_rate: Array = hyperparameter("learning_rate", lower=0.0, lower_open=True)
    kappa: Array = hyperparameter("kappa", lower=0.0, lower_open=True)
    eps: Array = hyperparameter("eps", default=1e-8, lower=0.0)
    initial_scale: Array = hyperparameter("initial_scale", default=0.0, lower=0.0)
    k: int = eqx.field(static=True, default=2)
    basis: Array | None = None
    stabilization: Array = hyperparameter("stabilization", default=1.0, lower=0.0, lower_open=True)
    eig_method: str = eqx.field(static=True, default="lanczos")
    eig_iters: int = eqx.field(static=True, default=48)
    eig_tol: float = eqx.field(static=True, default=1e-9)
    qp_iters: int = eqx.field(static=True, default=2000)
    qp_tol: float = eqx.field(static=True, default=1e-10)

    def __check_init__(self):
        check_sizes(self)
        eps, scale = self.eps, self.initial_scale
        if not (is_traced(eps) or is_traced(scale)) and bool(
            jnp.any((jnp.asarray(eps) == 0) & (jnp.asarray(scale) == 0))
        ):
            raise ValueError(
                "eps and initial_scale are both 0: the preconditioner sqrt(G + eps) is 0 at the "
                "start, where the flow divides the gradient by it. Give eps > 0 (RMSProp's "
                "1e-8 by default) or initial_scale > 0."
            )

    def params(self, state: RMSPropState) -> Params:
        return state.params


class ScalarRMSPropCentralFlow(AbstractRMSPropCentralFlow):
    r"""The central flow of scalar RMSProp (module docstring), state `RMSPropState(θ, G)` with a
    scalar $G$. With every gap closing slower than its rate it is `GlobalRMSPropFlow` exactly.

    Solved by `dynopt.solve(flow, problem, ts, solver="tsit5")` (or another explicit solver,
    named: `solve`'s automatic choice differentiates the vector field, which the eigen-solver's
    loops do not allow).

    **Arguments:**

    - `learning_rate`: $h > 0$; `kappa`: $\kappa = (1-\beta_2)/h > 0$; `eps`: $\epsilon \ge 0$;
      `initial_scale`: $G(0) \ge 0$ (all array leaves: vmappable).
    - `k`, `basis`, `stabilization`, `eig_method`, `eig_iters`, `eig_tol`, `qp_iters`,
      `qp_tol`: as `CentralFlow` (the stabilization rate is $r$ = `stabilization`$/h$).

    **Raises:** `ValueError` for bad hyper-parameters or options (as `CentralFlow`'s; `eps` and
    `initial_scale` both 0 included: the preconditioner would start at 0); at run time an error
    when the complementarity solve does not converge, or a Hessian-vector product or the third
    derivative along the top eigenvectors is not finite.
    """

    def central(
        self, state: RMSPropState, problem: Problem
    ) -> tuple[Eigenpairs, Array, Scalar, RMSPropState]:
        """`(eigenpairs, X, residual, d(state)/dt)` at `state`."""
        params, G = state
        flat, unravel = ravel_pytree(params)
        eig = warm_eigenpairs(self, problem, params, flat)
        grad = ravel_pytree(problem.grad(params))[0]
        U, lam = eig.vectors, eig.values
        h, kappa = self.learning_rate.astype(flat.dtype), self.kappa.astype(flat.dtype)
        root = jnp.sqrt(G + self.eps)
        tau = 2.0 * root / h
        gsq = jnp.vdot(grad, grad)
        g = U.T @ hessian_derivative(problem, params, grad, U)
        rate = self.stabilization.astype(flat.dtype) / h
        eye = jnp.eye(self.k, dtype=flat.dtype)
        drift_c = 0.5 * (g + g.T) + (kappa / h) * (gsq - G) * eye
        # The oscillation's gradient energy in the G equation, with λ_a = τ (module docstring),
        # for the decoupled directions d_a u_a.
        energy = lambda d: (
            (2.0 * kappa * tau**2 / h) * jnp.einsum("ij,ab->ijab", jnp.diag(d**2), jnp.diag(d**2))
        )
        X, residual, drift = oscillation(
            problem,
            params,
            U,
            drift_c,
            rate * root * (tau - lam),
            1.0 - lam / tau,
            lambda T, d: jnp.einsum("ijn,abn->ijab", T, T) + energy(d),
            qp_iters=self.qp_iters,
            qp_tol=self.qp_tol,
            who="ScalarRMSPropCentralFlow",
        )
        dtheta = unravel(-(grad + drift) / root)
        dG = kappa * (gsq + jnp.sum(jnp.diagonal(X) * lam**2) - G)
        return eig, X, residual, RMSPropState(dtheta, dG)

    def init(self, params: Params) -> RMSPropState:
        dtype = jax.tree.leaves(params)[0].dtype
        return RMSPropState(params, jnp.asarray(self.initial_scale, dtype))

    def vector_field(self, t: ScalarLike, state: RMSPropState, problem: Problem) -> RMSPropState:
        del t
        return self.central(state, problem)[3]

    def predicted_loss(self, state: RMSPropState, problem: Problem) -> Scalar:
        r"""The time-averaged loss $L(\theta) + \frac12\langle\Sigma, H\rangle$."""
        eig, X, _, _ = self.central(state, problem)
        return problem.loss(state.params) + 0.5 * jnp.sum(jnp.diagonal(X) * eig.values)

    def stationary_scale(self, state: RMSPropState, problem: Problem) -> Scalar:
        r"""The stationary preconditioner $\sqrt{\bar G+\epsilon} = \max\big(h\,S(\theta)/2,
        \sqrt{\|\nabla L(\theta)\|^2 + \epsilon}\big)$: where $G$ and $\Sigma$ come to rest at
        fixed $\theta$ ($\bar G = \|\nabla L\|^2 + \sigma^2S^2$ with $\sigma^2 \ge 0$, $\tau \ge
        S$, $\sigma^2(\tau - S) = 0$). At the edge ($\sigma^2 > 0$) it is $hS/2$, the value that
        puts the effective sharpness at 2; below it ($\|\nabla L\|^2 + \epsilon \ge (hS/2)^2$)
        $G$ rests at $\|\nabla L\|^2$, the stable flow's. Only the state's $\theta$ is read (and
        the eigen-solve's warm start `basis`)."""
        params = state.params
        flat = ravel_pytree(params)[0]
        top = warm_eigenpairs(self, problem, params, flat).values[0]
        grad = ravel_pytree(problem.grad(params))[0]
        h, eps = self.learning_rate.astype(flat.dtype), self.eps.astype(flat.dtype)
        return jnp.maximum(0.5 * h * top, jnp.sqrt(jnp.vdot(grad, grad) + eps))

    def discretize(self, step_size: ScalarLike):
        raise NotImplementedError(
            "ScalarRMSPropCentralFlow models scalar RMSProp's time average; run the optimizer "
            "with dynopt.transforms.global_rmsprop(h, 1 - κh, ε)."
        )


class RMSPropCentralFlow(AbstractRMSPropCentralFlow):
    r"""The central flow of per-coordinate RMSProp, in the time of `RMSPropFlow` ($t = kh$,
    $\kappa = (1-\beta_2)/h$), state `RMSPropState(θ, G)` with $G$ like $\theta$.

    With $P = \mathrm{diag}\sqrt{G+\epsilon}$, RMSProp is stable while $h\lambda_{\max}(P^{-1}H)
    < 2$; at the edge it oscillates along the generalized top eigenvectors $U$ ($HU = PU\Lambda$,
    $U^\top PU = I$) with covariance $\Sigma = UXU^\top$, and its time average follows

    $$\dot\theta = -P^{-1}\big[\nabla L + \tfrac12\nabla_\theta\langle H,\Sigma\rangle\big],
    \qquad \dot G = \kappa\big(\nabla L^{\odot 2} + \mathrm{diag}(H\Sigma H) - G\big),$$

    $\mathrm{diag}(H\Sigma H)_c = \sum_{ab}X_{ab}\lambda_a\lambda_b P_c^2 u_{ac}u_{bc}$ (the
    oscillation's gradient energy per coordinate). The gaps $B = U^\top(\tau P - H)U = \tau -
    \Lambda$, $\tau = 2/h$, obey $\dot B = \tau U^\top\dot PU - U^\top\dot HU$, linear in $X$:
    $K(X) = \dot B + rB = c + \frac12\mathcal M(X) \succeq 0$, $X \succeq 0$, $\langle X,
    K\rangle = 0$ with

    $$c_{ij} = \langle G_{ij}, P^{-1}\nabla L\rangle + \tau\kappa\sum_c u_{ic}u_{jc}
      \frac{(\nabla L)_c^2 - G_c}{2P_c} + rB_{ij},\quad
      \mathcal M(X)_{ij} = \sum_{ab}X_{ab}\Big(\langle G_{ij}, P^{-1}G_{ab}\rangle +
      \tau^3\kappa\sum_c P_c\,u_{ic}u_{jc}u_{ac}u_{bc}\Big),$$

    $G_{ij} = \nabla_\theta(u_i^\top Hu_j)$; the second term takes $\lambda_a = \tau$ (exact
    where the constraint binds), which makes $\mathcal M$ symmetric positive semi-definite, so
    `solve_complementarity` applies; the $G$ equation uses the eigenvalues. With every gap
    closing slower than its rate it is `RMSPropFlow` exactly. `stationary_second_moment` is the
    value $G$ relaxes to at fixed $\theta$ and $\Sigma$ (not the paper's stationary
    preconditioner, where $\Sigma$ is at rest too).

    **Arguments:** as `ScalarRMSPropCentralFlow` (`initial_scale` a scalar for every coordinate;
    solved, as it, by `dynopt.solve` with an explicit solver named).
    """

    def central(
        self, state: RMSPropState, problem: Problem
    ) -> tuple[Eigenpairs, Array, Array, Scalar, RMSPropState]:
        """`(eigenpairs of P^{-1/2}HP^{-1/2}, U, X, residual, d(state)/dt)` at `state`."""
        params = state.params
        flat, unravel = ravel_pytree(params)
        G = ravel_pytree(state.G)[0]
        p = jnp.sqrt(G + self.eps)
        eig = warm_eigenpairs(self, problem, params, flat, diag=unravel(p))
        U, lam = eig.vectors / jnp.sqrt(p)[:, None], eig.values  # HU = PUΛ, UᵀPU = I
        grad = ravel_pytree(problem.grad(params))[0]
        h, kappa = self.learning_rate.astype(flat.dtype), self.kappa.astype(flat.dtype)
        tau = 2.0 / h
        rate = self.stabilization.astype(flat.dtype) / h
        g = U.T @ hessian_derivative(problem, params, grad / p, U)
        nu_term = jnp.einsum("ci,cj,c->ij", U, U, (grad**2 - G) / (2.0 * p))
        drift_c = 0.5 * (g + g.T) + tau * kappa * nu_term

        def energy(d):  # for the decoupled directions d_a u_a
            V = U * d[None, :]
            return tau**3 * kappa * jnp.einsum("c,ci,cj,ca,cb->ijab", p, V, V, V, V)

        X, residual, drift = oscillation(
            problem,
            params,
            U,
            drift_c,
            rate * (tau - lam),
            1.0 - lam / tau,
            lambda T, d: jnp.einsum("ijn,abn->ijab", T, T / p[None, None, :]) + energy(d),
            qp_iters=self.qp_iters,
            qp_tol=self.qp_tol,
            who="RMSPropCentralFlow",
        )
        HU = p[:, None] * U * lam[None, :]  # H u_a = λ_a P u_a
        hsh = jnp.einsum("ca,ab,cb->c", HU, X, HU)  # diag(HΣH)
        dtheta = -(grad + drift) / p
        dG = kappa * (grad**2 + hsh - G)
        return eig, U, X, residual, RMSPropState(unravel(dtheta), unravel(dG))

    def init(self, params: Params) -> RMSPropState:
        G = jax.tree.map(lambda x: jnp.full_like(x, self.initial_scale), params)
        return RMSPropState(params, G)

    def vector_field(self, t: ScalarLike, state: RMSPropState, problem: Problem) -> RMSPropState:
        del t
        return self.central(state, problem)[4]

    def predicted_loss(self, state: RMSPropState, problem: Problem) -> Scalar:
        r"""The time-averaged loss $L(\theta) + \frac12\langle\Sigma, H\rangle = L +
        \frac12\sum_a X_{aa}\lambda_a$ ($U^\top HU = \Lambda$)."""
        eig, _, X, _, _ = self.central(state, problem)
        return problem.loss(state.params) + 0.5 * jnp.sum(jnp.diagonal(X) * eig.values)

    def stationary_second_moment(self, state: RMSPropState, problem: Problem) -> Params:
        r"""$G_\star = \nabla L^{\odot2} + \mathrm{diag}(H\Sigma H)$, the zero of the $G$
        equation at the current $\theta$ and the current $\Sigma$ (the $\Sigma$ of the state's
        own $G$). Not the stationary preconditioner $\bar P(\theta)$ of the central-flow paper,
        where $G$ and $\Sigma$ are at rest together ($\Sigma$ changes as $G$ does; that one
        solves $\min_{P}\sum_c (P_c + (\nabla L)_c^2/P_c)$ subject to $2P/h \succeq H$, not done
        here): the two agree only at such a rest point."""
        field = self.central(state, problem)[4]
        return jax.tree.map(lambda d, g: d / self.kappa + g, field.G, state.G)

    def discretize(self, step_size: ScalarLike):
        raise NotImplementedError(
            "RMSPropCentralFlow models RMSProp's time average; run optax.rmsprop(h, 1 - κh, ε) "
            "with dynopt.run."
        )
