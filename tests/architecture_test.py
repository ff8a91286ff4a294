"""Imports only point down the floors of ARCHITECTURE.md (lazy imports included)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "keras_advguard"

# Top-level module or sub-package of keras_advguard -> floor.
FLOORS = {
    "layers": 1,
    "metrics": 1,
    "datasets": 1,
    "models": 1,
    "_validation": 1,
    "_progress": 1,
    "_batching": 1,
    "_naming": 1,
    "_files": 1,
    "version": 1,
    "detector_model": 2,
    "plots": 2,
    "_plots_entropy": 2,
    "_plots_medoids": 2,
    "_plots_sanitizers": 2,
    "_plots_squeeze": 2,
    "detectors": 3,
    "attacks": 3,
    "sanitize": 3,
    "cli": 4,
    "__init__": 4,
}


def _unit(module):
    """'keras_advguard.layers.mask_sanitizer' -> 'layers'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(file):
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "keras_advguard":
                yield from (f"keras_advguard.{alias.name}" for alias in node.names)
            elif node.module.startswith("keras_advguard."):
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("keras_advguard."))


def test_every_module_has_a_floor():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    units = modules | packages
    assert units <= set(FLOORS), sorted(units - set(FLOORS))


def test_imports_point_down_or_sideways():
    violations = []
    for file in sorted(PACKAGE.rglob("*.py")):
        relative = file.relative_to(PACKAGE.parent).with_suffix("")
        unit = _unit(".".join(relative.parts))
        if file.name == "__init__.py" and file.parent == PACKAGE:
            unit = "__init__"
        for target in _imports(file):
            target_unit = _unit(target)
            if target_unit == unit:
                continue
            if FLOORS[target_unit] > FLOORS[unit]:
                violations.append(f"{relative} (floor {FLOORS[unit]}) imports {target}")
    assert not violations, "\n".join(violations)
