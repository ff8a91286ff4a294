"""Outputs under `tf.distribute` strategies equal the single-device run.

`MirroredStrategy` over two logical CPUs, and `MultiWorkerMirroredStrategy`
over two worker processes on localhost. The logical devices (and the
workers' strategy) must be configured before TensorFlow initialises its
devices, so each comparison runs in fresh processes (`_distribute_worker.py`)
that print `{check: max |difference|}` as JSON.
"""

import json
import os
import socket
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


def _env(**extra):
    # oneDNN's CPU kernels off: with them, on an AVX-512 machine (2026-12-02), a
    # MirroredStrategy predict over two logical CPUs failed inside TensorFlow
    # ("input depth must be evenly divisible by filter depth: 1 vs 4" in replica 1's
    # second convolution, raised by Keras's own predict loop; the same failure at the
    # previous landing's commit); with them off the same run passes. The comparison
    # is of this library's code, not of oneDNN's kernels.
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        CUDA_VISIBLE_DEVICES="",
        TF_ENABLE_ONEDNN_OPTS="0",
        **extra,
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run(*args):
    env = _env()
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
    # one of each kind: detectors fitted and scored from inputs, the attack loop
    "KNNDetector.fit+score",
    "ClassMedoids.fit_from_model",
    "MedoidLSTMDetector.medoids",
    "MedoidLSTMDetector.score",
    "MedoidLSTMDetector.fit/weights",
    "MedoidLSTMDetector.fit+score",
    "attacks.pgd",
]


@pytest.mark.ci  # a subprocess with two logical devices: ~40 s; CI runs it (`pytest -m ci`)
def test_fit_score_and_attack_under_mirrored_strategy():
    _check(_run(), CORE)


@pytest.mark.slow
def test_other_detectors_and_attacks_under_mirrored_strategy():
    _check(_run("--full"), CORE + ["FeatureSqueezingDetector.score", "attacks.fgsm"])


def test_the_check_can_fail():
    with pytest.raises(AssertionError):
        _check({"collect/logits": 0.5}, ["collect/logits"])
    with pytest.raises(AssertionError):
        _check({"collect/logits": 0.0}, ["collect/logits", "collect/prediction"])


def _free_port():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_activations_under_multi_worker_mirrored_strategy():
    """Two worker processes on localhost (TF_CONFIG, gRPC), one CPU each.

    Each worker computes `DetectorModel.activations` / `collect` once on its
    default strategy and once under the `MultiWorkerMirroredStrategy`, and
    reports the difference; both must see the whole result.
    """
    workers = [f"localhost:{_free_port()}" for _ in range(2)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), "--multi-worker"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(TF_CONFIG=json.dumps(config)),
                cwd=ROOT,
            )
        )
    try:
        done = [proc.communicate(timeout=900) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (stdout, stderr) in zip(procs, done, strict=True):
        assert proc.returncode == 0, stderr[-3000:]
        report = json.loads(stdout.strip().splitlines()[-1])
        assert report["replicas"] == 2, report
        if "error" in report:
            pytest.fail(report["error"])
        _check(report, ["activations/conv1", "activations/fc", "collect/logits"])
