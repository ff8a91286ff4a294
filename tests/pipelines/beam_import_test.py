"""Without Apache Beam, the pipelines module imports and says what to install."""

import importlib

import pytest


def test_entry_points_name_the_extra_when_beam_is_missing(monkeypatch):
    module = importlib.import_module("keras_advguard.pipelines.beam")
    monkeypatch.setattr(module, "beam", None)
    for build in (
        lambda: module.ExtractActivations("model.keras"),
        lambda: module.ComputeClassMedoids(),
        lambda: module.ScoreWithDetector("detector.advguard"),
        lambda: module.run_scoring("detector.advguard", [], "scores.npy"),
    ):
        with pytest.raises(ImportError, match=r"keras-advguard\[beam\]"):
            build()


@pytest.mark.ci  # a subprocess (TensorFlow import): CI runs it (`pytest -m ci`)
def test_importing_the_package_does_not_import_beam():
    import subprocess
    import sys

    code = "import sys, keras_advguard; print('apache_beam' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
