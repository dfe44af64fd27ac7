"""`train.py compare`: report, plots, TensorBoard runs, statistics and resuming.

One tiny comparison (AspSelection-v0 with 50 tasks per episode, ppo and a2c,
two seeds, 512 steps each) is run once for the module; the tests read what it
left on disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gentwin.cli.compare import build_compare_parser, cmd_compare
from gentwin.compare import (
    check_algorithms,
    is_finished,
    load_record,
    plan_runs,
    t_interval,
    write_report,
)
from gentwin.baselines import CERTIFIED_UPPER_BOUND
from gentwin.evaluation import BoundResult
from gentwin.training import TrainConfig

ENV = "gentwin/AspSelection-v0"
ALGOS = ("ppo", "a2c")
SEEDS = (0, 1)
TIMESTEPS = 512
#: Student t quantiles t_{0.975, dof} from tables (independent of the code under test)
T975 = {1: 12.706205, 2: 4.302653}
BASELINES = ("random", "round_robin", "crash_avoid", "greedy_oracle", "capacity_pricing")


def _args(root) -> list[str]:
    return [
        "compare", "--env", ENV, "--algos", ",".join(ALGOS), "--seeds", ",".join(map(str, SEEDS)),
        "--baselines", "all", "--timesteps", str(TIMESTEPS), "--n-envs", "4", "--eval-freq", "256",
        "--eval-episodes", "3", "--env-kwarg", "tasks_per_episode=50", "--hp", "n_steps=64",
        "--log-root", str(root / "runs"), "--results-root", str(root / "results"),
    ]


def _configs(root) -> list[TrainConfig]:
    base = TrainConfig(
        env_id=ENV, timesteps=TIMESTEPS, n_envs=4, eval_freq=256, eval_episodes=3,
        env_kwargs={"tasks_per_episode": 50}, hyperparams={"n_steps": 64}, log_root=str(root / "runs"),
        progress_bar=False,
    )
    return plan_runs(ENV, ALGOS, SEEDS, base)


def _compare_cli(argv: list[str]) -> int:
    """``train.py compare`` through its own parser (independent of the other subcommands' modules)."""
    parser = argparse.ArgumentParser(prog="train.py")
    build_compare_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_train_py_routes_compare_to_this_module():
    from gentwin.cli import build_parser

    args = build_parser().parse_args(["compare", "--algos", "ppo,d2sac=diffusion", "--seeds", "0,1",
                                      "--algo-hp", "d2sac:denoising_steps=5"])
    assert args.func is cmd_compare
    assert args.algos == "ppo,d2sac=diffusion" and args.seeds == "0,1" and args.baselines == "all"


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    assert _compare_cli(_args(root)) == 0
    reports = sorted((root / "results" / "AspSelection-v0").glob("*/report.md"))
    assert len(reports) == 1
    return root, reports[0].parent


def _eval_json(config: TrainConfig) -> dict:
    with open(config.run_dir / "eval.json") as f:
        return json.load(f)


def _mean(episodes: list[dict], key: str) -> float:
    return float(np.mean([ep[key] for ep in episodes]))


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file in {run_dir}"
    acc = EventAccumulator(str(files[-1]), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_outputs_exist_and_plots_are_images(done):
    import matplotlib.image

    _, out = done
    for name in ("report.md", "summary.json", "learning_curves.png", "final_performance.png"):
        assert (out / name).stat().st_size > 0, name
    for name in ("learning_curves.png", "final_performance.png"):
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    report = (out / "report.md").read_text()
    assert "python train.py compare --env gentwin/AspSelection-v0 --algos ppo,a2c" in report
    assert "stable-baselines3 " in report and "gymnasium " in report and "torch " in report
    assert "![learning curves](learning_curves.png)" in report


def test_tensorboard_scalars_have_common_tags_and_match_eval_json(done):
    root, _ = done
    common = {"eval/mean_return", "eval/crash_rate", "eval/utility", "eval/share_of_bound"}
    for config in _configs(root):
        scalars = _scalars(config.run_dir)
        assert common <= set(scalars), sorted(scalars)
        assert "rollout/ep_rew_mean" in scalars or "train/value_loss" in scalars
        payload = _eval_json(config)
        # the final TensorBoard point is the final evaluation of eval.json (float32 in the event file)
        step, last = scalars["eval/mean_return"][-1]
        assert step >= TIMESTEPS
        assert last == pytest.approx(_mean(payload["agent"], "return"), rel=1e-5, abs=1e-4)
        for name in BASELINES:
            b_scalars = _scalars(root / "runs" / "AspSelection-v0" / f"baseline_{name}" / f"seed{config.seed}")
            assert common <= set(b_scalars)
            series = b_scalars["eval/mean_return"]
            assert [s for s, _ in series] == [0, TIMESTEPS]  # a constant series over the run
            expected = _mean(payload["baselines"][name], "return")
            assert all(v == pytest.approx(expected, rel=1e-5, abs=1e-4) for _, v in series)


def _table(report: str, header_start: str) -> tuple[list[str], list[list[str]]]:
    lines = report.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header_start))
    header = [c.strip() for c in lines[i].strip("|").split("|")]
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return header, rows


def _pm(cell: str) -> tuple[float, float]:
    mean, half = cell.split("±")
    return float(mean), float(half)


def test_report_numbers_equal_per_run_evaluations(done):
    root, out = done
    report = (out / "report.md").read_text()
    header, rows = _table(report, "| policy | seed |")
    assert len(rows) == len(ALGOS) * len(SEEDS)
    by_run = {(r[0], int(r[1])): dict(zip(header, r)) for r in rows}
    per_algo: dict[str, list[float]] = {}
    for config in _configs(root):
        payload = _eval_json(config)
        row = by_run[(config.algo, config.seed)]
        assert int(row["steps"]) == load_record(config).curve_steps[-1] >= TIMESTEPS
        for metric in ("return", "utility", "crash_rate", "crashes", "finished"):
            assert float(row[metric]) == pytest.approx(_mean(payload["agent"], metric), rel=1e-5, abs=1e-9)
        per_algo.setdefault(config.algo, []).append(_mean(payload["agent"], "return"))

    _, final_rows = _table(report, "| policy | kind |")
    final = {r[0]: r for r in final_rows}
    assert set(final) == {*ALGOS, *BASELINES}
    bound = _eval_json(_configs(root)[0])["bound"]
    assert (bound["name"], bound["kind"], len(bound["values"])) == ("lp_relaxation", "certified upper bound", 3)
    ub = np.mean(bound["values"])
    assert "Bound: `lp_relaxation`, certified upper bound" in report
    for algo, values in per_algo.items():
        mean, half = _pm(final[algo][2])
        sem = np.std(values, ddof=1) / math.sqrt(len(values))
        assert mean == pytest.approx(np.mean(values), rel=1e-3)
        assert half == pytest.approx(T975[len(values) - 1] * sem, rel=1e-3)
        assert final[algo][4] == f"{len(SEEDS)} seeds"
        share, _ = _pm(final[algo][3])
        assert share == pytest.approx(np.mean(values) / ub, rel=2e-3)
    # baselines: the same held-out episodes for every seed -> interval over those episodes
    for name in BASELINES:
        episodes = [ep["return"] for ep in _eval_json(_configs(root)[0])["baselines"][name]]
        mean, half = _pm(final[name][2])
        sem = np.std(episodes, ddof=1) / math.sqrt(len(episodes))
        assert mean == pytest.approx(np.mean(episodes), rel=1e-3)
        assert half == pytest.approx(T975[len(episodes) - 1] * sem, rel=1e-3, abs=1e-9)
        assert final[name][4] == "3 episodes"
        assert _pm(final[name][3])[0] == pytest.approx(np.mean(episodes) / ub, rel=2e-3)
        assert np.mean(episodes) <= ub  # no baseline beats the certified bound

    summary = json.loads((out / "summary.json").read_text())
    policies = {p["name"]: p for p in summary["policies"]}
    for algo, values in per_algo.items():
        assert policies[algo]["stats"]["return"]["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert sorted(run["return"] for run in policies[algo]["runs"]) == pytest.approx(sorted(values))


def test_record_curve_ends_with_the_final_evaluation(done):
    root, _ = done
    for config in _configs(root):
        record = load_record(config)
        assert record.curve_steps.size >= 2
        assert np.all(np.diff(record.curve_steps) > 0)
        assert record.curve_steps[-1] >= TIMESTEPS
        assert record.curve_returns[-1] == pytest.approx(record.agent.mean("return"), rel=1e-12)
        assert set(record.baselines) == set(BASELINES) and record.bound.name == "lp_relaxation"


def test_rerun_skips_finished_runs(done, capsys):
    root, first_out = done
    configs = _configs(root)
    assert all(is_finished(c) for c in configs)
    stamps = {c.run_dir: (c.run_dir / "eval.json").stat().st_mtime_ns for c in configs}
    capsys.readouterr()
    assert _compare_cli([*_args(root), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "0 run(s) trained, 4 finished run(s) reused" in printed
    assert {c.run_dir: (c.run_dir / "eval.json").stat().st_mtime_ns for c in configs} == stamps
    reports = sorted((root / "results" / "AspSelection-v0").glob("*/report.md"))
    latest = reports[-1]
    if latest.parent == first_out:  # same-second timestamp: the report was rewritten in place
        assert len(reports) == 1
    first_rows = _table((first_out / "report.md").read_text(), "| policy | seed |")[1]
    assert _table(latest.read_text(), "| policy | seed |")[1] == first_rows


def test_is_finished_requires_the_same_configuration(done, tmp_path):
    root, _ = done
    config = _configs(root)[0]
    assert is_finished(config)
    assert not is_finished(dataclasses.replace(config, timesteps=2 * TIMESTEPS))
    assert not is_finished(dataclasses.replace(config, env_kwargs={"tasks_per_episode": 60}))
    assert not is_finished(dataclasses.replace(config, hyperparams={"n_steps": 32}))
    assert not is_finished(dataclasses.replace(config, eval_episodes=4))
    assert not is_finished(config, hyperparams_file="other.yml")
    assert not is_finished(dataclasses.replace(config, seed=7))  # nothing there
    assert is_finished(dataclasses.replace(config, progress_bar=True, device="cpu"))  # display only
    # a run restarted over a finished one (config.yaml newer than eval.json) is not finished
    copy_root = tmp_path / "runs"
    shutil.copytree(config.run_dir, copy_root / "AspSelection-v0" / config.algo / f"seed{config.seed}")
    moved = dataclasses.replace(config, log_root=str(copy_root))
    assert is_finished(moved)
    eval_ns = (moved.run_dir / "eval.json").stat().st_mtime_ns
    os.utime(moved.run_dir / "config.yaml", ns=(eval_ns + 10**9, eval_ns + 10**9))
    assert not is_finished(moved)


def test_write_report_from_records_with_labels(done, tmp_path):
    """The sweep's use: records relabelled, report written from them alone."""
    root, _ = done
    records = [load_record(c, label=f"{c.algo}-trial") for c in _configs(root)]
    reference = records[0].baselines["crash_avoid"].metric("return")
    bound = BoundResult("test_reference", CERTIFIED_UPPER_BOUND, list(reference), "test only")
    path = write_report(tmp_path / "out", ENV, records, command="sweep command", bound=bound)
    text = path.read_text()
    assert "| ppo-trial | agent |" in text and "| a2c-trial | agent |" in text
    _, final_rows = _table(text, "| policy | kind |")
    final = {r[0]: r for r in final_rows}
    assert _pm(final["crash_avoid"][3])[0] == pytest.approx(1.0)
    assert "Bound: `test_reference`, certified upper bound (test only)." in text
    assert "sweep command" in text
    assert (tmp_path / "out" / "learning_curves.png").exists()


def test_t_interval_by_hand():
    s = t_interval([1.0, 2.0, 3.0])
    # t_{0.975, 2} = 4.302653, s = 1, n = 3
    assert s.mean == 2.0 and s.n == 3
    assert s.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    one = t_interval([5.0])
    assert one.mean == 5.0 and math.isnan(one.half_width)
    with pytest.raises(ValueError, match="samples"):
        t_interval([])


def test_bad_input_raises_clear_errors(tmp_path):
    base = TrainConfig(log_root=str(tmp_path))
    with pytest.raises(ValueError, match="algos = \\['nope'\\]"):
        plan_runs(ENV, ["ppo", "nope"], [0], base)
    with pytest.raises(ValueError, match="seeds"):
        plan_runs(ENV, ["ppo"], [0, 0], base)
    with pytest.raises(ValueError, match="sac"):
        check_algorithms(ENV, ["ppo", "sac"])
    with pytest.raises(ValueError, match="not finished"):
        load_record(base)
    configs = plan_runs(ENV, ["ppo", "a2c"], [3, 4], base)
    assert [(c.algo, c.seed) for c in configs] == [("ppo", 3), ("ppo", 4), ("a2c", 3), ("a2c", 4)]
    assert all(c.log_root == str(tmp_path) and c.env_id == ENV for c in configs)


def test_variants_get_their_own_runs_and_hyperparameters(tmp_path):
    from gentwin.compare import plan_variants

    base = TrainConfig(log_root=str(tmp_path), hyperparams={"gamma": 0.9})
    planned = plan_variants(ENV, ["ppo", "d2sac=diffusion", "sac=diffusion"], [0, 1], base,
                            {"sac": {"actor": "mlp"}, "ppo": {"n_steps": 64}})
    assert [(label, c.algo, c.seed) for label, c in planned] == [
        ("ppo", "ppo", 0), ("ppo", "ppo", 1), ("d2sac", "diffusion", 0), ("d2sac", "diffusion", 1),
        ("sac", "diffusion", 0), ("sac", "diffusion", 1)]
    dirs = {c.run_dir for _, c in planned}
    assert len(dirs) == 6  # two variants of one algorithm never share a run directory
    by_label = {label: c for label, c in planned}
    assert by_label["sac"].hyperparams == {"gamma": 0.9, "actor": "mlp"}
    assert by_label["d2sac"].hyperparams == {"gamma": 0.9}
    assert by_label["ppo"].hyperparams == {"gamma": 0.9, "n_steps": 64}
    assert by_label["ppo"].run_dir == tmp_path / "AspSelection-v0" / "ppo" / "seed1"
    assert by_label["sac"].run_dir == tmp_path / "sac" / "AspSelection-v0" / "diffusion" / "seed1"
    with pytest.raises(ValueError, match="labels must be distinct"):
        plan_variants(ENV, ["x=ppo", "x=a2c"], [0], base)
    with pytest.raises(ValueError, match="algo_hyperparams"):
        plan_variants(ENV, ["ppo"], [0], base, {"nope": {"gamma": 0.5}})


def test_reproduce_scenarios_reference_existing_ids_algorithms_and_baselines(monkeypatch):
    import importlib.util
    from pathlib import Path

    from gentwin.baselines import get_baselines
    from gentwin.compare import parse_algo_spec

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "reproduce", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    assert {"asp_selection", "contract_design", "model_caching", "hdt_streaming"} <= set(module.SCENARIOS)
    for scenario in module.SCENARIOS.values():
        assert module.environment_available(scenario.env_id) is None, scenario.name
        specs = [parse_algo_spec(a) for a in scenario.algos]
        check_algorithms(scenario.env_id, sorted({algo for _, algo in specs}))
        names = {label for label, _ in specs} | set(get_baselines(scenario.env_id))
        assert set(scenario.paper) <= names, scenario.name
        assert set(scenario.algo_hyperparams) <= {label for label, _ in specs} | {a for _, a in specs}
        assert scenario.quick.timesteps <= scenario.full.timesteps


def test_report_only_reports_finished_runs_and_lists_missing_ones(done, tmp_path):
    from gentwin.compare import compare

    root, _ = done
    base = dataclasses.replace(_configs(root)[0], baselines="all")
    result = compare(ENV, [*ALGOS, "dqn"], list(SEEDS), base, report_only=True, progress=False,
                     out_dir=tmp_path / "partial")
    assert result.trained == [] and len(result.skipped) == len(ALGOS) * len(SEEDS)
    assert not (base.run_dir.parent.parent / "dqn").exists()  # nothing was trained
    text = result.report.read_text()
    _, final_rows = _table(text, "| policy | kind |")
    assert {r[0] for r in final_rows} == {*ALGOS, *BASELINES}
    unfinished = text.split("## Unfinished runs (not in the tables)")[1]
    assert "dqn seed 0" in unfinished and "dqn seed 1" in unfinished and "ppo" not in unfinished
    with pytest.raises(ValueError, match="none of the 2 runs is finished"):
        compare(ENV, ["dqn"], list(SEEDS), base, report_only=True, progress=False, out_dir=tmp_path / "none")
