"""Fake nodes for the tests across nodes: each node a ``python -m shmopt run`` with one thread,
linked by gloo over 127.0.0.1, under hard timeouts; helpers to read what they leave."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import torch

from shmopt.memory.shm import list_segments, owner_pid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARD_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def launch(algo: str, *args: str, problem: str = "logreg", nodes: int = 2, workers=(1, 1),
           timeout: float = 10.0, per_node: dict[int, list[str]] | None = None) -> list[subprocess.Popen]:
    """``nodes`` fake nodes; ``per_node`` adds options to some nodes only (``--slow``)."""
    port, per_node = free_port(), per_node or {}
    workers = tuple(workers) + (workers[-1],) * (nodes - len(workers))
    return [subprocess.Popen(
        [sys.executable, "-m", "shmopt", "run", problem, "--algo", algo, "-w", str(workers[r]),
         "--threads", "1", "--nnodes", str(nodes), "--node-rank", str(r), "--master",
         f"127.0.0.1:{port}", "--dist-timeout", str(timeout), "--json", "-q", *args, *per_node.get(r, [])],
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True) for r in range(nodes)]


def finish(procs: list[subprocess.Popen], timeout: float = HARD_S) -> list[tuple[int, dict | None, str]]:
    out = []
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            so, se = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            stats = json.loads(so.strip().splitlines()[-1]) if so.strip() else None
            out.append((p.returncode, stats, se))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return out


def no_segment_of(procs) -> None:
    pids = {p.pid for p in procs}
    deadline = time.monotonic() + 5
    while any(owner_pid(n) in pids for n in list_segments()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [n for n in list_segments() if owner_pid(n) in pids]


def wait_training(path: str, timeout: float = 60.0) -> None:
    """Until the node's log has a sample after t = 0 (its link met the others, workers run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and sum(1 for _ in open(path)) >= 2:
            return
        time.sleep(0.1)
    raise AssertionError("the nodes did not start training")


def ok(results):
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    return [s for _, s, _ in results]


def load(path):
    return torch.load(path, weights_only=True)


def same_model(a: str, b: str) -> bool:
    sa, sb = load(a), load(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
