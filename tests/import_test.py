"""`import keras_advguard` stays light: no eager cleverhans, pyplot or sklearn.metrics."""

import subprocess
import sys

import pytest

HEAVY = (
    "cleverhans",
    "matplotlib.pyplot",
    "sklearn.metrics",
    "sklearn.neighbors",
    "sklearn.manifold",
    "sklearn.linear_model",
    "scipy.optimize",
)

SCRIPT = """
import sys
import keras
before = set(sys.modules)
import keras_advguard
import keras_advguard.layers, keras_advguard.metrics, keras_advguard.datasets
import keras_advguard.models, keras_advguard.attacks, keras_advguard.detectors
added = set(sys.modules) - before
roots = ("cleverhans", "matplotlib", "sklearn", "scipy")
print("ADDED:" + ",".join(sorted(m for m in added if m.split(".")[0] in roots)))
"""


@pytest.mark.ci  # a subprocess (TensorFlow import): CI runs it (`pytest -m ci`)
def test_import_does_not_load_heavy_modules():
    stdout = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("ADDED:")]
    loaded = set(filter(None, line[len("ADDED:") :].split(",")))
    heavy = {m for m in loaded if m.startswith(HEAVY)}
    assert not heavy, f"import keras_advguard loaded {sorted(heavy)}"
