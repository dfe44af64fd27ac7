"""Gradient updates per second of the diffusion actor-critic (batch 512, hidden 256, 5 denoising steps).

Measures ``DiffusionActorCritic.train`` -- replay sampling, critic update, actor update
through the reverse chain, target update -- on a filled replay buffer, for the
discrete agent (D2SAC, AspSelection-v0 ``reference``) and the Box agent
(PowerAllocation-v0, behaviour cloning on).  The same update written the way the
published implementations compute it (state MLP re-run inside every denoising
step, the concatenated first layer, PyTorch's ``nn.Mish``, twin critics as two
separate networks, per-parameter Adam) runs alongside under identical conditions,
so the ratio between the two does not depend on how busy the machine is.

Reported per configuration: updates/s of wall-clock time (best of ``--repeats``
blocks) and updates per CPU-second of the process (``time.process_time``), which
approximates the rate on an idle core when other jobs share the machine.  The
load average is printed so the wall-clock figures can be judged.

    python benchmarks/diffusion_speed.py                 # 1 thread
    python benchmarks/diffusion_speed.py --threads 1 2 --updates 30
    python benchmarks/diffusion_speed.py --activations mish --profile   # where the time goes
    python benchmarks/diffusion_speed.py --device cuda                   # on a GPU
    python benchmarks/diffusion_speed.py --write-docs docs/diffusion.md  # the docs' table

``--profile`` prints, per case, CPU milliseconds per update and the part spent in matrix
products: the published-style time divided by our matrix-product time is the most any
fp32 implementation of the same products could gain without doing fewer of them.

An experiment beyond what the agent does (not an agent option):

    python benchmarks/diffusion_speed.py --activations mish --bf16-autocast

``--bf16-autocast`` times gentwin's update with every gradient step under
``torch.autocast(dtype=bfloat16)`` (matrix products in bfloat16, 8-bit mantissa: a
critic's Q values then carry ~0.4 % rounding, the size of the differences between
actions it must rank, which is why the agent does not do this).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path

import torch as th
from stable_baselines3.common.logger import configure
from torch import nn
from torch.nn import functional as F

import gentwin  # noqa: F401
from gentwin.agents.diffusion import DiffusionActorCritic
from gentwin.agents.diffusion_policies import DiffusionSchedule
from gentwin.envs import make_sb3_vec_env

import docblock  # benchmarks/docblock.py (the script's directory is on sys.path)

DOC_BEGIN = docblock.begin_marker("diffusion_speed.py")

BATCH, HIDDEN, STEPS = 512, 256, 5


# ---------------------------------------------------------------------------
# The published-style update (a re-implementation for timing, same maths)
# ---------------------------------------------------------------------------
class _SinEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = th.exp(th.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        angle = t[:, None].float() * freqs[None]
        return th.cat([angle.sin(), angle.cos()], dim=-1)


class _NaiveEps(nn.Module):
    def __init__(self, s, a, h=HIDDEN, td=16):
        super().__init__()
        self.state_mlp = nn.Sequential(nn.Linear(s, h), nn.Mish(), nn.Linear(h, h))
        self.time_mlp = nn.Sequential(_SinEmb(td), nn.Linear(td, 2 * td), nn.Mish(), nn.Linear(2 * td, td))
        self.mid = nn.Sequential(nn.Linear(h + a + td, h), nn.Mish(), nn.Linear(h, h), nn.Mish(), nn.Linear(h, a))

    def forward(self, x, t, s):
        return self.mid(th.cat([x, self.time_mlp(t), self.state_mlp(s)], dim=1))


class _NaiveChain(nn.Module):
    def __init__(self, s, a, n=STEPS):
        super().__init__()
        self.model, self.a, self.n = _NaiveEps(s, a), a, n
        sch = DiffusionSchedule("vp", n)
        for name in ("sqrt_recip_alpha_bar_t", "sqrt_recipm1_alpha_bar_t", "posterior_mean_coef1",
                     "posterior_mean_coef2", "posterior_variance"):
            self.register_buffer(name, th.tensor(getattr(sch, name), dtype=th.float32))

    def forward(self, s):
        b = s.shape[0]
        x = th.randn(b, self.a, device=s.device)
        for i in reversed(range(self.n)):
            t = th.full((b,), i, dtype=th.long, device=s.device)
            eps = self.model(x, t, s)
            x0 = (self.sqrt_recip_alpha_bar_t[t, None] * x - self.sqrt_recipm1_alpha_bar_t[t, None] * eps)
            x0 = x0.clamp(-1, 1)
            mean = self.posterior_mean_coef1[t, None] * x0 + self.posterior_mean_coef2[t, None] * x
            std = self.posterior_variance[t, None].clamp_min(1e-20).sqrt()
            x = mean + (t != 0).float()[:, None] * std * th.randn_like(x)
        return x.clamp(-1, 1)


class _NaiveCritic(nn.Module):
    def __init__(self, s, out, a_in=0, h=HIDDEN):
        super().__init__()
        self.state_mlp = nn.Sequential(nn.Linear(s, h), nn.ReLU(), nn.Linear(h, h))
        self.q1 = nn.Sequential(nn.Linear(h + a_in, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, out))
        self.q2 = copy.deepcopy(self.q1)

    def forward(self, s, a=None):
        x = self.state_mlp(s)
        if a is not None:
            x = th.cat([x, a], dim=-1)
        return self.q1(x), self.q2(x)


class NaiveUpdate:
    """One D2SAC (discrete) or GDM-tutorial (Box) update, published-style."""

    def __init__(self, state_dim, action_dim, discrete, device="cpu"):
        self.discrete = discrete
        self.actor = _NaiveChain(state_dim, action_dim).to(device)
        self.critic = _NaiveCritic(state_dim, action_dim if discrete else 1, 0 if discrete else action_dim).to(device)
        self.critic_t = copy.deepcopy(self.critic)
        self.actor_t = copy.deepcopy(self.actor)
        self.opt_a = th.optim.Adam(self.actor.parameters(), lr=3e-4, foreach=False)
        self.opt_c = th.optim.Adam(self.critic.parameters(), lr=3e-4, foreach=False)

    def __call__(self, s, a, r, s2, d):
        with th.no_grad():
            if self.discrete:
                p2 = F.softmax(self.actor(s2), -1)
                v = (p2 * (th.min(*self.critic_t(s2)) - 0.05 * th.log(p2 + 1e-8))).sum(-1, keepdim=True)
            else:
                v = th.min(*self.critic_t(s2, self.actor_t(s2)))
            y = r + (1 - d) * 0.99 * v
        if self.discrete:
            q1, q2 = self.critic(s)
            q1, q2 = q1.gather(1, a.long()), q2.gather(1, a.long())
        else:
            q1, q2 = self.critic(s, a)
        loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.opt_c.zero_grad()
        loss.backward()
        self.opt_c.step()
        if self.discrete:
            logits = self.actor(s)
            p = F.softmax(logits, -1)
            with th.no_grad():
                q = th.min(*self.critic(s))
            actor_loss = (p * (0.05 * th.log(p + 1e-8) - q)).sum(-1).mean()
        else:
            actor_loss = -th.min(*self.critic(s, self.actor(s))).mean()
        self.opt_a.zero_grad()
        actor_loss.backward()
        self.opt_a.step()
        with th.no_grad():
            for net, tgt in ((self.critic, self.critic_t), (self.actor, self.actor_t)):
                for p_, t_ in zip(net.parameters(), tgt.parameters()):
                    t_.mul_(0.995).add_(0.005 * p_)


# ---------------------------------------------------------------------------
def _filled_model(env_id, env_kwargs, device="cpu", **kwargs):
    venv = make_sb3_vec_env(env_id, num_envs=16, seed=0, **env_kwargs)
    model = DiffusionActorCritic("MlpPolicy", venv, batch_size=BATCH, hidden_dim=HIDDEN, denoising_steps=STEPS,
                                 learning_starts=10**9, seed=0, device=device, **kwargs)
    model.learn(4096)  # random actions: fills the replay buffer, no updates yet
    model.set_logger(configure(None, []))
    return model


def _rate(fn, updates, repeats, device="cpu"):
    sync = th.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    fn(2)
    best_wall, best_cpu = 0.0, 0.0
    for _ in range(repeats):
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        fn(updates)
        sync()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best_wall, best_cpu = max(best_wall, updates / wall), max(best_cpu, updates / cpu)
    return best_wall, best_cpu


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def _profile(fn, updates: int = 10) -> tuple[float, float]:
    """(CPU ms per update, of it in matrix products) under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    fn(2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(updates)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / updates / 1000
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / updates / 1000
    return total, matmul


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch threads; more than 1 only helps on an otherwise idle machine")
    parser.add_argument("--updates", type=int, default=20, help="updates per timed block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--activations", nargs="+", default=["mish", "silu"])
    parser.add_argument("--no-reference", action="store_true", help="skip the published-style update")
    parser.add_argument("--device", default="cpu", help='torch device of both updates, e.g. "cuda"')
    parser.add_argument("--bf16-autocast", action="store_true",
                        help="also time gentwin's update under bfloat16 autocast (an experiment, see the module doc)")
    parser.add_argument("--write-docs", type=Path, default=None,
                        help="also write the printed table, with its command, into this file's generated block")
    parser.add_argument("--profile", action="store_true",
                        help="also print CPU ms per update and the share in matrix products (the speed-up ceiling)")
    args = parser.parse_args()
    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    cases = [
        ("discrete (AspSelection, D2SAC)", "gentwin/AspSelection-v0", {"params": "reference"}, {}),
        ("box (PowerAllocation, +BC)", "gentwin/PowerAllocation-v0", {}, {"bc_coef": 1.0}),
    ]
    out(f"batch {BATCH}, hidden {HIDDEN}, {STEPS} denoising steps; torch {th.__version__}; device {args.device}; "
        f"{os.cpu_count()} CPUs; load average (1, 5, 15 min) at start {os.getloadavg()}")
    out(f"{'case':34s} {'implementation':32s} {'threads':>7s} {'updates/s':>10s} {'per CPU-s':>10s}")
    for threads in args.threads:
        th.set_num_threads(threads)
        for label, env_id, env_kwargs, algo_kwargs in cases:
            for act in args.activations:
                model = _filled_model(env_id, env_kwargs, device=args.device, activation=act, **algo_kwargs)
                wall, cpu = _rate(lambda n: model.train(n, BATCH), args.updates, args.repeats, args.device)
                out(f"{label:34s} {'gentwin (' + act + ')':32s} {threads:7d} {wall:10.1f} {cpu:10.1f}")
                if args.bf16_autocast:
                    device_type = th.device(args.device).type

                    def bf16_steps(n, model=model, device_type=device_type):
                        # One autocast region per gradient step: the region caches the bfloat16
                        # copies of the weights, which the optimizer step makes stale.
                        for _ in range(n):
                            with th.autocast(device_type, dtype=th.bfloat16):
                                model.train(1, BATCH)

                    wall, cpu = _rate(bf16_steps, args.updates, args.repeats, args.device)
                    out(f"{label:34s} {'gentwin (' + act + ', bf16 autocast)':32s} {threads:7d} {wall:10.1f} {cpu:10.1f}")
            if not args.no_reference:
                naive = NaiveUpdate(model.policy.features_dim, model.policy.action_dim, model.discrete, args.device)
                th.manual_seed(0)

                def run(n, naive=naive, model=model):
                    for _ in range(n):
                        d = model.replay_buffer.sample(BATCH)
                        naive(d.observations, d.actions, d.rewards, d.next_observations, d.dones)

                wall, cpu = _rate(run, args.updates, args.repeats, args.device)
                out(f"{label:34s} {'published-style (mish)':32s} {threads:7d} {wall:10.1f} {cpu:10.1f}")
                if args.profile:
                    ours, ours_mm = _profile(lambda n: model.train(n, BATCH))
                    theirs, theirs_mm = _profile(run)
                    out(f"    profile: gentwin ({args.activations[-1]}) {ours:.1f} ms/update, {ours_mm:.1f} in matrix "
                        f"products; published-style {theirs:.1f} ms, {theirs_mm:.1f}; ratio {theirs / ours:.2f}, "
                        f"ceiling with free elementwise work {theirs / ours_mm:.2f}")
    out(f"load average (1, 5, 15 min) at end {os.getloadavg()}")
    if args.write_docs:
        command = "python benchmarks/diffusion_speed.py " + " ".join(sys.argv[1:])
        text = f"```bash\n{command}\n```\n\n```\n" + "\n".join(lines) + "\n```\n"
        docblock.write_block(args.write_docs, text, DOC_BEGIN)


if __name__ == "__main__":
    main()
