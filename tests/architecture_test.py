"""The layering of ARCHITECTURE.md, measured on the source (lazy imports included).

- every top-level module or sub-package of `keras_advguard` has a floor, and
  imports only point down or sideways (same floor);
- no import circle between modules (a lazy import inside a function counts:
  it still ties the two modules together);
- the examples import public names only;
- module size: lines of code excluding docstrings, comments and blank lines
  (informational while the tree does not meet it);
- repeated logic: function bodies equal up to their names, and runs of
  statements copied verbatim, docstrings and call sites left out
  (informational).
"""

import ast
import copy
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_advguard"
EXAMPLES = ROOT / "examples"

# Top-level module or sub-package of keras_advguard -> floor. A module that
# does not exist (yet) may have an entry: only existing ones are checked.
FLOORS = {
    # floor 1: layers, pure functions over arrays, helpers
    "layers": 1,
    "metrics": 1,
    "splits": 1,
    "datasets": 1,
    "models": 1,
    "saving": 1,
    "_activations": 1,
    "_batching": 1,
    "_files": 1,
    "_fingerprint": 1,
    "_graph": 1,
    "_memo": 1,
    "_naming": 1,
    "_perturb": 1,
    "_progress": 1,
    "_selectors": 1,
    "_validation": 1,
    "version": 1,
    # floor 2: running a model and collecting what detectors need; figures
    "detector_model": 2,
    "divergence": 2,
    "plots": 2,
    # floor 3: the methods
    "detectors": 3,
    "attacks": 3,
    "sanitize": 3,
    "activation_store": 3,
    "training": 3,
    # floor 4: evaluation protocol, optional pipelines
    "evaluation": 4,
    "pipelines": 4,
    # floor 5: composition
    "cli": 5,
    "__init__": 5,
}

# Circles known today, each by the import that closes it: (importer, imported)
# -> why. `test_no_import_circle` ignores these edges (so it catches every new
# circle) and `test_known_circles` reports them until they are gone.
KNOWN_CIRCLE_EDGES = {}

# Lines of code (docstrings, comments and blank lines excluded) per module.
MAX_LINES = 450
# Modules that must stay under MAX_LINES now (the others are reported).
SIZE_CHECKED = ("plots", "divergence", "_activations", "splits")


# ---------------------------------------------------------------------------
# The import graph
# ---------------------------------------------------------------------------


def _modules(package):
    """{dotted module name: (file, is_package)} of every module under `package`."""
    out = {}
    for file in sorted(package.rglob("*.py")):
        parts = list(file.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (file, is_package)
    return out


def _resolve(name, modules):
    """The module `name` refers to: itself, or the closest enclosing module."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in modules else None


def _imports(module, file, is_package, modules, root):
    """The modules of package `root` that `module` imports, anywhere in the file."""
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == root or alias.name.startswith(root + "."):
                    yield _resolve(alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module if is_package else module.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if base != root and not base.startswith(root + "."):
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in modules else _resolve(base, modules)


def import_graph(package=PACKAGE):
    """{module: set of imported modules of the same package}."""
    modules = _modules(package)
    graph = {}
    for module, (file, is_package) in modules.items():
        targets = set(_imports(module, file, is_package, modules, package.name))
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def import_circles(graph):
    """Strongly connected components of more than one module (Tarjan), sorted."""
    index, low, on_stack, stack, circles = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(circles)


def _unit(module):
    """'keras_advguard.layers.mask_sanitizer' -> 'layers'; the package itself -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


# ---------------------------------------------------------------------------
# Floors and circles
# ---------------------------------------------------------------------------


def test_every_module_has_a_floor():
    units = {_unit(module) for module in import_graph()}
    assert units <= set(FLOORS), f"give these a floor in FLOORS: {sorted(units - set(FLOORS))}"


def test_imports_point_down_or_sideways():
    violations = []
    for module, targets in sorted(import_graph().items()):
        unit = _unit(module)
        for target in sorted(targets):
            target_unit = _unit(target)
            if target_unit != unit and FLOORS[target_unit] > FLOORS[unit]:
                violations.append(
                    f"{module} (floor {FLOORS[unit]}) imports {target} "
                    f"(floor {FLOORS[target_unit]})"
                )
    assert not violations, "\n".join(violations)


def _without_known_edges(graph):
    return {
        module: {t for t in targets if (module, t) not in KNOWN_CIRCLE_EDGES}
        for module, targets in graph.items()
    }


def test_no_import_circle():
    circles = import_circles(_without_known_edges(import_graph()))
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_known_circles():
    """Informational: the circles of KNOWN_CIRCLE_EDGES still in the tree."""
    graph = import_graph()
    circles = import_circles(graph)
    known = [
        f"{a} -> {b}: {why}"
        for (a, b), why in sorted(KNOWN_CIRCLE_EDGES.items())
        if b in graph.get(a, ()) and any(a in c and b in c for c in circles)
    ]
    if known:
        pytest.xfail("known import circles: " + "; ".join(known))


def test_circle_check_finds_a_lazy_circle(tmp_path):
    # The circle plots.py had: the package re-exports a module at import
    # time while that module imports the package lazily, inside a method.
    package = tmp_path / "pkg"
    (package / "figs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "figs" / "__init__.py").write_text("from pkg.figs.entropy import Histogram\n")
    (package / "figs" / "entropy.py").write_text(
        "class Histogram:\n    def plot(self):\n        from pkg.figs import Roc\n"
    )
    (package / "figs" / "roc.py").write_text("from . import entropy\n")
    (package / "metrics.py").write_text("import pkg.figs.roc\n")
    graph = import_graph(package)
    assert graph["pkg.figs.roc"] == {"pkg.figs.entropy"}  # relative import resolved
    assert graph["pkg.metrics"] == {"pkg.figs.roc"}
    assert import_circles(graph) == [["pkg.figs", "pkg.figs.entropy"]]
    del graph["pkg.figs.entropy"]
    assert import_circles(graph) == []


# ---------------------------------------------------------------------------
# Examples use the public surface
# ---------------------------------------------------------------------------


def _private_imports(file):
    """`(line, text)` of every private keras_advguard name `file` imports."""

    def private(name):
        return any(part.startswith("_") and not part.startswith("__") for part in name.split("."))

    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_advguard") and private(alias.name):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_advguard"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if private(name):
                    yield node.lineno, name


def test_examples_import_public_names_only():
    found = [
        f"{file.relative_to(ROOT)}:{line}: {name}"
        for file in sorted(EXAMPLES.glob("*.py"))
        for line, name in _private_imports(file)
    ]
    assert not found, "examples import private names:\n" + "\n".join(found)


def test_private_import_check_can_fail(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(
        "import keras_advguard._files\n"
        "from keras_advguard.plots import DetectionRocDisplay, _base\n"
        "from keras_advguard import __version__, metrics\n"
        "from keras_advguard.plots._base import DisplayMixin\n"
    )
    assert [name for _, name in _private_imports(script)] == [
        "keras_advguard._files",
        "keras_advguard.plots._base",
        "keras_advguard.plots._base.DisplayMixin",
    ]


# ---------------------------------------------------------------------------
# Module size
# ---------------------------------------------------------------------------


def lines_of_code(source):
    """Lines holding code: not blank, not only a comment, not in a docstring."""
    tree = ast.parse(source)
    docstring_lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                docstring_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(
        1
        for number, line in enumerate(source.splitlines(), start=1)
        if line.strip() and not line.strip().startswith("#") and number not in docstring_lines
    )


def test_lines_of_code_counts_code_only():
    source = (
        '"""Doc\n\nstring."""\n\n# comment\nx = 1\n\n\ndef f():\n    """Doc."""\n    return x\n'
    )
    assert lines_of_code(source) == 3  # x = 1, def f():, return x


def _sizes():
    return {
        str(file.relative_to(ROOT)): lines_of_code(file.read_text())
        for file in sorted(PACKAGE.rglob("*.py"))
    }


def test_checked_modules_are_small():
    checked = [
        (name, n)
        for name, n in _sizes().items()
        if any(
            name == f"keras_advguard/{unit}.py" or name.startswith(f"keras_advguard/{unit}/")
            for unit in SIZE_CHECKED
        )
    ]
    assert checked, "SIZE_CHECKED matches no module"
    large = [f"{name}: {n} lines of code" for name, n in checked if n > MAX_LINES]
    assert not large, "\n".join(large)


def test_every_module_is_small():
    """Informational: the modules over MAX_LINES, reported as an expected failure."""
    large = sorted((n, name) for name, n in _sizes().items() if n > MAX_LINES)
    if large:
        pytest.xfail(
            f"{len(large)} module(s) over {MAX_LINES} lines of code: "
            + ", ".join(f"{name} ({n})" for n, name in reversed(large))
        )


# ---------------------------------------------------------------------------
# Repeated logic
# ---------------------------------------------------------------------------

# A repeat shorter than this many lines is not reported.
MIN_REPEAT_LINES = 4


def _is_docstring(statement):
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _is_call_site(statement):
    """A call (its arguments may repeat the callee's signature), an import, a raise."""
    value = getattr(statement, "value", None)
    if isinstance(statement, ast.Expr | ast.Return | ast.Assign) and isinstance(value, ast.Call):
        return True
    return isinstance(statement, ast.Import | ast.ImportFrom | ast.Pass | ast.Raise)


class _Anonymous(ast.NodeTransformer):
    """Every variable and argument named `_`: a copy with renamed locals still matches."""

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(id="_", ctx=node.ctx), node)

    def visit_arg(self, node):
        node.arg, node.annotation = "_", None
        return node


def repeats(files, root=ROOT):
    """Groups of places holding the same logic, each a sorted list of `path:line`."""
    places = defaultdict(set)
    for file in files:
        tree = ast.parse(file.read_text())
        name = file.relative_to(root)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = [s for s in node.body if not _is_docstring(s)]
                if body and body[-1].end_lineno - body[0].lineno + 1 >= MIN_REPEAT_LINES:
                    anonymous = _Anonymous().visit(ast.Module(copy.deepcopy(body), []))
                    places["def " + ast.dump(anonymous)].add(f"{name}:{node.lineno} {node.name}")
            for field in ("body", "orelse", "finalbody"):
                statements = getattr(node, field, None)
                if not isinstance(statements, list):  # `Lambda.body` is an expression
                    continue
                block = [s for s in statements if isinstance(s, ast.stmt) and not _is_docstring(s)]
                for first, second in zip(block, block[1:], strict=False):
                    pair = (first, second)
                    if any(isinstance(s, ast.FunctionDef | ast.ClassDef) for s in pair):
                        continue
                    if all(_is_call_site(s) for s in pair):
                        continue
                    if second.end_lineno - first.lineno + 1 < MIN_REPEAT_LINES + 1:
                        continue
                    key = "run " + ast.dump(first) + ast.dump(second)
                    places[key].add(f"{name}:{first.lineno}")
    return sorted(sorted(group) for group in places.values() if len(group) > 1)


def test_repeat_scan_finds_a_renamed_copy(tmp_path):
    (tmp_path / "a.py").write_text(
        'def f(x):\n    """Doc."""\n    y = x + 1\n    if y > 2:\n        y = y * 2\n    return y\n'
    )
    (tmp_path / "b.py").write_text(
        "def g(value):\n    v = value + 1\n    if v > 2:\n        v = v * 2\n    return v\n"
    )
    (tmp_path / "c.py").write_text("def h(x):\n    return call(x, 1, 2)\n")
    found = repeats(sorted(tmp_path.glob("*.py")), root=tmp_path)
    assert found == [["a.py:1 f", "b.py:1 g"]]


def test_no_repeated_logic():
    """Informational: the repeats found, reported as an expected failure."""
    found = repeats(sorted(PACKAGE.rglob("*.py")))
    if found:
        pytest.xfail(f"{len(found)} repeat(s): " + "; ".join(" = ".join(g) for g in found))
