"""keras_advguard.plots: one explicit re-export list, matplotlib imported lazily."""

import ast
import importlib
from pathlib import Path

import keras_advguard.plots as plots

PLOTS = Path(plots.__file__).resolve().parent
FAMILIES = ("roc", "entropy", "medoids", "divergence", "tradeoff")


def test_all_resolves_to_the_family_modules():
    assert plots.__all__ == sorted(set(plots.__all__))
    for name in plots.__all__:
        obj = getattr(plots, name)
        module = obj.__module__
        assert module.startswith(("keras_advguard.plots.", "keras_advguard.divergence")), name
    for family in FAMILIES:
        importlib.import_module(f"keras_advguard.plots.{family}")


def test_every_display_uses_the_mixin():
    from keras_advguard.plots._base import DisplayMixin

    displays = [getattr(plots, n) for n in plots.__all__ if n.endswith("Display")]
    assert len(displays) >= 7
    for display in displays:
        assert issubclass(display, DisplayMixin), display
        assert callable(display.plot)
        assert any(name.startswith("from_") for name in vars(display)), display


def test_no_module_imports_matplotlib_at_import_time():
    for file in sorted(PLOTS.glob("*.py")):
        tree = ast.parse(file.read_text())
        for node in tree.body:  # module level only: imports inside functions are lazy
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] in ("matplotlib", "sklearn") for n in names), (
                f"{file.name} imports {names} at module level"
            )
