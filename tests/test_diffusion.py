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
from gentwin.agents.diffusion import DiffusionActorCritic, ExpertReplayBuffer
from gentwin.agents.diffusion_policies import (
    DiffusionActor,
    DiffusionSchedule,
    MlpActor,
    NoisePredictionMLP,
    TwinQNetwork,
    beta_schedule,
)
from gentwin.envs import make_sb3_vec_env

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
