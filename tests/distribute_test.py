"""Outputs under `tf.distribute.MirroredStrategy` (two logical CPUs) equal the single-device run.

The logical devices must be configured before TensorFlow initialises its
devices, so the comparison runs in a fresh process (`_distribute_worker.py`)
that prints `{check: max |difference|}` as JSON.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_distribute_worker.py")
ROOT = Path(__file__).resolve().parents[1]

# Keras 3's `predict_on_batch` under a MirroredStrategy runs the whole batch on
# every replica and concatenates the copies (N x replicas rows): a pass built on
# it gets twice the rows with two devices. DetectorModel.iter_activations calls
# `predict` instead when there are several replicas; these tests catch a relapse.


def _run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(WORKER), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2, report
    if "error" in report:
        pytest.fail(report["error"])
    return report


def _check(report, expected_keys):
    missing = sorted(set(expected_keys) - set(report))
    assert not missing, missing
    bad = {k: v for k, v in report.items() if k in expected_keys and not (v <= 1e-5)}
    assert not bad, bad


CORE = [
    "collect/logits",
    "collect/prediction",
    "collect/predicted_class",
    "collect/activations/conv1",
    "collect/activations/conv2",
    "collect/activations/fc",
    "activations/fc",
    "MaxSoftmaxDetector.score",
]


def test_activation_pass_under_mirrored_strategy():
    _check(_run(), CORE)


@pytest.mark.slow
def test_detectors_and_attack_under_mirrored_strategy():
    _check(
        _run("--full"),
        CORE
        + [
            "KNNDetector.score",
            "FeatureSqueezingDetector.score",
            "MedoidLSTMDetector.score",
            "MedoidLSTMDetector.medoids",
            "attacks.fgsm",
        ],
    )


def test_the_check_can_fail():
    with pytest.raises(AssertionError):
        _check({"collect/logits": 0.5}, ["collect/logits"])
    with pytest.raises(AssertionError):
        _check({"collect/logits": 0.0}, ["collect/logits", "collect/prediction"])
