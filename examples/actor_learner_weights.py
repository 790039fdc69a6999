"""Actor-learner training on versioned weights (``shmopt.weights``), with a staleness bound.

The learner (this process) owns the policy and an optimizer, and publishes its weights after
every update. Each actor process (started with ``shmopt.launch``) attaches to the published
weights by name, copies the newest version, plays a batch of one-step episodes of a contextual
bandit with it, and sends the batch to the learner tagged with the version it played. The learner
drops a batch played on weights more than ``--max-staleness`` versions old, as prime-rl drops
rollouts older than ``max_off_policy_steps``, and trains on the others (REINFORCE with a running
baseline). ``publisher.readers()`` shows how far behind each actor is.

    python examples/actor_learner_weights.py --actors 2 --updates 200 --max-staleness 4
"""
from __future__ import annotations

import argparse
import queue
import sys
import threading

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import shmopt

CONTEXTS, ARMS, FEATURES, BATCH = 16, 6, 8, 64


def make_env(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Context features and expected rewards: one arm per context pays 1.0, the others <= 0.5."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(CONTEXTS, FEATURES, generator=gen)
    means = 0.5 * torch.rand(CONTEXTS, ARMS, generator=gen)
    means[torch.arange(CONTEXTS), torch.randint(ARMS, (CONTEXTS,), generator=gen)] = 1.0
    return features, means


def policy() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, 32), nn.Tanh(), nn.Linear(32, ARMS))


def actor(rank: int, _model, _optimizer, name: str, batches, seed: int) -> None:
    """Play batches on the newest weights until the learner closes them."""
    features, means = make_env(seed)
    reader, local = shmopt.weights.attach(name), policy()
    version = 0
    try:
        while True:
            version = reader.read_into(local, min_version=version + 1, timeout=60)   # a newer one
            with torch.no_grad():
                k = torch.randint(CONTEXTS, (BATCH,))
                arm = torch.distributions.Categorical(logits=local(features[k])).sample()
            batches.put((rank, version, k, arm, means[k, arm] + 0.1 * torch.randn(BATCH)))
    except shmopt.weights.PublisherGone:
        pass                                 # the learner is done
    finally:
        reader.close()


@torch.no_grad()
def expected_reward(model: nn.Module, features: torch.Tensor, means: torch.Tensor) -> float:
    return float((F.softmax(model(features), -1) * means).sum(-1).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--updates", type=int, default=200)
    ap.add_argument("--max-staleness", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    features, means = make_env(args.seed)
    learner = policy()
    opt = torch.optim.Adam(learner.parameters(), lr=args.lr)
    batches = mp.get_context("spawn").Queue()
    initial = expected_reward(learner, features, means)
    used = dropped = 0
    baseline = 0.0
    with shmopt.weights.publish(learner) as pub:
        failure: list[BaseException] = []
        actors = threading.Thread(target=lambda: _run(failure, shmopt.launch, actor, workers=args.actors,
                                                      model=None, args=(pub.name, batches, args.seed)))
        actors.start()
        while used < args.updates and not failure:
            try:
                rank, version, k, arm, reward = batches.get(timeout=1)
            except queue.Empty:
                continue
            if pub.version - version > args.max_staleness:     # played on weights too old
                dropped += 1
                continue
            logp = torch.distributions.Categorical(logits=learner(features[k])).log_prob(arm)
            loss = -((reward - baseline) * logp).mean()
            baseline = 0.9 * baseline + 0.1 * float(reward.mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            pub.publish()
            used += 1
            if used % 50 == 0:
                lag = ", ".join(f"pid {r['pid']}: {r['staleness']}" for r in pub.readers())
                print(f"update {used}: expected reward {expected_reward(learner, features, means):.3f}, "
                      f"dropped {dropped}, actors behind by (versions) {lag}", flush=True)
    actors.join(60)                         # the actors see PublisherGone and return
    if failure:
        raise failure[0]
    final = expected_reward(learner, features, means)
    print(f"expected reward: initial {initial:.3f} -> final {final:.3f} (optimal "
          f"{float(means.max(-1).values.mean()):.3f}); {used} batches used, {dropped} dropped as stale")
    return 0 if final > initial + 0.2 else 1


def _run(failure: list, fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - given to the main thread
        failure.append(exc)


if __name__ == "__main__":
    sys.exit(main())
