"""Benchmark: cost of tapping every Conv2D and Dense layer of MNIST-CNN.

Measures, in one run on the same inputs, with the shared harness
(`benchmarks/_harness.py`: interleaved repeats, wall and process CPU time,
load noted, the physical-limit rows):

1. with pooling (GAP on the maps): `DetectorModel(mnist_cnn,
   layers="conv+dense", pooling="avg")`'s `predict` and `activations()`
   against the plain `model.predict` (goal <= 1.05), and the compiled calls
   (`tf.function` of the tapped model against that of the plain one);
2. without pooling (`pooling=None`, the full maps): `activations()` against
   a hand-written loop, a `tf.function` returning the same maps batch by
   batch, converted to numpy into preallocated arrays (goal <= 1.05);
3. peak resident memory of `activations()` / `iter_activations()` over 1x,
   10x and 100x the data, each size in a fresh subprocess, with the data
   generated on the fly by a `tf.data.Dataset` so that only the library's
   working memory (and, for `activations()`, its pooled result) can grow.

Writes `benchmarks/results/taps.md` (`taps_quick.md` with `--quick`;
`_{device}` suffix on a GPU).

Usage:
    python benchmarks/taps.py [--quick] [--no-memory] [--images 10000] [--repeats 7]
"""

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness  # noqa: E402

log = _harness.log


def _inputs(n):
    import numpy as np

    path = _harness.mnist_path()
    if path is not None:
        with np.load(path) as data:
            x = data["x_test"][:n].astype("float32")[..., None] / 255.0
        return x, "MNIST test images"
    rng = np.random.default_rng(0)
    return rng.random((n, 28, 28, 1), dtype=np.float32), "uniform random 28x28 images"


def hand_loop(model, tap_names, batch_size):
    """A hand-written `tf.function` loop returning the tapped maps as numpy arrays."""
    import keras
    import numpy as np
    import tensorflow as tf

    outputs = [model.get_layer(name).output for name in tap_names]
    inner = keras.Model(model.inputs, outputs)
    fn = tf.function(lambda v: inner(v, training=False))

    def run(x):
        n = len(x)
        result = None
        for start in range(0, n, batch_size):
            maps = fn(x[start : start + batch_size])
            if result is None:
                result = [np.empty((n,) + tuple(m.shape[1:]), np.float32) for m in maps]
            for array, m in zip(result, maps):
                array[start : start + len(m)] = m.numpy()
        return dict(zip(tap_names, result))

    return run


def time_taps(n, repeats, batch_size):
    import numpy as np
    import tensorflow as tf

    from keras_advguard import DetectorModel
    from keras_advguard.models import mnist_cnn

    model = mnist_cnn()
    pooled = DetectorModel(model, layers="conv+dense", pooling="avg")
    full = DetectorModel(model, layers="conv+dense", pooling=None)
    x, source = _inputs(n)
    batches = [tf.constant(x[i : i + batch_size]) for i in range(0, n, batch_size)]
    plain_fn = tf.function(lambda v: model(v, training=False))
    pooled_fn = tf.function(lambda v: pooled(v, training=False))
    loop = hand_loop(model, pooled.tap_names, batch_size)

    # Same values: the library's full maps equal the hand-written loop's.
    mine, theirs = full.activations(x[:300], batch_size=batch_size), loop(x[:300])
    worst = max(float(np.max(np.abs(mine[k] - theirs[k]))) for k in theirs)
    log(f"pooling=None activations vs hand-written loop: max |difference| {worst:.2e}")

    candidates = {
        "plain `model.predict`": lambda: model.predict(x, batch_size=batch_size, verbose=0),
        "tapped `predict` (GAP)": lambda: pooled.predict(x, batch_size=batch_size, verbose=0),
        "tapped `activations()` (GAP)": lambda: pooled.activations(x, batch_size=batch_size),
        "plain compiled call": lambda: [plain_fn(b).numpy() for b in batches],
        "tapped compiled call (GAP)": lambda: [
            tf.nest.map_structure(lambda t: t.numpy(), pooled_fn(b)) for b in batches
        ],
        "hand-written `tf.function` loop (maps)": lambda: loop(x),
        "`activations()`, `pooling=None` (maps)": lambda: full.activations(
            x, batch_size=batch_size
        ),
    }
    with _harness.Load() as load:
        timings = _harness.interleaved(candidates, repeats, warmup=1, progress="taps")
    return {
        "timings": timings,
        "load": load.text(),
        "n": n,
        "source": source,
        "taps": pooled.tap_names,
        "worst": worst,
        "macs": _classifier_macs(model),
    }


def _classifier_macs(model):
    macs = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            macs += h * w * c_out * kh * kw * layer.input.shape[-1]
        elif kind == "Dense":
            macs += layer.input.shape[-1] * layer.units
    return macs


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
            {"base_mib": base / 1024, "peak_mib": peak / 1024, "result_mib": result_bytes / 2**20}
        )
    )


def memory(n, mode, batch_size):
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(n), mode, str(batch_size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--memory-child", nargs=3, metavar=("N", "MODE", "BATCH"))
    args = parser.parse_args()
    if args.memory_child:
        n, mode, batch = args.memory_child
        memory_child(int(n), mode, int(batch))
        return

    batch_size = 256
    n_time, repeats = (1000, 3) if args.quick else (10000, 7)
    n_time, repeats = args.images or n_time, args.repeats or repeats
    base_n = 500 if args.quick else 1000
    sizes = [base_n, 10 * base_n] if args.quick else [base_n, 10 * base_n, 100 * base_n]
    peak = _harness.matmul_peak()
    log(peak.text())
    timing = time_taps(n_time, repeats, batch_size)
    t = timing["timings"]
    limit = peak.seconds(2 * timing["macs"] * timing["n"])

    def row(name, base, goal=""):
        low, high = t[name].ratio_range(t[base])
        return (
            name,
            t[name].cell("cpu"),
            t[name].cell("wall"),
            f"**{t[name].ratio(t[base]):.3f}**",
            f"{t[name].ratio(t[base], 'wall'):.3f}",
            f"{low:.2f}-{high:.2f}",
            goal,
        )

    plain, compiled, loop = (
        "plain `model.predict`",
        "plain compiled call",
        "hand-written `tf.function` loop (maps)",
    )
    command = "python benchmarks/taps.py" + (" --quick" if args.quick else "")
    command += f" --images {n_time} --repeats {repeats}" if args.images or args.repeats else ""
    command += " --no-memory" if args.no_memory else ""
    lines = [
        "# Taps benchmark: MNIST-CNN, every Conv2D and Dense tapped",
        "",
        _harness.environment(command),
        "",
        "Model: `keras_advguard.models.mnist_cnn()` (Carlini & Wagner architecture; "
        "untrained weights: timing does not depend on the weight values). "
        f"Taps: {', '.join(timing['taps'])}.",
        "",
        "## Time",
        "",
        f"Same {timing['n']:,} inputs ({timing['source']}), batch {batch_size}, {repeats} "
        f"interleaved repeats (order rotated), {timing['load']}. Ratio of median CPU "
        "times (process time, all threads; wall next to it), per-repeat CPU ratios for "
        "the spread. Each row's ratio is against the row named in its 'against' column.",
        "",
        f"Physical limit: the classifier's {timing['macs'] / 1e6:.2f} M multiply-adds per "
        f"image at the matmul peak ({peak.text()}) take {limit:.3f} s for the "
        f"{timing['n']:,} images; one plain forward pass is the `plain` rows.",
        "",
    ]
    header = (
        "candidate",
        "CPU s [q1-q3]",
        "wall s [q1-q3]",
        "CPU ratio",
        "wall ratio",
        "per-repeat CPU ratios",
        "against (goal)",
    )
    rows = [
        (
            "physical limit (multiply-adds at matmul peak)",
            f"{limit:.3f}",
            "-",
            f"{limit / t[compiled].median_cpu:.3f}",
            "-",
            "-",
            "plain compiled call",
        ),
        row(plain, plain, "-"),
        row("tapped `predict` (GAP)", plain, "plain predict (<= 1.05)"),
        row("tapped `activations()` (GAP)", plain, "plain predict (<= 1.05)"),
        row(compiled, compiled, "-"),
        row("tapped compiled call (GAP)", compiled, "plain compiled call"),
        row(loop, loop, "-"),
        row("`activations()`, `pooling=None` (maps)", loop, "hand-written loop (<= 1.05)"),
    ]
    lines += _harness.table(header, rows)
    lines += [
        "",
        f"The library's `pooling=None` maps equal the hand-written loop's (max |difference| "
        f"{timing['worst']:.1e} on 300 images).",
        "",
    ]
    if args.no_memory:
        lines += [
            "Peak memory: not measured in this run (`--no-memory`). The last measurement "
            "(this file in git, 2026-11-21): `iter_activations` stays flat from 1,000 to "
            "100,000 images; `activations()` grows only by the pooled result it returns.",
        ]
    else:
        mem_rows = []
        for mode in ("iter_activations", "activations"):
            for n in sizes:
                m = memory(n, mode, batch_size)
                log(f"{mode} {n}: {m}")
                mem_rows.append(
                    (
                        f"`{mode}`",
                        f"{n:,}",
                        f"{m['base_mib']:.0f}",
                        f"{m['peak_mib']:.0f}",
                        f"{m['peak_mib'] - m['base_mib']:.0f}",
                        f"{m['result_mib']:.1f}",
                    )
                )
        lines += [
            "## Peak memory over growing data",
            "",
            "Each row is a fresh process; images are generated on the fly by a "
            "`tf.data.Dataset` (batch 256), so inputs never sit in memory. `base` is the "
            "resident set size after building the model, `peak` after the run, `result` "
            "the size of the returned pooled arrays (`activations()` returns them; "
            "`iter_activations()` streams and keeps nothing).",
            "",
        ]
        lines += _harness.table(
            (
                "method",
                "images",
                "base RSS (MiB)",
                "peak RSS (MiB)",
                "peak - base (MiB)",
                "returned arrays (MiB)",
            ),
            mem_rows,
        )
        lines += [
            "",
            "Reading: `iter_activations` working memory must stay flat as the data grows; "
            "`activations()` grows only by the pooled result it returns.",
        ]
    device = _harness.device_name()
    suffix = "" if device == "cpu" else f"_{device}"
    _harness.write_result(f"taps{'_quick' if args.quick else ''}{suffix}.md", lines)


if __name__ == "__main__":
    main()
