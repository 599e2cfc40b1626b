"""The package's import graph: no cycles between packages, and no import from a lower layer to a higher
one (the layering README.md's "Layout" section writes down). Imports inside functions count too."""

import ast
import collections
from pathlib import Path

import keras_ssl3d

ROOT = Path(keras_ssl3d.__file__).parent
# Bottom to top; a unit (a subpackage or a top-level module) may import its own and lower layers only.
# The package root (``keras_ssl3d/__init__``: the public names) sits just below the CLI; below it only
# ``presets.io`` imports it, to register every serializable class before deserialising a model.
LAYERS = [
    {"version", "errors", "fileio", "home", "host", "names", "native_logs"},
    {"distribute", "training"},
    {"data", "layers", "losses"},
    {"presets"},
    {"models"},
    {"tasks", "finetune"},
    {"zoo"},
    {"demo", "integrations"},
    {"keras_ssl3d"},
    {"cli"},
]
REGISTRATION = {("presets", "keras_ssl3d")}  # (importer unit, imported unit) allowed as said above


def unit(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "keras_ssl3d"


def module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports():
    """``{module: {imported keras_ssl3d module}}`` for every module of the package."""
    found = collections.defaultdict(set)
    for path in ROOT.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found[name] |= {a.name for a in node.names if a.name.split(".")[0] == "keras_ssl3d"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                if base.split(".")[0] != "keras_ssl3d":
                    continue
                for alias in node.names:  # `from keras_ssl3d import data` imports the module keras_ssl3d.data
                    full = f"{base}.{alias.name}"
                    sub = ROOT.parent / full.replace(".", "/")
                    found[name].add(full if sub.with_suffix(".py").is_file() or sub.is_dir() else base)
    return found


def layer_of(name):
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"{name} is in no layer of tests/test_layering.py (and README.md's Layout)")


def test_every_unit_has_a_layer():
    for path in ROOT.rglob("*.py"):
        layer_of(unit(module_name(path)))


def test_no_import_goes_up_a_layer():
    upward = []
    for module, targets in imports().items():
        here = unit(module)
        for target in targets:
            there = unit(target)
            if here == there or (here, there) in REGISTRATION:
                continue
            if layer_of(there) > layer_of(here):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_modules():
    graph = imports()
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_imports_inside_functions():
    assert "keras_ssl3d.data.preprocess" in imports()["keras_ssl3d.data.cache"]  # a function-level import
