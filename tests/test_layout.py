"""
The layout a reader is promised, checked from the source alone (AST, nothing imported): the six
components at the top and everything else in world/ or harness/; imports in layers (the world's
data -> the components -> the stand-ins built on them and the bookkeeping runs share -> train.py
-> the harness), with no cycle, and the report never reaching train.py; every .py at most 600
lines and every function at most 60.

Run: python -m pytest -q tests/test_layout.py   (a second)
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP = {"model", "rollout", "rl", "fast_context", "train", "eval"}

# a module may import its own layer and the layers before it, never a later one
LAYERS = [
    # the world's data: ops, problems, the verifier, the tokenizer
    {"world.bpe", "world.tasks"},
    # the components (train.py apart)
    {"model", "rollout", "rl", "fast_context", "eval"},
    # built on the components: the reflectors implement fast_context's contract, pretraining
    # trains model.GPT with rl's guarded step; the bookkeeping every training loop shares
    {"world.llm", "world.reflectors", "world.pretrain", "harness.cli", "harness.runs"},
    # the wiring
    {"train"},
    # the experiment machinery: everything else in harness/
]
# the one import against the layers: the reproduction ends by writing the report, imported inside
# train.reproduce (the report itself reads only files)
LATE = {("train", "harness.report")}
# what the report is built from: none of them may reach train.py, directly or not
REPORT = {"harness.report", "harness.claims", "harness.stats", "harness.plots",
          "harness.markdown", "harness.probes"}


def _modules():
    """{module name: path} of every project module (tests aside)."""
    out = {}
    for folder in ("", "world", "harness"):
        for f in sorted(os.listdir(os.path.join(ROOT, folder) if folder else ROOT)):
            if f.endswith(".py") and f != "__init__.py":
                name = (folder + "." if folder else "") + f[:-3]
                out[name] = os.path.join(ROOT, folder, f)
    return out


def _imports(path, modules):
    """[(imported project module, inside a function?)] of one file."""
    tree, out = ast.parse(open(path).read()), []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, inner) for a in child.names if a.name in modules)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module in modules:
                    out.append((child.module, inner))
                out.extend((f"{child.module}.{a.name}", inner) for a in child.names
                           if f"{child.module}.{a.name}" in modules)
            visit(child, inner)
    visit(tree, False)
    return out


def _layer(name):
    return next((i for i, members in enumerate(LAYERS) if name in members), len(LAYERS))


def test_the_top_holds_the_six_components_and_the_rest_sits_in_two_folders():
    top = {f[:-3] for f in os.listdir(ROOT) if f.endswith(".py")}
    assert top == TOP
    for name in _modules():
        assert name in TOP or name.split(".")[0] in ("world", "harness"), name
    assert all(name.startswith("harness.") for name in _modules() if _layer(name) == len(LAYERS))


def test_imports_form_layers_world_components_train_harness():
    modules = _modules()
    graph = {name: _imports(path, modules) for name, path in modules.items()}
    wrong = [(a, b) for a, edges in graph.items() for b, inner in edges
             if _layer(b) > _layer(a) and not ((a, b) in LATE and inner)]
    assert not wrong, f"imports against the layers: {wrong}"
    assert all(inner for a, edges in graph.items() for b, inner in edges if (a, b) in LATE)
    # no cycle, within a layer either
    state = {}

    def visit(name, path):
        state[name] = "open"
        for b, _ in graph[name]:
            assert state.get(b) != "open", f"import cycle: {' -> '.join(path + [b])}"
            if b not in state:
                visit(b, path + [b])
        state[name] = "done"
    for name in graph:
        if name not in state:
            visit(name, [name])
    # the report reads what the runs wrote: nothing it imports reaches train.py
    reach, todo = set(), list(REPORT)
    while todo:
        for b, _ in graph[todo.pop()]:
            if b not in reach:
                reach.add(b)
                todo.append(b)
    assert "train" not in reach


def test_every_file_fits_600_lines_and_every_function_60():
    files = [p for p in _modules().values()]
    files += [os.path.join(ROOT, "tests", f) for f in os.listdir(os.path.join(ROOT, "tests"))
              if f.endswith(".py")]
    long_files, long_functions = [], []
    for path in files:
        src = open(path).read()
        if len(src.splitlines()) > 600:
            long_files.append((os.path.relpath(path, ROOT), len(src.splitlines())))
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long_functions.append((os.path.relpath(path, ROOT), node.name, n))
    assert not long_files and not long_functions, (long_files, long_functions)
