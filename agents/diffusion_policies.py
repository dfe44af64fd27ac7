"""Networks of the diffusion actor-critic: the DDPM reverse chain, its noise-prediction
MLP, the plain-MLP ablation actor, fused twin critics, and the SB3 policy holding them.

The maths follows Ho et al. (2020) "Denoising diffusion probabilistic models" with
the names of the papers (D2SAC, Du et al. IEEE TMC 2024; the GDM tutorial, Du et al.
arXiv:2308.05384, seed 002 paper 1 ref. [1]).  For a chain of ``N`` denoising steps
``t = 1..N``:

* ``beta_t``: the forward-noise variance of step ``t`` (the *beta schedule*),
* ``alpha_t = 1 - beta_t``, ``alpha_bar_t = prod_{s<=t} alpha_s``,
* forward process ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``,
* ``epsilon_theta(x_t, t, s)``: the network predicting ``eps`` from the noisy
  ``x_t``, the step ``t`` and the environment state ``s`` (the condition),
* reverse step: ``x0_hat = (x_t - sqrt(1 - alpha_bar_t) epsilon_theta) / sqrt(alpha_bar_t)``,
  then ``x_{t-1} ~ N(mu_tilde_t(x0_hat, x_t), beta_tilde_t I)`` with the posterior
  ``mu_tilde_t = c1_t x0_hat + c2_t x_t``,
  ``c1_t = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)``,
  ``c2_t = (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t)``,
  ``beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)`` (Ho et al. eq. 6-7, 11).

The chain starts from ``x_N ~ N(0, I)`` and ends at ``x_0``: a logit vector over the
actions (discrete spaces, D2SAC) or the pre-squash action (Box spaces), squashed by
``tanh`` into ``[-1, 1]`` and mapped to the bounds by SB3's ``unscale_action``.

Speed.  All ``N`` steps share the state ``s``, and a step ``t`` is the same for the
whole batch, so the first layer of ``epsilon_theta`` -- a linear map of the
concatenation ``[x_t, temb(t), h(s)]`` -- is split into its three blocks: the state
block ``h(s) W_s + b`` is computed once per chain, the time block once per step for
a single row, and only ``x_t W_x`` (a ``B x A`` by ``A x H`` product) per sample and
step.  The twin critics are one module whose two members are evaluated by batched
matrix products.  This is the same function as the published networks, computed in
fewer and larger operations.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn
from torch.nn import functional as F

__all__ = [
    "BETA_SCHEDULES",
    "DiffusionActor",
    "DiffusionPolicy",
    "DiffusionSchedule",
    "MlpActor",
    "NoisePredictionMLP",
    "SinusoidalTimeEmbedding",
    "TwinQNetwork",
    "beta_schedule",
    "cosine_beta_schedule",
    "linear_beta_schedule",
    "vp_beta_schedule",
]

class _MishFunction(th.autograd.Function):
    """Mish ``x tanh(softplus(x))`` (Misra 2019) from one ``exp`` and in-place arithmetic.

    Uses ``tanh(softplus(x)) = 1 - 2 / ((1 + e^x)^2 + 1)`` and
    ``d/dx mish = tanh(softplus(x)) + x sigmoid(x) (1 - tanh^2(softplus(x)))``.  PyTorch's
    CPU ``mish`` kernel is not vectorised; this is about twice as fast, same values to
    float32 rounding (``exp`` overflow to ``inf`` gives the correct limits).
    """

    @staticmethod
    def forward(ctx, x):
        u = th.exp(x).add_(1.0)  # 1 + e^x
        one_minus_sigmoid = th.reciprocal(u)
        t = u.square_().add_(1.0).reciprocal_().mul_(-2.0).add_(1.0)
        ctx.save_for_backward(x, t, one_minus_sigmoid)
        return x * t

    @staticmethod
    def backward(ctx, grad):
        x, t, one_minus_sigmoid = ctx.saved_tensors
        x_sigmoid = one_minus_sigmoid.neg().add_(1.0).mul_(x)
        slope = (t * t).neg_().add_(1.0).mul_(x_sigmoid).add_(t)
        return grad * slope


def mish(x: th.Tensor) -> th.Tensor:
    """Mish activation (the D2SAC / GDM-tutorial actor's), see :class:`_MishFunction`."""
    return _MishFunction.apply(x)


class Mish(nn.Module):
    def forward(self, x: th.Tensor) -> th.Tensor:
        return mish(x)


ACTIVATIONS = {"mish": Mish, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}
_FUNCTIONAL = {"mish": mish, "relu": F.relu, "tanh": th.tanh, "silu": F.silu}


# ---------------------------------------------------------------------------
# Beta schedules (float64 NumPy arrays of beta_t, t = 1..N)
# ---------------------------------------------------------------------------
def vp_beta_schedule(n_steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> np.ndarray:
    """Variance-preserving SDE discretised to ``N`` steps (Song et al. 2021; D2SAC default).

    ``beta_t = 1 - exp(-beta_min / N - (beta_max - beta_min) (2t - 1) / (2 N^2))``, so that
    ``alpha_bar_N = exp(-(beta_min + beta_max) / 2)`` whatever ``N`` is: the chain always
    starts from (nearly) pure noise, even with 5 steps.
    """
    t = np.arange(1, n_steps + 1, dtype=np.float64)
    alpha = np.exp(-beta_min / n_steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / n_steps**2)
    return 1.0 - alpha


def linear_beta_schedule(n_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> np.ndarray:
    """``beta_t`` evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020 values).

    These are the values of the DDPM paper and of the diffusion-policy code for any
    ``N``; with few steps ``alpha_bar_N`` stays close to 1, i.e. the chain starts far
    from pure noise (a documented property of this schedule, not a bug).
    """
    return np.linspace(beta_start, beta_end, n_steps, dtype=np.float64)


def cosine_beta_schedule(n_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17): ``alpha_bar_t = f(t)/f(0)``,
    ``f(t) = cos^2(((t/N) + s) / (1 + s) * pi/2)``, ``beta_t = 1 - alpha_bar_t/alpha_bar_{t-1}``
    clipped to ``max_beta``."""
    t = np.arange(n_steps + 1, dtype=np.float64)
    f = np.cos(((t / n_steps) + s) / (1.0 + s) * np.pi / 2.0) ** 2
    alpha_bar = f / f[0]
    return np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, max_beta)


BETA_SCHEDULES = {"vp": vp_beta_schedule, "linear": linear_beta_schedule, "cosine": cosine_beta_schedule}


def beta_schedule(name: str, n_steps: int) -> np.ndarray:
    """``beta_t`` for ``t = 1..n_steps`` of schedule ``name`` (``vp``, ``linear``, ``cosine``)."""
    if name not in BETA_SCHEDULES:
        raise ValueError(f"beta_schedule = {name!r} is invalid: allowed are {sorted(BETA_SCHEDULES)}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"denoising_steps = {n_steps!r} is invalid: must be an integer >= 1")
    return BETA_SCHEDULES[name](int(n_steps))


class DiffusionSchedule:
    """All per-step constants of a DDPM with ``N`` steps (float64, index ``t - 1``).

    Attributes use the papers' names: ``beta_t``, ``alpha_t``, ``alpha_bar_t``,
    ``alpha_bar_prev`` (``alpha_bar_{t-1}``, 1 for ``t = 1``), ``posterior_variance``
    (``beta_tilde_t``), ``posterior_mean_coef1``/``coef2`` (``c1_t``, ``c2_t``).
    """

    def __init__(self, name: str = "vp", n_steps: int = 5):
        self.name = name
        self.n_steps = int(n_steps)
        self.beta_t = beta_schedule(name, n_steps)
        self.alpha_t = 1.0 - self.beta_t
        self.alpha_bar_t = np.cumprod(self.alpha_t)
        self.alpha_bar_prev = np.concatenate([[1.0], self.alpha_bar_t[:-1]])
        self.sqrt_alpha_bar_t = np.sqrt(self.alpha_bar_t)
        self.sqrt_one_minus_alpha_bar_t = np.sqrt(1.0 - self.alpha_bar_t)
        # x0_hat = sqrt(1/alpha_bar_t) x_t - sqrt(1/alpha_bar_t - 1) eps
        self.sqrt_recip_alpha_bar_t = np.sqrt(1.0 / self.alpha_bar_t)
        self.sqrt_recipm1_alpha_bar_t = np.sqrt(1.0 / self.alpha_bar_t - 1.0)
        self.posterior_variance = self.beta_t * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar_t)
        self.posterior_std = np.sqrt(self.posterior_variance)
        self.posterior_mean_coef1 = self.beta_t * np.sqrt(self.alpha_bar_prev) / (1.0 - self.alpha_bar_t)
        self.posterior_mean_coef2 = (1.0 - self.alpha_bar_prev) * np.sqrt(self.alpha_t) / (1.0 - self.alpha_bar_t)


# ---------------------------------------------------------------------------
# epsilon_theta
# ---------------------------------------------------------------------------
class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of the step index (Vaswani et al. 2017)."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"time_dim = {dim!r} is invalid: must be an even integer >= 4")
        half = dim // 2
        freqs = th.exp(-math.log(10000.0) * th.arange(half, dtype=th.float32) / (half - 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: th.Tensor) -> th.Tensor:
        angle = t.float()[:, None] * self.freqs[None, :]
        return th.cat([angle.sin(), angle.cos()], dim=-1)


class NoisePredictionMLP(nn.Module):
    """``epsilon_theta(x_t, t, s)``: the D2SAC / GDM-tutorial noise-prediction MLP.

    state ``s -> Linear(H) -> act -> Linear(H) = h(s)``; step
    ``t -> sinusoidal(T) -> Linear(2T) -> act -> Linear(T) = temb(t)``; then
    ``[x_t, temb(t), h(s)] -> Linear(H) -> act -> Linear(H) -> act -> Linear(A)``.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int = 256, time_dim: int = 16,
                 activation: str = "mish"):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.action_dim, self.time_dim, self.hidden_dim = action_dim, time_dim, hidden_dim
        self.act = _FUNCTIONAL[activation]
        self.state_net = nn.Sequential(nn.Linear(state_dim, hidden_dim), act(), nn.Linear(hidden_dim, hidden_dim))
        self.time_net = nn.Sequential(
            SinusoidalTimeEmbedding(time_dim), nn.Linear(time_dim, 2 * time_dim), act(),
            nn.Linear(2 * time_dim, time_dim),
        )
        self.mid1 = nn.Linear(action_dim + time_dim + hidden_dim, hidden_dim)
        self.mid2 = nn.Linear(hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, action_dim)

    # The first mid layer split in its x / time / state column blocks (see module doc).
    def condition(self, state: th.Tensor, t: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """State block ``h(s) W_s + b`` ``(B, H)`` and time blocks ``temb(t) W_t`` ``(len(t), H)``."""
        a, d = self.action_dim, self.time_dim
        w = self.mid1.weight
        state_block = F.linear(self.state_net(state), w[:, a + d:], self.mid1.bias)
        time_block = F.linear(self.time_net(t), w[:, a:a + d])
        return state_block, time_block

    def from_condition(self, x_t: th.Tensor, cond: th.Tensor) -> th.Tensor:
        """``epsilon_theta`` given ``cond = state block + time block`` (broadcastable to ``(B, H)``)."""
        h = self.act(th.addmm(cond, x_t, self.mid1.weight[:, : self.action_dim].t()))
        h = self.act(self.mid2(h))
        return self.out(h)

    def forward(self, x_t: th.Tensor, t: th.Tensor, state: th.Tensor) -> th.Tensor:
        """``epsilon_theta(x_t, t, s)`` with one step index per sample (``t`` of shape ``(B,)``)."""
        state_block, time_block = self.condition(state, t)
        return self.from_condition(x_t, state_block + time_block)


# ---------------------------------------------------------------------------
# Actors
# ---------------------------------------------------------------------------
def soft_clip(x: th.Tensor, bound: float) -> th.Tensor:
    """``bound * tanh(x / bound)``: keeps ``x0_hat`` in ``(-bound, bound)`` like the papers'
    ``clip_denoised`` but with a gradient everywhere (a hard clip would stop the actor's
    Q-gradient for every sample beyond the bound)."""
    return bound * th.tanh(x / bound)


class DiffusionActor(nn.Module):
    """The conditional DDPM reverse chain ``s -> x_0`` (D2SAC's actor).

    ``forward(s)`` runs the ``N`` reverse steps from ``x_N ~ N(0, I)`` (``deterministic``:
    from ``x_N = 0`` without posterior noise, so that the same state always gives the same
    output).  ``x0_hat`` is kept in ``(-clip_denoised, clip_denoised)`` by :func:`soft_clip`;
    with ``clip_output=False`` not at the last step, so that ``x_0`` is unbounded (the logits of a
    discrete policy, see :class:`DiffusionPolicy`).
    """

    kind = "diffusion"

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int = 256, denoising_steps: int = 5,
                 beta_schedule: str = "vp", time_dim: int = 16, activation: str = "mish",
                 clip_denoised: float = 5.0, clip_output: bool = True):
        super().__init__()
        if not clip_denoised > 0:
            raise ValueError(f"clip_denoised = {clip_denoised!r} is invalid: must be > 0")
        self.schedule = DiffusionSchedule(beta_schedule, denoising_steps)
        self.n_steps = self.schedule.n_steps
        self.action_dim = action_dim
        self.clip_denoised = float(clip_denoised)
        #: False: the last step's ``x0_hat`` (= ``x_0``) is not clipped (logits of discrete policies)
        self.clip_output = bool(clip_output)
        self.epsilon_theta = NoisePredictionMLP(state_dim, action_dim, hidden_dim, time_dim, activation)
        sch = self.schedule
        # Python floats: the step index is shared by the batch, so scalars suffice.
        self._c_x = [float(v) for v in sch.sqrt_recip_alpha_bar_t]
        self._c_eps = [float(v) for v in sch.sqrt_recipm1_alpha_bar_t]
        self._c1 = [float(v) for v in sch.posterior_mean_coef1]
        self._c2 = [float(v) for v in sch.posterior_mean_coef2]
        self._std = [float(v) for v in sch.posterior_std]
        # epsilon_theta(x_t, t, s) = sqrt(1 - alpha_bar_t) x_t + MLP(x_t, t, s): the skip term is the
        # optimal noise prediction for unit-variance x_0, so an untrained chain yields x_0 of order 1.
        # Without it an untrained MLP (output ~ 0) gives x0_hat = x_t / sqrt(alpha_bar_t), up to
        # 12x x_N for the vp schedule: every x_0 lands on the clip and every action in tanh's flat
        # tails, where the actor's Q-gradient vanishes before learning starts.
        self._skip = [float(v) for v in sch.sqrt_one_minus_alpha_bar_t]
        self.register_buffer("steps", th.arange(self.n_steps, dtype=th.long), persistent=False)
        self.register_buffer("sqrt_alpha_bar_t", th.tensor(sch.sqrt_alpha_bar_t, dtype=th.float32), persistent=False)
        self.register_buffer("sqrt_one_minus_alpha_bar_t",
                             th.tensor(sch.sqrt_one_minus_alpha_bar_t, dtype=th.float32), persistent=False)

    def forward(self, state: th.Tensor, deterministic: bool = False) -> th.Tensor:
        batch = state.shape[0]
        state_block, time_block = self.epsilon_theta.condition(state, self.steps)
        if deterministic:
            x = state.new_zeros(batch, self.action_dim)
            noise = None
        else:
            x = th.randn(batch, self.action_dim, device=state.device, dtype=state.dtype)
            # One draw for all posterior noises of the chain (fewer, larger ops).
            # One draw for all posterior noises of the chain (the last step adds none).
            noise = th.randn(self.n_steps - 1, batch, self.action_dim, device=state.device, dtype=state.dtype)
        for i in reversed(range(self.n_steps)):  # i = t - 1
            eps = self.epsilon_theta.from_condition(x, state_block + time_block[i]).add_(x, alpha=self._skip[i])
            x0_hat = self._c_x[i] * x - self._c_eps[i] * eps
            if i > 0 or self.clip_output:
                x0_hat = soft_clip(x0_hat, self.clip_denoised)
            x = self._c1[i] * x0_hat + self._c2[i] * x
            if noise is not None and i > 0:
                x = x + self._std[i] * noise[i - 1]
        return x

    def predict_noise(self, x_t: th.Tensor, t: th.Tensor, state: th.Tensor) -> th.Tensor:
        """``epsilon_theta(x_t, t, s) = sqrt(1 - alpha_bar_t) x_t + MLP(x_t, t, s)`` (step index per sample)."""
        return self.epsilon_theta(x_t, t, state) + self.sqrt_one_minus_alpha_bar_t[t, None] * x_t

    def denoising_loss(self, x_0: th.Tensor, state: th.Tensor, weights: th.Tensor | None = None) -> th.Tensor:
        """DDPM loss ``E ||eps - epsilon_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t, s)||^2``
        with ``t`` uniform per sample (Ho et al. eq. 14): behaviour cloning of ``x_0``."""
        batch = x_0.shape[0]
        t = th.randint(0, self.n_steps, (batch,), device=x_0.device)
        eps = th.randn_like(x_0)
        x_t = self.sqrt_alpha_bar_t[t, None] * x_0 + self.sqrt_one_minus_alpha_bar_t[t, None] * eps
        err = (self.predict_noise(x_t, t, state) - eps).pow(2).mean(dim=-1)
        if weights is None:
            return err.mean()
        return (err * weights).sum() / weights.sum().clamp_min(1.0)


class MlpActor(nn.Module):
    """The ablation: a plain MLP ``s -> x_0`` on the same code path as :class:`DiffusionActor`
    (same output clip and squash, same depth after the state encoder, no chain)."""

    kind = "mlp"

    def __init__(self, state_dim: int, action_dim: int, hidden_dim: int = 256, activation: str = "mish",
                 clip_denoised: float = 5.0, clip_output: bool = True, **_: Any):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.action_dim = action_dim
        self.clip_denoised = float(clip_denoised)
        self.clip_output = bool(clip_output)
        self.net = nn.Sequential(
            nn.Linear(state_dim, hidden_dim), act(), nn.Linear(hidden_dim, hidden_dim), act(),
            nn.Linear(hidden_dim, hidden_dim), act(), nn.Linear(hidden_dim, action_dim),
        )

    def forward(self, state: th.Tensor, deterministic: bool = False) -> th.Tensor:
        out = self.net(state)
        return soft_clip(out, self.clip_denoised) if self.clip_output else out

    def denoising_loss(self, x_0: th.Tensor, state: th.Tensor, weights: th.Tensor | None = None) -> th.Tensor:
        """Behaviour cloning for the MLP actor: squared error to ``x_0``."""
        err = (self.forward(state) - x_0).pow(2).mean(dim=-1)
        if weights is None:
            return err.mean()
        return (err * weights).sum() / weights.sum().clamp_min(1.0)


# ---------------------------------------------------------------------------
# Critics
# ---------------------------------------------------------------------------
class TwinQNetwork(nn.Module):
    """``n_critics`` independent MLPs ``in -> H -> H -> out`` evaluated as one batched product.

    Returns ``(n_critics, B, out)``.  Discrete spaces: ``in = state``, ``out = |A|``
    (Q of every action, D2SAC).  Box spaces: ``in = [state, action]``, ``out = 1``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 256, n_critics: int = 2,
                 activation: str = "relu"):
        super().__init__()
        self.n_critics, self.hidden_dim = n_critics, hidden_dim
        self.act = _FUNCTIONAL[activation]
        self.w1 = nn.Parameter(th.empty(n_critics, in_dim, hidden_dim))
        self.b1 = nn.Parameter(th.empty(n_critics, 1, hidden_dim))
        self.w2 = nn.Parameter(th.empty(n_critics, hidden_dim, hidden_dim))
        self.b2 = nn.Parameter(th.empty(n_critics, 1, hidden_dim))
        self.w3 = nn.Parameter(th.empty(n_critics, hidden_dim, out_dim))
        self.b3 = nn.Parameter(th.empty(n_critics, 1, out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default init, member by member: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        with th.no_grad():
            for w, b in ((self.w1, self.b1), (self.w2, self.b2), (self.w3, self.b3)):
                bound = 1.0 / math.sqrt(w.shape[-2])
                w.uniform_(-bound, bound)
                b.uniform_(-bound, bound)

    def forward(self, x: th.Tensor) -> th.Tensor:
        x = x.unsqueeze(0).expand(self.n_critics, -1, -1)  # a view: no copy of the batch
        h = self.act(th.baddbmm(self.b1, x, self.w1))  # (n, B, H)
        h = self.act(th.baddbmm(self.b2, h, self.w2))
        return th.baddbmm(self.b3, h, self.w3)


# ---------------------------------------------------------------------------
# The SB3 policy
# ---------------------------------------------------------------------------
#: Logit of an infeasible (masked) action: exp() underflows to exactly 0 in float32, and
#: unlike -inf it keeps ``0 * logit`` finite (sb3-contrib's MaskableCategorical uses the same).
MASKED_LOGIT = -1e8


class DiffusionPolicy(BasePolicy):
    """Actor (diffusion chain or MLP), twin critic and target networks, for Discrete,
    MultiDiscrete or Box actions.

    ``predict`` gives: Discrete -- a sample of ``softmax(x_0)`` (``deterministic``: its
    argmax over the noise-free chain); MultiDiscrete ``[n_1, .., n_D]`` -- the chain's
    ``x_0`` holds ``n_1 + .. + n_D`` logits, one categorical head per dimension, sampled
    independently (a factorised policy ``pi(a|s) = prod_d pi_d(a_d|s)``); Box --
    ``tanh(x_0)`` plus Gaussian exploration noise of std ``exploration_noise`` (in the
    ``[-1, 1]`` scaled space), clipped to ``[-1, 1]`` (``deterministic``: the noise-free
    chain without exploration noise).

    Discrete and MultiDiscrete: ``predict(obs, action_masks=...)`` takes sb3-contrib's
    flattened masks ``(B, n_1 + .. + n_D)``; infeasible actions get the logit
    :data:`MASKED_LOGIT` and are never sampled.  The logits are the chain's unclipped
    ``x_0`` (``clip_output=False``; the intermediate ``x0_hat`` stay soft-clipped): a
    soft clip of the logits saturates, several actions tie at the bound with no gradient
    left to separate them, and the deterministic argmax then picks the same tied action in
    every state (measured; see ``tests/test_diffusion.py::test_no_constant_action_collapse``).
    """

    actor: nn.Module
    critic: TwinQNetwork
    critic_target: TwinQNetwork

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        hidden_dim: int = 256,
        actor: str = "diffusion",
        denoising_steps: int = 5,
        beta_schedule: str = "vp",
        time_dim: int = 16,
        activation: str = "mish",
        critic_activation: str = "relu",
        clip_denoised: float | None = None,
        exploration_noise: float = 0.1,
        n_critics: int = 2,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        if not isinstance(action_space, (spaces.Discrete, spaces.MultiDiscrete, spaces.Box)):
            raise ValueError(
                f"action_space = {action_space} is invalid: DiffusionPolicy supports Discrete, MultiDiscrete and Box"
            )
        if isinstance(action_space, spaces.MultiDiscrete) and np.ndim(action_space.nvec) != 1:
            raise ValueError(f"action_space = {action_space} is invalid: MultiDiscrete needs a 1-D nvec")
        if isinstance(action_space, (spaces.Discrete, spaces.MultiDiscrete)) and np.any(action_space.start != 0):
            raise ValueError(f"action_space = {action_space} is invalid: discrete actions must start at 0")
        if actor not in ("diffusion", "mlp"):
            raise ValueError(f"actor = {actor!r} is invalid: allowed are 'diffusion' and 'mlp'")
        for name, value in (("activation", activation), ("critic_activation", critic_activation)):
            if value not in ACTIVATIONS:
                raise ValueError(f"{name} = {value!r} is invalid: allowed are {sorted(ACTIVATIONS)}")
        if isinstance(hidden_dim, bool) or not isinstance(hidden_dim, (int, np.integer)) or hidden_dim < 1:
            raise ValueError(f"hidden_dim = {hidden_dim!r} is invalid: must be an integer >= 1")
        if not exploration_noise >= 0:
            raise ValueError(f"exploration_noise = {exploration_noise!r} is invalid: must be >= 0")
        if isinstance(n_critics, bool) or not isinstance(n_critics, (int, np.integer)) or n_critics < 1:
            raise ValueError(f"n_critics = {n_critics!r} is invalid: must be an integer >= 1")
        discrete = isinstance(action_space, (spaces.Discrete, spaces.MultiDiscrete))
        if clip_denoised is None:
            # Discrete: x0_hat of the intermediate steps in (-3, 3); the last step (the logits) is not
            # clipped (see the class docstring).  Box: x_0 in (-5, 5) leaves tanh(x_0) free over
            # [-0.9999, 0.9999].
            clip_denoised = 3.0 if discrete else 5.0
        if not clip_denoised > 0:
            raise ValueError(f"clip_denoised = {clip_denoised!r} is invalid: must be > 0")
        if optimizer_kwargs is None and optimizer_class in (th.optim.Adam, th.optim.AdamW):
            # One fused kernel per step instead of a dozen small ops per parameter tensor.
            optimizer_kwargs = {"fused": True}
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=normalize_images,
            squash_output=not discrete,
        )
        beta_schedule_fn = BETA_SCHEDULES.get(beta_schedule)
        if beta_schedule_fn is None:
            raise ValueError(f"beta_schedule = {beta_schedule!r} is invalid: allowed are {sorted(BETA_SCHEDULES)}")
        self.discrete = discrete
        self.hidden_dim = int(hidden_dim)
        self.actor_kind = actor
        self.denoising_steps = denoising_steps
        self.beta_schedule = beta_schedule
        self.time_dim = time_dim
        self.activation = activation
        self.critic_activation = critic_activation
        self.clip_denoised = clip_denoised
        self.exploration_noise = float(exploration_noise)
        self.n_critics = int(n_critics)
        if isinstance(action_space, spaces.Discrete):
            self.nvec = np.array([int(action_space.n)], dtype=np.int64)
        elif isinstance(action_space, spaces.MultiDiscrete):
            self.nvec = np.asarray(action_space.nvec, dtype=np.int64).copy()
        else:
            self.nvec = None
        self.action_dim = int(self.nvec.sum()) if discrete else int(np.prod(action_space.shape))
        if discrete:
            self._build_layout()
        self._build(lr_schedule)

    def _build_layout(self) -> None:
        """Index map from the flat ``(n_1 + .. + n_D)`` logits to a padded ``(D, n_max)`` grid.

        Equal ``n_d`` (every gentwin family) is a plain reshape; otherwise a gather, with the
        padding entries marked invalid (never sampled, zero probability).
        """
        nvec = self.nvec
        self.n_heads, self.n_max = len(nvec), int(nvec.max())
        self.uniform_heads = bool(np.all(nvec == self.n_max))
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        choice = np.arange(self.n_max)
        valid = choice[None, :] < nvec[:, None]
        index = np.where(valid, offsets[:, None] + choice[None, :], 0)
        self.register_buffer("head_index", th.as_tensor(index, dtype=th.long), persistent=False)
        self.register_buffer("head_valid", th.as_tensor(valid), persistent=False)
        #: log n_d per head, for the "auto" entropy target
        self.register_buffer("head_log_n", th.as_tensor(np.log(nvec), dtype=th.float32), persistent=False)

    def _build(self, lr_schedule: Schedule) -> None:
        self.features_extractor = self.make_features_extractor()
        state_dim = self.features_extractor.features_dim
        self.features_dim = state_dim
        if self.actor_kind == "diffusion":
            self.actor = DiffusionActor(state_dim, self.action_dim, self.hidden_dim, self.denoising_steps,
                                        self.beta_schedule, self.time_dim, self.activation, self.clip_denoised,
                                        clip_output=not self.discrete)
        else:
            self.actor = MlpActor(state_dim, self.action_dim, self.hidden_dim, self.activation, self.clip_denoised,
                                  clip_output=not self.discrete)
        critic_in = state_dim if self.discrete else state_dim + self.action_dim
        critic_out = self.action_dim if self.discrete else 1
        self.critic = TwinQNetwork(critic_in, critic_out, self.hidden_dim, self.n_critics, self.critic_activation)
        self.critic_target = TwinQNetwork(critic_in, critic_out, self.hidden_dim, self.n_critics,
                                          self.critic_activation)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        if self.discrete:
            # D2SAC (like SAC) evaluates the next state with the current actor.
            self.actor_target = None
        else:
            # Deterministic-policy family (TD3, the GDM tutorial): a target actor.
            self.actor_target = copy.deepcopy(self.actor)
            self.actor_target.requires_grad_(False)
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr_schedule(1),
                                                    **self.optimizer_kwargs)
        self.critic.optimizer = self.optimizer_class(self.critic.parameters(), lr=lr_schedule(1),
                                                     **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            hidden_dim=self.hidden_dim,
            actor=self.actor_kind,
            denoising_steps=self.denoising_steps,
            beta_schedule=self.beta_schedule,
            time_dim=self.time_dim,
            activation=self.activation,
            critic_activation=self.critic_activation,
            clip_denoised=self.clip_denoised,
            exploration_noise=self.exploration_noise,
            n_critics=self.n_critics,
            features_extractor_class=self.features_extractor_class,
            features_extractor_kwargs=self.features_extractor_kwargs,
            normalize_images=self.normalize_images,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data

    # -- helpers used by the algorithm ------------------------------------------
    def features(self, obs: PyTorchObs) -> th.Tensor:
        return self.extract_features(obs, self.features_extractor)

    def to_heads(self, flat: th.Tensor) -> th.Tensor:
        """``(..., n_1 + .. + n_D)`` -> ``(..., D, n_max)`` (logits, Q-values or masks of every head)."""
        if self.uniform_heads:
            return flat.unflatten(-1, (self.n_heads, self.n_max))
        return flat[..., self.head_index]

    def head_masks(self, action_masks: th.Tensor | None) -> th.Tensor:
        """Feasible entries ``(B, D, n_max)`` (or ``(D, n_max)`` without masks); padding is infeasible."""
        if action_masks is None:
            return self.head_valid
        masks = self.to_heads(action_masks.bool())
        return masks if self.uniform_heads else masks & self.head_valid

    def head_logits(self, x_0: th.Tensor, action_masks: th.Tensor | None = None) -> tuple[th.Tensor, th.Tensor]:
        """The chain's ``x_0`` as masked logits ``(B, D, n_max)`` and the feasibility grid used."""
        feasible = self.head_masks(action_masks)
        logits = self.to_heads(x_0)
        if action_masks is None and self.uniform_heads:
            return logits, feasible
        return logits.masked_fill(~feasible, MASKED_LOGIT), feasible

    def squash(self, x_0: th.Tensor) -> th.Tensor:
        """Box spaces: the chain's ``x_0`` to the scaled action in ``[-1, 1]``."""
        return th.tanh(x_0)

    def unsquash(self, scaled_action: th.Tensor) -> th.Tensor:
        """Inverse of :meth:`squash` for behaviour-cloning targets.

        Targets are clamped to ``|a| <= 0.995`` (``|x_0| <= 3``): the bounds themselves would
        need an infinite ``x_0``."""
        return th.atanh(scaled_action.clamp(-0.995, 0.995))

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False,
                 action_masks: th.Tensor | None = None) -> th.Tensor:
        state = self.features(observation)
        x_0 = self.actor(state, deterministic=deterministic)
        if self.discrete:
            logits, _ = self.head_logits(x_0, action_masks)  # (B, D, n_max)
            if deterministic:
                actions = logits.argmax(dim=-1)
            else:
                probs = th.softmax(logits, dim=-1)
                actions = th.multinomial(probs.reshape(-1, self.n_max), 1).view(logits.shape[:-1])
            return actions.squeeze(-1) if isinstance(self.action_space, spaces.Discrete) else actions
        action = self.squash(x_0)
        if not deterministic and self.exploration_noise > 0:
            action = (action + self.exploration_noise * th.randn_like(action)).clamp(-1.0, 1.0)
        return action

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False,
                action_masks: np.ndarray | None = None):
        """SB3's ``predict``; Discrete/MultiDiscrete also take sb3-contrib's flattened ``action_masks``."""
        if action_masks is None:
            return super().predict(observation, state, episode_start, deterministic)
        if not self.discrete:
            raise ValueError("action_masks are only defined for Discrete and MultiDiscrete action spaces")
        self.set_training_mode(False)
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        masks = np.asarray(action_masks, dtype=bool).reshape(-1, self.action_dim)
        with th.no_grad():
            actions = self._predict(obs_tensor, deterministic=deterministic,
                                    action_masks=th.as_tensor(masks, device=self.device))
        actions = actions.cpu().numpy().reshape((-1, *self.action_space.shape))
        if not vectorized_env:
            actions = actions.squeeze(axis=0)
        return actions, state

    def set_training_mode(self, mode: bool) -> None:
        self.actor.train(mode)
        self.critic.train(mode)
        self.training = mode
