"""The docs tables of bench/test_nodes_server.py (server protocols across nodes)."""
from __future__ import annotations


def of_kind(benchmarks: list[dict], kind: str) -> list[dict]:
    """The benchmark entries whose extra_info kind is ``kind`` (shared by the report*.py scripts)."""
    return [b["extra_info"] for b in benchmarks if b.get("extra_info", {}).get("kind") == kind]


def theory_nodes(benchmarks: list[dict]) -> list[str]:
    rows = ["| variant | nodes x workers | K | updates | measured s/update | theory (delay only) | ratio "
            "| theory (compute + delay) | ratio | sampling error (2 SE) | messages per update |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in of_kind(benchmarks, "theory_nodes"):
        rows.append(f"| {e['variant']} | 2 x 1 | {e['k']} | {e['updates']} | {e['measured_s'] * 1e3:.2f} ms "
                    f"| {e['theory_s'] * 1e3:.2f} ms | {e['ratio']:.3f} | {e['theory_with_compute_s'] * 1e3:.2f} "
                    f"ms | {e['ratio_with_compute']:.3f} | ±{200 * e['sampling_se_rel']:.1f}% | "
                    f"{e['messages_per_update']:.2f} |")
    return rows


def target_nodes(benchmarks: list[dict]) -> list[str]:
    found = of_kind(benchmarks, "target_nodes")
    if not found:
        return []
    rows = [f"| 2 nodes x 1 worker, logreg, delays {found[0]['delay']} | time to loss {found[0]['target']:g} "
            "| updates | samples/s (both nodes) |", "|---|---:|---:|---:|"]
    for e in found:
        ttt = "not reached" if e["time_to_target"] is None else f"{e['time_to_target']:.2f} s"
        rows.append(f"| {e['name']} | {ttt} | {e['updates']:,} | {e['samples_per_s']:,.0f} |")
    return rows


def applier_nodes(benchmarks: list[dict]) -> list[str]:
    rows = ["| apam --protocol server, 2 nodes x 1 worker | parameters | updates/s | messages per update "
            "| bytes per update | applier CPU per update | remote node's gradients/s | saturates near |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e in of_kind(benchmarks, "applier_nodes"):
        rows.append(f"| {e['problem']} | {e['parameters']:,} | {e['updates_per_s']:,.0f} | "
                    f"{e['messages_per_update']:.2f} | {e['bytes_per_update']:,.0f} | "
                    f"{e['applier_cpu_ms']:.3f} ms | {e['remote_gradients_per_s']:,.0f} | "
                    f"{e['saturation_nodes']:.1f} nodes |")
    return rows


TABLES = {"theory_nodes": theory_nodes, "target_nodes": target_nodes, "applier_nodes": applier_nodes}
