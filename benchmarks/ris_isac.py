"""RL agents vs. classical RIS-ISAC controllers, twin-fidelity sweep, kernel throughput.

``gentwin/RisIsac-v0`` at M=4 BS antennas, N=16 RIS elements, K=4 users (the
default preset; model in :mod:`gentwin.envs.ris_isac`, seed 004 sections V-B and
V-C).  Parts (``--parts``, run separately and combined with ``report``):

* ``throughput``: kernel steps/s at B = 1, 64, 1024 (random actions, wall clock
  and process CPU time) and Gymnasium's ``SyncVectorEnv`` at B = 64.
* ``baselines``: every baseline on the same held-out episodes
  (``gentwin.evaluation.EVAL_SEED``), the family's certified bound on those
  episodes (``BOUND``: the interference-free sum-rate bound), the old
  single-start reference (AO with a 1e4 penalty, before issue 13) for
  comparison, plus the no-RIS system (``params="no_ris"``) under ZF and under
  the perfect-CSI reference.
* ``reference``: how good the strong perfect-CSI reference ``ao_perfect_csi``
  (a heuristic) is, on ``--reference-instances`` held-out instances x the
  slots ``--reference-slots``: its cost per slot, the mean and largest
  relative gain of an independent local search (stochastic hill climbing on
  the action vector, scored by the environment's own functions) started from
  its design and from the old reference's, and the gap to a 4x larger run
  (32 restarts, 8 refined).
* ``agents``: TD3, SAC, PPO and the diffusion actor-critic trained for
  ``--timesteps`` environment steps on 8 batched instances per seed, evaluated on
  the same episodes; then the best agent (by mean return) is deployed on every
  twin setting of the sweep.
* ``sweep``: twin estimation NMSE (refresh every slot) and twin sync period (NMSE
  0.01): alternating optimisation fed the twin vs. perfect CSI vs. random phases.
  The physical channels of a seed do not depend on the twin, so every row is
  evaluated on the same channel realisations.
* ``twin_study`` (issue 16): the agents recorded by ``benchmarks/learning.py`` under
  ``--study-labels`` (their saved models) deployed unchanged on every twin setting of the
  sweep, next to the twin-fed controllers on the same ``--eval-episodes`` episodes:
  ``ao_twin`` (raw action), ``ao_twin``'s phases and power shares played through the
  agents' formulation (``--study-formulation``), that formulation's all-(-1) action,
  random phases with MRT, ``ao_perfect_csi``'s optimiser fed the twin, its robust variant
  ``ao_twin_robust`` (the same optimiser, then the reward averaged over the twin's
  posterior), and ``ao_perfect_csi`` itself.  Results go to ``--study-record`` (committed; resumable);
  ``twin_report`` writes the study's block of docs/ris_isac.md and its plot.

Slot decisions do not influence later channels (the channel evolves exogenously),
so the agents are trained with ``gamma = 0`` (the per-slot reward is the whole
return a decision controls).

Goals (issue 7): best agent >= 90% of ``ao_perfect_csi`` with the sensing
threshold met in >= 99% of evaluation slots; with an imperfect twin the best
agent beats ``ao_twin``.  The printed tables say whether they are met.

Run (the generated block of docs/ris_isac.md)::

    nice -n 10 python benchmarks/ris_isac.py --parts throughput baselines reference sweep --out /tmp/ris
    nice -n 10 python benchmarks/ris_isac.py --parts agents --timesteps 8000 --budget ppo=40000 \
        --seeds 0 1 --out /tmp/ris
    python benchmarks/ris_isac.py --parts report --out /tmp/ris --write-docs docs/ris_isac.md
    python benchmarks/ris_isac.py --parts twin_study --study-labels "sac alignment" ...
    python benchmarks/ris_isac.py --parts twin_report --write-docs docs/ris_isac.md

Timings depend on the machine (and its load); the tables are results, not tests.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path

import docblock  # benchmarks/docblock.py (scripts run from benchmarks/)
from docblock import begin_marker

import numpy as np

ENV_ID = "gentwin/RisIsac-v0"
NMSE_SWEEP = (0.0, 0.01, 0.1, 0.3)
SYNC_SWEEP = (1, 4, 10, 20)


def twin_settings() -> list[dict]:
    """The sweep: NMSE at sync period 1, then sync period at NMSE 0.01."""
    rows = [dict(twin_estimation_nmse=e, twin_sync_period_slots=1) for e in NMSE_SWEEP]
    rows += [dict(twin_estimation_nmse=0.01, twin_sync_period_slots=t) for t in SYNC_SWEEP if t != 1]
    return rows


def setting_name(kw: dict) -> str:
    return f"nmse={kw['twin_estimation_nmse']:g}, T={kw['twin_sync_period_slots']}"


def summarise(result) -> dict:
    # In bit/s/Hz whatever the reward_scale (unscaled_return equals return without scaling).
    return {
        "return": result.mean("unscaled_return"),
        "sum_rate": result.mean("mean_sum_rate_bps_hz"),
        "violation_rate": result.mean("sensing_violation_rate"),
        "twin_nmse": result.mean("mean_twin_nmse"),
    }


# ---------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------
def run_throughput(args) -> dict:
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    from gentwin.envs.ris_isac import RisIsacKernel

    out = {}
    rng = np.random.default_rng(0)
    for B, steps in ((1, 2000), (64, 400), (1024, 100)):
        kernel = RisIsacKernel(None, num_envs=B)
        kernel.reset(seed=0)
        actions = rng.uniform(-1, 1, (B, kernel.params.action_dim)).astype(np.float32)
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(steps):
            kernel.step(actions)
            if (i + 1) % kernel.params.episode_slots == 0:
                kernel.reset()  # the episode reset (draws the whole episode) is part of the cost
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out[f"native B={B}"] = {"wall": steps * B / wall, "cpu": steps * B / cpu}
    B, steps = 64, 100
    sync = SyncVectorEnv([lambda: gym.make(ENV_ID) for _ in range(B)], autoreset_mode=AutoresetMode.SAME_STEP)
    sync.reset(seed=0)
    actions = rng.uniform(-1, 1, (B, sync.single_action_space.shape[0])).astype(np.float32)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        sync.step(actions)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out[f"SyncVectorEnv B={B}"] = {"wall": steps * B / wall, "cpu": steps * B / cpu}
    return out


def old_reference_class():
    """The perfect-CSI reference before issue 13: one AO start, penalty 1e4 instead of the env's."""
    from gentwin.baselines.ris_isac import AlternatingOptimisation, PerfectCSIReference

    class OldReference(AlternatingOptimisation):
        name = "old ao_perfect_csi (1 start, penalty 1e4)"
        requires_kernel = True
        search_penalty = 1e4
        channels = PerfectCSIReference.channels

    return OldReference


def run_baselines(args) -> dict:
    from gentwin.baselines.ris_isac import BASELINES
    from gentwin.envs import make_sb3_vec_env
    from gentwin.evaluation import evaluate_bound, evaluate_policy

    out = {}
    t = time.perf_counter()
    bound = evaluate_bound(ENV_ID, n_episodes=args.eval_episodes)
    out["bound"] = {"name": bound.name, "kind": bound.kind, "return": bound.mean(),
                    "values": bound.values, "seconds": time.perf_counter() - t}
    print(f"  bound {bound.name}: {bound.mean():.2f}", flush=True)
    venv = make_sb3_vec_env(ENV_ID, num_envs=1)
    for name, cls in {**BASELINES, "old_reference": old_reference_class()}.items():
        t = time.perf_counter()
        res = evaluate_policy(cls(venv, seed=0), ENV_ID, n_episodes=args.eval_episodes)
        label = cls.name if name == "old_reference" else name
        out[label] = summarise(res) | {"seconds": time.perf_counter() - t,
                                       "returns": res.metric("return").tolist()}
        print(f"  {label}: {out[label]}", flush=True)
    no_ris = make_sb3_vec_env(ENV_ID, num_envs=1, params="no_ris")
    for label, name in (("no-RIS ZF", "direct_zf"), ("no-RIS reference (perfect CSI)", "ao_perfect_csi")):
        res = evaluate_policy(BASELINES[name](no_ris, seed=0), ENV_ID, n_episodes=args.eval_episodes,
                              env_kwargs={"params": "no_ris"})
        out[label] = summarise(res)
        print(f"  {label}: {out[label]}", flush=True)
    return out


def hill_climb(params, channels, target_sin, actions, iterations, rng, proposals=16):
    """Independent local search: stochastic hill climbing on the action vector.

    Scored through the environment's own action map and slot reward (not the
    reference's optimiser code); returns the start and the climbed values.
    """
    from gentwin.baselines.ris_isac import scored_reward

    tile = tuple(np.repeat(c, proposals, axis=0) for c in channels)
    sin = np.repeat(target_sin, proposals)
    a = actions.astype(np.float64).copy()
    B, D = a.shape
    best = scored_reward(params, *channels, target_sin, a)
    start = best.copy()
    for it in range(iterations):
        step = (0.1, 0.03, 0.01, 0.003, 0.001)[it % 5]
        mask = rng.random((B, proposals, D)) < (1.0, 0.2, 0.05)[it % 3]
        trial = np.clip(a[:, None] + step * rng.standard_normal((B, proposals, D)) * mask, -1, 1)
        value = scored_reward(params, *tile, sin, trial.reshape(B * proposals, D)).reshape(B, proposals)
        j = np.argmax(value, axis=1)
        better = value[np.arange(B), j] > best
        a[better] = trial[np.arange(B), j][better]
        best = np.where(better, value[np.arange(B), j], best)
    return start, best


def run_reference(args) -> dict:
    """Quality and cost of the strong reference (see the module docstring)."""
    from gentwin.baselines.ris_isac import PerfectCSIReference, scored_reward, sum_rate_bound
    from gentwin.envs.ris_isac import RisIsacKernel, design_to_action
    from gentwin.evaluation import EVAL_SEED

    B = args.reference_instances
    kernel = RisIsacKernel(None, num_envs=B)
    kernel.reset(seed=EVAL_SEED)
    p = kernel.params
    reference = PerfectCSIReference(kernel)
    larger = PerfectCSIReference(kernel)
    larger.restarts, larger.refined_starts = 32, 8
    old = old_reference_class()(kernel)
    rng = np.random.default_rng(0)
    rows = {k: [] for k in ("reference", "old", "larger", "bound", "climb_reference", "climb_old",
                            "single_ao")}
    seconds = {"reference": 0.0, "old": 0.0, "larger": 0.0}
    idle = np.zeros((B, p.action_dim), dtype=np.float32)
    for slot in range(max(args.reference_slots) + 1):
        if slot in args.reference_slots:
            channels, target_sin = kernel.true_channels(), kernel.target_sin()
            designs = {}
            for key, policy in (("reference", reference), ("old", old), ("larger", larger)):
                t = time.perf_counter()
                designs[key] = policy.act(None) if key != "old" else design_to_action(
                    p, *reversed(policy.optimise(*channels, target_sin)[:2]))
                seconds[key] += time.perf_counter() - t
                rows[key].append(scored_reward(p, *channels, target_sin, designs[key]))
            theta, w, _ = reference.optimise(*channels, target_sin)
            rows["single_ao"].append(scored_reward(p, *channels, target_sin, design_to_action(p, w, theta)))
            rows["bound"].append(sum_rate_bound(p, *channels))
            for key in ("reference", "old"):
                _, climbed = hill_climb(p, channels, target_sin, designs[key], args.climb_iterations, rng)
                rows[f"climb_{key}"].append(climbed)
            print(f"  slot {slot}: reference {rows['reference'][-1].mean():.3f}, climbed "
                  f"{rows['climb_reference'][-1].mean():.3f}, old {rows['old'][-1].mean():.3f}, "
                  f"larger {rows['larger'][-1].mean():.3f}, bound {rows['bound'][-1].mean():.3f}", flush=True)
        kernel.step(idle)
    arr = {k: np.concatenate(v) for k, v in rows.items()}
    n = arr["reference"].size

    def gain(new, base):
        g = (new - base) / np.abs(base)
        return {"mean": float(g.mean()), "max": float(g.max()), "improved": int(np.sum(g > 1e-9))}

    return {
        "instance_slots": n, "instances": B, "slots": list(args.reference_slots),
        "climb_iterations": args.climb_iterations,
        "ms_per_slot": {k: 1000 * v / n for k, v in seconds.items()},
        "mean": {k: float(v.mean()) for k, v in arr.items()},
        "climb_gain_reference": gain(arr["climb_reference"], arr["reference"]),
        "climb_gain_old": gain(arr["climb_old"], arr["old"]),
        "larger_gain_reference": gain(arr["larger"], arr["reference"]),
        "reference_gain_old": gain(arr["reference"], arr["old"]),
        "reference_over_bound": float(arr["reference"].sum() / arr["bound"].sum()),
        "restarts": reference.restarts, "refined_starts": reference.refined_starts,
    }


def run_sweep(args) -> dict:
    from gentwin.baselines.ris_isac import BASELINES
    from gentwin.envs import make_sb3_vec_env
    from gentwin.evaluation import evaluate_bound, evaluate_policy

    out = {}
    for kw in twin_settings():
        venv = make_sb3_vec_env(ENV_ID, num_envs=1, **kw)
        row = {}
        for name in ("ao_twin", "random_phase_mrt"):
            res = evaluate_policy(BASELINES[name](venv, seed=0), ENV_ID, n_episodes=args.sweep_episodes,
                                  env_kwargs=kw)
            row[name] = summarise(res)
        out[setting_name(kw)] = row
        print(f"  {setting_name(kw)}: {row}", flush=True)
    # The physical channels do not depend on the twin: one oracle run and one bound serve every row.
    venv = make_sb3_vec_env(ENV_ID, num_envs=1)
    res = evaluate_policy(BASELINES["ao_perfect_csi"](venv), ENV_ID, n_episodes=args.sweep_episodes)
    out["ao_perfect_csi"] = summarise(res)
    out["bound"] = {"return": evaluate_bound(ENV_ID, n_episodes=args.sweep_episodes).mean()}
    return out


def make_agent(algo: str, venv, seed: int):
    """The agents of the table (SB3 defaults unless noted; gamma = 0, see the docstring)."""
    from gentwin.agents.registry import get_algorithm

    cls = get_algorithm(algo)
    common = dict(seed=seed, device="cpu", gamma=0.0)
    if algo == "diffusion":
        return cls("MlpPolicy", venv, learning_starts=1000, batch_size=256, **common)
    if algo in ("td3", "sac"):
        return cls("MlpPolicy", venv, learning_starts=1000, **common)
    if algo == "ppo":
        return cls("MlpPolicy", venv, n_steps=256, batch_size=256, **common)
    raise ValueError(f"algo = {algo!r} is not benchmarked here")


def run_agents(args) -> dict:
    from gentwin.envs import make_sb3_vec_env
    from gentwin.evaluation import evaluate_policy

    out: dict = {"runs": {}, "sweep": {}}
    algos = list(args.algos)
    models = {}
    for algo in algos:
        for seed in args.seeds:
            venv = make_sb3_vec_env(ENV_ID, num_envs=8, seed=seed)
            model = make_agent(algo, venv, seed)
            t = time.perf_counter()
            model.learn(args.budget.get(algo, args.timesteps))
            train_s = time.perf_counter() - t
            res = evaluate_policy(model, ENV_ID, n_episodes=args.eval_episodes)
            out["runs"][f"{algo}/{seed}"] = summarise(res) | {
                "train_seconds": train_s, "timesteps": args.budget.get(algo, args.timesteps)}
            models[(algo, seed)] = model
            print(f"  {algo} seed {seed}: {out['runs'][f'{algo}/{seed}']}", flush=True)
    if not models:
        return out
    # Deploy the best agent (algorithm with the best mean return, its best seed) on every twin setting.
    by_algo = {a: np.mean([out["runs"][f"{a}/{s}"]["return"] for s in args.seeds]) for a in algos}
    best_algo = max(by_algo, key=by_algo.get)
    best_seed = max(args.seeds, key=lambda s: out["runs"][f"{best_algo}/{s}"]["return"])
    out["best"] = f"{best_algo}/{best_seed}"
    for kw in twin_settings():
        res = evaluate_policy(models[(best_algo, best_seed)], ENV_ID, n_episodes=args.sweep_episodes,
                              env_kwargs=kw)
        out["sweep"][setting_name(kw)] = summarise(res)
    return out


# ---------------------------------------------------------------------------
# Twin study (issue 16): learned agents recorded by benchmarks/learning.py,
# deployed on every twin setting of the sweep, next to the twin-fed controllers.
# ---------------------------------------------------------------------------
TWIN_FIELDS = ("twin_estimation_nmse", "twin_sync_period_slots")
#: Left out of the formulation the study's baselines play: the twin, and the expert options
#: (``expert`` alone only adds ``info["expert_action"]`` for training; with ``expert_residual``
#: the agent corrects that expert, which is an agent's design on top of the same formulation).
NOT_FORMULATION = TWIN_FIELDS + ("expert", "expert_residual")


def deployment_kwargs(env_kwargs: dict, twin: dict) -> dict:
    """A recorded agent's env options on another twin (the expert only where the agent corrects it)."""
    out = {k: v for k, v in env_kwargs.items() if k not in TWIN_FIELDS}
    if not out.get("expert_residual"):
        out.pop("expert", None)  # only a training signal: evaluating without it changes nothing
    return {**out, **twin}
DEFAULT_STUDY = Path(__file__).resolve().parent / "records" / "ris_twin_study.json"
LEARNING_RECORDS = Path(__file__).resolve().parent / "records" / "learning.jsonl"


def twin_reference_class():
    """``ao_perfect_csi``'s optimiser (8 restarts, SLSQP refinement, the env's reward) fed the twin.

    The strongest twin-fed controller here: what a model-based BS that trusts its twin can
    reach with the reference's own effort (a heuristic, not a bound).
    """
    from gentwin.baselines.ris_isac import PerfectCSIReference

    class TwinFedReference(PerfectCSIReference):
        name = "reference optimiser fed the twin"
        requires_kernel = False

        def channels(self, obs):
            return self.twin_view(obs)

    return TwinFedReference


def _setting_of(env_kwargs: dict) -> dict:
    from gentwin.envs.ris_isac import RisIsacParams

    base = RisIsacParams()
    return {k: env_kwargs.get(k, getattr(base, k)) for k in TWIN_FIELDS}


def run_twin_study(args) -> dict:
    """Evaluate every recorded agent of ``--study-labels`` on every twin setting (resumable).

    The agents' models are the ones ``benchmarks/learning.py`` saved (``run_dir`` of each
    record); the study file keeps the evaluations, so the report needs no model.
    """
    from gentwin.baselines.ris_isac import BASELINES, RobustTwinReference
    from gentwin.envs import make_sb3_vec_env
    from gentwin.evaluation import evaluate_bound, evaluate_policy
    from gentwin.training import load_model

    path = args.study_record
    study = json.loads(path.read_text()) if path.exists() else {}
    n = args.eval_episodes
    if study and study.get("eval_episodes") != n:
        raise ValueError(f"--eval-episodes = {n} is invalid for {path}: it holds {study.get('eval_episodes')}")
    study.setdefault("eval_episodes", n)
    study.setdefault("baselines", {})
    study.setdefault("agents", [])
    from learning import load_records  # benchmarks/learning.py (scripts run from benchmarks/)

    records = [r for r in load_records(LEARNING_RECORDS) if r["env_id"] == ENV_ID and r["label"] in args.study_labels]
    if args.study_labels and not records:
        raise ValueError(f"--study-labels = {args.study_labels!r} is invalid: no {ENV_ID} record in "
                         f"{LEARNING_RECORDS} has one of these labels")
    # The agents' formulation (their env options but the twin's), in which the baselines also play.
    formulation = {k: v for k, v in args.study_formulation.items() if k not in NOT_FORMULATION}
    if study.get("formulation", formulation) != formulation:
        raise ValueError(f"--study-formulation = {formulation!r} is invalid for {path}: its baselines were "
                         f"played in {study['formulation']!r}")
    for r in records:
        theirs = {k: v for k, v in r["env_kwargs"].items() if k not in NOT_FORMULATION}
        if theirs != formulation:
            raise ValueError(f"record {r['label']!r} seed {r['seed']} has env_kwargs {theirs!r}: the study's "
                             f"formulation is {formulation!r} (--study-formulation)")
    study["formulation"] = formulation

    def save():
        path.write_text(json.dumps(study, indent=1, default=float) + "\n")

    def save_row(setting: str, name: str, value: dict) -> None:
        # Re-read under a lock and add just this row: runs restricted to different
        # --study-settings can fill the same record side by side (one per core).
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            on_disk = json.loads(path.read_text())
            on_disk["baselines"].setdefault(setting, {})[name] = value
            for k, rows in on_disk["baselines"].items():  # what others added meanwhile
                study["baselines"].setdefault(k, {}).update(rows)
            path.write_text(json.dumps(on_disk, indent=1, default=float) + "\n")

    if "ao_perfect_csi" not in study:
        # The physical channels do not depend on the twin: one oracle run serves every setting.
        t = time.perf_counter()
        res = evaluate_policy(BASELINES["ao_perfect_csi"](make_sb3_vec_env(ENV_ID, num_envs=1)), ENV_ID,
                              n_episodes=n)
        study["ao_perfect_csi"] = summarise(res) | {"seconds": time.perf_counter() - t}
        study["bound"] = evaluate_bound(ENV_ID, n_episodes=n).mean()
        save()
        print(f"  ao_perfect_csi: {study['ao_perfect_csi']}", flush=True)
    policies = {
        "ao_twin": ({}, lambda venv: BASELINES["ao_twin"](venv, seed=0)),
        "random_phase_mrt": ({}, lambda venv: BASELINES["random_phase_mrt"](venv, seed=0)),
        "ao_twin, agents' formulation": (formulation, lambda venv: BASELINES["ao_twin"](venv, seed=0)),
        "equal shares, agents' formulation": (formulation, None),
    }
    if args.study_twin_reference:
        policies["reference optimiser fed the twin"] = ({}, lambda venv: twin_reference_class()(venv, seed=0))
        policies["robust optimiser fed the twin"] = ({}, lambda venv: RobustTwinReference(venv, seed=0))
    settings = twin_settings()
    if args.study_settings:
        known = [setting_name(kw) for kw in settings]
        unknown = [s for s in args.study_settings if s not in known]
        if unknown:
            raise ValueError(f"--study-settings = {unknown!r} is invalid: the sweep's settings are {known!r}")
        settings = [kw for kw in settings if setting_name(kw) in args.study_settings]
    for kw in settings:
        row = study["baselines"].setdefault(setting_name(kw), {})
        for name, (extra, make) in policies.items():
            if name in row:
                continue
            env_kwargs = {**extra, **kw}
            venv = make_sb3_vec_env(ENV_ID, num_envs=1, **env_kwargs)
            if make is None:  # the formulation's action 'every weight at -1': equal surface and power shares
                policy = _ConstantPolicy(-np.ones(venv.action_space.shape, dtype=np.float32))
            else:
                policy = make(venv)
            t = time.perf_counter()
            res = evaluate_policy(policy, ENV_ID, n_episodes=n, env_kwargs=env_kwargs)
            row[name] = summarise(res) | {"seconds": time.perf_counter() - t}
            save_row(setting_name(kw), name, row[name])
            print(f"  {setting_name(kw)} {name}: {row[name]}", flush=True)
    done = {(a["label"], a["seed"], json.dumps(a["train_twin"], sort_keys=True)) for a in study["agents"]}
    for rec in records:
        train_twin = _setting_of(rec["env_kwargs"])
        key = (rec["label"], rec["seed"], json.dumps(train_twin, sort_keys=True))
        if key in done:
            continue
        model_path = Path(rec.get("run_dir", "")) / "model.zip"
        if not model_path.exists():
            print(f"  {rec['label']} seed {rec['seed']}: no saved model at {model_path}, skipped", flush=True)
            continue
        model = load_model(rec["algo"], model_path, device="cpu")
        per_setting = {}
        try:
            for kw in twin_settings():
                env_kwargs = deployment_kwargs(rec["env_kwargs"], kw)
                per_setting[setting_name(kw)] = summarise(evaluate_policy(model, ENV_ID, n_episodes=n,
                                                                          env_kwargs=env_kwargs))
        except ValueError as err:  # another formulation's model (e.g. its observation size)
            print(f"  {rec['label']} seed {rec['seed']}: the model at {model_path} does not fit this run "
                  f"({err}), skipped (benchmarks/learning.py --restore-models)", flush=True)
            continue
        # The model must be the record's: on its own twin it reproduces the recorded evaluation.
        own = per_setting[setting_name(train_twin)]["return"]
        if abs(own - rec["agent"]["unscaled_return"]) > 1e-6 * abs(rec["agent"]["unscaled_return"]):
            print(f"  {rec['label']} seed {rec['seed']}: the model at {model_path} gives {own:.4f} on its own "
                  f"twin, the record {rec['agent']['unscaled_return']:.4f}: not this run's model, skipped "
                  f"(benchmarks/learning.py --restore-models)", flush=True)
            continue
        study["agents"].append({"label": rec["label"], "algo": rec["algo"], "seed": rec["seed"],
                                "train_twin": train_twin, "timesteps": rec["timesteps"],
                                "command": rec["command"], "cpu_s": rec["cpu_s"], "per_setting": per_setting})
        save()
        print(f"  {rec['label']} seed {rec['seed']} trained at {setting_name(train_twin)}: "
              f"{ {k: round(v['return'], 1) for k, v in per_setting.items()} }", flush=True)
    return {"study_record": str(path), "agents": len(study["agents"])}


class _ConstantPolicy:
    """Plays one fixed action everywhere (SB3's ``predict`` interface)."""

    def __init__(self, action: np.ndarray):
        self.action = action

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return np.broadcast_to(self.action, (len(obs), *self.action.shape)).copy(), None


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def report(out_dir: Path) -> str:
    """The Markdown of every part found in ``out_dir`` (the generated block of docs/ris_isac.md)."""
    def load(name):
        path = out_dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    tp, base, ref, agents, sweep = (load(n) for n in ("throughput", "baselines", "reference", "agents", "sweep"))
    L = []
    for label, part in (("throughput", tp), ("baselines", base), ("reference", ref), ("sweep", sweep),
                        ("agents", agents)):
        if part:
            L.append(f"* part `{label}`: {part['date']}, {part['seconds']:.0f} s, load average "
                     f"{', '.join(f'{x:.1f}' for x in part['load'])}")
    if tp:
        L += ["", "### Kernel throughput (random actions, steps/s)", "",
              "| view | wall clock | CPU time |", "|---|---:|---:|"]
        L += [f"| {key} | {v['wall']:,.0f} | {v['cpu']:,.0f} |" for key, v in tp["results"].items()]
    if base:
        res = base["results"]
        ub, ref_ret = res["bound"]["return"], res["ao_perfect_csi"]["return"]
        L += ["", f"### M=4, N=16, K=4, default twin (NMSE 0.01, refresh every 4 slots), "
                  f"{base['eval_episodes']} episodes x 50 slots", "",
              f"Certified bound `{res['bound']['name']}` ({res['bound']['kind']}): mean {ub:.1f} per episode "
              f"on these episodes.  `ao_perfect_csi` is the strong heuristic reference (not a bound).", "",
              "| policy | return | sum rate [bit/s/Hz] | sensing violations | % of the bound | "
              "% of ao_perfect_csi | s per episode |", "|---|---:|---:|---:|---:|---:|---:|"]
        rows = {k: v for k, v in res.items() if k != "bound"}
        if agents:
            for algo in dict.fromkeys(k.split("/")[0] for k in agents["results"]["runs"]):
                runs = [v for k, v in agents["results"]["runs"].items() if k.startswith(algo + "/")]
                ret = np.array([r["return"] for r in runs])
                rows[f"{algo} ({len(runs)} seeds, {runs[0]['timesteps']} steps)"] = {
                    "return": float(ret.mean()), "return_std": float(ret.std()),
                    "sum_rate": float(np.mean([r["sum_rate"] for r in runs])),
                    "violation_rate": float(np.mean([r["violation_rate"] for r in runs])),
                }
        for name, v in rows.items():
            std = f" ± {v['return_std']:.1f}" if "return_std" in v else ""
            other = name.startswith("no-RIS")
            share = "" if other else f"{100 * v['return'] / ub:.1f}%"
            share_ref = "" if other else f"{100 * v['return'] / ref_ret:.1f}%"
            cost = f"{v['seconds'] / base['eval_episodes']:.2f}" if "seconds" in v else ""
            L.append(f"| {name} | {v['return']:.1f}{std} | {v['sum_rate']:.2f} | "
                     f"{100 * v['violation_rate']:.2f}% | {share} | {share_ref} | {cost} |")
    if ref:
        r = ref["results"]
        ms = r["ms_per_slot"]
        L += ["", f"### How good is the reference ({r['instances']} held-out instances x slots {r['slots']} = "
                  f"{r['instance_slots']} instance-slots)", "",
              "| design | mean slot reward | ms per slot (one instance) | independent local search: mean / max gain, "
              "improved |", "|---|---:|---:|---:|"]
        for label, key, climb in (
            (f"ao_perfect_csi ({r['restarts']} restarts, best {r['refined_starts']} refined by SLSQP)",
             "reference", "climb_gain_reference"),
            ("old reference (1 AO start, penalty 1e4)", "old", "climb_gain_old"),
            ("single AO start, the env's penalty (no refinement)", "single_ao", None),
            ("4x larger run (32 restarts, best 8 refined)", "larger", None),
            ("certified bound (interference-free sum rate)", "bound", None),
        ):
            c = r[climb] if climb else None
            climb_text = (f"{100 * c['mean']:.2g}% / {100 * c['max']:.2g}%, {c['improved']} of "
                          f"{r['instance_slots']}") if c else ""
            cost = f"{ms[key]:.0f}" if key in ms else ""
            L.append(f"| {label} | {r['mean'][key]:.3f} | {cost} | {climb_text} |")
        lg, rg = r["larger_gain_reference"], r["reference_gain_old"]
        L += ["", f"Local search ({r['climb_iterations']} hill-climbing iterations of 16 proposals per instance-slot; "
                  f"'improved' counts gains above 1e-9 relative) improves the reference by "
                  f"{100 * r['climb_gain_reference']['mean']:.2g}% on average (goal: below 0.5%) and the old reference "
                  f"by {100 * r['climb_gain_old']['mean']:.1f}%.  The 4x larger run finds a better design in "
                  f"{lg['improved']} of {r['instance_slots']} instance-slots (by at most {100 * lg['max']:.2g}%; mean "
                  f"difference {100 * lg['mean']:.2g}%)" + (
                      ": the reference is a local optimum, and more restarts can find better ones." if lg["max"] > 1e-4
                      else "; nothing certifies that either is the global optimum (the problem is non-convex).") +
                  f"  The reference improves on the old one by {100 * rg['mean']:.1f}% on average and "
                  f"reaches {100 * r['reference_over_bound']:.1f}% of the certified bound.  Costs are wall-clock on a "
                  f"shared, loaded machine."]
    if sweep:
        res = sweep["results"]
        ub = res["ao_perfect_csi"]["return"]
        bound = res.get("bound", {}).get("return")
        best = agents["results"].get("best") if agents else None
        L += ["", f"### Twin fidelity sweep ({sweep['sweep_episodes']} episodes x 50 slots; ao_perfect_csi: "
                  f"return {ub:.1f}" + (f"; certified bound {bound:.1f}" if bound else "") + ")", ""]
        head = "| twin | observed NMSE | AO fed the twin (% of ao_perfect_csi) | random phases + MRT |"
        line = "|---|---:|---:|---:|"
        if best:
            head += f" best agent ({best}) | agent beats AO-twin |"
            line += "---:|:---:|"
        L += [head, line]
        for key, row in res.items():
            if key in ("ao_perfect_csi", "bound"):
                continue
            ao, rnd = row["ao_twin"], row["random_phase_mrt"]
            text = (f"| {key} | {ao['twin_nmse']:.3f} | {ao['return']:.1f} ({100 * ao['return'] / ub:.0f}%) | "
                    f"{rnd['return']:.1f} |")
            if best and key in agents["results"]["sweep"]:
                ag = agents["results"]["sweep"][key]
                text += (f" {ag['return']:.1f} ({100 * ag['return'] / ub:.0f}%, viol. "
                         f"{100 * ag['violation_rate']:.1f}%) | {'yes' if ag['return'] > ao['return'] else 'no'} |")
            L.append(text)
    return "\n".join(L) + "\n"


def _interval(values) -> tuple[float, float]:
    from gentwin.stats import t_interval

    st = t_interval(values)
    return st.mean, st.half_width


def twin_study_groups(study: dict) -> dict:
    """Agents by (label, training twin): the seeds' evaluations on every setting."""
    groups: dict = {}
    for a in study["agents"]:
        groups.setdefault((a["label"], setting_name(a["train_twin"])), []).append(a)
    return groups


def twin_study_report(study: dict, plot_name: str | None = None) -> str:
    """Markdown of the twin study (the second generated block of docs/ris_isac.md)."""
    ref = study["ao_perfect_csi"]["return"]
    n = study["eval_episodes"]
    groups = twin_study_groups(study)
    form = ", ".join(f"{k}={v}" for k, v in study["formulation"].items())
    L = [f"{n} held-out episodes x 50 slots per twin setting (`EVAL_SEED`; the same physical channels in "
         f"every setting).  `ao_perfect_csi` (perfect CSI, strong heuristic reference): {ref:.1f}; certified "
         f"bound {study['bound']:.1f}.  Agents: mean ± 95% Student-t interval over seeds of the return; "
         f"formulation of the agents: {form}.  Each agent group says which twin it was trained on "
         f"(`trained at`); it is deployed unchanged on every setting.", ""]
    base_names = list(dict.fromkeys(b for rows in study["baselines"].values() for b in rows))
    settings = list(study["baselines"])
    L += ["| policy | " + " | ".join(settings) + " |", "|---|" + "---:|" * len(settings)]
    L.append("| observed twin NMSE | " + " | ".join(f"{study['baselines'][k]['ao_twin']['twin_nmse']:.3f}"
                                                  for k in settings) + " |")
    for b in base_names:
        L.append(f"| {b} | " + " | ".join(f"{study['baselines'][k][b]['return']:.1f} "
                                          f"({100 * study['baselines'][k][b]['return'] / ref:.0f}%)"
                                          if b in study["baselines"][k] else "not run"
                                          for k in settings) + " |")
    for (label, tw), runs in groups.items():
        cells = []
        for k in settings:
            m, h = _interval([r["per_setting"][k]["return"] for r in runs])
            viol = np.mean([r["per_setting"][k]["violation_rate"] for r in runs])
            cells.append(f"{m:.1f} ± {h:.1f} ({100 * m / ref:.0f}%" + (f", viol. {100 * viol:.1f}%" if viol else "")
                         + ")")
        L.append(f"| **{label}** (trained at {tw}, {len(runs)} seeds) | " + " | ".join(cells) + " |")
    L += ["", "Percentages are of `ao_perfect_csi`.  `ao_twin`: the alternating optimisation fed the twin (its "
              "WMMSE precoders, the raw action); `ao_twin, agents' formulation`: its phases (fitted) and power "
              "shares played through the agents' closed form; `equal shares`: the formulation's all-(-1) action; "
              "`reference optimiser fed the twin`: `ao_perfect_csi`'s optimiser run on the twin's estimate; "
              "`robust optimiser fed the twin` (`ao_twin_robust`): that design refined by SLSQP on the reward "
              "averaged over 32 draws of the true channel from the twin's posterior."]
    # Goals of issue 16.
    default = setting_name(dict(twin_estimation_nmse=0.01, twin_sync_period_slots=4))
    best = max(groups.items(), key=lambda kv: np.mean([r["per_setting"][default]["return"] for r in kv[1]]),
               default=None)
    if best:
        (label, tw), runs = best
        L += ["", f"Goals (best group at the default twin: {label}, trained at {tw}):", ""]
        m, h = _interval([r["per_setting"][default]["return"] for r in runs])
        viol = max(r["per_setting"][default]["violation_rate"] for r in runs)
        L.append(f"* default twin: {m:.1f} ± {h:.1f} = {100 * m / ref:.1f}% of `ao_perfect_csi` (goal 90%: "
                 f"{'met' if m >= 0.9 * ref else 'not met'}), sensing violations at most {100 * viol:.2f}% of slots "
                 f"(goal <= 1%).")
        for T in (10, 20):
            setting = setting_name(dict(twin_estimation_nmse=0.01, twin_sync_period_slots=T))
            ao = study["baselines"][setting]["ao_twin"]["return"]
            ao_form = study["baselines"][setting]["ao_twin, agents' formulation"]["return"]
            here = [(label, runs)] + [(lab, rs) for (lab, t), rs in groups.items() if t == setting]

            def verdict(m, h, x):
                return "beats" if m - h > x else ("ties with" if m + h >= x else "stays below")

            for lab, rs in here:
                m, h = _interval([r["per_setting"][setting]["return"] for r in rs])
                L.append(f"* refresh every {T} slots: {lab} (trained at {setting_name(rs[0]['train_twin'])}) "
                         f"{m:.1f} ± {h:.1f}: {verdict(m, h, ao)} AO fed the same twin ({ao:.1f}); "
                         f"{verdict(m, h, ao_form)} that AO's phases and power shares played through the "
                         f"agents' closed form ({ao_form:.1f})"
                         + "".join(f"; {verdict(m, h, study['baselines'][setting][b]['return'])} the {b} "
                                   f"({study['baselines'][setting][b]['return']:.1f})"
                                   for b in ("reference optimiser fed the twin", "robust optimiser fed the twin")
                                   if b in study["baselines"][setting])
                         + ".")
    if plot_name:
        L += ["", f"![return against twin staleness](img/{plot_name})"]
    return "\n".join(L) + "\n"


def plot_twin_study(study: dict, path: Path) -> None:
    """Return against twin staleness, every policy: estimation error (left), refresh period (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = study["ao_perfect_csi"]["return"]
    groups = twin_study_groups(study)
    panels = [("twin estimation NMSE (refreshed every slot)", [dict(twin_estimation_nmse=e, twin_sync_period_slots=1)
                                                                  for e in NMSE_SWEEP], NMSE_SWEEP),
              ("twin refresh period [slots] (NMSE 0.01)", [dict(twin_estimation_nmse=0.01, twin_sync_period_slots=t)
                                                           for t in SYNC_SWEEP], SYNC_SWEEP)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.2), sharey=True)
    colours = plt.get_cmap("tab20").colors
    for ax, (title, settings, xs) in zip(axes, panels):
        names = [setting_name(kw) for kw in settings]
        c = iter(colours)
        ax.axhline(ref, color="k", lw=1, ls="--", label="ao_perfect_csi (perfect CSI)")
        for b in dict.fromkeys(b for rows in study["baselines"].values() for b in rows):
            # twin-fed controllers: thin dashed lines (gaps where a setting was not run)
            ax.plot(xs, [study["baselines"][k][b]["return"] if b in study["baselines"][k] else np.nan
                         for k in names], marker="o", lw=1, ls="--", color=next(c), label=b)
        for (label, tw), runs in groups.items():  # learned agents: mean and 95% interval over seeds
            stats = [_interval([r["per_setting"][k]["return"] for r in runs]) for k in names]
            m, h = np.array(stats).T
            ax.errorbar(xs, m, yerr=h, marker="s", lw=2, capsize=3, color=next(c),
                        label=f"{label} (trained at {tw}, {len(runs)} seeds)")
        ax.set_title(title, fontsize=10)
        ax.set_xscale("symlog", linthresh=0.01 if xs is NMSE_SWEEP else 1)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g}" for x in xs])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"return per episode [bit/s/Hz x slots], {study['eval_episodes']} episodes")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7.5, frameon=False)
    fig.suptitle("RisIsac-v0: learned agents and twin-fed controllers against twin staleness", fontsize=11)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


STUDY_BEGIN = begin_marker("ris_isac.py --parts twin_study")
PLOT_NAME = "ris_isac_twin_study.png"


BEGIN, END = begin_marker("ris_isac.py"), docblock.END


def write_docs(path: Path, text: str) -> None:
    """Replace the generated block of ``path`` (between the markers) with ``text``."""
    docblock.write_block(path, text, BEGIN, END)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parts = ["throughput", "baselines", "reference", "sweep", "agents", "twin_study", "report", "twin_report"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts)
    parser.add_argument("--algos", nargs="+", default=["td3", "sac", "ppo", "diffusion"])
    parser.add_argument("--timesteps", type=int, default=8000)
    parser.add_argument("--budget", nargs="*", default=[], metavar="ALGO=STEPS",
                        help="per-algorithm training steps overriding --timesteps (e.g. ppo=40000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--eval-episodes", type=int, default=16)
    parser.add_argument("--sweep-episodes", type=int, default=8)
    parser.add_argument("--reference-instances", type=int, default=24)
    parser.add_argument("--reference-slots", type=int, nargs="+", default=[0, 25, 49])
    parser.add_argument("--climb-iterations", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "gentwin_ris_isac",
                        help="folder of the per-part JSON results (read back by 'report')")
    parser.add_argument("--study-labels", nargs="+", default=[],
                        help="twin_study: labels of the RisIsac records of benchmarks/records/learning.jsonl "
                             "to deploy on every twin setting")
    parser.add_argument("--study-formulation", nargs="*", default=["action_mode=alignment",
                        "observation_mode=cascade_gains", "reward_scale=per_user"], metavar="KEY=VALUE",
                        help="twin_study: the agents' env options (every study label must have them)")
    parser.add_argument("--study-record", type=Path, default=DEFAULT_STUDY,
                        help="twin_study / twin_report: the study's results (resumable)")
    parser.add_argument("--no-study-twin-reference", dest="study_twin_reference", action="store_false",
                        help="twin_study: skip the reference optimiser fed the twin (about 17 s per episode) "
                             "and its robust variant ao_twin_robust (about 50 s per episode)")
    parser.add_argument("--study-settings", nargs="+", default=[], metavar="SETTING",
                        help="twin_study: only these twin settings' baselines, named as in the study "
                             "(e.g. 'nmse=0.01, T=4'); two such runs can share one --study-record")
    parser.add_argument("--write-docs", type=Path, default=None,
                        help="with 'report': rewrite the generated block of this Markdown file")
    args = parser.parse_args()
    args.budget = {k: int(v) for k, v in (item.split("=") for item in args.budget)}
    args.study_formulation = dict(item.split("=", 1) for item in args.study_formulation)

    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    runners = {"throughput": run_throughput, "baselines": run_baselines, "reference": run_reference,
               "sweep": run_sweep, "agents": run_agents, "twin_study": run_twin_study}
    for part in args.parts:
        if part in ("report", "twin_report"):
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {part}", flush=True)
        t = time.perf_counter()
        results = runners[part](args)
        payload = {"results": results, "seconds": time.perf_counter() - t, "load": os.getloadavg(),
                   "timesteps": args.timesteps, "seeds": args.seeds, "eval_episodes": args.eval_episodes,
                   "sweep_episodes": args.sweep_episodes, "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                 time.gmtime())}
        (args.out / f"{part}.json").write_text(json.dumps(payload, indent=1))
    if "report" in args.parts:
        text = report(args.out)
        print(text)
        if args.write_docs:
            write_docs(args.write_docs, text)
    if "twin_report" in args.parts:
        study = json.loads(args.study_record.read_text())
        text = twin_study_report(study, PLOT_NAME if args.write_docs else None)
        print(text)
        if args.write_docs:
            plot_twin_study(study, args.write_docs.parent / "img" / PLOT_NAME)
            docblock.write_block(args.write_docs, text, STUDY_BEGIN, END)


if __name__ == "__main__":
    main()
