"""Fake nodes for the benchmarks: one ``python -m shmopt run`` per node, one worker and one thread
each, gloo over 127.0.0.1; returns every node's JSON summary."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_nodes(algo: str, args: tuple[str, ...], nodes: int, problem: str, log: str | None = None,
              per_node: dict[int, tuple[str, ...]] | None = None, timeout: float = 300.0) -> list[dict]:
    """One job of ``nodes`` fake nodes x 1 worker (``nodes`` = 1: a plain single-node run);
    ``per_node`` adds options to some nodes only (``--slow``)."""
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "shmopt", "run", problem, "--algo", algo, "-w", "1", "--threads", "1",
            "--json", "-q", *args]
    if log:
        base += ["--log", log, "--eval-interval", "0.25"]
    if nodes > 1:
        port = _port()
        cmds = [base + ["--nnodes", str(nodes), "--node-rank", str(r), "--master", f"127.0.0.1:{port}",
                        "--dist-timeout", "30", *(per_node or {}).get(r, ())] for r in range(nodes)]
    else:
        cmds = [base]
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in cmds]
    out = []
    for p in procs:
        so, se = p.communicate(timeout=timeout)
        assert p.returncode == 0, se[-2000:]
        out.append(json.loads(so.strip().splitlines()[-1]))
    return out
