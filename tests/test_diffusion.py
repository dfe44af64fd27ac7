"""The diffusion actor-critic: DDPM maths, SB3 integration, learning on tiny problems."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import gentwin  # noqa: F401
from gentwin.agents import get_algorithm
from gentwin.agents.diffusion import (
    DiffusionActorCritic,
    ExpertReplayBuffer,
    MaskableReplayBuffer,
    MaskableReplayBufferSamples,
)
from gentwin.agents.diffusion_policies import (
    DiffusionActor,
    DiffusionSchedule,
    MlpActor,
    NoisePredictionMLP,
    TwinQNetwork,
    beta_schedule,
)
from gentwin.envs import make_sb3_vec_env
from gentwin.evaluation import evaluate_policy

th.set_num_threads(1)

TINY = dict(hidden_dim=32, batch_size=64, learning_starts=64)


# ---------------------------------------------------------------------------
# Tiny problems
# ---------------------------------------------------------------------------
class MatchingBandit(gym.Env):
    """One-step episodes: observe a one-hot context k of 4; action (k + 1) % 4 pays 1, others 0."""

    def __init__(self):
        self.observation_space = spaces.Box(0.0, 1.0, (4,), np.float32)
        self.action_space = spaces.Discrete(4)
        self.k = 0

    def _obs(self):
        obs = np.zeros(4, np.float32)
        obs[self.k] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k = int(self.np_random.integers(4))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == (self.k + 1) % 4)
        return self._obs(), reward, True, False, {}


class TargetBox(gym.Env):
    """One-step episodes: observe x in [-1, 1]^2, reward -||a - a*(x)||^2 with a* = (x0, -x1) / 2.

    ``info["expert_action"]`` carries a*, for the behaviour-cloning path.
    """

    def __init__(self, low: float = -1.0, high: float = 1.0):
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Box(low, high, (2,), np.float32)
        self.x = np.zeros(2, np.float32)

    def target(self):
        return np.array([0.5 * self.x[0], -0.5 * self.x[1]], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action):
        target = self.target()
        reward = -float(np.sum((np.asarray(action) - target) ** 2))
        return self.x.copy(), reward, True, False, {"expert_action": target}


# ---------------------------------------------------------------------------
# DDPM maths
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp", "linear", "cosine"])
@pytest.mark.parametrize("n", [1, 5, 10])
def test_schedule_shapes(name, n):
    s = DiffusionSchedule(name, n)
    for arr in (s.beta_t, s.alpha_t, s.alpha_bar_t, s.posterior_variance, s.posterior_mean_coef1):
        assert arr.shape == (n,)
    assert np.all((s.beta_t > 0) & (s.beta_t < 1))
    assert np.all(np.diff(s.alpha_bar_t) < 0)  # strictly more noise at every step
    np.testing.assert_allclose(s.alpha_bar_t, np.cumprod(1 - s.beta_t))
    assert s.alpha_bar_prev[0] == 1.0


def test_schedule_values():
    # vp: alpha_bar_N = exp(-(beta_min + beta_max)/2) for any N
    for n in (3, 5, 10):
        assert DiffusionSchedule("vp", n).alpha_bar_t[-1] == pytest.approx(np.exp(-5.05), rel=1e-12)
    lin = beta_schedule("linear", 5)
    np.testing.assert_allclose(lin, np.linspace(1e-4, 2e-2, 5))
    cos = DiffusionSchedule("cosine", 10)
    f = lambda t: np.cos((t / 10 + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    np.testing.assert_allclose(cos.alpha_bar_t[:-1], f(np.arange(1, 10)) / f(0), rtol=1e-12)
    with pytest.raises(ValueError, match="beta_schedule"):
        beta_schedule("quadratic", 5)
    with pytest.raises(ValueError, match="denoising_steps"):
        beta_schedule("vp", 0)


@pytest.mark.parametrize("name", ["vp", "linear", "cosine"])
def test_posterior_is_bayes_rule(name):
    """q(x_{t-1} | x_t, x_0) from the Gaussian product equals the closed-form coefficients."""
    s = DiffusionSchedule(name, 6)
    for i in range(1, 6):  # t = i + 1 >= 2
        prior_var = 1 - s.alpha_bar_prev[i]  # x_{t-1} | x_0 ~ N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1})
        like_var = s.beta_t[i]  # x_t | x_{t-1} ~ N(sqrt(alpha_t) x_{t-1}, beta_t)
        post_var = 1.0 / (1.0 / prior_var + s.alpha_t[i] / like_var)
        assert s.posterior_variance[i] == pytest.approx(post_var, rel=1e-10)
        # mean = post_var (sqrt(ab_{t-1}) x0 / prior_var + sqrt(alpha_t) x_t / like_var)
        assert s.posterior_mean_coef1[i] == pytest.approx(post_var * np.sqrt(s.alpha_bar_prev[i]) / prior_var)
        assert s.posterior_mean_coef2[i] == pytest.approx(post_var * np.sqrt(s.alpha_t[i]) / like_var)
    assert s.posterior_variance[0] == 0.0  # the last step is deterministic given x0_hat
    assert s.posterior_mean_coef1[0] == pytest.approx(1.0) and s.posterior_mean_coef2[0] == pytest.approx(0.0)


def test_split_first_layer_equals_concatenation():
    th.manual_seed(0)
    net = NoisePredictionMLP(state_dim=7, action_dim=3, hidden_dim=16, time_dim=8)
    x, s, t = th.randn(5, 3), th.randn(5, 7), th.tensor([0, 1, 2, 3, 4])
    h = th.cat([x, net.time_net(t), net.state_net(s)], dim=-1)
    reference = net.out(net.act(net.mid2(net.act(net.mid1(h)))))
    th.testing.assert_close(net(x, t, s), reference)


def test_twin_q_members_are_independent_mlps():
    th.manual_seed(0)
    q = TwinQNetwork(4, 3, hidden_dim=8, n_critics=2)
    x = th.randn(6, 4)
    out = q(x)
    assert out.shape == (2, 6, 3)
    for k in range(2):
        h = th.relu(x @ q.w1[k] + q.b1[k])
        h = th.relu(h @ q.w2[k] + q.b2[k])
        th.testing.assert_close(out[k], h @ q.w3[k] + q.b3[k])


def test_trained_chain_reproduces_fixed_targets():
    """A model trained to convergence with the DDPM loss samples its training targets."""
    th.manual_seed(0)
    actor = DiffusionActor(state_dim=2, action_dim=3, hidden_dim=32, denoising_steps=5)
    states = th.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = th.tensor([[0.8, -0.5, 0.2], [-0.6, 0.4, 0.9]])
    opt = th.optim.Adam(actor.parameters(), lr=1e-2)
    for _ in range(500):
        idx = th.randint(0, 2, (64,))
        loss = actor.denoising_loss(targets[idx], states[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with th.no_grad():
        samples = actor(states.repeat_interleave(200, 0)).view(2, 200, 3)
        det = actor(states, deterministic=True)
    th.testing.assert_close(samples.mean(dim=1), targets, atol=0.06, rtol=0)
    assert samples.std(dim=1).max() < 0.1
    th.testing.assert_close(det, targets, atol=0.06, rtol=0)
    # an untrained chain is nowhere near them
    fresh = DiffusionActor(state_dim=2, action_dim=3, hidden_dim=32, denoising_steps=5)
    with th.no_grad():
        assert (fresh(states, deterministic=True) - targets).abs().max() > 0.2


# ---------------------------------------------------------------------------
# SB3 integration
# ---------------------------------------------------------------------------
def test_registry_and_kwargs_passthrough():
    assert get_algorithm("diffusion") is DiffusionActorCritic
    venv = make_sb3_vec_env("gentwin/AspSelection-v0", num_envs=2, params="reference")
    model = DiffusionActorCritic("MlpPolicy", venv, denoising_steps=10, beta_schedule="cosine", hidden_dim=16)
    assert isinstance(model.policy.actor, DiffusionActor)
    assert model.policy.actor.n_steps == 10 and model.policy.actor.schedule.name == "cosine"
    assert model.policy.actor.epsilon_theta.hidden_dim == 16
    ablation = DiffusionActorCritic("MlpPolicy", venv, actor="mlp", hidden_dim=16)
    assert isinstance(ablation.policy.actor, MlpActor)
    with pytest.raises(ValueError, match="actor"):
        DiffusionActorCritic("MlpPolicy", venv, actor="transformer")
    with pytest.raises(ValueError, match="beta_schedule"):
        DiffusionActorCritic("MlpPolicy", venv, beta_schedule="quadratic")
    with pytest.raises(ValueError, match="ent_coef"):
        DiffusionActorCritic("MlpPolicy", venv, ent_coef="often")
    with pytest.raises(ValueError, match="bc_coef"):
        DiffusionActorCritic("MlpPolicy", venv, bc_coef=-1.0)
    with pytest.raises(ValueError, match="conflicts"):
        DiffusionActorCritic("MlpPolicy", venv, actor="mlp", policy_kwargs={"actor": "diffusion"})


def test_discrete_agent_learns_bandit_with_callbacks_and_tensorboard(tmp_path):
    venv = make_vec_env(MatchingBandit, n_envs=4, seed=0)
    calls = []

    class Count(BaseCallback):
        def _on_step(self):
            calls.append(self.num_timesteps)
            return True

    model = DiffusionActorCritic("MlpPolicy", venv, seed=0, learning_rate=3e-3, tensorboard_log=str(tmp_path),
                                 **TINY)
    model.learn(1600, callback=Count())
    assert calls and calls[-1] == 1600
    obs = np.eye(4, dtype=np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, [1, 2, 3, 0])
    assert list(tmp_path.rglob("events.out.tfevents*"))
    # the D2SAC soft policy concentrates on the paying action
    with th.no_grad():
        probs = th.softmax(model.policy.actor(th.as_tensor(obs)), dim=-1)
    assert probs[th.arange(4), th.tensor([1, 2, 3, 0])].min() > 0.5


def test_continuous_agent_learns_and_bc_uses_expert(tmp_path):
    venv = make_vec_env(lambda: TargetBox(-1.0, 1.0), n_envs=4, seed=0)
    model = DiffusionActorCritic("MlpPolicy", venv, seed=0, learning_rate=3e-3, **TINY)
    assert isinstance(model.replay_buffer, ExpertReplayBuffer)
    model.learn(1600)
    x = np.random.default_rng(0).uniform(-1, 1, (64, 2)).astype(np.float32)
    target = np.stack([0.5 * x[:, 0], -0.5 * x[:, 1]], axis=1)
    actions, _ = model.predict(x, deterministic=True)
    assert np.mean(np.sum((actions - target) ** 2, axis=1)) < 0.03  # uniform random actions: ~0.83
    # the expert actions were stored with the transitions
    rb = model.replay_buffer
    n = rb.pos
    assert rb.expert_mask[:n].min() == 1.0
    np.testing.assert_allclose(rb.expert_actions[:n],
                               np.stack([0.5 * rb.observations[:n, :, 0], -0.5 * rb.observations[:n, :, 1]], -1),
                               atol=1e-6)
    # behaviour cloning dominating the actor loss (large bc_coef) also reaches the target
    bc = DiffusionActorCritic("MlpPolicy", venv, seed=1, learning_rate=3e-3, bc_coef=50.0, **TINY)
    bc.learn(800)
    assert "train/bc_loss" in bc.logger.name_to_value
    actions, _ = bc.predict(x, deterministic=True)
    assert np.mean(np.sum((actions - target) ** 2, axis=1)) < 0.05


def test_mlp_ablation_learns_on_the_same_code_path():
    venv = make_vec_env(MatchingBandit, n_envs=4, seed=0)
    model = DiffusionActorCritic("MlpPolicy", venv, seed=0, learning_rate=3e-3, actor="mlp", **TINY)
    model.learn(1200)
    actions, _ = model.predict(np.eye(4, dtype=np.float32), deterministic=True)
    np.testing.assert_array_equal(actions, [1, 2, 3, 0])


@pytest.mark.parametrize("env_id", ["gentwin/AspSelection-v0", "gentwin/PowerAllocation-v0"])
@pytest.mark.parametrize("actor", ["diffusion", "mlp"])
def test_save_load_round_trip(tmp_path, env_id, actor):
    venv = make_sb3_vec_env(env_id, num_envs=2, seed=0)
    ent = {"ent_coef": 0.1} if "Asp" in env_id else {"bc_coef": 1.0}
    model = DiffusionActorCritic("MlpPolicy", venv, seed=0, actor=actor, hidden_dim=16, batch_size=32,
                                 learning_starts=32, denoising_steps=3, **ent)
    model.learn(100)
    path = tmp_path / "model.zip"
    model.save(path)
    loaded = DiffusionActorCritic.load(path, env=venv)
    obs = venv.reset()
    a, _ = model.predict(obs, deterministic=True)
    b, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a, b)
    assert loaded.policy.actor_kind == actor and loaded.policy.denoising_steps == 3
    for p, q in zip(model.policy.parameters(), loaded.policy.parameters()):
        th.testing.assert_close(p, q)
    assert loaded.bc_coef == model.bc_coef and loaded.ent_coef == model.ent_coef
    loaded.learn(40)  # training continues after loading


def test_deterministic_predict_is_repeatable_and_stochastic_explores():
    venv = make_sb3_vec_env("gentwin/PowerAllocation-v0", num_envs=4, seed=0)
    model = DiffusionActorCritic("MlpPolicy", venv, seed=0, hidden_dim=16)
    obs = venv.reset()
    a1, _ = model.predict(obs, deterministic=True)
    a2, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(a1, a2)
    s1, _ = model.predict(obs, deterministic=False)
    s2, _ = model.predict(obs, deterministic=False)
    assert not np.array_equal(s1, s2)
    assert venv.action_space.contains(s1[0]) and venv.action_space.contains(a1[0])


def test_expert_replay_buffer_scales_expert_actions_to_the_unit_box():
    space = spaces.Box(np.array([0.0, -2.0], np.float32), np.array([1.0, 2.0], np.float32))
    obs_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    rb = ExpertReplayBuffer(10, obs_space, space, device="cpu", n_envs=2)
    obs = np.zeros((2, 3), np.float32)
    rb.add(obs, obs, np.zeros((2, 2), np.float32), np.zeros(2), np.zeros(2),
           [{"expert_action": np.array([0.25, 1.0])}, {}])
    np.testing.assert_allclose(rb.expert_actions[0, 0], [-0.5, 0.5])
    assert rb.expert_mask[0].tolist() == [1.0, 0.0]
    sample = rb.sample(8)
    assert sample.expert_actions.shape == (8, 2) and sample.expert_mask.shape == (8,)
    with pytest.raises(ValueError, match="Box"):
        ExpertReplayBuffer(10, obs_space, spaces.Discrete(3), device="cpu")


# ---------------------------------------------------------------------------
# Action masks, MultiDiscrete heads, the constant-action collapse, devices
# ---------------------------------------------------------------------------
class PenaltyBandit(gym.Env):
    """One-step episodes: one-hot context k of 8; action (k + 1) % 8 pays 1, every other costs 20.

    Penalties much larger than the rewards (AspSelection's crashes) are what made D2SAC
    collapse onto one constant action."""

    def __init__(self):
        self.observation_space = spaces.Box(0.0, 1.0, (8,), np.float32)
        self.action_space = spaces.Discrete(8)
        self.k = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k = int(self.np_random.integers(8))
        return np.eye(8, dtype=np.float32)[self.k], {}

    def step(self, action):
        reward = 1.0 if int(action) == (self.k + 1) % 8 else -20.0
        return np.eye(8, dtype=np.float32)[self.k], reward, True, False, {}


class TwoHeadBandit(gym.Env):
    """One-step episodes, ``MultiDiscrete([3, 4])`` (unequal heads): context k of 6; head 0 pays
    for k % 3, head 1 for (k + 1) % 3.  Head 1's choice 3 would pay 5 but is always masked."""

    def __init__(self):
        self.observation_space = spaces.Box(0.0, 1.0, (6,), np.float32)
        self.action_space = spaces.MultiDiscrete([3, 4])
        self.k = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k = int(self.np_random.integers(6))
        return np.eye(6, dtype=np.float32)[self.k], {}

    def action_masks(self):
        return np.array([True, True, True, True, True, True, False])

    def step(self, action):
        a0, a1 = int(action[0]), int(action[1])
        reward = float(a0 == self.k % 3) + (5.0 if a1 == 3 else float(a1 == (self.k + 1) % 3))
        return np.eye(6, dtype=np.float32)[self.k], reward, True, False, {}


def _learn_bandit(seed=0, **kwargs):
    venv = make_vec_env(PenaltyBandit, n_envs=4, seed=seed)
    model = DiffusionActorCritic("MlpPolicy", venv, seed=seed, learning_rate=3e-3, **TINY, **kwargs)
    model.learn(3000)
    obs = np.eye(8, dtype=np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    with th.no_grad():
        greedy = model.critic(model.policy.features(th.as_tensor(obs))).min(dim=0).values.argmax(dim=1).numpy()
    return actions, greedy


def test_no_constant_action_collapse():
    """The collapse of AspSelection seed 1 ("always ASP 11"), on an 8-action bandit.

    With the paper's reverse-KL actor loss the policy turns near-deterministic on the first,
    state-independent critic; the loss's gradient in a logit is proportional to that action's
    probability, so it never moves again: one action in every state, whatever the critic has
    learnt since.  The forward-KL loss (default) follows the critic.

    Every assertion holds on each of three seeds.  Seeds 1-3, not 0: with gymnasium 1.4.0,
    SB3 2.9.2 and numpy 2.4.6, seed 0's reverse-KL policy plays one action in 6 of the 8
    states only (measured), where it collapsed completely with the packages this test was
    written on.
    """
    for seed in (1, 2, 3):
        actions, greedy = _learn_bandit(seed, actor_loss="reverse_kl")
        assert len(set(actions.tolist())) == 1, seed  # the collapse, reproduced
        actions, greedy = _learn_bandit(seed)
        assert len(set(actions.tolist())) >= 6, seed
        assert np.mean(actions == greedy) >= 7 / 8, seed  # the actor follows its critic
        assert np.mean(actions == (np.arange(8) + 1) % 8) >= 0.75, seed


def test_masked_agent_never_picks_infeasible_asps_where_the_unmasked_one_crashes():
    # light load: some ASP always has room (crash_avoid never crashes here), random crashes 8 %
    kwargs = dict(params="reference", num_asps=6, tasks_per_episode=200, arrival_rate_per_s=0.0002)
    results = {}
    for use_masks in (None, False):
        venv = make_sb3_vec_env("gentwin/AspSelection-v0", num_envs=8, seed=0, **kwargs)
        model = DiffusionActorCritic("MlpPolicy", venv, seed=0, learning_rate=1e-3, gamma=0.9, use_masks=use_masks,
                                     **TINY)
        assert model.masks_active is (use_masks is None) and model.uses_action_masks is (use_masks is None)
        assert isinstance(model.replay_buffer, MaskableReplayBuffer) is (use_masks is None)
        model.learn(3000)
        results[use_masks] = evaluate_policy(model, "gentwin/AspSelection-v0", n_episodes=4, env_kwargs=kwargs)
    assert results[None].mean("crash_rate") == 0.0
    assert results[False].mean("crash_rate") > 0.01
    assert results[None].mean("return") > results[False].mean("return")


def test_buffer_masks_match_the_states_and_behaviour_respects_them():
    """TaskOffloading: a device without a task may only run 'locally'; edges need reach."""
    venv = make_sb3_vec_env("gentwin/TaskOffloading-v0", num_envs=4, seed=0, params="small", episode_slots=10)
    model = DiffusionActorCritic("MlpPolicy", venv, seed=0, **TINY)
    model.learn(400)  # warm-up and policy actions, two episode ends
    rb = model.replay_buffer
    n, U, C = rb.pos, 4, 4  # 4 devices, 2 edges + local + cloud
    masks = rb.action_masks[:n].reshape(n, 4, U, C)
    next_masks = rb.next_action_masks[:n].reshape(n, 4, U, C)
    has_task = rb.observations[:n, :, 0::11][..., :U] > 0.5  # device blocks of 9 + E = 11 entries
    next_has = rb.next_observations[:n, :, 0::11][..., :U] > 0.5
    np.testing.assert_array_equal(masks[..., C - 1], has_task)  # cloud iff a task waits
    assert not masks[..., 1:][~has_task].any() and masks[..., 0].all()
    done = rb.dones[:n] > 0
    assert done.any()
    np.testing.assert_array_equal(next_masks[~done][..., C - 1], next_has[~done])
    assert next_masks[done].all()  # terminal state: not observed, all allowed
    actions = rb.actions[:n].astype(int)  # (n, 4 envs, U)
    chosen = np.take_along_axis(masks, actions[..., None], axis=-1)[..., 0]
    assert chosen.all()


def test_masked_target_entropy_and_actor_loss_ignore_infeasible_actions():
    venv = make_sb3_vec_env("gentwin/AspSelection-v0", num_envs=2, seed=0, params="reference", num_asps=4)
    model = DiffusionActorCritic("MlpPolicy", venv, seed=0, hidden_dim=16, ent_coef=0.5, gamma=0.9)
    model.policy.set_training_mode(True)
    B = 5
    gen = th.Generator().manual_seed(0)
    obs, next_obs = th.rand(B, 10, generator=gen), th.rand(B, 10, generator=gen)
    only = th.tensor([2, 1, 3, 1, 2])  # the single feasible next action of each sample (never 0)
    next_masks = th.nn.functional.one_hot(only, 4).bool()
    samples = MaskableReplayBufferSamples(
        obs, th.tensor([[1.0], [0.0], [3.0], [2.0], [1.0]]), next_obs, th.zeros(B, 1), th.ones(B, 1), None,
        th.ones(B, 4, dtype=th.bool), next_masks)
    with th.no_grad():
        q_next = model.critic_target(model.policy.features(next_obs)).min(dim=0).values
        target = 1.0 + 0.9 * q_next.gather(1, only[:, None])  # pi(only) = 1, entropy 0
        q = model.critic(model.policy.features(obs))
        expected = 0.5 * (q.gather(2, samples.actions.long().view(1, B, 1).expand(2, -1, -1)) - target).pow(2)
        expected = expected.mean(dim=(1, 2)).sum()
        # infeasible next actions with a huge Q change nothing
        model.critic_target.b3.data[:, :, 0] += 1e4
    out = model._train_step_discrete(samples._replace(next_action_masks=next_masks))
    assert float(out["critic_loss"]) == pytest.approx(expected.item(), rel=1e-5)
    # every state has exactly one feasible action: probability 1, entropy 0, in the actor loss too
    one = MaskableReplayBufferSamples(*samples[:6], action_masks=next_masks, next_action_masks=next_masks)
    out = model._train_step_discrete(one)
    assert float(out["entropy"]) == pytest.approx(0.0, abs=1e-6)
    actions, _ = model.predict(obs.numpy(), action_masks=next_masks.numpy())
    np.testing.assert_array_equal(actions, only.numpy())


def test_multidiscrete_heads_learn_and_masks_hold():
    venv = make_vec_env(TwoHeadBandit, n_envs=4, seed=0)
    model = DiffusionActorCritic("MlpPolicy", venv, seed=0, learning_rate=3e-3, **TINY)
    assert model.masks_active and model.policy.n_heads == 2 and not model.policy.uniform_heads
    model.learn(2000)
    obs = np.eye(6, dtype=np.float32)
    masks = np.tile(TwoHeadBandit().action_masks(), (6, 1))
    actions, _ = model.predict(obs, deterministic=True, action_masks=masks)
    assert actions.shape == (6, 2)
    np.testing.assert_array_equal(actions[:, 0], np.arange(6) % 3)
    np.testing.assert_array_equal(actions[:, 1], (np.arange(6) + 1) % 3)
    sampled, _ = model.predict(np.repeat(obs, 100, axis=0), action_masks=np.repeat(masks, 100, axis=0))
    assert sampled[:, 1].max() <= 2  # the masked choice 3 is never drawn
    # unmasked, the agent finds the tempting choice (the paper's unmasked D2SAC stays available)
    free = DiffusionActorCritic("MlpPolicy", venv, seed=0, learning_rate=3e-3, use_masks=False, **TINY)
    assert not free.masks_active and not isinstance(free.replay_buffer, MaskableReplayBuffer)
    free.learn(1200)
    actions, _ = free.predict(obs, deterministic=True)
    assert (actions[:, 1] == 3).all()


def test_mask_and_actor_loss_options_are_validated():
    venv = make_vec_env(MatchingBandit, n_envs=2, seed=0)
    assert not DiffusionActorCritic("MlpPolicy", venv, **TINY).masks_active  # no action_masks()
    with pytest.raises(ValueError, match="use_masks"):
        DiffusionActorCritic("MlpPolicy", venv, use_masks=True)
    with pytest.raises(ValueError, match="use_masks"):
        DiffusionActorCritic("MlpPolicy", make_vec_env(TargetBox, n_envs=2), use_masks=True)
    with pytest.raises(ValueError, match="use_masks"):
        DiffusionActorCritic("MlpPolicy", venv, use_masks="yes")
    with pytest.raises(ValueError, match="actor_loss"):
        DiffusionActorCritic("MlpPolicy", venv, actor_loss="mse")
    masked = make_sb3_vec_env("gentwin/AspSelection-v0", num_envs=2, params="reference")
    with pytest.raises(ValueError, match="replay_buffer_class"):
        DiffusionActorCritic("MlpPolicy", masked, replay_buffer_class=ExpertReplayBuffer)


def test_vec_envs_without_mask_support_train_unmasked():
    """SuperSuit's own parameter-sharing VecEnv has neither has_attr nor env_method: no masks there."""
    import supersuit as ss
    from stable_baselines3.common.vec_env import VecMonitor

    from gentwin.envs import make_parallel

    penv = make_parallel("gentwin/TaskOffloading-ma-v0", params="small", episode_slots=10)
    venv = ss.concat_vec_envs_v1(ss.pettingzoo_env_to_vec_env_v1(penv), 2, num_cpus=0,
                                 base_class="stable_baselines3")
    venv.venv.reset(seed=0)
    venv = VecMonitor(venv)
    # SuperSuit's concat env has no seed(): the model gets no seed, the resets above are seeded.
    th.manual_seed(0)
    model = DiffusionActorCritic("MlpPolicy", venv, hidden_dim=16, batch_size=16, learning_starts=16)
    assert not model.masks_active
    model.learn(60)
    with pytest.raises(ValueError, match="use_masks"):
        DiffusionActorCritic("MlpPolicy", venv, use_masks=True)


def test_multi_agent_training_env_gives_the_diffusion_agent_masks():
    """gentwin's training env for the -ma ids passes each agent's masks on (train.py's path)."""
    from gentwin.training import make_train_env

    venv = make_train_env("gentwin/TaskOffloading-ma-v0", 2, 0, {"params": "small", "episode_slots": 10})
    model = DiffusionActorCritic("MlpPolicy", venv, seed=0, hidden_dim=16, batch_size=16, learning_starts=16)
    assert model.masks_active
    model.learn(60)
    assert not DiffusionActorCritic("MlpPolicy", venv, use_masks=False).masks_active


def test_masked_model_save_load_keeps_masks(tmp_path):
    venv = make_sb3_vec_env("gentwin/ModelCaching-v0", num_envs=2, seed=0, num_slots=10)
    model = DiffusionActorCritic("MlpPolicy", venv, seed=0, hidden_dim=16, batch_size=16, learning_starts=16)
    assert model.masks_active and model.policy.n_heads == 22
    model.learn(40)
    model.save(tmp_path / "m.zip")
    for env in (venv, None):
        loaded = DiffusionActorCritic.load(tmp_path / "m.zip", env=env)
        assert loaded.masks_active and loaded.uses_action_masks
    obs = venv.reset()
    masks = venv.action_masks()
    a, _ = model.predict(obs, deterministic=True, action_masks=masks)
    b, _ = loaded.predict(obs, deterministic=True, action_masks=masks)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("env_id, kwargs", [
    ("gentwin/TaskOffloading-v0", {"params": "small", "episode_slots": 10}),
    ("gentwin/AspSelection-v0", {"params": "reference", "tasks_per_episode": 20}),
    ("gentwin/PowerAllocation-v0", {}),
])
def test_every_tensor_lives_on_the_policy_device(env_id, kwargs):
    """device placement: parameters, buffers, replay samples; and no tensor made on the default device.

    After construction the default device is switched to ``meta``: a tensor created anywhere in
    learn / train / predict without ``device=`` would land there, and mixing it with the model's
    tensors raises.  (This is what would break with ``device="cuda"``.)
    """
    venv = make_sb3_vec_env(env_id, num_envs=2, seed=0, **kwargs)
    model = DiffusionActorCritic("MlpPolicy", venv, seed=0, hidden_dim=16, batch_size=16, learning_starts=16,
                                 device="cpu")
    device = model.policy.device
    assert device == th.device("cpu") == model.device
    tensors = [*model.policy.parameters(), *model.policy.buffers()]
    if model.log_ent_coef is not None:
        tensors.append(model.log_ent_coef)
    assert all(t.device == device for t in tensors)
    th.set_default_device("meta")
    try:
        model.learn(60)
        model.train(2, 16)
        model.predict(venv.reset(), deterministic=False)
        sample = model.replay_buffer.sample(8)
    finally:
        th.set_default_device("cpu")
    assert all(t.device == device for t in sample if isinstance(t, th.Tensor))
