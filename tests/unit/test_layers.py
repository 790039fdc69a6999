"""The import structure of the package: no import circle, and no import from a lower layer up.

The layers, bottom up (docs/design.md draws them): the foundation every layer uses (errors,
checks) | math (rules) | strategies | memory and problems | the plan (config, its rules, plan,
node_plan, devices) | the engine | the front ends (api, cli, compare, top, advise, the shared
optimizers, ...) | the package's ``__init__``. A module may import its own layer and the layers
below it. Every import counts, at module level or inside a function.
"""
from __future__ import annotations

import ast
import pathlib

import shmopt

ROOT = pathlib.Path(shmopt.__file__).parent
LAYERS = [
    {"errors", "checks"},
    {"rules"},
    {"strategies"},
    {"memory", "problems"},
    {"config", "config_rules", "plan", "node_plan", "table_plan", "devices"},
    {"engine"},
    {"api", "cli", "cli_options", "compare", "quickbench", "top", "advise", "progress", "tensorboard",
     "shared", "data_cli", "launch", "launch_worker", "weights", "weight_rows", "export"},
    {"__init__", "__main__"},
]


def _name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    """The shmopt modules ``path`` imports (relative to the package, e.g. ``engine.roles``)."""
    me = _name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("shmopt"):
                mod = node.module[len("shmopt."):] if node.module != "shmopt" else ""
            else:
                continue
            names = [f"{mod}.{a.name}" if mod else a.name for a in node.names]
            out |= {n for n in names if _module_path(n)} or ({mod} if mod else set())
        elif isinstance(node, ast.Import):
            out |= {a.name[len("shmopt."):] for a in node.names if a.name.startswith("shmopt.")}
    return {m for m in out if m and m != me}


def _module_path(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


GRAPH = {_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def test_every_module_has_a_layer():
    for module in GRAPH:
        _layer(module)                  # StopIteration: a new top-level module needs a layer


def test_no_import_from_a_lower_layer_up():
    up = [f"{m} imports {d}" for m, deps in GRAPH.items() for d in deps
          if d in GRAPH and _layer(d) > _layer(m)]
    assert up == []


def test_the_loops_never_import_the_node_code():
    """Inside the engine the node package uses the loops' pieces (start, the applier's LocalIO),
    never the other way round: the entry point hands the applier its IO."""
    back = [f"{m} imports {d}" for m, deps in GRAPH.items() for d in deps
            if m.startswith("engine.loops") and d.startswith("engine.nodes")]
    assert back == []


def test_no_import_circle():
    done: set[str] = set()

    def visit(m: str, stack: list[str]) -> None:
        if m in stack:
            raise AssertionError("import circle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in done:
            return
        for d in sorted(GRAPH.get(m, ())):
            if d.startswith(m + "."):       # a package importing its own modules is not a circle
                continue
            visit(d, stack + [m])
        done.add(m)

    for m in sorted(GRAPH):
        visit(m, [])
