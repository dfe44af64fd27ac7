"""Learning runs with run records: the source of ``docs/benchmark_results.md``.

One invocation trains one algorithm (optionally a labelled variant) on one
environment id for several seeds, exactly as ``python train.py`` would with the
same settings: the hyperparameters are the packaged ``gentwin/hyperparams/<algo>.yml``
entry for the id (its ``n_timesteps``, ``n_envs`` and ``env_kwargs`` included) with
``--hp`` / ``--timesteps`` / ``--n-envs`` / ``--env-kwarg`` on top.  Each finished run
is evaluated deterministically on held-out seeds (``gentwin.evaluation``, seeds from
``EVAL_SEED``), next to every baseline and the family's certified bound or exact
optimum where one exists, and appended as one JSON line to ``--records``
(default ``benchmarks/records/learning.jsonl``): the command that reproduces it, the
resolved settings, wall time, machine load, and the evaluation summaries.

    python benchmarks/learning.py --env gentwin/PowerAllocation-v0 --algo diffusion --seeds 0 1 2 3 4
    python benchmarks/learning.py --env gentwin/PowerAllocation-v0 --algo diffusion --label "diffusion actor=mlp" \\
        --hp actor=mlp --seeds 0 1 2
    python benchmarks/results_table.py          # rewrite docs/benchmark_results.md from the records

A run whose (label, id, env kwargs, timesteps, n_envs, seed, hyperparameters) is
already recorded is skipped, so an interrupted series resumes.  After a fix to a
baseline, the same command with ``--rebaseline`` re-evaluates the baselines of those
recorded runs (nothing is trained) and notes the commit in each record.  Runs are
single-threaded (``torch.set_num_threads(1)``) unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECORDS = ROOT / "benchmarks" / "records" / "learning.jsonl"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or None
    except OSError:
        return None


def _summaries(result: Any) -> dict[str, float]:
    return {k: float(v) for k, v in result.summary().items()}


def _bound_summary(train_result: Any) -> dict[str, Any] | None:
    """Name, kind and mean of the family's certified bound / exact optimum on the evaluation episodes."""
    bound = getattr(train_result, "bound", None)
    if bound is None:
        return None
    values = getattr(bound, "values", None)
    mean = float(sum(values) / len(values)) if values is not None and len(values) else None
    return {"name": getattr(bound, "name", None), "kind": getattr(bound, "kind", None), "mean": mean}


def load_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _run_key(rec: dict) -> tuple:
    return (rec["label"], rec["env_id"], json.dumps(rec["env_kwargs"], sort_keys=True), rec["timesteps"],
            rec["n_envs"], rec["seed"], json.dumps(rec["hyperparams"], sort_keys=True, default=str))


def _log_root(args, probe: dict) -> str:
    """A log root of its own for every run key: train() saves to <root>/<env>/<algo>/seed<k>, which
    would otherwise be shared by every label and env setting of an algorithm (and overwritten)."""
    import hashlib

    key = json.dumps({k: probe[k] for k in ("env_kwargs", "timesteps", "n_envs", "hyperparams")},
                     sort_keys=True, default=str)
    slug = "".join(c if c.isalnum() else "_" for c in probe["label"])
    return str(Path(args.log_root) / f"{slug}_{hashlib.sha1(key.encode()).hexdigest()[:10]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", required=True, help="environment id")
    parser.add_argument("--algo", required=True, help="algorithm name (gentwin.agents.ALGORITHMS)")
    parser.add_argument("--label", default=None, help="name of this variant in the table (default: the algo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=None, help="default: the hyperparameter file's n_timesteps")
    parser.add_argument("--n-envs", type=int, default=None, help="default: the hyperparameter file's n_envs")
    parser.add_argument("--env-kwarg", action="append", metavar="KEY=VALUE")
    parser.add_argument("--hp", action="append", metavar="KEY=VALUE", help="algorithm kwarg override")
    parser.add_argument("--hyperparams", default=None, help="hyperparameter file (default: the packaged one)")
    parser.add_argument("--eval-episodes", type=int, default=256)
    parser.add_argument("--baselines", nargs="+", default=None,
                        help="baselines evaluated next to the agent (default: all; for ids whose oracle is costly)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--records", default=str(DEFAULT_RECORDS))
    parser.add_argument("--log-root", default=str(ROOT / "runs" / "benchmarks"))
    parser.add_argument("--restore-models", action="store_true",
                        help="for the recorded runs of these settings whose saved model is missing or is not "
                             "theirs (it does not reproduce the recorded evaluation), train them again into a "
                             "run directory of their own, check that the evaluation is reproduced, and point "
                             "the record at the model")
    parser.add_argument("--rebaseline", action="store_true",
                        help="train nothing: re-evaluate the baselines of the already recorded runs of this "
                             "label and settings with the current code (after a baseline fix) and rewrite "
                             "their records, noting the commit")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    import gentwin  # noqa: F401
    from gentwin.cli import parse_kv, resolve_run_keys
    from gentwin.training import TrainConfig, load_hyperparams, split_hyperparams, train

    ns = argparse.Namespace(env=args.env, timesteps=args.timesteps, n_envs=args.n_envs,
                            env_kwarg=args.env_kwarg, hyperparams=args.hyperparams)
    timesteps, n_envs, env_kwargs = resolve_run_keys(ns, args.algo)
    _, file_hp = split_hyperparams(load_hyperparams(args.algo, args.env, args.hyperparams))
    overrides = parse_kv(args.hp, "--hp")
    label = args.label or args.algo
    records_path = Path(args.records)
    records_path.parent.mkdir(parents=True, exist_ok=True)
    done = {_run_key(r) for r in load_records(records_path)}

    if args.rebaseline:
        return _rebaseline(args, records_path, label, env_kwargs, timesteps, n_envs, {**file_hp, **overrides})
    if args.restore_models:
        return _restore_models(args, records_path, label, env_kwargs, timesteps, n_envs, overrides,
                               {**file_hp, **overrides})

    for seed in args.seeds:
        hyperparams = {**file_hp, **overrides}
        probe = {"label": label, "env_id": args.env, "env_kwargs": env_kwargs, "timesteps": timesteps,
                 "n_envs": n_envs, "seed": seed, "hyperparams": hyperparams}
        if _run_key(probe) in done:
            print(f"{label} seed {seed}: already recorded, skipped", flush=True)
            continue
        config = TrainConfig(env_id=args.env, algo=args.algo, timesteps=timesteps, n_envs=n_envs, seed=seed,
                             env_kwargs=env_kwargs, hyperparams=overrides, eval_freq=0,
                             eval_episodes=args.eval_episodes, log_root=_log_root(args, probe), progress_bar=False,
                             baselines=args.baselines if args.baselines is not None else "all")
        load_start = os.getloadavg()[0]
        start, cpu_start = time.perf_counter(), time.process_time()
        result = train(config, hyperparams_file=args.hyperparams)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        one_seed = [a for a in (argv if argv is not None else sys.argv[1:])]
        if "--seeds" in one_seed:
            i = one_seed.index("--seeds")
            j = i + 1
            while j < len(one_seed) and not one_seed[j].startswith("--"):
                j += 1
            one_seed = one_seed[:i] + ["--seeds", str(seed)] + one_seed[j:]
        else:
            one_seed += ["--seeds", str(seed)]
        train_cmd = ["python", "train.py", "--env", args.env, "--algo", args.algo, "--seed", str(seed),
                     "--timesteps", str(timesteps), "--n-envs", str(n_envs), "--eval-episodes",
                     str(args.eval_episodes)]
        for k, v in overrides.items():
            train_cmd += ["--hp", f"{k}={v}"]
        for kv in args.env_kwarg or []:
            train_cmd += ["--env-kwarg", kv]
        record = {
            **probe,
            "algo": args.algo,
            "eval_episodes": args.eval_episodes,
            "eval_seed": config.eval_seed,
            "wall_s": round(wall, 2),
            # CPU seconds of this process: with one thread, the wall time the run would take on
            # an idle core (the shared machine's load inflates wall_s, not cpu_s).
            "cpu_s": round(cpu, 2),
            "threads": args.threads,
            "loadavg_start": round(load_start, 2),
            "loadavg_end": round(os.getloadavg()[0], 2),
            "agent": _summaries(result.agent),
            "baselines": {name: _summaries(res) for name, res in result.baselines.items()},
            "bound": _bound_summary(result),
            "command": shlex.join(["python", "benchmarks/learning.py", *one_seed]),
            "train_command": shlex.join(train_cmd),
            # Where train() saved the model (under --log-root; not in the repository): what
            # benchmarks/ris_isac.py --parts twin_study deploys on other twins.
            "run_dir": str(result.run_dir),
            "git_commit": _git_commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        with open(records_path, "a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")
        shown = {k: round(v, 4) for k, v in record["agent"].items() if k not in ("length",)}
        print(f"{label} seed {seed}: {shown} ({wall:.0f} s wall, {cpu:.0f} s CPU)", flush=True)
    return 0


def _matching(records: list[dict], args, label: str, env_kwargs: dict, timesteps: int, n_envs: int,
              hyperparams: dict) -> list[dict]:
    """The recorded runs of this label and these settings, for ``--seeds``."""
    out = []
    for rec in records:
        probe = {"label": label, "env_id": args.env, "env_kwargs": env_kwargs, "timesteps": timesteps,
                 "n_envs": n_envs, "seed": rec["seed"], "hyperparams": hyperparams}
        if rec["seed"] in args.seeds and _run_key(rec) == _run_key(probe):
            out.append(rec)
    return out


def _replace_records(records_path: Path, changed: list[dict]) -> None:
    """Write ``changed`` over the records with their run keys, re-reading the file under a lock
    (other series may have appended or changed records meanwhile)."""
    import fcntl

    fixed = {_run_key(r): r for r in changed}
    with open(records_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = load_records(records_path)
        tmp = records_path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            for rec in current:
                fh.write(json.dumps(fixed.get(_run_key(rec), rec), default=float) + "\n")
        tmp.replace(records_path)


def _model_reproduces(rec: dict, path: Path) -> bool:
    """Whether the model at ``path`` gives the record's evaluation (deterministic, same episodes)."""
    from gentwin.evaluation import evaluate_policy
    from gentwin.training import load_model

    if not path.exists():
        return False
    model = load_model(rec["algo"], path, device="cpu")
    try:
        res = evaluate_policy(model, rec["env_id"], n_episodes=rec["eval_episodes"], seed=rec["eval_seed"],
                              env_kwargs=rec["env_kwargs"])
    except ValueError:  # e.g. another formulation's observation shape
        return False
    return all(abs(res.mean(k) - v) <= 1e-6 * max(1.0, abs(v)) for k, v in rec["agent"].items())


def _restore_models(args, records_path: Path, label: str, env_kwargs: dict, timesteps: int, n_envs: int,
                    overrides: dict, hyperparams: dict) -> int:
    """``--restore-models``: the saved model of every recorded run of these settings, or a reproduced one."""
    from gentwin.training import TrainConfig, train

    records = load_records(records_path)
    changed = 0
    for rec in _matching(records, args, label, env_kwargs, timesteps, n_envs, hyperparams):
        probe = {k: rec[k] for k in ("label", "env_id", "env_kwargs", "timesteps", "n_envs", "seed", "hyperparams")}
        if _model_reproduces(rec, Path(rec.get("run_dir", "")) / "model.zip"):
            print(f"{label} seed {rec['seed']}: saved model reproduces the record", flush=True)
            continue
        config = TrainConfig(env_id=args.env, algo=args.algo, timesteps=timesteps, n_envs=n_envs, seed=rec["seed"],
                             env_kwargs=env_kwargs, hyperparams=overrides, eval_freq=0,
                             eval_episodes=rec["eval_episodes"], log_root=_log_root(args, probe), progress_bar=False,
                             baselines=[])
        result = train(config, hyperparams_file=args.hyperparams)
        same = _model_reproduces(rec, Path(result.run_dir) / "model.zip")
        rec["run_dir"] = str(result.run_dir)
        rec["model_restored"] = {"reproduces_record": same, "git_commit": _git_commit(),
                                 "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        changed += 1
        print(f"{label} seed {rec['seed']}: retrained into {result.run_dir}; reproduces the record: {same}",
              flush=True)
    _replace_records(records_path, [r for r in records if "model_restored" in r])
    print(f"{changed} model(s) restored", flush=True)
    return 0


def _rebaseline(args, records_path: Path, label: str, env_kwargs: dict, timesteps: int, n_envs: int,
                hyperparams: dict) -> int:
    """``--rebaseline``: new baseline evaluations for the recorded runs of these settings and ``--seeds``.

    The agent's evaluation, the bound and everything else in a record stay as they were;
    ``baselines_reevaluated`` says when and at which commit the baselines were replaced.
    """
    from gentwin.training import TrainConfig, evaluate_baselines

    records = load_records(records_path)
    changed = 0
    for rec in _matching(records, args, label, env_kwargs, timesteps, n_envs, hyperparams):
        # The same evaluation train() runs (its seeds, episodes and baselines), with today's code.
        config = TrainConfig(env_id=args.env, algo=rec["algo"], env_kwargs=env_kwargs,
                             eval_episodes=rec["eval_episodes"], eval_seed=rec["eval_seed"],
                             baselines=list(rec["baselines"]))
        results, _ = evaluate_baselines(config)
        fresh = {name: _summaries(res) for name, res in results.items()}
        rec["baselines"] = fresh
        rec["baselines_reevaluated"] = {"git_commit": _git_commit(),
                                        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        changed += 1
        print(f"{label} seed {rec['seed']}: baselines re-evaluated "
              f"{ {k: round(v['return'], 4) for k, v in fresh.items()} }", flush=True)
    _replace_records(records_path, [r for r in records if "baselines_reevaluated" in r])
    print(f"{changed} record(s) rewritten", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
