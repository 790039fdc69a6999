"""The docs tables of bench/test_cuda_gpu.py (the CUDA arena on one GPU)."""
from __future__ import annotations

from report_nodes import of_kind


def gpu_scaling(benchmarks: list[dict]) -> list[str]:
    rows = ["| problem (GPU) | torch Adam(fused) 1 process, samples/s | 1 worker | 2 workers | 4 workers "
            "| device memory per worker |", "|---|---:|---:|---:|---:|---:|"]
    for e in of_kind(benchmarks, "gpu_scaling"):
        w = e["workers"]
        cells = " | ".join(f"{w[k]['samples_per_s']:,.0f} ({w[k]['vs_baseline']:.2f}x)" for k in ("1", "2", "4"))
        rows.append(f"| {e['problem']} ({e['device']}) | {e['baseline_samples_per_s']:,.0f} | {cells} | "
                    f"{w['2']['mem_per_worker_mib']:,.0f} MiB |")
    return rows


def gpu_step(benchmarks: list[dict]) -> list[str]:
    rows = ["| fused AMSGrad step | shared (CUDA IPC) | private | shared / private | attach per worker |",
            "|---|---:|---:|---:|---:|"]
    for e in of_kind(benchmarks, "gpu_step"):
        rows.append(f"| {e['params']:,} parameters | {e['shared_ms']:.3f} ms | {e['private_ms']:.3f} ms | "
                    f"{e['ratio']:.2f} | {e['attach_ms']:.0f} ms |")
    return rows


TABLES = {"gpu_scaling": gpu_scaling, "gpu_step": gpu_step}
