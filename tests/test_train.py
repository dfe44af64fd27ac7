"""train.py end to end on tiny budgets, hyperparameter files, Ctrl-C and algorithm checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gentwin.cli import main, parse_kv
from gentwin.training import TrainConfig, build_model, load_hyperparams, make_train_env, train

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "gentwin/AspSelection-v0"
SMALL_ENV = ["--env-kwarg", "tasks_per_episode=40"]


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_py_end_to_end(tmp_path):
    log_root = tmp_path / "runs"
    cmd = [
        sys.executable, str(ROOT / "train.py"), "--env", ENV_ID, "--algo", "ppo", "--timesteps", "256",
        "--n-envs", "2", "--seed", "3", "--eval-freq", "128", "--eval-episodes", "2", "--log-root", str(log_root),
        "--no-progress", "--hp", "n_steps=64", "--hp", "batch_size=32", *SMALL_ENV,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("ppo", "random", "round_robin", "crash_avoid", "greedy_oracle", "capacity_pricing"):
        assert name in out.stdout
    assert "share of bound = mean return / mean lp_relaxation (certified upper bound)" in out.stdout

    run_dir = log_root / "AspSelection-v0" / "ppo" / "seed3"
    assert (run_dir / "model.zip").exists()
    assert (run_dir / "config.yaml").exists()
    result = json.loads((run_dir / "eval.json").read_text())
    assert (result["bound"]["name"], result["bound"]["kind"]) == ("lp_relaxation", "certified upper bound")
    assert len(result["agent"]) == 2 and len(result["bound"]["values"]) == 2
    assert set(result["baselines"]) == {"random", "round_robin", "crash_avoid", "greedy_oracle", "capacity_pricing"}
    bound_mean = np.mean(result["bound"]["values"])

    agent = _scalars(run_dir)
    assert len(agent["eval/mean_return"]) >= 2  # periodic evaluation plus the final one
    assert "eval/share_of_bound" in agent and "eval/crash_rate" in agent
    assert any(tag.startswith("train/") for tag in agent)
    import csv

    with open(run_dir / "progress.csv") as f:
        eval_rows = [r for r in csv.DictReader(f) if r.get("eval/mean_return")]
    assert [int(float(r["time/total_timesteps"])) for r in eval_rows][-1] >= 256
    final = np.mean([ep["return"] for ep in result["agent"]])
    assert agent["eval/mean_return"][-1] == pytest.approx(final, rel=1e-5)
    # Baselines are constant series under the same tags, so TensorBoard overlays them.
    assert agent["eval/share_of_bound"][-1] == pytest.approx(final / bound_mean, rel=1e-5)
    ub = _scalars(log_root / "AspSelection-v0" / "baseline_greedy_oracle" / "seed3")
    greedy = np.mean([ep["return"] for ep in result["baselines"]["greedy_oracle"]])
    assert ub["eval/share_of_bound"] == [pytest.approx(greedy / bound_mean, rel=1e-5)] * 2
    assert greedy / bound_mean <= 1.0
    assert set(ub) <= set(agent) | {"eval/std_return"}

    evaluate = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "evaluate", "--env", ENV_ID, "--algo", "ppo", "--model",
         str(run_dir / "model.zip"), "--eval-episodes", "2", *SMALL_ENV],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert "greedy_oracle" in evaluate.stdout and "bound: lp_relaxation" in evaluate.stdout


def test_default_command_is_a_short_asp_run(tmp_path, monkeypatch, capsys):
    """`python train.py` with no arguments: AspSelection-v0, table of agent vs baselines."""
    from gentwin.cli import DEFAULT_ALGO, DEFAULT_ENV, build_parser, resolve_run_keys

    # With no flags the run takes the shipped MaskablePPO entry's budget (measured to beat
    # the greedy oracle); this test shortens it explicitly.
    shipped = load_hyperparams(DEFAULT_ALGO, DEFAULT_ENV)
    assert resolve_run_keys(build_parser().parse_args(["train"]), DEFAULT_ALGO) == (
        shipped["n_timesteps"], shipped["n_envs"], {})
    monkeypatch.chdir(tmp_path)
    assert main(["--no-progress", "--timesteps", "128", "--eval-episodes", "1", *SMALL_ENV,
                 "--hp", "n_steps=16"]) == 0
    out = capsys.readouterr().out
    assert "maskable_ppo" in out and "greedy_oracle" in out and "bound: lp_relaxation" in out
    assert (tmp_path / "runs" / "AspSelection-v0" / "maskable_ppo" / "seed0" / "model.zip").exists()


def test_rl_zoo_hyperparameter_file(tmp_path):
    hp_file = tmp_path / "ppo.yml"
    hp_file.write_text(
        "default:\n  gamma: 0.95\n"
        f"{ENV_ID}:\n  n_steps: 32\n  batch_size: 16\n  policy_kwargs: \"dict(net_arch=[16, 16])\"\n"
        "  n_timesteps: 1000\n"
    )
    hp = load_hyperparams("ppo", ENV_ID, hp_file)
    assert hp["gamma"] == 0.95 and hp["n_steps"] == 32
    config = TrainConfig(env_id=ENV_ID, algo="ppo", n_envs=2, env_kwargs={"tasks_per_episode": 40})
    model = build_model(config, make_train_env(ENV_ID, 2, 0, config.env_kwargs), str(hp_file))
    assert model.n_steps == 32 and model.gamma == 0.95 and model.batch_size == 16
    assert model.policy.net_arch == [16, 16]
    # `--hp policy_kwargs="dict(...)"` overrides take the file's literal form as well.
    config = TrainConfig(env_id=ENV_ID, algo="ppo", n_envs=2, env_kwargs={"tasks_per_episode": 40},
                         hyperparams=parse_kv(["policy_kwargs=dict(net_arch=[8, 8])"], "--hp"))
    model = build_model(config, make_train_env(ENV_ID, 2, 0, config.env_kwargs), str(hp_file))
    assert model.policy.net_arch == [8, 8] and model.n_steps == 32
    with pytest.raises(ValueError, match="hyperparams"):
        load_hyperparams("ppo", ENV_ID, tmp_path / "missing.yml")


def test_rl_zoo_linear_learning_rate_schedule(tmp_path):
    """``learning_rate: lin_<x>`` (RL Zoo's form) decays linearly from x to 0; the model still saves."""
    from stable_baselines3 import PPO

    config = TrainConfig(env_id=ENV_ID, algo="ppo", n_envs=2, env_kwargs={"tasks_per_episode": 40},
                         hyperparams=parse_kv(["learning_rate=lin_1e-3", "n_steps=32", "batch_size=32"], "--hp"))
    model = build_model(config, make_train_env(ENV_ID, 2, 0, config.env_kwargs))
    assert model.lr_schedule(1.0) == pytest.approx(1e-3)
    assert model.lr_schedule(0.25) == pytest.approx(2.5e-4)
    assert model.lr_schedule(0.0) == 0.0
    model.learn(128)
    # The optimizer follows the schedule: its last update (after 128 of 128 steps) ran at rate 0.
    assert model.policy.optimizer.param_groups[0]["lr"] == 0.0
    model.save(tmp_path / "m.zip")
    assert PPO.load(tmp_path / "m.zip").lr_schedule(0.5) == pytest.approx(5e-4)
    config = TrainConfig(env_id=ENV_ID, algo="ppo", n_envs=2, env_kwargs={"tasks_per_episode": 40},
                         hyperparams={"learning_rate": "3e-4"})  # as YAML reads `learning_rate: 3e-4`
    assert build_model(config, make_train_env(ENV_ID, 2, 0, config.env_kwargs)).lr_schedule(0.5) == 3e-4
    for bad, match in (("lin_x", "learning_rate = 'lin_x' is invalid"),
                       ("lin_-1e-3", "must be finite and > 0"),
                       ("fast", "expected a number or 'lin_<initial value>'")):
        config = TrainConfig(env_id=ENV_ID, algo="ppo", n_envs=2, env_kwargs={"tasks_per_episode": 40},
                             hyperparams={"learning_rate": bad})
        with pytest.raises(ValueError, match=match):
            build_model(config, make_train_env(ENV_ID, 2, 0, config.env_kwargs))


def test_extra_callbacks_are_called(tmp_path):
    from stable_baselines3.common.callbacks import BaseCallback

    class CountSteps(BaseCallback):
        calls = 0

        def _on_step(self) -> bool:
            CountSteps.calls += 1
            return True

    config = TrainConfig(env_id=ENV_ID, algo="a2c", timesteps=64, n_envs=2, log_root=str(tmp_path), eval_freq=0,
                         eval_episodes=1, env_kwargs={"tasks_per_episode": 20}, hyperparams={"n_steps": 8},
                         progress_bar=False, baselines=[])
    train(config, callbacks=[CountSteps()])
    assert CountSteps.calls == 32  # one call per batch step: 64 steps / 2 instances


def test_ctrl_c_saves_the_model(tmp_path, monkeypatch):
    from stable_baselines3 import PPO

    def interrupted_learn(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PPO, "learn", interrupted_learn)
    config = TrainConfig(env_id=ENV_ID, algo="ppo", timesteps=100, n_envs=2, log_root=str(tmp_path), eval_episodes=1,
                         env_kwargs={"tasks_per_episode": 30}, progress_bar=False, baselines=[])
    result = train(config)
    assert result.interrupted
    assert result.model_path.exists()
    assert PPO.load(result.model_path).observation_space.shape == (42,)


@pytest.mark.parametrize("algo", ["a2c", "dqn", "maskable_ppo", "qrdqn"])
def test_other_discrete_algorithms_train_on_the_batched_kernel(tmp_path, algo):
    hp = {"a2c": {"n_steps": 8}, "dqn": {"learning_starts": 32}, "qrdqn": {"learning_starts": 32},
          "maskable_ppo": {"n_steps": 32, "batch_size": 32}}[algo]
    config = TrainConfig(env_id=ENV_ID, algo=algo, timesteps=128, n_envs=4, log_root=str(tmp_path), eval_freq=0,
                         eval_episodes=1, env_kwargs={"tasks_per_episode": 30}, hyperparams=hp,
                         progress_bar=False, baselines=[])
    result = train(config)
    assert result.model_path.exists()
    assert len(result.agent.episodes) == 1


def test_unsupported_algorithm_and_bad_config_raise():
    config = TrainConfig(env_id=ENV_ID, algo="sac", n_envs=1)
    with pytest.raises(ValueError, match="sac"):
        build_model(config, make_train_env(ENV_ID, 1, 0))
    with pytest.raises(ValueError, match="algo"):
        build_model(TrainConfig(algo="nope"), make_train_env(ENV_ID, 1, 0))
    with pytest.raises(ValueError, match="n_envs"):
        TrainConfig(n_envs=0)
    with pytest.raises(ValueError, match="timesteps"):
        TrainConfig(timesteps=-1)


def test_pettingzoo_env_trains_through_supersuit_parameter_sharing(tmp_path):
    """PARALLEL ids train with SB3 via SuperSuit, seeded like the batched kernels."""
    config = TrainConfig(env_id="gentwin/TaskOffloading-ma-v0", algo="ppo", timesteps=256, n_envs=1,
                         log_root=str(tmp_path), eval_freq=0, eval_episodes=1, progress_bar=False,
                         hyperparams={"n_steps": 64, "batch_size": 64}, env_kwargs={"params": "small"})
    venv_a = make_train_env(config.env_id, 1, 5, config.env_kwargs)
    venv_b = make_train_env(config.env_id, 1, 5, config.env_kwargs)
    np.testing.assert_array_equal(venv_a.reset(), venv_b.reset())  # seed() is honoured
    venv_c = make_train_env(config.env_id, 1, 6, config.env_kwargs)
    assert not np.array_equal(venv_a.reset(), venv_c.reset())
    result = train(config)
    assert result.model_path.exists()
    # The shared model acts on the central view of the same instances, next to the baselines and bound.
    assert set(result.baselines) == {"all_local", "all_nearest_edge", "all_cloud", "random", "greedy",
                                     "greedy_priced"}
    assert result.bound is not None and result.bound.name == "fluid_lp"
    assert len(result.agent.episodes) == 1 and "drop_rate" in result.agent.episodes[0]
    assert np.all(np.asarray(result.bound.values) >= result.agent.metric("return"))


def test_a_shared_agent_policy_plays_the_central_view_per_agent():
    """SharedAgentPolicy lays out the agents' actions as the central action: a model that sends every
    device's task to the cloud is the all_cloud baseline, episode by episode; ModelCaching's edges too."""
    from gentwin.baselines.model_caching import CloudOnlyPolicy
    from gentwin.baselines.task_offloading import AllCloudPolicy
    from gentwin.evaluation import SharedAgentPolicy, evaluate_policy
    from gentwin.training import central_view, make_eval_env

    class Constant:
        def __init__(self, action):
            self.action = np.asarray(action)

        def predict(self, obs, deterministic=True):
            return np.repeat(self.action[None], len(obs), axis=0), None

    for env_id, kwargs, action, baseline in [
        ("gentwin/TaskOffloading-ma-v0", {"params": "small"}, 3, AllCloudPolicy),  # E + 1 = cloud
        ("gentwin/ModelCaching-ma-v0", {"num_slots": 15}, np.zeros(22, dtype=np.int64), CloudOnlyPolicy),
    ]:
        central, central_kwargs = central_view(env_id, kwargs)
        assert central == env_id.replace("-ma-v0", "-v0")
        venv = make_eval_env(env_id, 3, kwargs)
        shared = evaluate_policy(SharedAgentPolicy(Constant(action)), central, n_episodes=3, seed=21, venv=venv)
        venv = make_eval_env(env_id, 3, kwargs)
        expected = evaluate_policy(baseline(venv), central, n_episodes=3, seed=21, venv=venv)
        np.testing.assert_array_equal(shared.metric("return"), expected.metric("return"))
    assert central_kwargs["params"].num_edges == 3  # the PettingZoo env's own default preset
    with pytest.raises(ValueError, match="attach it"):
        SharedAgentPolicy(Constant(3)).predict(np.zeros((1, 4)))


def test_run_keys_come_from_the_hyperparameter_file_unless_a_flag_sets_them(tmp_path):
    """RL-Zoo precedence: --timesteps/--n-envs/--env-kwarg > the file's n_timesteps/n_envs/env_kwargs > defaults."""
    from gentwin.cli import DEFAULT_TIMESTEPS, build_parser, resolve_run_keys

    hp_file = tmp_path / "ppo.yml"
    hp_file.write_text(
        f"{ENV_ID}:\n  n_timesteps: 1234\n  n_envs: 3\n  env_kwargs:\n    tasks_per_episode: 40\n    params: survey\n"
        "  n_steps: 32\n"
    )
    args = build_parser().parse_args(["train", "--algo", "ppo", "--hyperparams", str(hp_file)])
    assert resolve_run_keys(args, "ppo") == (1234, 3, {"tasks_per_episode": 40, "params": "survey"})
    args = build_parser().parse_args(["train", "--algo", "ppo", "--hyperparams", str(hp_file), "--timesteps", "99",
                                      "--n-envs", "5", "--env-kwarg", "params=reference"])
    assert resolve_run_keys(args, "ppo") == (99, 5, {"tasks_per_episode": 40, "params": "reference"})
    # No entry for the id (or no file): the built-in defaults.
    args = build_parser().parse_args(["train", "--env", "gentwin/PowerAllocation-v0", "--algo", "ppo",
                                      "--hyperparams", str(hp_file)])
    assert resolve_run_keys(args, "ppo") == (DEFAULT_TIMESTEPS, 8, {})
    # compare and sweep keep explicit defaults (their reports print every option).
    args = build_parser().parse_args(["compare", "--algos", "ppo"])
    assert args.timesteps == DEFAULT_TIMESTEPS and args.n_envs == 8


def test_evaluate_uses_the_env_kwargs_the_model_was_trained_with(tmp_path):
    from gentwin.cli import _saved_env_kwargs

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("env_kwargs:\n  action_mode: feasible\n")
    assert _saved_env_kwargs(str(run_dir / "model.zip")) == {"action_mode": "feasible"}
    assert _saved_env_kwargs(str(tmp_path / "elsewhere" / "model.zip")) == {}


def test_key_value_flags_parse_yaml_scalars_and_exponent_floats():
    """`--hp learning_rate=1e-3` is a float (YAML 1.1 alone reads "1e-3" as a string)."""
    parsed = parse_kv(["learning_rate=1e-3", "b=3E-4", "c=1.0e-3", "n=16", "ent_coef=auto_0.05", "flag=true",
                       "name=ab1e5"], "--hp")
    assert parsed == {"learning_rate": 1e-3, "b": 3e-4, "c": 1e-3, "n": 16, "ent_coef": "auto_0.05", "flag": True,
                      "name": "ab1e5"}
    assert isinstance(parsed["learning_rate"], float)
    with pytest.raises(SystemExit, match="key=value"):
        parse_kv(["learning_rate"], "--hp")
