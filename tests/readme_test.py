"""The README's quickstart runs as pasted (with the session's model cache)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.ci  # a fresh process that imports TensorFlow and runs evaluate: ~50 s; CI runs it
def test_readme_quickstart_runs(tmp_path, digits_model):
    text = README.read_text()
    code = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.S).group(1)
    assert len(code.splitlines()) <= 25
    script = tmp_path / "quickstart.py"
    script.write_text(code)
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "success rate" in proc.stdout and "AUC" in proc.stdout


def test_readme_commands_match_ci():
    readme = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = 'pip install -e ".[test]" && pytest'
    assert test_command in readme and test_command in ci
    assert "pip install -e . && advguard demo" in readme


def test_ci_runs_the_checks_kept_out_of_the_default_run():
    """Tests marked `ci` skip the default `pytest`; `.ci/run` must run them."""
    ci = (README.parent / ".ci" / "run").read_text()
    config = (README.parent / "pyproject.toml").read_text()
    assert "not ci" in config
    assert "python -m pytest -p no:cacheprovider -m ci\n" in ci
