"""The README's quickstart runs as pasted (with the session's model cache)."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


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
