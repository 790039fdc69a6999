"""Before/after: the same runs on two revisions, interleaved in one session, medians of ratios.

    python bench/ab.py --base REV [--rounds 5] [--seconds 3] [--only TEXT] [--json FILE]

Checks out REV into a temporary git worktree, then for each case alternates a run of the base
and of this working tree (each in its own subprocess with its own PYTHONPATH, the order flipped
every round) and reports samples/s of both and the median of the per-round ratios new/base.
Absolute rates swing by 3x between sessions on shared machines; a ratio measured interleaved
does not. The worktree is removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = [("mlp", "apam", "direct", 1), ("mlp", "apam", "direct", 2), ("mlp", "hogwild", "direct", 2),
         ("mlp", "apam", "server", 2), ("mlp", "k-async", "server", 2), ("mlp", "lsgd", "replicas", 2),
         ("logreg", "apam", "direct", 2), ("logreg", "apam", "server", 2)]
SNIPPET = """
import json, shmopt
p = shmopt.load_problem({problem!r})
shmopt.train(p, algo={algo!r}, workers=2, steps=20)       # warm the forkserver
r = shmopt.train(p, algo={algo!r}, protocol={protocol!r}, workers={workers}, time_limit={seconds},
                 eval_interval=1.0)
print(json.dumps(r.stats["samples_per_s"]))
"""


def run(tree: str, case: tuple, seconds: float) -> float:
    problem, algo, protocol, workers = case
    code = SNIPPET.format(problem=problem, algo=algo, protocol=protocol, workers=workers, seconds=seconds)
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True,
                         timeout=300, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision to compare against")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--only", help="run only the cases whose name contains this, e.g. 'mlp lsgd'")
    ap.add_argument("--json", help="write the results to this file")
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix="shmopt-ab-")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "-q", "--detach", base, a.base], check=True)
    rows = []
    try:
        for case in [c for c in CASES if not a.only or a.only in " ".join(map(str, c))]:
            rates: dict[str, list[float]] = {"base": [], "new": []}
            for i in range(a.rounds):
                order = [("base", base), ("new", ROOT)]
                for name, tree in (order if i % 2 == 0 else order[::-1]):
                    rates[name].append(run(tree, case, a.seconds))
            ratio = statistics.median(n / b for n, b in zip(rates["new"], rates["base"]))
            row = {"case": " ".join(map(str, case)), "base": statistics.median(rates["base"]),
                   "new": statistics.median(rates["new"]), "new_over_base": ratio, "rates": rates}
            rows.append(row)
            print(f"{row['case']:<28} base {row['base']:>10,.0f}  new {row['new']:>10,.0f} samples/s  "
                  f"new/base {ratio:.3f}", flush=True)
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", base], check=False)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"base": a.base, "rounds": a.rounds, "seconds": a.seconds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
