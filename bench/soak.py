"""Soak run: hours of training compressed into minutes; memory must stay flat, counts exact,
nothing left behind.

    python bench/soak.py --minutes 10 --workers 4 --algo apam            # 2 x cores on 2 cores
    python bench/soak.py --minutes 10 --workers 4 --algo k-async --k 2

Samples the resident (RSS) and private (USS) memory of every worker and of the supervisor every
``--every`` seconds. Passes when each process's RSS at the end is within 5% of its RSS after the
warm-up (the first minute, or 10% of the run), when the counters agree (per-worker update counters
sum to the updates applied; every applied gradient is in the staleness histogram; the server's
version equals its update count), and when no shmopt segment or worker process is left.
Prints one JSON object; exit code 0 on pass, 1 on fail.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import psutil


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    ap.add_argument("--algo", default="apam")
    ap.add_argument("--k", type=int)
    ap.add_argument("--problem", default="logreg")
    ap.add_argument("--every", type=float, default=10.0)
    args = ap.parse_args()

    from shmopt import Config, Engine
    from shmopt.memory.shm import list_segments, owner_pid
    from shmopt.problems import load_problem

    seconds = args.minutes * 60
    cfg = Config(algo=args.algo, workers=args.workers, k=args.k, time_limit=seconds + 3600,
                 eval_interval=5.0)
    eng = Engine(load_problem(args.problem), cfg)
    eng.start()
    me = psutil.Process()
    samples = []
    t0 = time.time()
    try:
        while time.time() - t0 < seconds:
            deadline = time.time() + args.every
            while time.time() < deadline:
                if eng.poll():
                    break
                time.sleep(0.05)
            row = {"t": round(time.time() - t0, 1), "updates": eng.updates(),
                   "supervisor_rss": me.memory_info().rss}
            for r, p in enumerate(eng.procs):
                mi = psutil.Process(p.pid).memory_full_info()
                row[f"rss_{r}"], row[f"uss_{r}"] = mi.rss, mi.uss
            samples.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        eng.stop_reason = "soak"
        ctrl = eng.arena.array("ctrl")
        P = eng.plan.workers
        updates = eng.updates()
        applied = int(ctrl["applied"].sum())
        hist = int(ctrl["stale_hist"].sum())
        if eng.plan.protocol == "server":
            counts_ok = updates == int(ctrl[P]["updates"]) and applied == hist == updates * eng.plan.k
        else:
            counts_ok = updates == int(ctrl["updates"][:P].sum()) == applied == hist
        pids = [p.pid for p in eng.procs]
    finally:
        eng.close()
    warm = next((s for s in samples if s["t"] >= min(60.0, 0.1 * seconds)), samples[0])
    last = samples[-1]
    growth = {k: (last[k] - warm[k]) / warm[k] for k in warm if k.startswith(("rss_", "supervisor"))}
    leftover = [n for n in list_segments() if owner_pid(n) == os.getpid()]
    alive = [pid for pid in pids if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    ok = all(abs(g) <= 0.05 for g in growth.values()) and counts_ok and not leftover and not alive
    print(json.dumps({"pass": ok, "minutes": args.minutes, "algo": args.algo, "workers": args.workers,
                      "updates": updates, "applied": applied, "hist": hist, "counts_exact": counts_ok,
                      "rss_growth_after_warmup": {k: round(v, 4) for k, v in growth.items()},
                      "rss_warm_mib": {k: round(v / 2**20, 1) for k, v in warm.items() if "rss" in k},
                      "rss_last_mib": {k: round(v / 2**20, 1) for k, v in last.items() if "rss" in k},
                      "segments_left": leftover, "processes_left": alive}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
