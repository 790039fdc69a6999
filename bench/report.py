"""Turn pytest-benchmark JSON files from bench/ into the markdown tables of README.md and docs/.

    python bench/report.py bench/results/all.json [more.json ...]          # print the tables
    python bench/report.py --docs . bench/results/all.json                 # rewrite them in place
    python bench/report.py --docs . --dry-run bench/results/all.json       # say what would change
    python bench/report.py --readme FILE bench/results/all.json            # one file only

Each table replaces the text between ``<!-- bench:KIND -->`` and ``<!-- /bench:KIND -->``, so the
published figures are the suite's output. ``--docs ROOT`` looks for the markers in ROOT/README.md
and every ROOT/docs/*.md (a table lives on the page about its subject); ``--readme FILE`` in FILE.
"""
from __future__ import annotations

import json
import platform
import statistics
import sys

from report_adaptive import TABLES as ADAPTIVE_TABLES
from report_checkpoints import TABLES as CHECKPOINT_TABLES
from report_data import TABLES as DATA_TABLES
from report_gpu import TABLES as GPU_TABLES
from report_movielens import TABLES as MOVIELENS_TABLES
from report_nodes import TABLES as NODE_TABLES
from report_nodes import of_kind
from report_real import REAL_TABLES
from report_rows import TABLES as ROW_TABLES
from report_schedules import TABLES as SCHEDULE_TABLES
from report_skipgram import TABLES as SKIPGRAM_TABLES
from report_spam_logreg import TABLES as SPAM_TABLES
from report_tables import TABLES as TABLE_TABLES
from report_weights import TABLES as WEIGHTS_TABLES
from report_wordnet_kg import TABLES as WORDNET_KG_TABLES


def machine(data: dict) -> str:
    m = data.get("machine_info", {})
    cpu = m.get("cpu", {}).get("brand_raw", platform.processor() or "?")
    import os
    return f"{cpu}, {os.cpu_count()} logical cores, Python {m.get('python_version', '?')}"


def scaling(benchmarks: list[dict]) -> list[str]:
    rows = ["| problem | algo | protocol | samples/s, 1 worker | samples/s, 2 workers | speed-up |",
            "|---|---|---|---:|---:|---:|"]
    for b in benchmarks:
        e = b.get("extra_info", {})
        if "speedup_2_vs_1" not in e:
            continue
        rows.append(f"| {e['problem']} | {e['algo']} | {e.get('protocol', 'direct')} | "
                    f"{e['samples_per_s_1']:,.0f} | "
                    f"{e['samples_per_s_2']:,.0f} | {e['speedup_2_vs_1']:.2f}x |")
    return rows


def theory(benchmarks: list[dict]) -> list[str]:
    rows = ["| variant | P | K | updates | measured s/update | theory (delay only) | ratio | "
            "theory (compute + delay) | ratio | sampling error (2 SE) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b in benchmarks:
        e = b.get("extra_info", {})
        if e.get("kind") != "theory":
            continue
        se = e.get("sampling_se_rel")
        rows.append(f"| {e['variant']} | {e['workers']} | {e['k']} | {e['updates']} | "
                    f"{e['measured_s'] * 1e3:.2f} ms | "
                    f"{e['theory_s'] * 1e3:.2f} ms ({e['theory_method']}) | {e['ratio']:.3f} | "
                    f"{e['theory_with_compute_s'] * 1e3:.2f} ms | {e['ratio_with_compute']:.3f} | "
                    + ("" if se is None else f"±{2 * se:.1%}") + " |")
    return rows if len(rows) > 2 else []


def dutta(benchmarks: list[dict]) -> list[str]:
    rows = ["| lr policy | lr | workers | delay | updates | staleness mean / max | final loss (optimum) | lr used mean / min |",
            "|---|---:|---:|---|---:|---:|---:|---:|"]
    for b in benchmarks:
        e = b.get("extra_info", {})
        if e.get("kind") != "dutta":
            continue
        rows.append(f"| {e['policy']} | {e['lr']} | {e['workers']} | {e['delay']} | {e['updates']} | "
                    f"{e['staleness_mean']:.1f} / {e['staleness_max']} | {e['final_loss']:.4g} "
                    f"({e['optimum']:.4g}){' diverged' if e['diverged'] else ''} | "
                    f"{e['lr_mean']:.3g} / {e['lr_min']:.3g} |")
    return rows


def leaders(benchmarks: list[dict]) -> list[str]:
    rows = ["| algo | rule, lr | updates in 20 s | samples/s | final eval loss | mean-of-replicas loss | leader changes | pulls |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for b in benchmarks:
        e = b.get("extra_info", {})
        if e.get("kind") != "leaders":
            continue
        avg = "" if e.get("loss_average") is None else f"{e['loss_average']:.4f}"
        rows.append(f"| {e['algo']} | {e['rule']}, {e['lr']:g} | {e['updates']} | {e['samples_per_s']:,.0f} | "
                    f"{e['final_loss']:.4f} | {avg} | {e.get('leader_changes') or ''} | "
                    f"{e.get('pulls') or ''} |")
    return rows


# --------------------------------------------------------------------------- issue 6 kinds
def kernel(benchmarks: list[dict]) -> list[str]:
    rows = ["| parameters | threads | shmopt rule, shared memory | torch fused Adam, private | "
            "torch for-loop Adam, private | fused kernel alone, private | shmopt / fused | "
            "shmopt / for-loop | shmopt / kernel alone |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in of_kind(benchmarks, "kernel"):
        rows.append(f"| {e['params']:,} | {e['threads']} | {e['shmopt_ms']:.3f} ms | "
                    f"{e['fused_ms']:.3f} ms | {e['forloop_ms']:.3f} ms | {e['raw_ms']:.3f} ms | {e['ratio_vs_fused']:.2f}x | "
                    f"{e['ratio_vs_forloop']:.2f}x | {e['ratio_vs_raw']:.2f}x |")
    return rows


def scaling_n(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "scaling_n")
    if not found:
        return []
    counts = found[0]["workers"]
    head = " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in counts)
    rows = [f"| problem | algorithm | {head} | engine CPU, cores ({', '.join(map(str, counts))}) | "
            "other load, cores (max) |",
            "|---|---|" + "---:|" * len(counts) + "---:|---:|"]
    for e in found:
        cells = []
        for w in counts:
            rate, sp = e["samples_per_s"][str(w)], e["speedup"][str(w)]
            cells.append(f"{rate:,.0f}" + ("" if w == counts[0] else f" ({sp:.2f}x)"))
        cpu = " / ".join(f"{e['worker_cores'][str(w)]:.2f}" for w in counts)
        rows.append(f"| {e['problem']} | {e['family']} | {' | '.join(cells)} | {cpu} | "
                    f"{e['other_cores_max']:.2f} |")
    return rows


def baselines(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "baselines")
    if not found:
        return []
    rows = ["| problem | bare loop | mnist_hogwild pattern, 1 process | pattern, 2 processes | "
            "shmopt apam, 1 worker | apam, 2 workers | apam 1, no finiteness check | apam 2, no check |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in found:
        r = e["samples_per_s"]
        rows.append(f"| {e['problem']} | " + " | ".join(
            f"{r[k]:,.0f}" if k in r else "" for k in ("bare", "hog1", "hog2", "apam1", "apam2",
                                                       "apam1_nocheck", "apam2_nocheck")) + " |")
    rows += ["", "| problem | apam 2 / pattern 2 (target >= 1.2) | apam 1 time per step / bare loop "
             "(target <= 1.05) | same two ratios without the finiteness check | speed-up 2/1: apam, "
             "pattern | other load, cores (max) |",
             "|---|---:|---:|---:|---:|---:|"]
    for e in found:
        nocheck = "" if e.get("overhead_1_nocheck") is None else \
            f"{e['apam2_nocheck_vs_hogwild2']:.2f}x, {e['overhead_1_nocheck']:.2f}x"
        rows.append(f"| {e['problem']} | {e['apam2_vs_hogwild2']:.2f}x | {e['overhead_1']:.2f}x | {nocheck} | "
                    f"{e['speedup_apam']:.2f}x, {e['speedup_hogwild']:.2f}x | {e['other_cores_max']:.2f} |")
    return rows


def step_profile(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "step_profile")
    if not found:
        return []
    e = found[0]
    s, b = e["shmopt_ms"], e["bare_ms"]
    rows = [f"| {e['problem']}, ms per step (cProfile) | shmopt worker (apam, 1 worker) | bare loop | "
            "difference |", "|---|---:|---:|---:|"]
    for cat in s:
        if cat == "total":
            continue
        rows.append(f"| {cat} | {s[cat]:.3f} | {b.get(cat, 0.0):.3f} | {s[cat] - b.get(cat, 0.0):+.3f} |")
    rows.append(f"| **total** | **{s['total']:.3f}** | **{b['total']:.3f}** | "
                f"**{s['total'] - b['total']:+.3f}** ({e['ratio_profiled']:.2f}x) |")
    return rows


def memory(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "memory")
    if not found:
        return []
    e = found[0]
    rows = [f"| apam, {e['workers']} workers, {e['params']:,} parameters ({e['param_mb']:.1f} MiB) | "
            "private per worker beyond the runtime: median (min - max; share of samples at the peak) | "
            "of which its snapshot row "
            "(arena pages only it maps) | of which heap | shared (arena), all workers |",
            "|---|---:|---:|---:|---:|"]
    for v, label in e["variants"].items():
        m = e[v]
        share = "" if m.get("peak_share") is None else f"; {m['peak_share']:.0%}"
        rows.append(f"| {v}: {label} | {m['private_x']:.2f}x ({m['private_x_min']:.2f} - "
                    f"{m['private_x_max']:.2f}{share}) | {m['arena_part_x']:.2f}x | {m['heap_part_x']:.2f}x | "
                    f"{m['shared_x']:.2f}x ({m['arena_mb']:.0f} MiB) |")
    if "pattern" in e:
        m = e["pattern"]
        rows.append(f"| PyTorch mnist_hogwild pattern, per process (private Adam state) | "
                    f"{m['private_x']:.2f}x ({m['private_x_min']:.2f} - {m['private_x_max']:.2f}) | | | "
                    f"{m['shared_x']:.2f}x (the parameters) |")
    runtime = f"{e['runtime_uss_mb']:.0f} MiB" + \
        (f" (pattern, spawn: {e['pattern']['runtime_uss_mb']:.0f} MiB)" if "pattern" in e else "")
    rows.append(f"| torch runtime (USS of a worker of a {e['tiny_params']}-parameter model) | "
                f"{runtime} | | | |")
    return rows


def memory_steps(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "memory_steps")
    if not found:
        return []
    e = found[0]
    rows = [f"| one step of a worker, {e['params']:,} parameters | bytes, x parameter bytes |", "|---|---:|"]
    for key, label in (("model_x", "build the model"),
                       ("bound_x", "bind it to one flat buffer (snapshot row)"),
                       ("grad_x", "the flat gradient buffer"),
                       ("backward_peak_x", "during backward: autograd's gradient of a layer before "
                                           "it is added into .grad"),
                       ("largest_layer_x", "(the largest layer)"),
                       ("after_step_x", "left after the step")):
        if key in e:
            rows.append(f"| {label} | {e[key]:.2f}x |")
    return rows


def startup(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "startup")
    if not found:
        return []
    e = found[0]
    rows = [f"| apam, {e['workers']} workers, {e['problem']} | start-up (start to every worker stepping) | "
            "vs warm forkserver | Engine.close() |", "|---|---:|---:|---:|"]
    ratio = {"forkserver_cold": e["cold_vs_warm"], "forkserver_warm": 1.0, "spawn": e["spawn_vs_warm"]}
    label = {"forkserver_cold": "forkserver, first run (cold: imports torch once)",
             "forkserver_warm": "forkserver, later runs (warm)", "spawn": "spawn (every run)"}
    for k in ("forkserver_cold", "forkserver_warm", "spawn"):
        rows.append(f"| {label[k]} | {e['startup_s'][k]:.3f} s | {ratio[k]:.1f}x | {e['close_s'][k]:.3f} s |")
    return rows


def latency(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "latency")
    if not found:
        return []
    e = found[0]
    rows = ["| what | median | max | over rounds |", "|---|---:|---:|---:|"]
    for key, label in (("detect_s", "a SIGKILLed worker is reported (poll every 10 ms)"),
                       ("stop_s", "stop flag to every worker exited by itself, inside a 30 s injected delay"),
                       ("close_s", "Engine.close() after the workers stopped"),
                       ("orphan_s", "supervisor SIGKILLed to every worker exited")):
        rows.append(f"| {label} | {e[key] * 1e3:.0f} ms | {e['max'][key] * 1e3:.0f} ms | {e['rounds']} |")
    return rows


def apam_spread(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "apam_spread")
    if not found:
        return []
    e = found[0]
    rows = [f"| mlp, {e['seconds']:g} s per run, round | apam 2/1 | hogwild 2/1 | apam 2 workers: samples/s, "
            "staleness | apam: update phase ms, 1 / 2 workers | apam: read + forward + backward ms, 1 / 2 |",
            "|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(e["runs"], 1):
        a1, a2 = r["apam1"], r["apam2"]
        rows.append(f"| {i} | {r['apam_speedup']:.2f}x | {r['hogwild_speedup']:.2f}x | {a2['samples_per_s']:,.0f}, "
                    f"{a2['staleness_mean']:.2f} | {a1['apply_ms']:.3f} / {a2['apply_ms']:.3f} | "
                    f"{a1['compute_ms']:.3f} / {a2['compute_ms']:.3f} |")
    rows += ["", f"APAM's 2/1 within 5% of hogwild's in the same round: {e['within_5_percent']} of {e['rounds']} rounds."]
    return rows


def time_limit(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "time_limit")
    if not found:
        return []
    e = found[0]
    per = ", ".join(f"{r['overrun_s']:+.3f} s" for r in e["runs"])
    return ["| a time-limited run whose evaluations take seconds | median | max | over rounds |",
            "|---|---:|---:|---:|",
            f"| lsgd, 4 workers, {e['limit_s']:g} s limit, {e['rows']:,} eval rows (6 models each): "
            f"training stopped after the limit by | {e['overrun_s'] * 1e3:.0f} ms | {e['overrun_max_s'] * 1e3:.0f} ms "
            f"| {e['rounds']} ({per}) |",
            f"| same: the call returned after the limit by (the evaluation in flight at the stop, then the "
            f"final one) | {statistics.median(r['returned_after_s'] for r in e['runs']):.1f} s | "
            f"{max(r['returned_after_s'] for r in e['runs']):.1f} s | {e['rounds']} |"]


def nodes(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "nodes")
    if not found:
        return []
    e = found[0]
    rows = [f"| {e['problem']}, 1 worker per node | samples/s, 1 node | samples/s, 2 nodes | scaling "
            "efficiency | two lone runs at once: efficiency | 2 nodes / two lone runs | bytes sent per "
            "update | collectives in flight |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, m in e["families"].items():
        rows.append(f"| {label} | {m['one_node']:,.0f} | {m['two_nodes']:,.0f} | {m['efficiency']:.2f} | "
                    f"{m['pair_efficiency']:.2f} | {m['vs_pair']:.2f} | {m['bytes_per_update']:,.0f} | "
                    f"{100 * m['comm_share']:.0f}% |")
    return rows


def nodes_peers(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "nodes")
    if not found:
        return []
    e = found[0]
    rows = [f"| 2 ranks / 2 nodes x 1 worker, {e['problem']} | samples/s | time to eval loss "
            f"{e['target']:g} |", "|---|---:|---:|"]
    label = {"ddp": "torch DDP over gloo, AMSGrad", "shmopt sync": "shmopt sync",
             "shmopt apam H=10": "shmopt apam, --exchange-every 10"}
    for name, m in e["peers"].items():
        ttt = "not reached" if m["time_to_target"] is None else f"{m['time_to_target']:.2f} s"
        rows.append(f"| {label[name]} | {m['samples_per_s']:,.0f} | {ttt} |")
    return rows


def targets(benchmarks: list[dict]) -> list[str]:
    """The issue's targets, each with its measured ratio (medians over interleaved rounds)."""
    rows = ["| target | measured | met |", "|---|---:|---|"]

    def add(name: str, value: float | None, ok: bool | None) -> None:
        if value is not None:
            rows.append(f"| {name} | {value:.2f}x | {'yes' if ok else 'no'} |")

    for e in of_kind(benchmarks, "scaling_n"):
        if e["problem"] == "mlp" and e["family"] in ("apam", "hogwild") and "2" in e["speedup"]:
            v = e["speedup"]["2"]
            add(f"mlp {e['family']}: samples/s 2 workers / 1 worker >= 1.85", v, v >= 1.85)
    for e in of_kind(benchmarks, "baselines"):
        v = e["apam2_vs_hogwild2"]
        add(f"{e['problem']}: apam 2 workers / mnist_hogwild pattern 2 processes >= 1.2", v, v >= 1.2)
    for e in of_kind(benchmarks, "kernel"):
        v = e["ratio_vs_fused"]
        add(f"AMSGrad update {e['params']:,}: shared / torch fused private <= 1.10", v, v <= 1.10)
    for e in of_kind(benchmarks, "baselines"):
        v = e["overhead_1"]
        add(f"{e['problem']}: 1 worker time per step / bare loop <= 1.05", v, v <= 1.05)
    for e in of_kind(benchmarks, "memory"):
        v = e["default"]["private_x"]
        add("private memory per worker beyond the runtime <= 2.2x the parameter bytes", v, v <= 2.2)
    return rows if len(rows) > 2 else []


TABLES = {"scaling": scaling, "theory": theory, "dutta": dutta, "leaders": leaders,
          "apam_spread": apam_spread, "time_limit": time_limit, "targets": targets, "kernel": kernel, "scaling_n": scaling_n, "baselines": baselines,
          "step_profile": step_profile, "memory": memory, "memory_steps": memory_steps,
          "startup": startup, "latency": latency, "nodes": nodes, "nodes_peers": nodes_peers,
          **NODE_TABLES, **GPU_TABLES, **REAL_TABLES, **ADAPTIVE_TABLES, **ROW_TABLES, **TABLE_TABLES,
          **MOVIELENS_TABLES, **WORDNET_KG_TABLES, **SPAM_TABLES, **SKIPGRAM_TABLES, **SCHEDULE_TABLES,
          **DATA_TABLES, **WEIGHTS_TABLES, **CHECKPOINT_TABLES}


def doc_files(root: str) -> list[str]:
    """README.md and docs/*.md under ``root``: every file that may hold a bench marker."""
    import glob
    import os
    files = [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    return [f for f in files if os.path.isfile(f)]


def update_docs(files: list[str], paths: list[str], dry_run: bool = False) -> None:
    """Rewrite the tables between the bench markers of ``files`` from the JSON files ``paths``."""
    import re
    benchmarks, machines = [], []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        benchmarks += data["benchmarks"]
        machines.append(f"{machine(data)} ({data.get('datetime', '')[:10]})")
    texts = {}
    for name in files:
        with open(name, encoding="utf-8") as f:
            texts[name] = f.read()
    for kind, fn in TABLES.items():
        rows = fn(benchmarks)
        if len(rows) <= 2:
            continue
        block = "\n".join(rows) + f"\n\n_Measured on {machines[0]}._"
        found = False
        for name, text in texts.items():
            new, n = re.subn(rf"(<!-- bench:{kind} -->\n)(.*?\n)?(<!-- /bench:{kind} -->)",
                             lambda m: m.group(1) + block + "\n" + m.group(3), text, flags=re.S)
            if n:
                found = True
                what = "would change" if new != text else "unchanged"
                print(f"{kind}: {name} ({what})" if dry_run else f"updated the {kind} table in {name}")
                texts[name] = new
        if not found:
            print(f"{kind}: no <!-- bench:{kind} --> marker in {', '.join(files)}", file=sys.stderr)
    if dry_run:
        return
    for name, text in texts.items():
        with open(name, "w", encoding="utf-8") as f:
            f.write(text)


def main(args: list[str]) -> None:
    files, dry_run, paths = None, False, []
    i = 0
    while i < len(args):
        if args[i] == "--readme":
            files, i = [args[i + 1]], i + 2
        elif args[i] == "--docs":
            files, i = doc_files(args[i + 1]), i + 2
        elif args[i] == "--dry-run":
            dry_run, i = True, i + 1
        else:
            paths.append(args[i])
            i += 1
    if files is not None:
        if not files:
            sys.exit("report.py: no README.md or docs/*.md there")
        update_docs(files, paths, dry_run)
        return
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        print(f"Measured on: {machine(data)} ({data.get('datetime', '')[:10]})\n")
        for table in TABLES.values():
            rows = table(data["benchmarks"])
            if rows and len(rows) > 2:
                print("\n".join(rows))
                print()
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
