"""Asynchronous actor-critic (A3C-style) with shmopt.shared on a synthetic contextual bandit.

Written the way A3C code is usually written: one global model and one optimizer shared by every
learner process, each learner holding a local copy of the model and looping pull -> rollout ->
loss -> step. shmopt's part: ``share()`` the global model, build ``SharedAdam`` on it,
``opt.step_from(local)`` instead of the old ``ensure_shared_grads(...); optimizer.step()``, and
``shmopt.launch`` instead of starting, watching and joining the processes by hand: a learner that
raises or dies is named at once, Ctrl-C leaves nothing behind, ``shmopt top`` shows the run (see
examples/MIGRATING.md).

The task: ``CONTEXTS`` contexts (fixed random feature vectors) and ``ARMS`` arms; pulling arm
``a`` in context ``k`` pays ``MEANS[k, a]`` plus Gaussian noise, with one arm per context paying
1.0 and the others at most 0.5.  The policy has an actor head (softmax over arms) and a critic
head (value baseline); the loss is the advantage actor-critic loss with an entropy bonus
(Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning", ICML 2016).

Run::

    python examples/a3c_actor_learner.py --processes 4 --steps 200
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import shmopt
from shmopt.shared import SharedAdam, pull_parameters, share

CONTEXTS, ARMS, FEATURES, BATCH = 16, 6, 8, 32


def make_env(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Context features (CONTEXTS x FEATURES) and expected rewards (CONTEXTS x ARMS)."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(CONTEXTS, FEATURES, generator=gen)
    means = 0.5 * torch.rand(CONTEXTS, ARMS, generator=gen)
    best = torch.randint(ARMS, (CONTEXTS,), generator=gen)
    means[torch.arange(CONTEXTS), best] = 1.0
    return features, means


class ActorCritic(nn.Module):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, hidden), nn.Tanh())
        self.actor = nn.Linear(hidden, ARMS)
        self.critic = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.actor(h), self.critic(h).squeeze(-1)


@torch.no_grad()
def expected_reward(model: nn.Module, features: torch.Tensor, means: torch.Tensor) -> float:
    """Exact expected reward of the stochastic policy, averaged over contexts."""
    logits, _ = model(features)
    return float((F.softmax(logits, -1) * means).sum(-1).mean())


def learner(rank: int, shared, opt, steps: int, seed: int) -> None:
    # shmopt.launch seeds torch with seed + rank and gives each process one thread
    features, means = make_env(seed)
    local = ActorCritic()
    recent: list[float] = []
    for step in range(1, steps + 1):
        pull_parameters(local, shared)                       # 1. pull the global parameters
        k = torch.randint(CONTEXTS, (BATCH,))                # 2. rollout (one-step episodes)
        logits, value = local(features[k])
        dist = torch.distributions.Categorical(logits=logits)
        arm = dist.sample()
        reward = means[k, arm] + 0.1 * torch.randn(BATCH)
        advantage = reward - value                           # 3. actor-critic loss
        loss = (-(dist.log_prob(arm) * advantage.detach()).mean() + 0.5 * advantage.pow(2).mean()
                - 0.01 * dist.entropy().mean())
        local.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(local.parameters(), 5.0)
        opt.step_from(local)                                 # 4. this step's own gradient
        recent.append(float(reward.mean()))
        if step % 50 == 0 or step == steps:
            print(f"  learner {rank} step {step:4d}: mean reward {sum(recent) / len(recent):.3f} "
                  f"(staleness {opt.staleness}), global step {opt.step_count}", flush=True)
            recent.clear()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200, help="updates per learner process")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-policy", choices=["constant", "staleness"], default="constant")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    features, means = make_env(args.seed)
    t0 = time.time()
    with share(ActorCritic()) as shared, \
            SharedAdam(shared.parameters(), lr=args.lr, lr_policy=args.lr_policy) as opt:
        initial = expected_reward(shared, features, means)
        print(f"expected reward: random policy {float(means.mean()):.3f}, initial {initial:.3f}, "
              f"optimal {float(means.max(-1).values.mean()):.3f}")
        run = shmopt.launch(learner, workers=args.processes, model=shared, optimizer=opt,
                            args=(args.steps, args.seed), seed=args.seed)
        final = expected_reward(shared, features, means)
        st = opt.stats()
        print(f"global steps {st['steps']} (= {args.processes} x {args.steps}), mean staleness "
              f"{st['staleness_sum'] / max(1, st['steps']):.2f}, max {st['staleness_max']}, "
              f"{time.time() - t0:.1f} s")
        print(f"expected reward: initial {initial:.3f} -> final {final:.3f}")
        ok = run.stats["exitcodes"] == [0] * args.processes and st["steps"] == args.processes * args.steps
        return 0 if ok and final > initial + 0.2 else 1


if __name__ == "__main__":
    sys.exit(main())
