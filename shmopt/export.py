"""``shmopt export CKPT OUT``: a checkpoint's trained model in plain PyTorch.

It writes the model's ``state_dict`` to ``OUT.pt``, a file that ``torch.load(..., weights_only=True)``
loads into the problem's model. When the ``safetensors`` package is present, it also writes
``OUT.safetensors``. The optimizer state goes to ``OUT.optim.pt`` in ``torch.optim``'s
``state_dict`` format (per parameter ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` or
``momentum_buffer`` and ``step``; one param group with the rule's hyper-parameters): it loads into
``torch.optim.Adam(amsgrad=...)`` or ``SGD(momentum=...)`` over the model's dense parameters.

The model is the one the run would have handed back: the shared parameters, or what the replica
method calls its model. It is rebuilt from the problem the checkpoint was trained on. The run's
problem spec and options, recorded in the checkpoint, are used unless ``problem`` is given. The
checkpoint is checked as a resume would check it: its digest, and the model, data and layout that
must fit.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import click
import torch

from .checks import output_path
from .config import Config
from .engine import checkpoint
from .engine.supervisor import Engine
from .errors import ConfigError
from .problems import load_problem, parse_options
from .shared.torch_state import TORCH_KEYS

__all__ = ["export_checkpoint", "export_command"]


def _outputs(out: str) -> dict[str, str]:
    stem = out[:-3] if out.endswith(".pt") else out
    return {"model": stem + ".pt", "safetensors": stem + ".safetensors", "optimizer": stem + ".optim.pt"}


def _optimizer_state(eng: Engine, model: torch.nn.Module, state: dict[str, Any], updates: int) -> dict:
    """The rule's state of the dense parameters, per parameter, in torch.optim's format."""
    rule, table_names = eng.plan.rule, {t.name for t in eng.plan.tables}
    hyper = {k: v for k, v in dataclasses.asdict(rule).items() if isinstance(v, (int, float, bool, tuple))}
    out, ids, offset = {}, [], 0
    for i, p in enumerate(p for n, p in model.named_parameters() if n not in table_names):
        n = p.numel()
        out[i] = {"step": torch.tensor(float(updates)),
                  **{TORCH_KEYS[k]: torch.from_numpy(v[offset:offset + n]).view_as(p).clone()
                     for k, v in state.items()}}
        ids.append(i)
        offset += n
    return {"state": out, "param_groups": [{**hyper, "params": ids}]}


def export_checkpoint(path: str, out: str, problem: str | None = None,
                      problem_options: dict[str, Any] | None = None) -> dict[str, str]:
    """Write the files of the module text; {kind: path} of what was written. ConfigError (nothing
    written) for a missing or foreign checkpoint, an output folder that cannot be written, or a
    problem the checkpoint does not fit."""
    outputs = _outputs(out)
    for kind, p in outputs.items():
        output_path(kind, p)
    doc = checkpoint.load(path)
    recorded = doc.get("problem") or {}
    spec = problem or recorded.get("source")
    if not spec:
        raise ConfigError(f"checkpoint {path!r} does not say which problem it trained (a run from Python "
                          f"with a Problem object): give it, e.g. shmopt export {path} {out} --problem mlp")
    options = dict(problem_options or {})
    if problem is None:                       # the run's own options, then what is given here
        options = {**recorded.get("options", {}), **options}
    prob = load_problem(spec, **options)
    config = Config.from_dict({**doc["config"], "resume": path, "checkpoint": None, "log": None})
    eng = Engine(prob, config, source=spec)
    try:
        model, state, updates = eng.restored()
        opt_state = _optimizer_state(eng, model, state, updates)
    finally:
        eng.close()
    written = {"model": outputs["model"]}
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    torch.save(tensors, outputs["model"])
    try:
        from safetensors.torch import save_file
    except ImportError:
        pass
    else:
        save_file(tensors, outputs["safetensors"])
        written["safetensors"] = outputs["safetensors"]
    torch.save(opt_state, outputs["optimizer"])
    written["optimizer"] = outputs["optimizer"]
    return written


@click.command("export")
@click.argument("checkpoint_path", metavar="CKPT")
@click.argument("out", metavar="OUT")
@click.option("--problem", default=None,
              help="The problem the checkpoint trained [default: the one it records].")
@click.option("-o", "options", multiple=True, metavar="KEY=VALUE", help="A problem option (repeatable).")
def export_command(checkpoint_path: str, out: str, problem: str | None, options: tuple[str, ...]) -> None:
    """Write CKPT's trained model as OUT.pt (torch.load(weights_only=True)), OUT.safetensors (with
    the safetensors package) and its optimizer state as OUT.optim.pt (torch.optim's format)."""
    if not os.path.isfile(checkpoint_path):
        raise ConfigError(f"checkpoint {checkpoint_path!r} does not exist")
    written = export_checkpoint(checkpoint_path, out, problem, parse_options(options) if options else None)
    for kind, p in written.items():
        click.echo(f"{kind:>12}  {p}")
