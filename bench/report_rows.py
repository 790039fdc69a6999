"""The docs table of bench/test_row_rules.py (row update rules against torch's sparse optimizers)."""
from __future__ import annotations

from report_nodes import of_kind

_LABEL = {"sgd": "RowSGD", "adagrad": "RowAdagrad", "lazy_adam": "LazyAdam",
          "rowwise_adagrad": "RowwiseAdagrad", "lazy_amsgrad": "LazyAdam(amsgrad=True)",
          "rowwise_amsgrad": "RowwiseAMSGrad"}
_STATE_LABEL = {"row_sgd": "RowSGD", "row_adagrad": "RowAdagrad", "rowwise_adagrad": "RowwiseAdagrad",
                "lazy_adam": "LazyAdam", "lazy_amsgrad": "LazyAdam(amsgrad=True)",
                "rowwise_amsgrad": "RowwiseAMSGrad", "rowwise_amsgrad_b1_0": "RowwiseAMSGrad(betas=(0, b2))"}


def _speed(found: list[dict]) -> list[str]:
    e0 = found[0]
    rows = [f"| rule, table {e0['rows']:,} x {e0['dim']}, batches of {e0['batch']:,} rows "
            f"(~{e0['distinct_rows_mean']:,.0f} distinct) | torch optimizer, private | rows/s torch | "
            "rows/s ours, shared memory | ours / torch: median (IQR) | goal >= 0.8x | "
            "shared / private time |", "|---|---|---:|---:|---:|---|---:|"]
    for e in found:
        torch_name = e["torch_optimizer"] if e["same_update"] else \
            f"none; {e['torch_optimizer']} for scale (another rule)"
        met = ("yes" if e["goal_met"] else "**no**") if e["same_update"] else "n/a"
        rows.append(f"| {_LABEL.get(e['case'], e['rule'])} | {torch_name} | {e['rows_per_s_torch'] / 1e6:.2f} M | "
                    f"{e['rows_per_s_ours'] / 1e6:.2f} M | {e['ratio']:.2f}x ({e['ratio_q1']:.2f} - "
                    f"{e['ratio_q3']:.2f}) | {met} | {e['shared_vs_private']:.2f}x |")
    return rows


def _state(e: dict) -> list[str]:
    mib = 1 << 20
    rows = [f"| rule: state of a ({e['rows']:,}, {e['dim']}) table | buffers | element-wise bytes / "
            "parameter | row-wise bytes / parameter | total | MiB |", "|---|---|---:|---:|---:|---:|"]
    for name, s in e["rules"].items():
        bufs = ", ".join(f"{k} ({', '.join(f'{n:,}' for n in shape)})" for k, shape in s["buffers"].items())
        rows.append(f"| {_STATE_LABEL.get(name, name)} | {bufs or 'none'} | {s['element_wise_per_param']:.3g} | "
                    f"{s['row_wise_per_param']:.3g} | {s['bytes_per_param']:.3g} | "
                    f"{s['state_bytes'] / mib:,.1f} |")
    return rows


def row_rules(benchmarks: list[dict]) -> list[str]:
    """Rows/s of each row rule against torch, then the state bytes per parameter of each rule."""
    speed, state = of_kind(benchmarks, "row_rules"), of_kind(benchmarks, "row_state")
    parts = ([_speed(speed)] if speed else []) + ([_state(state[0])] if state else [])
    return [line for i, part in enumerate(parts) for line in ([""] if i else []) + part]


TABLES = {"row_rules": row_rules}
