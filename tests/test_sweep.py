"""Ray Tune sweeps and RLlib multi-agent training (issue 10).

Ray is slow to start, so one embedded Ray session (loopback only, 2 CPUs) is
shared by every test here, one grid sweep is shared by the tests that inspect
it, and the cluster test runs the sweep command in a subprocess against a Ray
node it starts with ``ray start`` and stops (by its process group) at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Ray reads this when it is imported: bind every Ray service to 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import ray  # noqa: E402
import yaml  # noqa: E402

from gentwin.sweep import (  # noqa: E402
    SearchSpace,
    hp_tag,
    load_search_space,
    sample_configurations,
    sweep,
    trial_log_root,
)
from gentwin.training import TrainConfig  # noqa: E402

ENV = "gentwin/AspSelection-v0"
REPO = Path(__file__).resolve().parent.parent


def tiny_config(log_root: Path) -> TrainConfig:
    # One PPO/A2C rollout of 2 x 32 steps on 16-task episodes: seconds per run.
    return TrainConfig(timesteps=64, n_envs=2, eval_freq=0, eval_episodes=2, log_root=str(log_root),
                       env_kwargs={"tasks_per_episode": 16}, hyperparams={"n_steps": 32})


@pytest.fixture(scope="module")
def embedded_ray():
    if ray.is_initialized():  # pragma: no cover - another module left a session
        ray.shutdown()
    # If ray was imported before the environment default above, force loopback anyway.
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20)
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    yield ray.get_runtime_context().get_node_id()
    ray.shutdown()


@pytest.fixture(scope="module")
def grid(embedded_ray, tmp_path_factory):
    """ppo, a2c and sac x seeds 0, 1: sac cannot act in a Discrete space, so its trials raise."""
    root = tmp_path_factory.mktemp("grid")
    base = tiny_config(root / "runs")
    result = sweep(ENV, ["ppo", "a2c", "sac"], [0, 1], base, max_failures=1, results_root=root / "results",
                   command="test grid sweep", verbose=0)
    return root, base, result


def _eval_mean_return(run_dir: str) -> float:
    with open(Path(run_dir) / "eval.json") as f:
        return float(np.mean([ep["return"] for ep in json.load(f)["agent"]]))


def test_sweep_runs_one_trial_per_algorithm_and_seed_and_writes_the_report(grid, embedded_ray):
    root, base, result = grid
    ok = {(t.algo, t.seed): t for t in result.succeeded}
    assert sorted(ok) == [("a2c", 0), ("a2c", 1), ("ppo", 0), ("ppo", 1)]
    assert len(result.succeeded) == 4  # exactly one result per trial
    for (algo, seed), trial in ok.items():
        run_dir = Path(base.log_root) / "AspSelection-v0" / algo / f"seed{seed}"
        assert Path(trial.run_dir) == run_dir  # the same layout as train/compare
        assert (run_dir / "model.zip").exists() and list(run_dir.glob("events.out.tfevents.*"))
        # What the trial reported to Tune is the run's own final evaluation.
        assert trial.metrics["mean_return"] == pytest.approx(_eval_mean_return(trial.run_dir), abs=1e-12)
        assert "crash_rate" in trial.metrics
        with open(Path(trial.run_dir) / "eval.json") as f:
            bound = json.load(f)["bound"]
        assert bound["name"] == "lp_relaxation"  # the share is of the certified bound of the same episodes
        assert trial.metrics["share_of_bound"] == pytest.approx(trial.metrics["mean_return"] / np.mean(bound["values"]))
        assert trial.metrics["share_of_bound"] <= 1
        assert trial.metrics["node_id"] == embedded_ray and trial.metrics["resumed"] is False
    assert len(result.reports) == 1
    report = result.reports[0]
    assert report.parent.parent == root / "results" / "AspSelection-v0"
    summary = json.loads((report.parent / "summary.json").read_text())
    agents = {p["name"]: p for p in summary["policies"] if p["kind"] == "agent"}
    assert set(agents) == {"ppo", "a2c"}
    for algo in ("ppo", "a2c"):
        # The report's statistics are over the two seeds' trial results.
        stat = agents[algo]["stats"]["return"]
        assert stat["n"] == 2
        assert stat["mean"] == pytest.approx(np.mean([ok[(algo, seed)].metrics["mean_return"] for seed in (0, 1)]))
    assert (report.parent / "learning_curves.png").exists()
    text = report.read_text()
    assert "## Sweep (Ray Tune)" in text and "6 trial(s): 4 finished, 2 failed." in text
    assert "test grid sweep" in text


def test_failing_trial_is_retried_and_reported_with_its_error(grid):
    root, base, result = grid
    failed = {t.name: t for t in result.failed}
    assert set(failed) == {"sac_seed0", "sac_seed1"}
    for trial in failed.values():
        assert trial.attempts == 2  # the first try and the one retry of max_failures=1
        assert trial.error.startswith("ValueError: algo = 'sac' is invalid")
        assert "does not support the action space" in trial.error
        assert not trial.metrics
    text = result.reports[0].read_text()
    failed_section = text.split("### Failed trials", 1)[1]
    assert "| sac_seed0 | evaluate | 2 | `ValueError: algo = 'sac' is invalid" in failed_section
    assert "| sac_seed1 | evaluate | 2 |" in failed_section
    saved = json.loads((result.out_dir / "sweep.json").read_text())
    statuses = {t["name"]: t["status"] for t in saved["trials"]}
    assert statuses == {"ppo_seed0": "ok", "ppo_seed1": "ok", "a2c_seed0": "ok", "a2c_seed1": "ok",
                        "sac_seed0": "failed", "sac_seed1": "failed"}
    assert "does not support the action space" in next(t for t in saved["trials"]
                                                       if t["name"] == "sac_seed0")["error_detail"]


def test_rerun_resumes_finished_runs_and_trains_only_the_unfinished(grid):
    root, base, first = grid
    before = {t.name: t for t in first.succeeded}
    # An interrupted sweep: one run never finished (no eval.json).
    unfinished = Path(before["a2c_seed1"].run_dir) / "eval.json"
    unfinished.unlink()
    mtimes = {n: (Path(t.run_dir) / "eval.json").stat().st_mtime_ns for n, t in before.items() if n != "a2c_seed1"}
    again = sweep(ENV, ["ppo", "a2c"], [0, 1], base, max_failures=0, results_root=root / "results2", verbose=0)
    after = {t.name: t for t in again.trials}
    assert all(t.status == "ok" for t in after.values())
    assert {n for n, t in after.items() if t.metrics["resumed"]} == {"ppo_seed0", "ppo_seed1", "a2c_seed0"}
    assert after["a2c_seed1"].metrics["resumed"] is False and unfinished.exists()
    for name, mtime in mtimes.items():
        assert (Path(after[name].run_dir) / "eval.json").stat().st_mtime_ns == mtime  # not retrained
        assert after[name].metrics["mean_return"] == before[name].metrics["mean_return"]
    # Training is seeded: the retrained run reproduces the interrupted one's numbers.
    assert after["a2c_seed1"].metrics["mean_return"] == pytest.approx(before["a2c_seed1"].metrics["mean_return"])


def test_search_space_file_is_parsed_validated_and_sampled_reproducibly(tmp_path):
    path = tmp_path / "space.yml"
    path.write_text(yaml.safe_dump({
        "search": "optuna", "metric": "mean_return", "mode": "max", "num_samples": 3,
        "space": {"default": {"learning_rate": {"loguniform": [1e-5, 1e-3]}},
                  "ppo": {"n_steps": {"choice": [16, 32]}, "n_epochs": {"randint": [1, 3]}, "batch_size": 16,
                          "policy_kwargs": {"net_arch": [8]}}},
    }))
    space = load_search_space(path)
    assert space.search == "optuna" and space.num_samples == 3
    a = sample_configurations(space, "ppo", 20, seed=7)
    assert a == sample_configurations(space, "ppo", 20, seed=7)
    assert a != sample_configurations(space, "ppo", 20, seed=8)
    for config in a:
        assert 1e-5 <= config["learning_rate"] <= 1e-3
        assert config["n_steps"] in (16, 32) and config["n_epochs"] in (1, 2)  # randint excludes its upper bound
        assert config["batch_size"] == 16 and config["policy_kwargs"] == {"net_arch": [8]}
        assert isinstance(config["learning_rate"], float) and isinstance(config["n_epochs"], int)
    assert {c["n_steps"] for c in a} == {16, 32} and {c["n_epochs"] for c in a} == {1, 2}
    # a2c only gets the default entry
    assert set(sample_configurations(space, "a2c", 1, seed=0)[0]) == {"learning_rate"}
    # distinct configurations log to distinct directories
    assert hp_tag(a[0]) != hp_tag({**a[0], "learning_rate": a[0]["learning_rate"] * 2})
    assert trial_log_root("/r", "reference", a[0]) == f"/r/reference/{hp_tag(a[0])}"
    with pytest.raises(ValueError, match=r"space\.ppo\.gamma"):
        SearchSpace(space={"ppo": {"gamma": {"uniform": [0.99, 0.9]}}})
    with pytest.raises(ValueError, match=r"search = 'grid'"):
        SearchSpace(space={"ppo": {"gamma": 0.9}}, search="grid")
    with pytest.raises(ValueError, match=r"space\.ppo\.lr.*loguniform needs low > 0"):
        SearchSpace(space={"ppo": {"lr": {"loguniform": [0, 1]}}})
    bad = tmp_path / "bad.yml"
    bad.write_text("serach: optuna\nspace: {ppo: {gamma: 0.9}}\n")
    with pytest.raises(ValueError, match="unknown keys \\['serach'\\]"):
        load_search_space(bad)


def test_optuna_search_then_best_configuration_on_every_seed(embedded_ray, tmp_path):
    space = SearchSpace(search="optuna", num_samples=2, search_seed=3,
                        space={"ppo": {"learning_rate": {"loguniform": [1e-4, 1e-2]}, "batch_size": 32}})
    result = sweep(ENV, ["ppo"], [0, 1], tiny_config(tmp_path / "runs"), search_space=space, max_failures=0,
                   results_root=tmp_path / "results", verbose=0)
    searched = [t for t in result.trials if t.phase == "search"]
    final = {t.seed: t for t in result.trials if t.phase == "evaluate"}
    assert all(t.status == "ok" for t in result.trials)
    assert sorted(final) == [0, 1]
    best = result.best_hp["ppo"]
    assert best["batch_size"] == 32 and 1e-4 <= best["learning_rate"] <= 1e-2
    # Two configurations were tried on seed 0; the best one's run is reused for seed 0, not retrained.
    tried = [t.hp for t in searched] + [final[0].hp]
    assert len({hp_tag(h) for h in tried}) == 2
    assert final[0].metrics["resumed"] is True and final[1].metrics["resumed"] is False
    scores = [t.metrics["mean_return"] for t in searched] + [final[0].metrics["mean_return"]]
    assert final[0].metrics["mean_return"] == max(scores)
    assert final[0].hp == final[1].hp == best
    for t in final.values():
        config = yaml.safe_load((Path(t.run_dir) / "config.yaml").read_text())
        assert config["hyperparams"]["learning_rate"] == best["learning_rate"]
        assert hp_tag(best) in t.run_dir


def test_rllib_multi_agent_ppo_on_the_offloading_environment(embedded_ray, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gentwin.rllib import RllibConfig, load_metrics, restore_algorithm, evaluate_rllib, train_rllib

    config = RllibConfig(env_id="gentwin/TaskOffloading-ma-v0", env_kwargs={"params": "small", "episode_slots": 10},
                         iterations=2, train_batch_size=80, minibatch_size=40, num_epochs=1, eval_episodes=2,
                         log_root=str(tmp_path / "runs"), seed=3)
    result = train_rllib(config, verbose=False)
    run_dir = tmp_path / "runs" / "TaskOffloading-ma-v0" / "rllib_ppo" / "seed3"
    assert result.run_dir == run_dir and len(result.history) == 2
    metrics = load_metrics(run_dir)
    steps = [s for s in metrics["time/total_timesteps"] if not np.isnan(s)]
    assert steps[:2] == [80.0, 160.0]
    returns = [r for r in metrics["rollout/ep_rew_mean"] if not np.isnan(r)]
    assert len(returns) == 2 and all(np.isfinite(returns))
    assert any(not np.isnan(v) for v in metrics["episode/drop_rate"])  # the kernel's episode summary
    assert any(k.startswith("train/shared/") for k in metrics)  # one shared policy
    acc = EventAccumulator(str(next(run_dir.glob("events.out.tfevents.*"))))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"rollout/ep_rew_mean", "rollout/team_return", "episode/drop_rate", "eval/mean_return",
            "eval/team_return", "eval/drop_rate"} <= tags
    assert [e.step for e in acc.Scalars("rollout/ep_rew_mean")] == [80, 160]
    # Per-agent returns (comparable with the SB3 runs): team return / 4 devices; full 10-slot episodes.
    team = [r for r in metrics["rollout/team_return"] if not np.isnan(r)]
    assert np.allclose(team, 4 * np.asarray(returns))
    assert len(result.eval_episodes) == 2
    for ep in result.eval_episodes:
        assert ep["length"] == 10 and ep["team_return"] == pytest.approx(4 * ep["return"])
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["agent"] == result.eval_episodes
    assert acc.Scalars("eval/mean_return")[-1].value == pytest.approx(np.mean([e["return"] for e in saved["agent"]]),
                                                                     rel=1e-6)
    # The checkpoint holds the trained policy: restored, it replays the same greedy episodes.
    algo = restore_algorithm(result.checkpoint_dir)
    try:
        assert evaluate_rllib(algo, config) == result.eval_episodes
    finally:
        algo.stop()


def test_rllib_config_rejects_bad_input():
    from gentwin.rllib import RllibConfig

    with pytest.raises(ValueError, match=r"env_id = 'gentwin/AspSelection-v0' is invalid"):
        RllibConfig(env_id=ENV)
    with pytest.raises(ValueError, match=r"policies = 'each' is invalid"):
        RllibConfig(policies="each")
    with pytest.raises(ValueError, match=r"iterations = 0 is invalid"):
        RllibConfig(iterations=0)


# ---------------------------------------------------------------------------
# A Ray node started with `ray start` on loopback, and the sweep attached to it
# ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _live_processes(session_id: int) -> list[str]:
    """Processes (zombies excluded) of the session ``ray start`` was started in."""
    out = subprocess.run(["ps", "-eo", "sid=,stat=,pid=,comm="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()
            if line.split()[0] == str(session_id) and not line.split()[1].startswith("Z")]


@pytest.fixture
def ray_node(tmp_path):
    """A Ray head node on 127.0.0.1 (2 CPUs, a marker resource), with token authentication.

    ``ray start --block`` runs in a new session, so every process it spawns (GCS,
    raylet, workers, agents) is in that session's process group and is stopped by
    it at the end: no Ray process of the test outlives it, and no other is touched.
    """
    temp_dir = tempfile.mkdtemp(prefix="gtray")  # short: Ray's socket paths live under it
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token)}
    port = _free_port()
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={port}", f"--ray-client-server-port={_free_port()}", f"--dashboard-port={_free_port()}",
           "--include-dashboard=false", "--num-cpus=2", '--resources={"gentwin_test_node": 1}',
           f"--object-store-memory={80 * 2**20}", "--disable-usage-stats", f"--temp-dir={temp_dir}"]
    log = open(tmp_path / "ray_start.log", "w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, (tmp_path / "ray_start.log").read_text()
                time.sleep(0.3)
        yield f"127.0.0.1:{port}", env
    finally:
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while _live_processes(head.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not _live_processes(head.pid):
                break
        head.wait(timeout=10)
        log.close()
        leftover = _live_processes(head.pid)
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftover, f"Ray processes left running: {leftover}"


def test_sweep_attaches_to_a_ray_node_started_with_ray_start(ray_node, embedded_ray, tmp_path):
    address, env = ray_node
    cmd = [sys.executable, str(REPO / "train.py"), "sweep", "--env", ENV, "--algos", "ppo", "--seeds", "0,1",
           "--timesteps", "64", "--n-envs", "2", "--eval-freq", "0", "--eval-episodes", "2",
           "--env-kwarg", "tasks_per_episode=16", "--hp", "n_steps=32", "--baselines", "none",
           "--log-root", str(tmp_path / "runs"), "--results-root", str(tmp_path / "results"),
           "--ray-address", address, "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (saved_path,) = (tmp_path / "results" / "AspSelection-v0").glob("sweep-*/sweep.json")
    saved = json.loads(saved_path.read_text())
    # The sweep ran on the started node, not on an embedded Ray of its own or the test's.
    (node,) = saved["ray_nodes"]
    assert node["address"] == "127.0.0.1" and node["resources"]["gentwin_test_node"] == 1
    assert node["node_id"] != embedded_ray
    assert [t["status"] for t in saved["trials"]] == ["ok", "ok"]
    assert {t["metrics"]["node_id"] for t in saved["trials"]} == {node["node_id"]}
    for t in saved["trials"]:
        assert (Path(t["run_dir"]) / "eval.json").exists()
        assert t["metrics"]["mean_return"] == pytest.approx(_eval_mean_return(t["run_dir"]))
    assert "--ray-address" in saved["command"]
