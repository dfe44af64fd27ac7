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
  ``y = r + gamma (1 - d) sum_a pi(a|s') (min_k Q_k^target(s', a) - alpha log pi(a|s'))``
  and the actor minimises ``E_s sum_a pi(a|s) (alpha log pi(a|s) - min_k Q_k(s, a))``,
  with the gradient flowing through every step of the reverse chain.  The entropy
  weight ``alpha`` (``ent_coef``) is fixed or, with ``"auto"``, tuned like SAC's
  towards ``target_entropy`` (``"auto"``: ``0.2 * log |A|``, see ``__init__``).
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
from stable_baselines3.common.vec_env import VecNormalize
from torch.nn import functional as F

from gentwin.agents.diffusion_policies import DiffusionPolicy

__all__ = ["DiffusionActorCritic", "ExpertReplayBuffer", "ExpertReplayBufferSamples", "MlpPolicy"]

MlpPolicy = DiffusionPolicy

#: constructor keywords that belong to the policy (forwarded into ``policy_kwargs``)
POLICY_KEYWORDS = (
    "hidden_dim", "actor", "denoising_steps", "beta_schedule", "time_dim", "activation",
    "critic_activation", "clip_denoised", "exploration_noise", "n_critics",
)

SelfDiffusionActorCritic = TypeVar("SelfDiffusionActorCritic", bound="DiffusionActorCritic")


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
        if self.optimize_memory_usage:
            next_obs = self.observations[(batch_inds + 1) % self.buffer_size, env_indices, :]
        else:
            next_obs = self.next_observations[batch_inds, env_indices, :]
        dones = self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])
        data = (
            self._normalize_obs(self.observations[batch_inds, env_indices, :], env),
            self.actions[batch_inds, env_indices, :],
            self._normalize_obs(next_obs, env),
            dones.reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )
        tensors = [self.to_torch(x) for x in data]
        return ExpertReplayBufferSamples(
            *tensors,
            discounts=None,
            expert_actions=self.to_torch(self.expert_actions[batch_inds, env_indices, :]),
            expert_mask=self.to_torch(self.expert_mask[batch_inds, env_indices]),
        )


class DiffusionActorCritic(OffPolicyAlgorithm):
    """Diffusion-policy actor-critic (D2SAC for Discrete, GDM-tutorial actor-critic for Box).

    :param policy: ``"MlpPolicy"`` (or :class:`DiffusionPolicy`)
    :param env: environment or VecEnv (Discrete or Box actions)
    :param learning_rate: Adam learning rate of actor and critic (and of ``alpha``)
    :param buffer_size: replay buffer size
    :param learning_starts: environment steps before the first update (uniformly random actions)
    :param batch_size: minibatch size of each gradient update
    :param tau: soft-update coefficient of the target networks
    :param gamma: discount factor
    :param train_freq: update the model every ``train_freq`` steps (int or ``(n, "step"/"episode")``)
    :param gradient_steps: gradient updates per rollout (``-1``: as many as environment steps)
    :param action_noise: extra SB3 action noise (Box), on top of ``exploration_noise``
    :param replay_buffer_class: default :class:`ExpertReplayBuffer` for Box, SB3's otherwise
    :param ent_coef: Discrete only: ``alpha``; a float (fixed), or ``"auto_<init>"`` / ``"auto"`` (tuned like
        SAC's, from ``init``; default ``"auto_0.05"``: D2SAC's fixed 0.05 as the starting value, as 1.0 --
        SAC's start -- dwarfs rewards of order 1 for thousands of updates)
    :param target_entropy: Discrete only: entropy target of ``"auto"`` ``alpha`` (``"auto"``: ``0.2 log |A|``)
    :param target_update_interval: gradient steps between target-network updates
    :param bc_coef: Box only: weight of the behaviour-cloning (denoising) loss towards ``info["expert_action"]``;
        with it the Q term is normalised by ``mean |Q|`` (Diffusion-QL)
    :param squash_penalty: Box only: weight of ``mean(x_0^2)``, which keeps the pre-``tanh`` output out of
        the saturated tails (SAC v1's pre-tanh regulariser)
    :param actor: ``"diffusion"`` (default) or ``"mlp"`` (the ablation)
    :param denoising_steps: ``N`` of the reverse chain (5; the contract paper uses 10)
    :param beta_schedule: ``"vp"`` (default), ``"linear"`` or ``"cosine"``
    :param hidden_dim: width of every hidden layer (actor and critics)
    :param clip_denoised: bound of the soft clip on ``x0_hat`` (default 3 for logits, 5 for Box)
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
            supported_action_spaces=(spaces.Discrete, spaces.Box),
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
        self.log_ent_coef: th.Tensor | None = None
        self.ent_coef_optimizer: th.optim.Adam | None = None
        if _init_setup_model:
            self._setup_model()

    # -- setup ------------------------------------------------------------------
    def _setup_model(self) -> None:
        if (self.replay_buffer_class is None and isinstance(self.action_space, spaces.Box) and self.n_steps == 1
                and not isinstance(self.observation_space, spaces.Dict)):
            self.replay_buffer_class = ExpertReplayBuffer
        super()._setup_model()
        self._create_aliases()
        self.discrete = isinstance(self.action_space, spaces.Discrete)
        self.ent_coef_tensor = th.tensor(0.0, device=self.device)
        if self.discrete:
            n_actions = int(self.action_space.n)
            if self.target_entropy == "auto":
                # 0.98 log|A| (Christodoulou 2019) keeps the policy almost uniform, which is wrong
                # for problems with one best action per state (ASP selection); 0.2 log|A| leaves
                # room for a near-deterministic policy while keeping some exploration.
                self.target_entropy_value = float(0.2 * np.log(n_actions))
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
            self.logger.record(f"train/{key}", float(np.mean(values)))

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

    def _train_step_discrete(self, replay_data) -> dict[str, float]:
        policy = self.policy
        state = policy.features(replay_data.observations)
        actions = replay_data.actions.long()
        rewards, dones = replay_data.rewards, replay_data.dones
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
                next_logp = F.log_softmax(self.actor(next_state), dim=-1)
                next_q = self.critic_target(next_state).min(dim=0).values
                next_v = (next_logp.exp() * (next_q - alpha * next_logp)).sum(dim=-1, keepdim=True)
                target_q = rewards + (1.0 - dones) * self._discounts(replay_data) * next_v

        q_all = self.critic(state)  # (n_critics, B, |A|)
        index = actions.view(1, -1, 1).expand(q_all.shape[0], -1, 1)
        q_taken = q_all.gather(-1, index)
        critic_loss = 0.5 * (q_taken - target_q.unsqueeze(0)).pow(2).mean(dim=(1, 2)).sum()
        self.critic.optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic.optimizer.step()

        # Actor: expected soft value over all actions, through the reverse chain.  Q comes from
        # the forward pass of the critic update (before its step): it is detached anyway, and
        # this saves a second critic pass per update.
        q_min = q_all.detach().min(dim=0).values
        logp = F.log_softmax(self.actor(state), dim=-1)
        probs = logp.exp()
        actor_loss = (probs * (alpha * logp - q_min)).sum(dim=-1).mean()
        self.actor.optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor.optimizer.step()

        entropy = -(probs.detach() * logp.detach()).sum(dim=-1).mean()
        out = {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(),
               "entropy": entropy.item(), "ent_coef": float(alpha)}
        if self.ent_coef_optimizer is not None:
            # SAC's temperature loss for a discrete policy: alpha grows when H(pi) < target.
            ent_coef_loss = self.log_ent_coef * (entropy - self.target_entropy_value)
            self.ent_coef_optimizer.zero_grad(set_to_none=True)
            ent_coef_loss.sum().backward()
            self.ent_coef_optimizer.step()
            out["ent_coef_loss"] = ent_coef_loss.item()
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
        return [*super()._excluded_save_params(), "actor", "actor_target", "critic", "critic_target"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "actor.optimizer", "critic.optimizer"]
        if self.ent_coef_optimizer is not None:
            state_dicts.append("ent_coef_optimizer")
            return state_dicts, ["log_ent_coef"]
        return state_dicts, ["ent_coef_tensor"]
