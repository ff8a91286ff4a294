"""Benchmark: cost of tapping every Conv2D and Dense layer of MNIST-CNN.

Measures, in one run on the same inputs:

1. `DetectorModel(mnist_cnn, layers="conv+dense", pooling="avg").predict`
   against the plain `model.predict` (ratio of median times, goal <= 1.05);
2. peak resident memory of `activations()` / `iter_activations()` over 1x,
   10x and 100x the data, each size in a fresh subprocess, with the data
   generated on the fly by a `tf.data.Dataset` so that only the library's
   working memory (and, for `activations()`, its pooled result) can grow.

Writes `benchmarks/results/taps.md`.

Usage:
    python benchmarks/taps.py [--quick]
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"


def _inputs(n):
    import numpy as np

    if SHARED_MNIST.exists():
        with np.load(SHARED_MNIST) as data:
            x = data["x_test"][:n].astype("float32")[..., None] / 255.0
        return x, "MNIST test images"
    rng = np.random.default_rng(0)
    return rng.random((n, 28, 28, 1), dtype=np.float32), "uniform random 28x28 images"


def time_ratio(n, repeats, batch_size):
    import numpy as np

    from keras_advguard import DetectorModel
    from keras_advguard.models import mnist_cnn

    model = mnist_cnn()
    taps = DetectorModel(model, layers="conv+dense", pooling="avg")
    x, source = _inputs(n)
    model.predict(x[:batch_size], verbose=0)  # build the predict functions
    taps.predict(x[:batch_size], verbose=0)
    plain, tapped, plain_cpu, tapped_cpu = [], [], [], []
    for _ in range(repeats):  # interleaved, so drifts hit both alike
        for fn, wall, cpu in ((model, plain, plain_cpu), (taps, tapped, tapped_cpu)):
            t, c = time.perf_counter(), time.process_time()
            fn.predict(x, batch_size=batch_size, verbose=0)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return {
        "plain_cpu_s": float(np.median(plain_cpu)),
        "tapped_cpu_s": float(np.median(tapped_cpu)),
        "cpu_ratio": float(np.median(tapped_cpu) / np.median(plain_cpu)),
        "n": len(x),
        "source": source,
        "taps": taps.tap_names,
        "plain_median_s": float(np.median(plain)),
        "tapped_median_s": float(np.median(tapped)),
        "ratio": float(np.median(tapped) / np.median(plain)),
        "ratios_per_repeat": [float(a / b) for a, b in zip(tapped, plain)],
    }


def memory_child(n, mode, batch_size):
    """Run in a subprocess: peak RSS after streaming `n` generated images."""
    import numpy as np
    import tensorflow as tf

    from keras_advguard import DetectorModel
    from keras_advguard.models import mnist_cnn

    taps = DetectorModel(mnist_cnn(), layers="conv+dense", pooling="avg")
    taps.predict(np.zeros((batch_size, 28, 28, 1), "float32"), verbose=0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    dataset = (
        tf.data.Dataset.range(n)
        .map(lambda i: tf.random.stateless_uniform((28, 28, 1), seed=tf.stack([i, i])))
        .batch(batch_size)
    )
    result_bytes = 0
    if mode == "activations":
        acts = taps.activations(dataset)
        result_bytes = sum(a.nbytes for a in acts.values())
    else:
        total = 0.0
        for outputs, _ in taps.iter_activations(dataset):
            total += sum(float(a.sum()) for a in outputs["activations"].values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "base_mib": base / 1024,
                "peak_mib": peak / 1024,
                "result_mib": result_bytes / 2**20,
            }
        )
    )


def memory(n, mode, batch_size):
    out = (
        subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n), mode, str(batch_size)],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    return json.loads(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-child", nargs=3, metavar=("N", "MODE", "BATCH"))
    args = parser.parse_args()
    if args.memory_child:
        n, mode, batch = args.memory_child
        memory_child(int(n), mode, int(batch))
        return
    import keras
    import tensorflow as tf

    batch_size = 256
    n_time, repeats = (1000, 3) if args.quick else (10000, 7)
    base_n = 500 if args.quick else 1000
    sizes = [base_n, 10 * base_n] if args.quick else [base_n, 10 * base_n, 100 * base_n]
    timing = time_ratio(n_time, repeats, batch_size)
    print(f"time ratio tapped/plain: wall {timing['ratio']:.3f}, CPU {timing['cpu_ratio']:.3f}")
    rows = []
    for mode in ("iter_activations", "activations"):
        for n in sizes:
            m = memory(n, mode, batch_size)
            rows.append((mode, n, m))
            print(mode, n, m)

    lines = [
        "# Taps benchmark: MNIST-CNN, every Conv2D and Dense tapped (GAP)",
        "",
        f"Run by `python benchmarks/taps.py{' --quick' if args.quick else ''}` on "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, TF {tf.__version__}, "
        f"Keras {keras.__version__}, {time.strftime('%Y-%m-%d')}.",
        "",
        "Model: `keras_advguard.models.mnist_cnn()` (Carlini & Wagner architecture; "
        "untrained weights: timing and memory do not depend on the weight values). "
        f"Taps: {', '.join(timing['taps'])} (6 layers, GAP on the 4 conv maps).",
        "",
        "## Time: tapped `predict` / plain `predict`",
        "",
        f"Same {timing['n']} inputs ({timing['source']}), batch {batch_size}, "
        f"{repeats} interleaved repeats, ratio of medians.",
        "",
        "Wall time is what a user waits; process CPU time (all threads) is the "
        "steadier measure of the work when other jobs share the cores.",
        "",
        "| measure | plain predict (s) | tapped predict (s) | ratio (goal <= 1.05) "
        "| per-repeat wall ratios |",
        "|---|---|---|---|---|",
        f"| wall | {timing['plain_median_s']:.3f} | {timing['tapped_median_s']:.3f} | "
        f"**{timing['ratio']:.3f}** | "
        + ", ".join(f"{r:.2f}" for r in timing["ratios_per_repeat"])
        + " |",
        f"| CPU | {timing['plain_cpu_s']:.3f} | {timing['tapped_cpu_s']:.3f} | "
        f"**{timing['cpu_ratio']:.3f}** | |",
        "",
        f"Load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "## Peak memory over growing data",
        "",
        "Each row is a fresh process; images are generated on the fly by a "
        "`tf.data.Dataset` (batch 256), so inputs never sit in memory. `base` is the "
        "resident set size after building the model, `peak` after the run, "
        "`result` the size of the returned pooled arrays (`activations()` returns "
        "them; `iter_activations()` streams and keeps nothing).",
        "",
        "| method | images | base RSS (MiB) | peak RSS (MiB) | peak - base (MiB) "
        "| returned arrays (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, n, m in rows:
        lines.append(
            f"| `{mode}` | {n:,} | {m['base_mib']:.0f} | {m['peak_mib']:.0f} | "
            f"{m['peak_mib'] - m['base_mib']:.0f} | {m['result_mib']:.1f} |"
        )
    lines += [
        "",
        "Reading: `iter_activations` working memory must stay flat as the data grows "
        "100x; `activations()` grows only by the pooled result it returns (602 floats "
        "per image) plus Keras `predict`'s per-batch buffers of it (this benchmark feeds a "
        "`tf.data.Dataset`, which goes through `predict`: peak about 2.2x the result; for "
        "numpy inputs `activations()` fills preallocated arrays, peak = result + one batch).",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    name = "taps_quick.md" if args.quick else "taps.md"
    (RESULTS / name).write_text("\n".join(lines))
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
