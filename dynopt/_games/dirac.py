r"""The 2-D Dirac GAN of post 4 (Mescheder et al. 2018): data $\delta_0$, generator
$\delta_\theta$, linear discriminator $D(x) = \varphi\cdot x$ (before any activation)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, ScalarLike
from .._validation import hyperparameter, interval, is_traced, positive
from .game import Game
from .regularizers import AbstractPenalty, GradientPenalty, total_penalty


DIRAC_VARIANTS = ("vanilla", "wgan", "wgan-gp", "gan-qp")
PHI0, THETA0 = (0.1, 0.2), (0.2, 0.1)  # post 4 / bojone/gan/gan_numeric.py: [0.1, 0.2, 0.2, 0.1]

# Post 4's runs (gan_numeric.py: solve_ivp RK45 from PHI0, THETA0, saved at arange(0, T, h)).
POST4_CASES = {
    "vanilla": dict(variant="vanilla", horizon=100.0, save_every=0.1, window=0.3),
    "wgan": dict(variant="wgan", horizon=10.0, save_every=0.01, window=0.4),
    "wgan-gp c=0": dict(
        variant="wgan-gp", weight=0.1, center=0.0, horizon=40.0, save_every=0.1, window=0.3
    ),
    "wgan-gp c=1": dict(
        variant="wgan-gp", weight=0.1, center=1.0, horizon=40.0, save_every=0.1, window=1.1
    ),
    "gan-qp": dict(variant="gan-qp", weight=1.0, horizon=40.0, save_every=0.1, window=0.4),
}


def linear_critic(phi, x):
    r"""The Dirac GAN's linear discriminator $D(x) = \varphi\cdot x$ (before any activation).

    **Arguments:**

    - `phi`: the discriminator's parameters $\varphi$, shape $(n,)$.
    - `x`: one sample, shape $(n,)$.

    **Returns:** the scalar $\varphi\cdot x$.
    """
    return jnp.dot(phi, x)


def normalized_critic(phi, x):
    r"""The normalized discriminator $D(x) = \varphi\cdot x/\|\varphi\|$: WGAN's Lipschitz
    constraint as a normalization.

    **Arguments:**

    - `phi`: the discriminator's parameters $\varphi \neq 0$, shape $(n,)$.
    - `x`: one sample, shape $(n,)$.

    **Returns:** the scalar $\varphi\cdot x/\|\varphi\|$ (not finite at $\varphi = 0$).
    """
    return jnp.dot(phi, x) / jnp.linalg.norm(phi)


class _DiracLoss(eqx.Module):
    """Player `player`'s loss in the Dirac GAN `variant` (post 4, eqs. 6, 11, 15, 18)."""

    variant: str = eqx.field(static=True)
    player: str = eqx.field(static=True)
    weight: Array = hyperparameter("weight", lower=0.0)
    penalties: tuple[AbstractPenalty, ...]
    qp_term: bool = eqx.field(static=True, default=True)

    def __call__(self, phi, theta):
        critic = normalized_critic if self.variant == "wgan" else linear_critic
        x_real, x_fake = jnp.zeros_like(theta), theta
        d_real, d_fake = critic(phi, x_real), critic(phi, x_fake)
        if self.player == "g":
            if self.variant == "vanilla":
                return jax.nn.softplus(-d_fake)  # non-saturating: -log σ(D(G(z)))
            return -d_fake
        if self.variant == "vanilla":  # -log σ(D(x_r)) - log(1 - σ(D(x_f)))
            loss = jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake)
        else:  # WGAN critic loss E_q D - E_p D (GP added through the penalties)
            loss = d_fake - d_real
        if self.variant == "gan-qp" and self.qp_term:
            diff = d_fake - d_real
            loss = loss + diff**2 / (2 * self.weight * jnp.linalg.norm(x_fake - x_real))
        return loss + total_penalty(self.penalties, critic, phi, x_real[None], x_fake[None])


class _QPCodeGradient(eqx.Module):
    r"""$\nabla_\varphi$ of GAN-QP's D loss as `gan_numeric.py` computes it: the quadratic term's
    gradient $(\theta\cdot\varphi)\theta/(\lambda\|\varphi\|)$, normalized by $\|\varphi\|$ rather
    than the article's $\|\theta\|$ (eq. 19). This field is no gradient of any loss."""

    base: _DiracLoss  # the D loss without the quadratic term

    def __call__(self, phi, theta):
        g = jax.grad(self.base)(phi, theta)
        return g + jnp.dot(theta, phi) * theta / (self.base.weight * jnp.linalg.norm(phi))


def dirac_gan(
    variant: str = "vanilla",
    *,
    weight: ScalarLike | None = None,
    center: float = 0.0,
    normalization: str = "article",
    penalties: tuple[AbstractPenalty, ...] = (),
    phi0=PHI0,
    theta0=THETA0,
) -> Game:
    r"""The Dirac GAN of post 4 in $d$ dimensions ($d$ = `len(phi0)`), as a `Game`.

    - `"vanilla"` (non-saturating): $\ell_D = -\log(1-\sigma(\theta\cdot\varphi)) + \log 2$,
      $\ell_G = -\log\sigma(\theta\cdot\varphi)$; flow (eq. 7)
      $\dot\varphi = -\sigma(\theta\cdot\varphi)\theta$,
      $\dot\theta = (1-\sigma(\theta\cdot\varphi))\varphi$.
    - `"wgan"` ($D = \varphi\cdot x/\|\varphi\|$): $\ell_D = \theta\cdot\varphi/\|\varphi\| =
      -\ell_G$; flow eq. 12, which conserves $\|\varphi\|$.
    - `"wgan-gp"` (`weight` $\lambda$ = 0.1, `center` $c$): $\ell_D = \theta\cdot\varphi +
      \lambda(\|\varphi\|-c)^2$, $\ell_G = -\theta\cdot\varphi$; flow (eq. 16)
      $\dot\varphi = -\theta - 2\lambda(1-c/\|\varphi\|)\varphi$, $\dot\theta = \varphi$.
    - `"gan-qp"` (`weight` $\lambda$ = 1): $\ell_D = \theta\cdot\varphi +
      (\theta\cdot\varphi)^2/(2\lambda\|\theta\|)$, $\ell_G = -\theta\cdot\varphi$; flow (eq. 19)
      $\dot\varphi = -\theta - (\theta\cdot\varphi)\theta/(\lambda\|\theta\|)$,
      $\dot\theta = \varphi$.

    `normalization="code"` (GAN-QP only) divides by $\|\varphi\|$ instead, as the post's code does.
    Extra `penalties` (e.g. `WeightDecay(0.1)`) are added to $\ell_D$. Equilibrium $(0, 0)$
    for `"vanilla"` and `"wgan-gp"` with $c = 0$ (`Game.equilibrium`; `None` for the others,
    whose fields divide by $\|\varphi\|$ or $\|\theta\|$ and are not defined there);
    near it the vanilla flow is $\dot\varphi \approx -\theta/2$, $\dot\theta \approx \varphi/2$,
    so $\ddot\theta \approx -\theta/4$ (eqs. 8–9): a centre, eigenvalues $\pm i/2$.

    The starts `phi0`, `theta0` (1-D, one length) are taken in float64 whatever their dtype: a
    float32 start gives the float64 game (the post's analysis is of the exact flow).

    **Arguments:**

    - `variant`: `"vanilla"` (default), `"wgan"`, `"wgan-gp"` or `"gan-qp"`.
    - `weight`: $\lambda$ for `"wgan-gp"` ($\ge 0$, default 0.1) and `"gan-qp"` ($> 0$, default
      1); `None` (the default) for the other variants.
    - `center`: $c$ of `"wgan-gp"`'s gradient penalty (not used by the other variants).
    - `normalization`: `"article"` (default) or `"code"` (`"gan-qp"` only).
    - `penalties`: extra `AbstractPenalty`s added to $\ell_D$.
    - `phi0`, `theta0`: the starts, 1-D of one length $d$ (taken in float64).

    **Returns:** a `Game` on $(\varphi, \theta)$.

    **Raises:** `ValueError` for an unknown variant or normalization, a negative weight, a
    weight for a variant without one, or starts that are not 1-D of one length.
    """
    if variant not in DIRAC_VARIANTS:
        raise ValueError(
            f"unknown Dirac GAN variant {variant!r}; valid variants: {', '.join(DIRAC_VARIANTS)}."
        )
    if normalization not in ("article", "code"):
        raise ValueError(f"normalization must be 'article' or 'code', got {normalization!r}.")
    if normalization == "code" and variant != "gan-qp":
        raise ValueError("normalization='code' applies to variant 'gan-qp' only.")
    penalties = tuple(penalties)
    if variant == "wgan-gp":
        weight = 0.1 if weight is None else weight
        GradientPenalty(weight, center=center)  # checks c first: float("x") was a raw error
        penalties = (GradientPenalty(weight, center=float(center)), *penalties)
    elif variant == "gan-qp":
        weight = positive("weight", 1.0 if weight is None else weight, hint="(GAN-QP's lambda)")
    elif weight is not None:
        raise ValueError(f"weight applies to variants 'wgan-gp' and 'gan-qp', not {variant!r}.")
    else:
        weight = 0.0
    phi0, theta0 = jnp.asarray(phi0, jnp.float64), jnp.asarray(theta0, jnp.float64)
    if phi0.ndim != 1 or phi0.shape != theta0.shape:
        raise ValueError(
            f"phi0 and theta0 must be 1-D of equal length, got {phi0.shape}, {theta0.shape}."
        )
    d_loss = _DiracLoss(variant, "d", weight, penalties)
    g_loss = _DiracLoss(variant, "g", weight, ())
    d_grad = None
    if normalization == "code":
        d_grad = _QPCodeGradient(_DiracLoss(variant, "d", weight, penalties, qp_term=False))
    zero = jnp.zeros_like(phi0)
    label = variant if variant != "wgan-gp" else f"wgan-gp c={center:g}"
    if normalization == "code":
        label += " (code)"
    # The origin is an equilibrium where the field is defined there: the others divide by
    # ‖φ‖ or ‖θ‖ (WGAN's θ' = φ/‖φ‖ never vanishes at all).
    at_origin = variant == "vanilla" or (variant == "wgan-gp" and float(center) == 0.0)
    return Game(
        d_loss,
        g_loss,
        phi0,
        theta0,
        name=f"dirac {label}",
        equilibrium=(zero, zero) if at_origin else None,
        d_grad_fn=d_grad,
    )


def dirac_linear_solution(t: ScalarLike, phi0=PHI0, theta0=THETA0) -> tuple[Array, Array]:
    r"""The linearized vanilla flow (eq. 8) in closed form: a rotation at angular speed $\frac12$,
    $\theta(t) = \theta_0\cos\frac t2 + \varphi_0\sin\frac t2$,
    $\varphi(t) = \varphi_0\cos\frac t2 - \theta_0\sin\frac t2$ (so $\ddot\theta = -\theta/4$,
    period $4\pi$).

    **Arguments:**

    - `t`: the time, a real scalar.
    - `phi0`, `theta0`: the starts $\varphi_0$, $\theta_0$ (arrays that broadcast together).

    **Returns:** `(phi, theta)` at `t`.

    **Raises:** `ValueError` for a `t`, `phi0` or `theta0` that is not real and finite (given
    concretely: a NaN time was a NaN point)."""
    for name, value in (("t", t), ("phi0", phi0), ("theta0", theta0)):
        if not is_traced(value):
            interval(name, value)
    phi0, theta0 = jnp.asarray(phi0), jnp.asarray(theta0)
    c, s = jnp.cos(t / 2), jnp.sin(t / 2)
    return phi0 * c - theta0 * s, theta0 * c + phi0 * s


def post4_game(case: str, scale: float = 1.0) -> Game:
    r"""Post 4's run `case` (a key of `POST4_CASES`, or `"gan-qp (code)"`: GAN-QP with the
    original code's normalization) as a `Game` started from $s\,(\varphi_0, \theta_0)$.

    **Arguments:**

    - `case`: the run's name; its horizon, save interval and plot window are
      `POST4_CASES[case.removesuffix(" (code)")]`.
    - `scale`: $s > 0$, e.g. small to start in the linear regime near the equilibrium.

    **Returns:** the `Game` (`dirac_gan` with the case's variant, weight and centre).

    **Raises:** `ValueError` for an unknown case or a `scale` that is not finite and > 0.
    """
    scale = float(positive("scale", scale))
    name = case.removesuffix(" (code)")
    if name not in POST4_CASES or (case != name and name != "gan-qp"):
        valid = ", ".join([*POST4_CASES, "gan-qp (code)"])
        raise ValueError(f"unknown post 4 case {case!r}; valid cases: {valid}.")
    spec = POST4_CASES[name]
    kwargs = {k: spec[k] for k in ("weight", "center") if k in spec}
    if case != name:
        kwargs["normalization"] = "code"
    phi0, theta0 = (scale * np.asarray(z) for z in (PHI0, THETA0))
    return dirac_gan(spec["variant"], **kwargs, phi0=phi0, theta0=theta0)


def orbit_verdict(theta_norms) -> str:
    r"""Post 4's verdict on a generator's distance $\|\theta(t)\|$ to the data point, saved on an
    even grid: it converges when the last 10 % stays below $0.05\|\theta_0\|$; it settles on a
    circle when $\max - \min < 0.05\,\mathrm{mean}$ over the second half; else it oscillates.

    **Arguments:** `theta_norms`: $\|\theta(t_k)\|$, $k = 0, \dots, n$.

    **Returns:** the verdict in words (a circle's radius included).

    **Raises:** `ValueError` for `theta_norms` that is not a non-empty 1-D array, or holds a
    NaN or infinity (a diverged solve would read as "oscillates").
    """
    norms = np.asarray(theta_norms, float)
    if norms.ndim != 1 or norms.size == 0:
        raise ValueError(
            f"theta_norms must be a non-empty 1-D array of |θ(t_k)|, got shape {norms.shape}."
        )
    if not np.all(np.isfinite(norms)):
        k = int(np.argmax(~np.isfinite(norms)))
        raise ValueError(
            f"theta_norms[{k}] = {norms[k]}: the run diverged at save {k}; no verdict on an "
            "orbit that is not finite."
        )
    tail, half = norms[-max(len(norms) // 10, 1) :], norms[len(norms) // 2 :]
    if tail.max() < 0.05 * norms[0]:
        return "converges to the equilibrium"
    if (half.max() - half.min()) < 0.05 * half.mean():
        return f"settles on a circle |θ| = {half.mean():.3f}, no convergence"
    return "oscillates, no convergence"
