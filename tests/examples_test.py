"""Every example runs with --quick (an example CI does not run is one that rots),
takes --dataset, and says where a missing dataset file goes."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
# Each `--quick` run is a fresh process (TensorFlow import, model load, training): 10-100 s on
# 2 CPUs. All are marked `ci` (out of the default `pytest`, as the README says), and `.ci/run`
# runs them in a step of its own (`pytest -m ci`): CI runs every example.
QUICK_RUNS = [pytest.param(p, marks=pytest.mark.ci) for p in EXAMPLES]


def _run(args, cwd, env=None, timeout=600):
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("script", QUICK_RUNS, ids=lambda p: p.name)
def test_example_runs_quick(script, tmp_path, digits_model):
    proc = _run([script, "--quick"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the Detector contract as documented: scores from `score`, no deprecated path
    assert "FutureWarning" not in proc.stderr, proc.stderr[-3000:]


def _dataset_argument(script):
    """The keyword arguments of the script's `add_argument("--dataset", ...)` call."""
    for node in ast.walk(ast.parse(script.read_text())):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "add_argument"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "--dataset"
        ):
            return {kw.arg: kw.value for kw in node.keywords}
    return None


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_every_example_takes_every_dataset(script):
    """`--dataset` with the names `load_dataset` knows (`DATASET_NAMES`) and a help text."""
    kwargs = _dataset_argument(script)
    assert kwargs is not None, f"{script.name} has no --dataset argument"
    assert ast.unparse(kwargs["choices"]) == "DATASET_NAMES"
    assert "help" in kwargs
    imported = {
        alias.name
        for node in ast.walk(ast.parse(script.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == "keras_advguard.datasets"
        for alias in node.names
    }
    assert "DATASET_NAMES" in imported


def test_dataset_check_can_fail(tmp_path):
    script = tmp_path / "example.py"
    script.write_text('parser.add_argument("--dataset", choices=("digits", "mnist"))\n')
    assert ast.unparse(_dataset_argument(script)["choices"]) != "DATASET_NAMES"
    script.write_text('parser.add_argument("--quick", action="store_true")\n')
    assert _dataset_argument(script) is None


@pytest.mark.ci  # a subprocess (TensorFlow import): CI runs it (`pytest -m ci`)
@pytest.mark.parametrize("script", ["quickstart.py", "medoid_lstm_imagenet.py"])
def test_missing_dataset_file_is_a_usage_error_naming_it(script, tmp_path):
    """A dataset not in the Keras cache: exit code 2 and the file and folder it goes in.

    Also shows that argparse takes `mnist` as a `--dataset` choice.
    """
    home, cwd = tmp_path / "empty_keras_home", tmp_path / "cwd"
    cwd.mkdir()
    args = [EXAMPLES_DIR / script, "--dataset", "mnist"]
    if script == "medoid_lstm_imagenet.py":
        args.append("--random-weights")
    proc = _run(args, cwd=cwd, env={"KERAS_HOME": str(home)})
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error: --dataset mnist: " in proc.stderr
    assert "mnist.npz" in proc.stderr and str(home / "datasets") in proc.stderr
    assert list(cwd.iterdir()) == []  # nothing written


def _write_image_folders(root, class_names, per_class, seed):
    """Random 80x90 PNGs in `root/<class>/` (non-square: the loader crops)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for name in class_names:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(80, 90, 3), dtype=np.uint8)
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())


@pytest.mark.slow
def test_medoid_lstm_imagenet_reads_class_folders(tmp_path):
    """The user path of the ImageNet example: WordNet-id folders, a class index, a model file.

    Slow (InceptionV3, ~80 s on 2 CPUs); the default run covers the same path
    through `--quick`, which writes random WordNet-id class folders.
    """
    import json

    wnids = ["n01440764", "n01443537", "n01484850"]
    _write_image_folders(tmp_path / "train", wnids, per_class=4, seed=0)
    _write_image_folders(tmp_path / "test", wnids, per_class=5, seed=1)
    index = {"0": [wnids[0], "tench"], "1": [wnids[1], "goldfish"], "2": [wnids[2], "shark"]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    args = [EXAMPLES_DIR / "medoid_lstm_imagenet.py", "--random-weights", "--image-size", "75"]
    args += ["--train-dir", "train", "--test-dir", "test", "--class-index", "index.json"]
    args += ["--epochs", "2", "--output", "det.advguard"]
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 classes for the medoids, 15 test images" in proc.stdout
    assert "distance sequence: (11, 3)" in proc.stdout
    assert (tmp_path / "det.advguard").exists()


@pytest.mark.slow
def test_medoid_lstm_imagenet_on_a_named_dataset(tmp_path):
    """`--dataset digits`: the dataset's 10 classes give the medoids (slow: InceptionV3)."""
    args = [EXAMPLES_DIR / "medoid_lstm_imagenet.py", "--quick", "--dataset", "digits"]
    args += ["--output", "det.advguard"]
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "10 classes for the medoids, 24 test images" in proc.stdout
    assert "distance sequence: (11, 10)" in proc.stdout
    assert (tmp_path / "det.advguard").exists()


@pytest.mark.ci  # a subprocess (TensorFlow import): CI runs it (`pytest -m ci`)
def test_medoid_lstm_imagenet_needs_its_files(tmp_path):
    proc = _run([EXAMPLES_DIR / "medoid_lstm_imagenet.py", "--train-dir", "nowhere"], tmp_path)
    assert proc.returncode == 2
    assert "--weights, --test-dir required" in proc.stderr
