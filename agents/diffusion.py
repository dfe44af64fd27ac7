"""Diffusion-policy actor-critic as a Stable-Baselines3 off-policy algorithm.

``DiffusionActorCritic("MlpPolicy", env, ...)`` is the "generative diffusion model"
agent of the project's papers -- D2SAC for ASP selection (Du et al., IEEE TMC 2024;
seed 002 paper 1 section V-B, ``sed -n 633,670p``), the AI-generated contract
(section V-A, ``sed -n 563,630p``, 10 denoising steps) and the GDM tutorial's power
allocation (ref. [1]) -- as a drop-in SB3 algorithm: ``.learn()``, ``.save()`` /
``.load()``, ``.predict()``, callbacks, the replay buffer, VecEnvs and the logger
work as for SAC.

The actor is the conditional DDPM reverse chain of :mod:`gentwin.agents.diffusion_policies`
(``denoising_steps`` steps, ``beta_schedule`` ``vp``/``linear``/``cosine``); the
chain's output ``x_0`` is

* **Discrete** spaces (D2SAC): a logit vector; the policy is ``pi = softmax(x_0)``.
  Twin Q-networks give ``Q(s, .)`` for every action; with the current actor on the
  next state, the soft target is
  ``y = r + gamma (1 - d) sum_a pi(a|s') (min_k Q_k^target(s', a) - alpha log pi(a|s'))``.
  The actor is fitted, through every step of the reverse chain, to the soft-greedy policy
  ``softmax(min_k Q_k(s, .) / alpha)``: by default (``actor_loss="forward_kl"``) minimising
  ``KL(softmax(Q / alpha) || pi)``; ``"reverse_kl"`` is the D2SAC paper's (and SAC's)
  ``E_s sum_a pi(a|s) (alpha log pi(a|s) - min_k Q_k(s, a))`` = ``alpha KL(pi || softmax(Q / alpha))``
  plus a constant.  Both have the same minimiser; the reverse KL's gradient in a logit is
  proportional to that action's probability, so once the policy is peaked (crash penalties
  make Q gaps >> alpha within a few hundred updates, on a critic that does not yet depend
  on the state) it stops moving: the "always ASP 11" collapse, reproduced in
  ``tests/test_diffusion.py::test_no_constant_action_collapse``.  The entropy weight
  ``alpha`` (``ent_coef``) is fixed or, with ``"auto"``, tuned like SAC's towards
  ``target_entropy`` (``"auto"``: ``0.2 * log |A|``, see ``__init__``).
* **MultiDiscrete** ``[n_1, .., n_D]``: ``x_0`` holds ``n_1 + .. + n_D`` logits, one
  categorical head per dimension, ``pi(a|s) = prod_d pi_d(a_d|s)``; the critic is factorised,
  ``Q(s, a) = sum_d Q_d(s, a_d)`` (one output per head and choice), which makes the soft value
  and the entropy exact sums over the heads.  Discrete is the case ``D = 1``.
* **Action masks** (Discrete, MultiDiscrete), as sb3-contrib's MaskablePPO: when the env
  offers ``action_masks()`` (``use_masks=None``, the default; ``False`` gives the paper's
  unmasked D2SAC) infeasible choices get probability 0 in the behaviour policy (also the
  uniform warm-up), ``predict(obs, action_masks=...)``, the soft target (next-state masks are
  stored in :class:`MaskableReplayBuffer`), the actor loss and the entropy, whose ``"auto"``
  target is ``0.2 sum_d log(feasible choices of head d)`` per state.
* **Box** spaces: the pre-squash action; the action is ``tanh(x_0)`` in ``[-1, 1]``
  (mapped to the bounds by SB3).  The actor maximises ``min_k Q_k(s, tanh(x_0))``
  through the chain (the GDM tutorial's ``-Q`` loss), explores with Gaussian noise
  ``exploration_noise`` and, with ``bc_coef > 0`` and environments that put an
  ``expert_action`` in their step info (the papers' "with expert database" mode),
  adds ``bc_coef`` times the DDPM denoising loss towards the expert action (Ho et
  al. eq. 14; a plain squared error for the MLP actor).  Target networks for both
  actor and critic, soft-updated with ``tau``.

``actor="mlp"`` replaces the chain by a plain MLP on the same code path -- discrete
SAC for Discrete spaces, a TD3-style deterministic actor for Box spaces -- which is
the ablation that shows what the diffusion chain adds.

Architecture keyword arguments (``hidden_dim``, ``actor``, ``denoising_steps``,
``beta_schedule``, ``time_dim``, ``activation``, ``clip_denoised``,
``exploration_noise``, ``n_critics``) may be given directly to the constructor (as an
RL-Zoo YAML would) or inside ``policy_kwargs``.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from torch.nn import functional as F

from gentwin.agents.diffusion_policies import DiffusionPolicy

__all__ = [
    "DiffusionActorCritic", "ExpertReplayBuffer", "ExpertReplayBufferSamples", "MaskableReplayBuffer",
    "MaskableReplayBufferSamples", "MlpPolicy",
]

#: actor losses of the discrete path (see :class:`DiffusionActorCritic`)
ACTOR_LOSSES = ("forward_kl", "reverse_kl")

MlpPolicy = DiffusionPolicy

#: constructor keywords that belong to the policy (forwarded into ``policy_kwargs``)
POLICY_KEYWORDS = (
    "hidden_dim", "actor", "denoising_steps", "beta_schedule", "time_dim", "activation",
    "critic_activation", "clip_denoised", "exploration_noise", "n_critics",
)

SelfDiffusionActorCritic = TypeVar("SelfDiffusionActorCritic", bound="DiffusionActorCritic")


def _transition_tensors(buffer: ReplayBuffer, batch_inds: np.ndarray, env_indices: np.ndarray,
                        env: VecNormalize | None) -> list[th.Tensor]:
    """(observations, actions, next_observations, dones, rewards) of the sampled transitions, as SB3's
    ``ReplayBuffer._get_samples`` builds them; the buffers below add their extras for the same indices."""
    if buffer.optimize_memory_usage:
        next_obs = buffer.observations[(batch_inds + 1) % buffer.buffer_size, env_indices, :]
    else:
        next_obs = buffer.next_observations[batch_inds, env_indices, :]
    dones = buffer.dones[batch_inds, env_indices] * (1 - buffer.timeouts[batch_inds, env_indices])
    data = (
        buffer._normalize_obs(buffer.observations[batch_inds, env_indices, :], env),
        buffer.actions[batch_inds, env_indices, :],
        buffer._normalize_obs(next_obs, env),
        dones.reshape(-1, 1),
        buffer._normalize_reward(buffer.rewards[batch_inds, env_indices].reshape(-1, 1), env),
    )
    return [buffer.to_torch(x) for x in data]


class ExpertReplayBufferSamples(NamedTuple):
    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None
    #: expert action scaled to ``[-1, 1]`` like ``actions`` (zeros where none was given)
    expert_actions: th.Tensor
    #: 1 where the transition carries an expert action, else 0
    expert_mask: th.Tensor


class ExpertReplayBuffer(ReplayBuffer):
    """SB3 replay buffer that also stores ``info["expert_action"]`` of each transition.

    The expert action is in the environment's units; it is stored scaled to
    ``[-1, 1]`` with the Box bounds, as SB3 stores the agent's own actions.
    """

    def __init__(self, buffer_size: int, observation_space: spaces.Space, action_space: spaces.Space,
                 device: th.device | str = "auto", n_envs: int = 1, optimize_memory_usage: bool = False,
                 handle_timeout_termination: bool = True):
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"action_space = {action_space} is invalid: ExpertReplayBuffer needs a Box space")
        super().__init__(buffer_size, observation_space, action_space, device, n_envs,
                         optimize_memory_usage, handle_timeout_termination)
        self.expert_actions = np.zeros((self.buffer_size, self.n_envs, self.action_dim), dtype=np.float32)
        self.expert_mask = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        self._low = np.asarray(action_space.low, dtype=np.float64).reshape(-1)
        self._high = np.asarray(action_space.high, dtype=np.float64).reshape(-1)

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        pos = self.pos
        self.expert_mask[pos] = 0.0
        self.expert_actions[pos] = 0.0
        for i, info in enumerate(infos):
            expert = info.get("expert_action") if isinstance(info, dict) else None
            if expert is not None:
                expert = np.asarray(expert, dtype=np.float64).reshape(-1)
                self.expert_actions[pos, i] = 2.0 * (expert - self._low) / (self._high - self._low) - 1.0
                self.expert_mask[pos, i] = 1.0
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ExpertReplayBufferSamples:
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        return ExpertReplayBufferSamples(
            *_transition_tensors(self, batch_inds, env_indices, env),
            discounts=None,
            expert_actions=self.to_torch(self.expert_actions[batch_inds, env_indices, :]),
            expert_mask=self.to_torch(self.expert_mask[batch_inds, env_indices]),
        )


class MaskableReplayBufferSamples(NamedTuple):
    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None
    #: feasible actions of ``observations`` (sb3-contrib's flattened layout), bool
    action_masks: th.Tensor
    #: feasible actions of ``next_observations`` (all True after a time-limit end, see the buffer)
    next_action_masks: th.Tensor


class MaskableReplayBuffer(ReplayBuffer):
    """SB3 replay buffer that also stores the action masks of each transition's two states.

    The algorithm puts the masks of the current and the next observations into
    ``pending_masks`` / ``pending_next_masks`` before each :meth:`add`.  Where an
    episode ended, SB3's VecEnvs have already reset, so the mask of the terminal
    observation is not known; it is stored as all True.  It only matters after a
    time-limit end (the target bootstraps from the terminal state): gentwin's kernels
    allow every action there (AspSelection: no task waits; ModelCaching: the masks
    never change) or ignore the choice (TaskOffloading: no task).
    """

    def __init__(self, buffer_size: int, observation_space: spaces.Space, action_space: spaces.Space,
                 device: th.device | str = "auto", n_envs: int = 1, optimize_memory_usage: bool = False,
                 handle_timeout_termination: bool = True):
        if isinstance(action_space, spaces.Discrete):
            mask_dim = int(action_space.n)
        elif isinstance(action_space, spaces.MultiDiscrete):
            mask_dim = int(np.sum(action_space.nvec))
        else:
            raise ValueError(f"action_space = {action_space} is invalid: MaskableReplayBuffer needs a "
                             f"Discrete or MultiDiscrete space")
        if optimize_memory_usage:
            raise ValueError("optimize_memory_usage = True is invalid with action masks: set use_masks=False")
        super().__init__(buffer_size, observation_space, action_space, device, n_envs, optimize_memory_usage,
                         handle_timeout_termination)
        self.mask_dim = mask_dim
        self.action_masks = np.ones((self.buffer_size, self.n_envs, mask_dim), dtype=bool)
        self.next_action_masks = np.ones((self.buffer_size, self.n_envs, mask_dim), dtype=bool)
        self.pending_masks: np.ndarray | None = None
        self.pending_next_masks: np.ndarray | None = None

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        for name, store in (("pending_masks", self.action_masks), ("pending_next_masks", self.next_action_masks)):
            masks = getattr(self, name)
            store[self.pos] = True if masks is None else np.asarray(masks, dtype=bool).reshape(self.n_envs, -1)
            setattr(self, name, None)
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> MaskableReplayBufferSamples:
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        return MaskableReplayBufferSamples(
            *_transition_tensors(self, batch_inds, env_indices, env),
            discounts=None,
            action_masks=th.as_tensor(self.action_masks[batch_inds, env_indices], device=self.device),
            next_action_masks=th.as_tensor(self.next_action_masks[batch_inds, env_indices], device=self.device),
        )


def _masking_supported(env: VecEnv | None, mask_dim: int) -> bool:
    """sb3-contrib's ``is_masking_supported`` for a VecEnv (it offers ``action_masks``), checked by asking.

    Some VecEnvs (SuperSuit's) implement neither ``has_attr`` nor ``env_method``: no masks there.
    """
    if env is None:
        return False
    try:
        if not env.has_attr("action_masks"):
            return False
        return _env_action_masks(env).shape == (env.num_envs, mask_dim)
    except (AttributeError, NotImplementedError, TypeError, ValueError, RuntimeError):
        return False


def _env_action_masks(env: VecEnv) -> np.ndarray:
    """sb3-contrib's ``get_action_masks``: ``(n_envs, n_1 + .. + n_D)`` bool."""
    masks = getattr(env, "action_masks", None)
    out = masks() if callable(masks) else np.stack(env.env_method("action_masks"))
    return np.asarray(out, dtype=bool).reshape(env.num_envs, -1)


class DiffusionActorCritic(OffPolicyAlgorithm):
    """Diffusion-policy actor-critic (D2SAC for Discrete, GDM-tutorial actor-critic for Box).

    :param policy: ``"MlpPolicy"`` (or :class:`DiffusionPolicy`)
    :param env: environment or VecEnv (Discrete, MultiDiscrete or Box actions)
    :param learning_rate: Adam learning rate of actor and critic (and of ``alpha``)
    :param buffer_size: replay buffer size
    :param learning_starts: environment steps before the first update (uniformly random actions)
    :param batch_size: minibatch size of each gradient update
    :param tau: soft-update coefficient of the target networks
    :param gamma: discount factor
    :param train_freq: update the model every ``train_freq`` steps (int or ``(n, "step"/"episode")``)
    :param gradient_steps: gradient updates per rollout (``-1``: as many as environment steps)
    :param action_noise: extra SB3 action noise (Box), on top of ``exploration_noise``
    :param replay_buffer_class: default :class:`ExpertReplayBuffer` for Box, :class:`MaskableReplayBuffer` with
        action masks, SB3's otherwise
    :param ent_coef: Discrete only: ``alpha``; a float (fixed), or ``"auto_<init>"`` / ``"auto"`` (tuned like
        SAC's, from ``init``; default ``"auto_0.05"``: D2SAC's fixed 0.05 as the starting value, as 1.0 --
        SAC's start -- dwarfs rewards of order 1 for thousands of updates)
    :param target_entropy: Discrete only: entropy target of ``"auto"`` ``alpha`` (``"auto"``: ``0.2 log |A|``)
    :param target_update_interval: gradient steps between target-network updates
    :param bc_coef: Box only: weight of the behaviour-cloning (denoising) loss towards ``info["expert_action"]``;
        with it the Q term is normalised by ``mean |Q|`` (Diffusion-QL)
    :param squash_penalty: Box only: weight of ``mean(x_0^2)``, which keeps the pre-``tanh`` output out of
        the saturated tails (SAC v1's pre-tanh regulariser)
    :param use_masks: Discrete/MultiDiscrete: ``None`` (default) uses the env's ``action_masks()`` where it has
        one, ``True`` requires it, ``False`` ignores it (the paper's unmasked D2SAC)
    :param actor_loss: Discrete/MultiDiscrete: ``"forward_kl"`` (default) or ``"reverse_kl"`` (the paper's; see
        the module docstring for why it collapses onto a constant action)
    :param actor: ``"diffusion"`` (default) or ``"mlp"`` (the ablation)
    :param denoising_steps: ``N`` of the reverse chain (5; the contract paper uses 10)
    :param beta_schedule: ``"vp"`` (default), ``"linear"`` or ``"cosine"``
    :param hidden_dim: width of every hidden layer (actor and critics)
    :param clip_denoised: bound of the soft clip on ``x0_hat`` (default 3 for logits -- not applied to the last
        step, i.e. the logits themselves are unclipped -- and 5 for Box)
    :param exploration_noise: Box only: std of the Gaussian exploration noise in ``[-1, 1]`` units
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": DiffusionPolicy}
    policy: DiffusionPolicy

    def __init__(
        self,
        policy: str | type[DiffusionPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1000,
        batch_size: int = 512,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: str | float = "auto_0.05",
        target_entropy: str | float = "auto",
        target_update_interval: int = 1,
        bc_coef: float = 0.0,
        squash_penalty: float = 0.0,
        use_masks: bool | None = None,
        actor_loss: str = "forward_kl",
        actor: str | None = None,
        denoising_steps: int | None = None,
        beta_schedule: str | None = None,
        hidden_dim: int | None = None,
        time_dim: int | None = None,
        activation: str | None = None,
        critic_activation: str | None = None,
        clip_denoised: float | None = None,
        exploration_noise: float | None = None,
        n_critics: int | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        policy_kwargs = dict(policy_kwargs or {})
        given = dict(actor=actor, denoising_steps=denoising_steps, beta_schedule=beta_schedule,
                     hidden_dim=hidden_dim, time_dim=time_dim, activation=activation,
                     critic_activation=critic_activation, clip_denoised=clip_denoised,
                     exploration_noise=exploration_noise, n_critics=n_critics)
        for key, value in given.items():
            if value is None:
                continue
            if key in policy_kwargs and policy_kwargs[key] != value:
                raise ValueError(f"{key} = {value!r} conflicts with policy_kwargs[{key!r}] = {policy_kwargs[key]!r}")
            policy_kwargs[key] = value
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            supported_action_spaces=(spaces.Discrete, spaces.MultiDiscrete, spaces.Box),
            support_multi_env=True,
        )
        if not bc_coef >= 0:
            raise ValueError(f"bc_coef = {bc_coef!r} is invalid: must be >= 0")
        if isinstance(target_update_interval, bool) or int(target_update_interval) < 1:
            raise ValueError(f"target_update_interval = {target_update_interval!r} is invalid: must be >= 1")
        self.ent_coef = ent_coef
        self.target_entropy = target_entropy
        self.target_update_interval = int(target_update_interval)
        self.bc_coef = float(bc_coef)
        if not squash_penalty >= 0:
            raise ValueError(f"squash_penalty = {squash_penalty!r} is invalid: must be >= 0")
        self.squash_penalty = float(squash_penalty)
        if use_masks not in (None, True, False):
            raise ValueError(f"use_masks = {use_masks!r} is invalid: None (masks where the env offers them), "
                             f"True or False")
        self.use_masks = use_masks
        if actor_loss not in ACTOR_LOSSES:
            raise ValueError(f"actor_loss = {actor_loss!r} is invalid: allowed are {ACTOR_LOSSES}")
        self.actor_loss = actor_loss
        #: whether masks are in use (resolved from use_masks, the action space and the env)
        self.masks_active = False
        self._last_masks: np.ndarray | None = None
        self.log_ent_coef: th.Tensor | None = None
        self.ent_coef_optimizer: th.optim.Adam | None = None
        if _init_setup_model:
            self._setup_model()

    # -- setup ------------------------------------------------------------------
    def _resolve_masks(self) -> bool:
        """Whether this run uses action masks: ``use_masks`` (None: where the env offers them)."""
        discrete = isinstance(self.action_space, (spaces.Discrete, spaces.MultiDiscrete))
        if self.use_masks is False:
            return False
        if self.env is None:  # loaded without an env: keep what the saved model used
            return bool(getattr(self, "masks_active", False)) and discrete
        mask_dim = int(np.sum(self.action_space.nvec)) if isinstance(self.action_space, spaces.MultiDiscrete) else (
            int(self.action_space.n) if discrete else 0)
        supported = discrete and _masking_supported(self.env, mask_dim)
        if self.use_masks and not supported:
            raise ValueError(
                f"use_masks = True is invalid here: needs a Discrete or MultiDiscrete action space (got "
                f"{self.action_space}) and an env with action_masks() (supported: {supported})"
            )
        return supported

    def _setup_model(self) -> None:
        self.masks_active = self._resolve_masks()
        if self.masks_active:
            if self.replay_buffer_class is None:
                if self.n_steps != 1 or isinstance(self.observation_space, spaces.Dict):
                    raise ValueError(
                        f"action masks need 1-step returns and Box observations (n_steps = {self.n_steps}, "
                        f"observation space {self.observation_space}): set use_masks=False"
                    )
                self.replay_buffer_class = MaskableReplayBuffer
            elif not issubclass(self.replay_buffer_class, MaskableReplayBuffer):
                raise ValueError(
                    f"replay_buffer_class = {self.replay_buffer_class.__name__} is invalid with action masks: "
                    f"use MaskableReplayBuffer or set use_masks=False"
                )
        if (self.replay_buffer_class is None and isinstance(self.action_space, spaces.Box) and self.n_steps == 1
                and not isinstance(self.observation_space, spaces.Dict)):
            self.replay_buffer_class = ExpertReplayBuffer
        super()._setup_model()
        self._create_aliases()
        self.discrete = isinstance(self.action_space, (spaces.Discrete, spaces.MultiDiscrete))
        self.ent_coef_tensor = th.tensor(0.0, device=self.device)
        if self.discrete:
            #: per-state "auto" target from the feasible actions (masks) instead of a constant
            self.auto_target_entropy = self.target_entropy == "auto"
            if self.auto_target_entropy:
                # 0.98 log|A| (Christodoulou 2019) keeps the policy almost uniform, which is wrong
                # for problems with one best action per state (ASP selection); 0.2 log|A| leaves
                # room for a near-deterministic policy while keeping some exploration.  Per head of
                # a MultiDiscrete space and summed; with masks |A| is the number of feasible actions
                # of the state (a head with one feasible choice has no entropy to keep).
                self.target_entropy_value = float(0.2 * np.log(self.policy.nvec).sum())
            else:
                self.target_entropy_value = float(self.target_entropy)
            if isinstance(self.ent_coef, str) and self.ent_coef.startswith("auto"):
                init = 1.0
                if "_" in self.ent_coef:
                    init = float(self.ent_coef.split("_")[1])
                    if not init > 0.0:
                        raise ValueError(f"ent_coef = {self.ent_coef!r} is invalid: the initial value must be > 0")
                self.log_ent_coef = th.log(th.ones(1, device=self.device) * init).requires_grad_(True)
                self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=self.lr_schedule(1))
            else:
                try:
                    value = float(self.ent_coef)
                except (TypeError, ValueError):
                    raise ValueError(f"ent_coef = {self.ent_coef!r} is invalid: a float >= 0 or 'auto'") from None
                if not value >= 0:
                    raise ValueError(f"ent_coef = {self.ent_coef!r} is invalid: a float >= 0 or 'auto'")
                self.ent_coef_tensor = th.tensor(value, device=self.device)

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.actor_target = self.policy.actor_target
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target

    # -- training -----------------------------------------------------------------
    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)

        stats: dict[str, list[float]] = {}
        step = self._train_step_discrete if self.discrete else self._train_step_box
        for gradient_step in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            for key, value in step(replay_data).items():
                stats.setdefault(key, []).append(value)
            if gradient_step % self.target_update_interval == 0:
                self._soft_update()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in stats.items():
            # Tensors (the discrete step's) are averaged on the device: one synchronisation per key
            # and call instead of one per key and gradient step (matters on CUDA).
            mean = th.stack(values).mean().item() if isinstance(values[0], th.Tensor) else np.mean(values)
            self.logger.record(f"train/{key}", float(mean))

    @th.no_grad()
    def _soft_update(self) -> None:
        pairs = [(self.critic, self.critic_target)]
        if self.actor_target is not None:
            pairs.append((self.actor, self.actor_target))
        for online, target in pairs:
            target_params = list(target.parameters())
            th._foreach_lerp_(target_params, list(online.parameters()), self.tau)

    def _discounts(self, replay_data) -> th.Tensor | float:
        discounts = getattr(replay_data, "discounts", None)
        return discounts if discounts is not None else self.gamma

    def _head_policy(self, state: th.Tensor, masks: th.Tensor | None):
        """Masked log-probabilities ``(B, D, n_max)``, probabilities and feasibility of every head."""
        logits, feasible = self.policy.head_logits(self.actor(state), masks)
        logp = F.log_softmax(logits, dim=-1)
        return logp, logp.exp(), feasible

    def _train_step_discrete(self, replay_data) -> dict[str, th.Tensor]:
        """One D2SAC update for Discrete (one head) and MultiDiscrete (``D`` heads) spaces.

        Factorised policy and critic: ``pi(a|s) = prod_d pi_d(a_d|s)`` and
        ``Q(s, a) = sum_d Q_d(s, a_d)`` (one critic output per head and choice), so the soft
        value is exactly ``V(s) = sum_d sum_{a_d} pi_d (min_k Q_d^k - alpha log pi_d)`` and
        the entropy of ``pi`` is the sum of the heads' entropies.  With masks, infeasible
        choices have probability 0 in the target, the actor loss and the entropy.
        """
        policy = self.policy
        state = policy.features(replay_data.observations)
        actions = replay_data.actions.long()  # (B, D)
        rewards, dones = replay_data.rewards, replay_data.dones
        masks = getattr(replay_data, "action_masks", None) if self.masks_active else None
        if self.log_ent_coef is not None:
            alpha = self.log_ent_coef.detach().exp()
        else:
            alpha = self.ent_coef_tensor

        with th.no_grad():
            target_q = rewards
            # With every sampled transition terminal (one-step episodes) the bootstrap term
            # is multiplied by 0: skip the next-state chain, an exact shortcut.
            if not bool((dones > 0).all()):
                next_state = policy.features(replay_data.next_observations)
                next_masks = getattr(replay_data, "next_action_masks", None) if self.masks_active else None
                next_logp, next_probs, _ = self._head_policy(next_state, next_masks)
                next_q = policy.to_heads(self.critic_target(next_state).min(dim=0).values)
                # masked entries: probability exactly 0, finite logit, so they add nothing
                next_v = (next_probs * (next_q - alpha * next_logp)).sum(dim=(-2, -1)).unsqueeze(-1)
                target_q = rewards + (1.0 - dones) * self._discounts(replay_data) * next_v

        q_all = policy.to_heads(self.critic(state))  # (n_critics, B, D, n_max)
        index = actions.view(1, actions.shape[0], -1, 1).expand(q_all.shape[0], -1, -1, 1)
        q_taken = q_all.gather(-1, index).squeeze(-1).sum(dim=-1, keepdim=True)  # (n_critics, B, 1)
        critic_loss = 0.5 * (q_taken - target_q.unsqueeze(0)).pow(2).mean(dim=(1, 2)).sum()
        self.critic.optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic.optimizer.step()

        # Actor, through the reverse chain.  Q comes from the forward pass of the critic update
        # (before its step): it is detached anyway, and this saves a second critic pass per update.
        q_min = q_all.detach().min(dim=0).values  # (B, D, n_max)
        logp, probs, feasible = self._head_policy(state, masks)
        if self.actor_loss == "reverse_kl":
            # SAC's / the D2SAC paper's: E_s sum_a pi (alpha log pi - Q) = alpha KL(pi || softmax(Q / alpha)) + c
            actor_loss = (probs * (alpha * logp - q_min)).sum(dim=(-2, -1)).mean()
        else:
            # KL(softmax(Q / alpha) || pi), same minimiser.  Its gradient in the logits is pi - target:
            # it does not vanish for actions whose probability is ~0, so the actor keeps following
            # the critic; the reverse KL's is proportional to pi(a) and dies once the policy is peaked
            # on the first (state-independent) critic -- the constant-action collapse.
            boltzmann = (q_min / alpha.clamp_min(1e-8)).masked_fill(~feasible, float("-inf"))
            target = th.softmax(boltzmann, dim=-1)
            actor_loss = (target * (th.log(target.clamp_min(1e-30)) - logp)).sum(dim=(-2, -1)).mean()
        self.actor.optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor.optimizer.step()

        entropy_per_state = -(probs.detach() * logp.detach()).sum(dim=(-2, -1))  # (B,)
        entropy = entropy_per_state.mean()
        out = {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
               "entropy": entropy, "ent_coef": alpha.reshape(())}
        if self.ent_coef_optimizer is not None:
            # SAC's temperature loss for a discrete policy: alpha grows when H(pi) < target.
            if self.auto_target_entropy and masks is not None:
                target_entropy = 0.2 * th.log(feasible.sum(dim=-1).clamp_min(1).float()).sum(dim=-1).mean()
            else:
                target_entropy = self.target_entropy_value
            ent_coef_loss = self.log_ent_coef * (entropy - target_entropy)
            self.ent_coef_optimizer.zero_grad(set_to_none=True)
            ent_coef_loss.sum().backward()
            self.ent_coef_optimizer.step()
            out["ent_coef_loss"] = ent_coef_loss.detach().reshape(())
        return out

    def _train_step_box(self, replay_data) -> dict[str, float]:
        policy = self.policy
        state = policy.features(replay_data.observations)
        rewards, dones = replay_data.rewards, replay_data.dones

        with th.no_grad():
            target_q = rewards
            if not bool((dones > 0).all()):  # exact shortcut, see the discrete step
                next_state = policy.features(replay_data.next_observations)
                next_action = policy.squash(self.actor_target(next_state))
                next_q = self.critic_target(th.cat([next_state, next_action], dim=-1)).min(dim=0).values
                target_q = rewards + (1.0 - dones) * self._discounts(replay_data) * next_q

        q = self.critic(th.cat([state, replay_data.actions], dim=-1))
        critic_loss = 0.5 * (q - target_q.unsqueeze(0)).pow(2).mean(dim=(1, 2)).sum()
        self.critic.optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic.optimizer.step()

        x_0 = self.actor(state)
        q_pi = self.critic(th.cat([state, policy.squash(x_0)], dim=-1)).min(dim=0).values
        q_loss = -q_pi.mean()
        actor_loss = q_loss
        out = {"critic_loss": critic_loss.item(), "q_loss": q_loss.item()}
        if self.squash_penalty > 0:
            # Keeps x_0 out of tanh's flat tails, where the Q-gradient vanishes (SAC v1's
            # pre-tanh regulariser); matters when Q is flat along some action direction.
            actor_loss = actor_loss + self.squash_penalty * x_0.pow(2).mean()
        if self.bc_coef > 0 and hasattr(replay_data, "expert_mask"):
            mask = replay_data.expert_mask
            if bool((mask > 0).any()):
                target_x0 = policy.unsquash(replay_data.expert_actions)
                bc_loss = self.actor.denoising_loss(target_x0, state, weights=mask)
                # Diffusion-QL (Wang et al. 2023, eq. 3): the Q term normalised by |Q| so that
                # bc_coef sets the balance whatever the reward scale.
                actor_loss = actor_loss / q_pi.abs().mean().detach().clamp_min(1e-6) + self.bc_coef * bc_loss
                out["bc_loss"] = bc_loss.item()
        self.actor.optimizer.zero_grad(set_to_none=True)
        # Only the actor's gradients are needed: the critic is a fixed function here.
        actor_loss.backward(inputs=list(self.actor.parameters()))
        self.actor.optimizer.step()
        out["actor_loss"] = actor_loss.item()
        return out

    # -- action masks --------------------------------------------------------------------
    @property
    def uses_action_masks(self) -> bool:
        """Whether ``predict`` should get ``action_masks`` (read by gentwin's evaluation harness)."""
        return bool(self.masks_active)

    def _sample_action(self, learning_starts: int, action_noise: ActionNoise | None = None,
                       n_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        if not self.masks_active:
            return super()._sample_action(learning_starts, action_noise, n_envs)
        masks = self._last_masks if self._last_masks is not None else _env_action_masks(self.env)
        self._last_masks = masks
        if self.num_timesteps < learning_starts:
            # Warm-up: uniform over the feasible choices of every head (torch's generator, seeded by SB3).
            policy = self.policy
            feasible = policy.head_masks(th.as_tensor(masks, device=self.device))
            if feasible.dim() == 2:
                feasible = feasible.expand(n_envs, -1, -1)
            draw = th.multinomial(feasible.reshape(-1, policy.n_max).float(), 1).view(n_envs, -1)
            action = draw.cpu().numpy().reshape((n_envs, *self.action_space.shape))
        else:
            action, _ = self.predict(self._last_obs, deterministic=False, action_masks=masks)
        return action, action

    def _store_transition(self, replay_buffer, buffer_action, new_obs, reward, dones, infos) -> None:
        if self.masks_active and isinstance(replay_buffer, MaskableReplayBuffer):
            next_masks = _env_action_masks(self.env)  # masks of new_obs (reset observations where done)
            replay_buffer.pending_masks = self._last_masks
            stored = next_masks.copy()
            stored[np.asarray(dones, dtype=bool)] = True  # the terminal state's mask is not observed
            replay_buffer.pending_next_masks = stored
            self._last_masks = next_masks
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def _setup_learn(self, *args, **kwargs):
        self._last_masks = None  # the env may be reset: fetch fresh masks
        return super()._setup_learn(*args, **kwargs)

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False,
                action_masks: np.ndarray | None = None):
        """SB3's ``predict``; with ``action_masks`` (sb3-contrib layout) infeasible actions are never chosen."""
        if action_masks is None:
            return super().predict(observation, state, episode_start, deterministic)
        return self.policy.predict(observation, state, episode_start, deterministic, action_masks=action_masks)

    # -- SB3 plumbing ------------------------------------------------------------------
    def learn(
        self: SelfDiffusionActorCritic,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "DiffusionActorCritic",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDiffusionActorCritic:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "actor", "actor_target", "critic", "critic_target", "_last_masks"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "actor.optimizer", "critic.optimizer"]
        if self.ent_coef_optimizer is not None:
            state_dicts.append("ent_coef_optimizer")
            return state_dicts, ["log_ent_coef"]
        return state_dicts, ["ent_coef_tensor"]
