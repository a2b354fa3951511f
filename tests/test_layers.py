"""The layers run one way: the import graph of `vivid/`, `app.py` and `train/`, built from the
code's own `import` statements (also those inside functions and under TYPE_CHECKING), has no
circle, and no module imports one of a higher layer than its own. The layers are the README's
("What is here"), from the bottom up."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

#: The README's layers, bottom first: (name, module prefixes). A module is in the layer of its
#: longest matching prefix; "vivid" alone is the package's own __init__ (its public names).
LAYERS = [
    ("foundations", ["vivid.errors", "vivid.disk_space", "vivid.turns", "vivid.job_memory", "vivid.checks", "vivid.paths", "vivid.memory", "vivid.interrupts",
                     "vivid.native_log", "vivid.deferred_imports", "vivid.terminal", "vivid.background",
                     "vivid.precision", "vivid.events", "vivid.windows", "vivid.sampling", "vivid.media",
                     "vivid.job_folders", "vivid.server_limits", "vivid.native_warp"]),
    ("faces", ["vivid.face"]),
    ("conditioning and networks", ["vivid.conditioning", "vivid.models"]),
    ("the engines' own code", ["vivid.pipeline", "vivid.preview", "vivid.preview_stream", "vivid.warp_guidance",
                               "vivid.live", "vivid.driving", "vivid.still_edit", "vivid.source_video"]),
    ("engines, options, the model host and training", ["vivid.options", "vivid.model_host", "vivid.engines",
                                                       "vivid.training"]),
    ("the animation job", ["vivid.animation", "vivid.page_jobs"]),
    ("front ends", ["vivid.cli", "vivid.__main__", "vivid.option_flags", "vivid.evaluation", "app", "train", "vivid"]),
]


def module_files() -> dict[str, Path]:
    """Every module of the package, the app and the training scripts, by its dotted name."""
    files = {"app": ROOT / "app.py"}
    for folder in ("vivid", "train"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (a name imported from a package is the
    submodule of that name when there is one, else the package)."""
    files = module_files()

    def ours(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges.update(filter(None, (ours(alias.name) for alias in node.names)))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                named = [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in files]
                edges.update(named or filter(None, [ours(source)]))
        edges.discard(module)
        graph[module] = edges
    return graph


def layer_of(module: str) -> int:
    best, level = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), index
    assert level is not None, f"{module} is in no layer: add it to LAYERS (and to the README's layer sentence)"
    return level


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "vivid.pipeline" in graph["vivid"]  # `from .pipeline import VividPipeline` inside __getattr__
    assert "vivid.face.found" in graph["vivid.face.finding"]
    assert "vivid.models.saved" in graph["vivid.models.weights"]


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_no_module_imports_a_higher_layer():
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, edges in sorted(import_graph().items()) for b in sorted(edges) if layer_of(b) > layer_of(a)]
    assert upward == []


def test_the_readme_names_the_layers_in_this_order():
    readme = (ROOT / "README.md").read_text()
    sentence = " ".join(readme[readme.index("The layers, each"):].split("\n\n")[0].split())
    positions = [sentence.index(name) for name, _ in LAYERS]
    assert positions == sorted(positions), sentence
