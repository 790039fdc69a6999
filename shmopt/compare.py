"""Error-runtime comparison: several algorithms on one problem, same seeds and delays.

Dutta et al.'s central figure is the eval loss against wall-clock time, one line per algorithm:
asynchrony makes each update cheaper, synchrony lowers the error floor. :func:`compare` runs the
algorithms one after the other (never concurrently: they would share the cores), returns one
combined history and writes it as CSV or JSON lines; :func:`plot` draws it when matplotlib is
installed (the ``plot`` extra).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any, Callable

from .config import Config
from .engine.record import Result
from .engine.supervisor import Engine
from .errors import ConfigError
from .plan import resolve
from .problems import Problem
from .tensorboard import TensorBoard

COLUMNS = ("algo", "label", "t", "updates", "loss", "accuracy", "samples_per_s", "staleness_mean",
           "gradients", "dropped")
PLOT_HINT = "install matplotlib for the plot: pip install 'shmopt[plot]' (or pip install matplotlib)"


def parse_algos(spec: str) -> list[tuple[str, int | str | None]]:
    """``"sync,k-async:2,hogwild"`` -> [("sync", None), ("k-async", 2), ("hogwild", None)];
    ``k-sync:adaptive`` is adaptive K."""
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            raise ConfigError(f"invalid algos={spec!r}: give a comma-separated list like "
                              f"sync,k-async:2,hogwild (NAME or NAME:K)")
        name, _, k = item.partition(":")
        if k and not (k.isdigit() or k == "adaptive"):
            raise ConfigError(f"invalid algos entry {item!r}: K must be a positive integer or "
                              f"adaptive (NAME:K)")
        out.append((name, int(k) if k.isdigit() else k or None))
    return out


def label(algo: str, k: int | str | None) -> str:
    return algo if k is None else f"{algo} (K={k})"


def compare(problem: Problem, algos: list[tuple[str, int | str | None]], base: Config, *,
            source: str | None = None, on_result: Callable[[str, Result], None] | None = None,
            tensorboard: str | None = None) -> tuple[list[dict], list[dict]]:
    """Run every algorithm with ``base``'s options; return (rows, summaries). Every configuration
    is validated before the first run starts. With ``tensorboard``, each run writes its scalars
    into a subfolder named after its label."""
    configs = [dataclasses.replace(base, algo=a, k=k) for a, k in algos]
    for c in configs:
        resolve(c, problem)
    rows, summaries = [], []
    for (algo, k), cfg in zip(algos, configs):
        name = label(algo, k)
        tb = TensorBoard(os.path.join(tensorboard, name.replace(" ", ""))) if tensorboard else None
        try:
            result = Engine(problem, cfg, source=source, on_sample=tb.sample if tb else None).run()
        finally:
            if tb:
                tb.close()
        for h in result.history:
            rows.append({"algo": algo, "label": name, **{c: h.get(c) for c in COLUMNS[2:]}})
        st = dict(result.stats, label=name)
        if base.target_loss is not None:
            hit = [h["t"] for h in result.history if h["loss"] is not None and h["loss"] <= base.target_loss]
            st["time_to_target_s"] = hit[0] if hit else None
        if base.target_accuracy is not None:
            hit = [h["t"] for h in result.history if h.get("accuracy", -1.0) >= base.target_accuracy]
            st["time_to_accuracy_s"] = hit[0] if hit else None
        summaries.append(st)
        if on_result:
            on_result(name, result)
    return rows, summaries


def write_rows(rows: list[dict], path: str) -> None:
    """CSV (``.csv``) or JSON lines (anything else)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        if path.endswith(".csv"):
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)
        else:
            for r in rows:
                f.write(json.dumps(r) + "\n")


def read_rows(path: str) -> list[dict]:
    """Read a log written by :func:`write_rows` (CSV or JSON lines)."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.endswith(".csv"):
            rows = list(csv.DictReader(f))
            for r in rows:
                for c in COLUMNS[2:]:
                    r[c] = float(r[c]) if r.get(c) not in (None, "") else None
            return rows
        return [json.loads(line) for line in f if line.strip()]


def plot(rows: list[dict], path: str, title: str = "") -> bool:
    """Eval loss (and test accuracy, when logged) against wall-clock time, one line per algorithm.
    False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    accuracy = any(r.get("accuracy") not in (None, "") for r in rows)
    fig, axes = plt.subplots(1, 2 if accuracy else 1, figsize=(12 if accuracy else 7, 4.5), squeeze=False)
    labels: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        labels.setdefault(r["label"], []).append(r)
    panels = [("loss", "eval loss", "log")] + ([("accuracy", "test accuracy", "linear")] if accuracy else [])
    for ax, (column, what, scale) in zip(axes[0], panels):
        for name, rs in labels.items():
            rs = [r for r in rs if r.get(column) not in (None, "")]
            ax.plot([r["t"] for r in rs], [r[column] for r in rs], marker=".", label=name)
        ax.set_xlabel("wall-clock time (s)")
        ax.set_ylabel(what)
        ax.set_yscale(scale)
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[0][0].set_title(title or "error-runtime trade-off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
