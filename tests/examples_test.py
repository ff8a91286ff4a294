"""Every example runs with --quick (an example CI does not run is one that rots)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_quick(script, tmp_path, digits_model):
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


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


def test_medoid_lstm_imagenet_reads_class_folders(tmp_path):
    """The user path of the ImageNet example: WordNet-id folders, a class index, a model file."""
    import json

    wnids = ["n01440764", "n01443537", "n01484850"]
    _write_image_folders(tmp_path / "train", wnids, per_class=4, seed=0)
    _write_image_folders(tmp_path / "test", wnids, per_class=5, seed=1)
    index = {"0": [wnids[0], "tench"], "1": [wnids[1], "goldfish"], "2": [wnids[2], "shark"]}
    (tmp_path / "index.json").write_text(json.dumps(index))
    script = Path(__file__).resolve().parents[1] / "examples" / "medoid_lstm_imagenet.py"
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3")
    args = [sys.executable, str(script), "--random-weights", "--image-size", "75"]
    args += ["--train-dir", "train", "--test-dir", "test", "--class-index", "index.json"]
    args += ["--epochs", "2", "--output", "det.keras"]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 classes for the medoids, 15 test images" in proc.stdout
    assert "distance sequence: (11, 3)" in proc.stdout
    assert (tmp_path / "det.keras").exists()


def test_medoid_lstm_imagenet_needs_its_files(tmp_path):
    script = Path(__file__).resolve().parents[1] / "examples" / "medoid_lstm_imagenet.py"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, str(script), "--train-dir", "nowhere"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert "--weights, --test-dir required" in proc.stderr


def test_evaluate_example_takes_every_dataset():
    """`evaluate_digits.py` offers --dataset for each dataset `load_dataset` knows."""
    from keras_advguard.datasets import DATASET_NAMES

    script = Path(__file__).resolve().parents[1] / "examples" / "evaluate_digits.py"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, str(script), "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(name in proc.stdout for name in DATASET_NAMES)
