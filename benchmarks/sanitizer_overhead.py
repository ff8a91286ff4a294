"""Benchmark: inference overhead of the sanitizers, side by side in one run.

MNIST-CNN (`load_or_train("mnist_cnn", "mnist", epochs=5, seed=0)`), the
first `--images` MNIST test images (default 2,000) in batches of 250. Every
model is the same classifier object with sanitizers inserted by `sanitize`
(shared weights), compiled with `tf.function` (graph) and with
`tf.function(jit_compile=True)` (XLA). The passes over the images are
interleaved model by model, `--repeats` times (default 7); a model's time is
the median pass. Ratio = sanitized / undefended, in the same mode and the
same run; CPU time (process time, all threads) is reported next to wall time
because the two cores may be shared.

Models:

- the three settings chosen on validation in `sanitizers_mnist.md`
  (median 3x3 after conv1, conv2; mask alpha 0.3 and NL-means h = 1 after
  the four conv layers);
- every sanitizer after the paper's six layers (conv1, conv2, conv4, conv5,
  fc7, fc8), as the paper times them;
- NL-means (four conv layers) with a 3x3 search window (8 candidates
  instead of 48);
- NL-means (four conv layers) computing every offset on its own (`pair_offsets=False`, the
  implementation before offsets `o` and `-o` shared their weights): the
  speed-up of that change, measured side by side.

An operation count puts the ratios in context: the classifier's
multiply-adds (convolutions and dense layers) against the elementwise
operations of the sanitizers on the same activations.

Writes `benchmarks/results/sanitizer_overhead.md` (`_quick` with `--quick`:
200 images, 2 repeats).

Usage:
    nice python benchmarks/sanitizer_overhead.py [--quick] [--images 2000] [--repeats 7]
"""

import argparse
import functools
import os
import platform
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BATCH = 250


def log(message):
    print(time.strftime("%H:%M:%S"), message, flush=True)


def unpaired_nl_means():
    """`NLMeansSanitizer` that computes every search offset on its own."""
    from keras_advguard.layers import NLMeansSanitizer, _neighbourhood

    original = _neighbourhood.nl_means_filter

    class UnpairedNLMeans(NLMeansSanitizer):
        def call(self, inputs):
            slow = functools.partial(original, pair_offsets=False)
            with mock.patch.object(_neighbourhood, "nl_means_filter", slow):
                return super().call(inputs)

    return UnpairedNLMeans()


def build_models(model):
    from keras_advguard import sanitize
    from keras_advguard.layers import MaskSanitizer, MedianSanitizer, NLMeansSanitizer
    from keras_advguard.models import MNIST_CNN_SANITIZED_LAYERS as PAPER

    conv = ("conv1", "conv2", "conv4", "conv5")
    return {
        "undefended": (model, "-", "-"),
        "median (chosen)": (
            sanitize(model, ("conv1", "conv2"), MedianSanitizer(window=3)),
            "`MedianSanitizer(window=3)`",
            "conv1, conv2",
        ),
        "mask (chosen)": (
            sanitize(model, conv, MaskSanitizer(alpha=0.3)),
            "`MaskSanitizer(alpha=0.3)`",
            ", ".join(conv),
        ),
        "NL-means (chosen)": (
            sanitize(model, conv, NLMeansSanitizer(h=1.0)),
            "`NLMeansSanitizer(h=1.0)`",
            ", ".join(conv),
        ),
        "median, paper's layers": (
            sanitize(model, PAPER, MedianSanitizer(window=3)),
            "`MedianSanitizer(window=3)`",
            "paper's six",
        ),
        "mask, paper's layers": (
            sanitize(model, PAPER, MaskSanitizer(alpha=0.3)),
            "`MaskSanitizer(alpha=0.3)`",
            "paper's six",
        ),
        "NL-means, paper's layers": (
            sanitize(model, PAPER, NLMeansSanitizer(h=1.0)),
            "`NLMeansSanitizer(h=1.0)`",
            "paper's six",
        ),
        "NL-means, search 3": (
            sanitize(model, conv, NLMeansSanitizer(h=1.0, search=3)),
            "`NLMeansSanitizer(h=1.0, search=3)`",
            ", ".join(conv),
        ),
        "NL-means, every offset alone": (
            sanitize(model, conv, unpaired_nl_means()),
            "`NLMeansSanitizer(h=1.0)`, `pair_offsets=False`",
            ", ".join(conv),
        ),
    }


def timing(models, x, repeats):
    """Median wall and CPU seconds per pass over `x`, graph and XLA, interleaved."""
    import numpy as np
    import tensorflow as tf

    batches = [x[i : i + BATCH] for i in range(0, len(x), BATCH)]
    out = {}
    for jit in (False, True):
        mode = "xla" if jit else "graph"
        fns = {
            k: tf.function(lambda v, m=m: m(v, training=False), jit_compile=jit)
            for k, m in models.items()
        }
        for k, fn in fns.items():  # trace, compile and warm up
            log(f"{mode}: compiling {k}")
            np.asarray(fn(batches[0]))
            np.asarray(fn(batches[0]))
        wall = {k: [] for k in fns}
        cpu = {k: [] for k in fns}
        for r in range(repeats):
            for k, fn in fns.items():
                w0, c0 = time.perf_counter(), time.process_time()
                for b in batches:
                    np.asarray(fn(b))
                wall[k].append(time.perf_counter() - w0)
                cpu[k].append(time.process_time() - c0)
            log(f"{mode}: repeat {r + 1}/{repeats}")
        out[mode] = {k: (float(np.median(wall[k])), float(np.median(cpu[k]))) for k in fns}
    return out


MEDIAN = "median (chosen): 3x3 exchange network, ~18 min/max per activation"
MASK = "mask (chosen): max, scale, compare, select: ~3 per activation"
NLM = "NL-means (chosen: the four conv layers), offsets paired"


def copy_bandwidth():
    """GB/s of an XLA-compiled `2 * x` over 256 MB (read + write counted)."""
    import numpy as np
    import tensorflow as tf

    x = tf.constant(np.ones(64 * 2**20, np.float32))
    double = tf.function(lambda v: v * 2.0, jit_compile=True)
    double(x).numpy()
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        double(x).numpy()
        seconds.append(time.perf_counter() - start)
    return 2 * x.shape[0] * 4 / float(np.median(seconds)) / 1e9


def operation_counts(model):
    """Multiply-adds of the classifier and elementwise operations of each sanitizer, per image."""
    from keras_advguard.models import MNIST_CNN_SANITIZED_LAYERS as PAPER

    macs = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            macs += h * w * c_out * kh * kw * layer.input.shape[-1]
        elif kind == "Dense":
            macs += layer.input.shape[-1] * layer.units
    sizes = {}
    for name in PAPER:
        shape = model.get_layer(name).output.shape[1:]
        n = 1
        for v in shape:
            n *= v
        sizes[name] = (n, len(shape) == 3)
    conv12 = sum(sizes[n][0] for n in ("conv1", "conv2"))
    conv = sum(sizes[n][0] for n in ("conv1", "conv2", "conv4", "conv5"))
    maps = sum(n for n, is_map in sizes.values() if is_map)
    vectors = sum(n for n, is_map in sizes.values() if not is_map)

    # Per activation: NL-means (patch 3, search s) runs, for each non-zero
    # offset of the window, 1 subtraction, 1 square, a separable 3x3 box sum
    # (4 additions on a map, 2 on a vector), 1 scaling, 1 exponential,
    # 1 validity product and 4 accumulation operations: 13 on a map, 11 on
    # a vector, counting the exponential as one. Offsets o and -o share the
    # first 9 (8) of them: 4 more for the mirrored one.
    def nlm(offsets_map, offsets_vector, paired, with_vectors=False):
        per_map = (13 + 4) / 2 if paired else 13
        per_vector = (11 + 4) / 2 if paired else 11
        total = maps * offsets_map * per_map
        return total + (vectors * offsets_vector * per_vector if with_vectors else 0)

    return {
        "classifier multiply-adds": macs,
        MEDIAN: 18 * conv12,
        MASK: 3 * conv,
        NLM: nlm(48, 6, True),
        "NL-means, every offset alone": nlm(48, 6, False),
        "NL-means, search 3, paired": nlm(8, 2, True),
        "NL-means, paper's six layers, paired": nlm(48, 6, True, with_vectors=True),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n = args.images or (200 if args.quick else 2000)
    repeats = args.repeats or (2 if args.quick else 7)

    import numpy as np
    import tensorflow as tf

    from keras_advguard.datasets import load_dataset
    from keras_advguard.models import load_or_train

    start = time.time()
    path = SHARED / "mnist.npz"
    path = str(path) if path.exists() else None
    model, info = load_or_train("mnist_cnn", "mnist", epochs=5, seed=0, path=path)
    _, (x_test, _) = load_dataset("mnist", path=path)
    x = x_test[:n]
    models = build_models(model)
    # Every sanitized model computes the undefended model's function plus
    # its sanitizers: check the outputs are close before timing them.
    reference = np.asarray(model(x[:50], training=False))
    for key, (m, _, _) in models.items():
        got = np.asarray(m(x[:50], training=False))
        agree = float(np.mean(got.argmax(1) == reference.argmax(1)))
        log(f"{key}: top-1 agreement with the undefended model on 50 images {agree:.2f}")
    times = timing({k: m for k, (m, _, _) in models.items()}, x, repeats)
    bandwidth = copy_bandwidth()
    counts = operation_counts(model)

    lines = [
        "# Sanitizer inference overhead" + (" (quick check)" if args.quick else ""),
        "",
        f"Run by `python benchmarks/sanitizer_overhead.py{' --quick' if args.quick else ''}` "
        f"on {platform.machine()}, {os.cpu_count()} CPU cores (possibly shared), "
        f"TF {tf.__version__}, {time.strftime('%Y-%m-%d')}; "
        f"{(time.time() - start) / 60:.1f} minutes in all.",
        "",
        f"`mnist_cnn` (test accuracy {info['test_accuracy']:.4f}); the first {n:,} MNIST "
        f"test images, batches of {BATCH}; median of {repeats} interleaved passes per model "
        "and mode. Ratio = sanitized / undefended in the same mode (wall; CPU in "
        "parentheses). Goals from the issue: mask <= 1.02, median <= 1.15, NL-means <= 1.5 "
        "(paper: +0.2%, +0.2%, +5%, hardware not stated).",
        "",
        "| model | sanitizer | after | graph (s) | graph ratio | XLA (s) | XLA ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    g0, x0 = times["graph"]["undefended"], times["xla"]["undefended"]
    for key, (_, text, after) in models.items():
        g, xl = times["graph"][key], times["xla"][key]
        lines.append(
            f"| {key} | {text} | {after} | {g[0]:.3f} | {g[0] / g0[0]:.2f} ({g[1] / g0[1]:.2f}) "
            f"| {xl[0]:.3f} | {xl[0] / x0[0]:.2f} ({xl[1] / x0[1]:.2f}) |"
        )
    unpaired = times["xla"]["NL-means, every offset alone"][0]
    paired = times["xla"]["NL-means (chosen)"][0]
    unpaired_g = times["graph"]["NL-means, every offset alone"][0]
    paired_g = times["graph"]["NL-means (chosen)"][0]
    macs = counts["classifier multiply-adds"]
    nlm_ops = counts[NLM]
    mask_us = (times["xla"]["mask (chosen)"][0] - x0[0]) / n * 1e6
    mask_bytes = 3 * 4 * counts[MASK] / 3  # 3 passes of 4 bytes per activation
    if mask_us > 0:
        mask_text = (
            f"{mask_us:.0f} microseconds per image here, {mask_bytes / mask_us / 1e3:.0f} "
            f"GB/s of map traffic, against {bandwidth:.0f} GB/s for a plain XLA scale-and-"
            "copy of 256 MB on this machine in the same run"
        )
    else:
        mask_text = "too small to measure in this run"
    lines += [
        "",
        f"Pairing the offsets `o` and `-o` (their patch distances are equal, so the "
        f"weights of `-o` are those of `o` shifted): NL-means time / the unpaired "
        f"implementation = {paired_g / unpaired_g:.2f} in graph mode, "
        f"{paired / unpaired:.2f} with XLA, same run.",
        "",
        "## Operation counts per image",
        "",
        "| what | operations | / classifier multiply-adds |",
        "|---|---|---|",
    ]
    for key, value in counts.items():
        lines.append(f"| {key} | {value / 1e6:.2f} M | {value / macs:.3f} |")
    lines += [
        "",
        f"The classifier's multiply-adds run in oneDNN's matrix kernels at a large share "
        f"of the cores' peak (here {2 * macs * n / x0[0] / 1e9:.0f} G operations/s with "
        "XLA); the sanitizers' elementwise operations run at memory speed at best. "
        "NL-means with its 7x7 search window on the four conv layers issues "
        f"{nlm_ops / macs:.1f} times as many operations per image as the classifier "
        "has multiply-adds, so even at the classifier's speed (2 operations per "
        f"multiply-add) it would cost about {1 + nlm_ops / (2 * macs):.1f}x the "
        "undefended time: the 1.5 goal is out of reach with that window on this model "
        "whatever the implementation. Ours "
        f"reaches {nlm_ops * n / paired / 1e9:.1f} G operations/s: the unrolled graph "
        "of 24 offset pairs per layer is memory-bound, and pairing the offsets only "
        "helps where the graph runs op by op. A fused kernel per layer is what would "
        "close the gap; a 3x3 search window (8 candidates) or fewer layers are the "
        "knobs a user has. The mask and the median are "
        f"{100 * counts[MASK] / macs:.1f}% and {100 * counts[MEDIAN] / macs:.1f}% of "
        "the multiply-adds; their overhead is extra passes over memory. The mask needs "
        "each map's maximum before it can mask anything, so it reads each map twice "
        f"more and writes it once ({mask_bytes / 1e6:.2f} MB per image for the four "
        f"maps): {mask_text}; a 2% overhead would need the mask inside the "
        "convolution's own kernel. In graph mode every sanitizer also adds kernel "
        "launches per layer.",
    ]
    name = "sanitizer_overhead_quick.md" if args.quick else "sanitizer_overhead.md"
    (RESULTS / name).write_text("\n".join(lines) + "\n")
    log(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
