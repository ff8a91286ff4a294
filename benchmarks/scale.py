"""Benchmark: ImageNet-shaped class medoids through the activation store and Apache Beam.

A synthetic ImageNet-shaped case: `--classes` classes (several sizes, to see
how memory behaves as they grow) of `--per-class` samples, `--layers` tapped
layers of `--features` channels each (ImageNet: 1,000 classes x ~1,281
images, InceptionV3's mixed blocks up to 2,048 channels). The "classifier"
is a cheap stand-in whose taps are the synthetic activations (class centres
plus noise, generated batch by batch by `tf.data`, so the input never sits
in memory): the benchmark measures the store and the medoids, not a CNN.

1. Store path, one fresh process per class count: `ActivationStore.extract`
   (streaming, interleaved classes: every shard holds every class, the worst
   case for reading one class) then `ActivationStore.fit_medoids` (one class
   of one layer in memory at a time). Peak resident memory
   (`resource.getrusage`) and the traced numpy peak of the medoid phase
   (`tracemalloc`), which must stay flat as classes grow; CPU time, so
   throughput per core is work / CPU-seconds.
2. Beam path (when `apache_beam` is importable): `run_medoids` on the
   DirectRunner, extraction with `RunInference` + `KerasModelHandler`, then
   group-by-(layer, class) medoids; its medoids checked equal (bit for bit)
   to `fit_medoids` on the store the same pipeline wrote.
3. The extrapolated cost of the full ImageNet medoid computation
   (1,000 classes x 1,281 images x InceptionV3's 11 mixed blocks) on N
   workers, from the measured CPU-seconds per (class, layer): the medoid of a
   class costs O(K^2 N_l), so it is scaled by (1281 / K)^2 and the block width.

Usage (results: `benchmarks/results/scale.md`, the runs in `scale.json`):

    nice -n 19 python benchmarks/scale.py        # 20, 50, 100 classes: minutes
    nice -n 19 /path/to/beam-venv/bin/python benchmarks/scale.py   # with Beam rows
    python benchmarks/scale.py --classes 10 20 --beam-classes 4   # smaller
    python benchmarks/scale.py --quick           # seconds
    python benchmarks/scale.py --runs scale.json # the report again from saved runs
"""

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Channel widths of InceptionV3's mixed0 .. mixed10 blocks (global-average pooled).
INCEPTION_MIXED_WIDTHS = [256, 288, 288, 768, 768, 768, 768, 768, 1280, 2048, 2048]
IMAGENET_CLASSES, IMAGENET_IMAGES = 1000, 1_281_167


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _taps(num_classes, features, layers):
    import keras

    from keras_advguard import DetectorModel

    keras.utils.set_random_seed(0)
    inputs = keras.Input((features,), name="features")
    h, names = inputs, []
    for j in range(layers):
        h = keras.layers.Rescaling(1.0 + 0.25 * j, name=f"scale{j}")(h)
        h = keras.layers.ReLU(name=f"block{j}")(h)
        names.append(f"block{j}")
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(h)
    return DetectorModel(keras.Model(inputs, outputs), layers=names)


def _dataset(num_classes, per_class, features, batch_size):
    import numpy as np
    import tensorflow as tf

    centres = tf.constant(
        np.abs(np.random.default_rng(0).normal(size=(num_classes, features))), tf.float32
    )

    def make(i):
        labels = tf.cast(i % num_classes, tf.int32)
        seed = tf.stack([tf.cast(i[0], tf.int32), 0])
        noise = tf.random.stateless_normal((tf.shape(i)[0], features), seed=seed, stddev=0.5)
        return tf.gather(centres, labels) + noise, labels

    n = num_classes * per_class
    return tf.data.Dataset.range(n).batch(batch_size).map(make)


def one_store_run(args, num_classes):
    """Extract + fit_medoids for one class count; returns a dict of measurements."""
    import numpy as np

    from keras_advguard.activation_store import ActivationStore

    taps = _taps(num_classes, args.features, args.layers)
    data = _dataset(num_classes, args.per_class, args.features, args.batch_size)
    rss_ready = _rss_mb()
    folder = tempfile.mkdtemp(prefix="advguard_scale_", dir=args.workdir)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        store = ActivationStore.extract(
            folder, taps, data, shard_size=args.shard_size, batch_size=args.batch_size
        )
        extract_wall, extract_cpu = time.perf_counter() - wall, time.process_time() - cpu
        rss_extract = _rss_mb()
        disk = sum(f.stat().st_size for f in Path(folder).rglob("*.npy"))
        tracemalloc.start()
        wall, cpu = time.perf_counter(), time.process_time()
        medoids = store.fit_medoids(num_classes=num_classes)
        medoid_wall, medoid_cpu = time.perf_counter() - wall, time.process_time() - cpu
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_end = _rss_mb()
        check = int(np.sum(medoids.n_samples_per_class_))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    n = num_classes * args.per_class
    return {
        "classes": num_classes,
        "per_class": args.per_class,
        "features": args.features,
        "layers": args.layers,
        "samples": n,
        "store_gb": disk / 1e9,
        "shards": len(store.shards),
        "extract_wall_s": extract_wall,
        "extract_cpu_s": extract_cpu,
        "medoid_wall_s": medoid_wall,
        "medoid_cpu_s": medoid_cpu,
        "rss_ready_mb": rss_ready,
        "rss_after_extract_mb": rss_extract,
        "rss_peak_mb": rss_end,
        "medoid_traced_peak_mb": traced_peak / 2**20,
        "class_layer_mb": args.per_class * args.features * 4 / 2**20,
        "samples_in_medoids": check,
    }


def one_beam_run(args, num_classes):
    """run_medoids on the DirectRunner; medoids checked against the store it wrote."""
    import numpy as np
    import tensorflow as tf

    from keras_advguard.activation_store import ActivationStore
    from keras_advguard.pipelines import beam as pipelines

    taps = _taps(num_classes, args.features, args.layers)
    per_class = args.beam_per_class
    x, y = [], []
    for xb, yb in _dataset(num_classes, per_class, args.features, 256):
        x.append(np.asarray(xb))
        y.append(np.asarray(yb))
    x, y = np.concatenate(x), np.concatenate(y)
    del tf
    folder = tempfile.mkdtemp(prefix="advguard_scale_beam_", dir=args.workdir)
    try:
        model_path = os.path.join(folder, "taps.keras")
        taps.save(model_path)
        rss_ready = _rss_mb()
        wall, cpu = time.perf_counter(), time.process_time()
        medoids = pipelines.run_medoids(
            model_path,
            x,
            y,
            os.path.join(folder, "medoids.npz"),
            num_classes=num_classes,
            store_dir=os.path.join(folder, "store"),
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            options=_beam_options(args),
        )
        beam_wall, beam_cpu = time.perf_counter() - wall, time.process_time() - cpu
        store = ActivationStore(os.path.join(folder, "store"))
        expected = store.fit_medoids(num_classes=num_classes)
        same = all(
            np.array_equal(medoids.medoids_[n], expected.medoids_[n])
            and np.array_equal(medoids.medoid_indices_[n], expected.medoid_indices_[n])
            for n in taps.tap_names
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "classes": num_classes,
        "samples": len(x),
        "wall_s": beam_wall,
        "driver_cpu_s": beam_cpu,
        "rss_ready_mb": rss_ready,
        "rss_peak_mb": _rss_mb(),
        "layer_rows_per_cpu_s": len(x) * args.layers / beam_cpu,
        "same_medoids_as_store": bool(same),
        "workers": args.beam_workers,
    }


def _beam_version():
    try:
        import apache_beam
    except ImportError:
        return None
    return apache_beam.__version__


def _beam_options(args):
    from apache_beam.options.pipeline_options import PipelineOptions

    if args.beam_workers > 1:
        return PipelineOptions(
            direct_num_workers=args.beam_workers, direct_running_mode="multi_processing"
        )
    return PipelineOptions(direct_num_workers=1, direct_running_mode="in_memory")


def _child(args, mode, classes):
    command = [sys.executable, __file__, "--child", mode, str(classes)]
    for key in (
        "per_class",
        "features",
        "layers",
        "batch_size",
        "shard_size",
        "beam_per_class",
        "beam_workers",
    ):
        command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.workdir:
        command += ["--workdir", args.workdir]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} run for {classes} classes failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def extrapolate(store_runs, per_class, features, layers, workers, beam_runs=()):
    """CPU-hours of the full ImageNet medoids, and wall minutes on N workers."""
    # CPU-seconds of one (class, layer) at K = per_class, N_l = features (largest run).
    run = max(store_runs, key=lambda r: r["classes"])
    per_task = run["medoid_cpu_s"] / (run["classes"] * layers)
    k = IMAGENET_IMAGES / IMAGENET_CLASSES
    scale = (k / per_class) ** 2
    total = IMAGENET_CLASSES * sum(per_task * scale * w / features for w in INCEPTION_MIXED_WIDTHS)
    per_sample_extract = run["extract_cpu_s"] / (run["samples"] * layers * features)
    extract = IMAGENET_IMAGES * sum(INCEPTION_MIXED_WIDTHS) * per_sample_extract
    imagenet_bytes = IMAGENET_IMAGES * sum(INCEPTION_MIXED_WIDTHS) * 4
    beam = None
    if beam_runs:  # the DirectRunner's cost per activation byte (largest run), medoids included
        b = max(beam_runs, key=lambda r: r["samples"])
        beam = b["driver_cpu_s"] / (b["samples"] * layers * features * 4) * imagenet_bytes
    return {
        "per_task_cpu_s": per_task,
        "total_cpu_h": total / 3600,
        "store_write_cpu_h": extract / 3600,
        "store_tb": imagenet_bytes / 1e12,
        "beam_cpu_h": None if beam is None else beam / 3600,
        "workers": {n: (total / n / 60, None if beam is None else beam / n / 60) for n in workers},
    }


def report(args, store_runs, beam_runs, beam_note, extra):
    lines = [
        "# Scale: class medoids through the activation store and Apache Beam",
        "",
        f"`{' '.join(['python benchmarks/scale.py', *args.argv])}`"
        + (f" (apache-beam {_beam_version()})" if beam_runs and _beam_version() else ""),
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        "(shared with other jobs while this ran: wall times are pessimistic; CPU "
        "times count the work), Python "
        f"{platform.python_version()}.",
        "",
        f"Synthetic case: {args.per_class} samples per class, {args.layers} layers of "
        f"{args.features} features (float32), classes interleaved in the input (every "
        "shard holds every class: the worst case for reading one class), "
        f"shards of {args.shard_size} rows.",
        "",
        "## Store path (`ActivationStore.extract` + `fit_medoids`), one process per row",
        "",
        "| classes | samples | store GB | extract wall s | extract CPU s | medoids wall s "
        "| medoids CPU s | RSS ready MB | RSS peak MB | medoids traced peak MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in store_runs:
        lines.append(
            f"| {r['classes']} | {r['samples']} | {r['store_gb']:.2f} | "
            f"{r['extract_wall_s']:.1f} | {r['extract_cpu_s']:.1f} | {r['medoid_wall_s']:.1f} "
            f"| {r['medoid_cpu_s']:.1f} | {r['rss_ready_mb']:.0f} | {r['rss_peak_mb']:.0f} | "
            f"{r['medoid_traced_peak_mb']:.1f} |"
        )
    first, last = store_runs[0], store_runs[-1]
    growth = last["rss_peak_mb"] - last["rss_ready_mb"]
    growth0 = first["rss_peak_mb"] - first["rss_ready_mb"]
    lines += [
        "",
        f"Memory: from {first['classes']} to {last['classes']} classes "
        f"({last['samples'] / first['samples']:.0f}x the data, "
        f"{last['store_gb']:.2f} GB on disk) the resident peak above the ready process "
        f"goes from {growth0:.0f} MB to {growth:.0f} MB and the traced numpy peak of the "
        f"medoid phase from {first['medoid_traced_peak_mb']:.1f} MB to "
        f"{last['medoid_traced_peak_mb']:.1f} MB; one class of one layer is "
        f"{last['class_layer_mb']:.1f} MB (the medoid phase holds it, its float32 "
        "centred copy and two distance blocks). In-memory `ClassMedoids.fit` would hold "
        f"the {last['store_gb']:.2f} GB.",
        "",
        "Throughput per core (work / CPU-seconds, largest run): store writing "
        f"{last['samples'] * args.layers / last['extract_cpu_s']:,.0f} layer-rows/s "
        "(synthetic model, so mostly the streaming and `.npy` writing); medoids "
        f"{last['classes'] * args.layers / last['medoid_cpu_s']:.2f} (class, layer) "
        f"tasks/s at K={args.per_class}, N_l={args.features}, i.e. "
        f"{last['classes'] * args.layers * args.per_class**2 * args.features / 1e9 / last['medoid_cpu_s']:.1f} "  # noqa: E501
        "G multiply-adds/s of the K^2 N_l distance products.",
        "",
    ]
    lines += ["## Beam path (`pipelines.beam.run_medoids`, DirectRunner)", ""]
    if beam_runs:
        lines += [
            "| classes | samples | workers | wall s | CPU s | layer-rows / CPU-s | RSS ready MB "
            "| RSS peak MB | medoids equal the store's |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|:---|",
        ]
        for r in beam_runs:
            lines.append(
                f"| {r['classes']} | {r['samples']} | {r['workers']} | {r['wall_s']:.1f} | "
                f"{r['driver_cpu_s']:.1f} | "
                f"{r['samples'] * args.layers / r['driver_cpu_s']:,.0f} | "
                f"{r['rss_ready_mb']:.0f} | {r['rss_peak_mb']:.0f} | "
                f"{'yes (bit for bit)' if r['same_medoids_as_store'] else 'NO'} |"
            )
        lines += [
            "",
            "The DirectRunner is a single-machine test runner: it keeps every "
            "`GroupByKey` in memory and moves each activation vector as a pickled "
            "element, so its memory grows with the data and its throughput is far below "
            "the store path's. It shows the pipeline is correct (same medoids); the scale "
            "comes from a distributed runner (Dataflow, Flink, Spark), where a worker "
            "holds one (layer, class) group at a time.",
            "",
        ]
    else:
        lines += [beam_note, ""]
    lines += [
        "## Extrapolation: the full ImageNet medoids (1,000 classes x 1,281 images x the 11 "
        "InceptionV3 mixed blocks)",
        "",
        f"Measured: {extra['per_task_cpu_s']:.3f} CPU-s per (class, layer) at "
        f"K={args.per_class}, N_l={args.features}. Scaled by (1,281 / K)^2 and each "
        f"block's width ({sum(INCEPTION_MIXED_WIDTHS):,} channels in all): "
        f"**{extra['total_cpu_h']:.1f} CPU-hours** of medoids; the store is "
        f"{extra['store_tb'] * 1000:.0f} GB (float32), written in "
        f"{extra['store_write_cpu_h']:.2f} CPU-hours (the InceptionV3 forward pass, "
        "~5.7 G multiply-adds per image, comes on top and dominates extraction).",
        "",
        "| workers (1 core each) | store path: medoid wall minutes | Beam at the "
        "DirectRunner's per-byte cost: wall minutes |",
        "|---:|---:|---:|",
    ]
    for n, (store_min, beam_min) in extra["workers"].items():
        beam_text = "not run" if beam_min is None else f"{beam_min:,.1f}"
        lines.append(f"| {n} | {store_min:,.2f} | {beam_text} |")
    lines += [
        "",
        "Beam column: the DirectRunner's CPU-seconds per activation byte (largest Beam "
        "run: extraction, pickling of every vector, group-by and medoids) times the "
        f"{extra['store_tb'] * 1000:.0f} GB"
        + (
            f", {extra['beam_cpu_h']:,.0f} CPU-hours in all"
            if extra["beam_cpu_h"] is not None
            else ""
        )
        + ": an upper bound (a distributed runner serialises elements more cheaply), "
        "and the reason to let Beam shuffle activations only where a cluster is "
        "needed and to prefer the store on one machine.",
        "",
        "The 11,000 (class, layer) tasks are independent, so the split is near ideal "
        "until the number of cores approaches the number of tasks; each task reads "
        "K x N_l x 4 bytes (at most 10 MB) and holds about twice that.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--per-class", type=int, default=1300)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=2048)
    parser.add_argument("--beam-classes", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--beam-per-class", type=int, default=300)
    parser.add_argument("--beam-workers", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--workdir", default=None, help="Folder for the temporary stores.")
    parser.add_argument("--output", default=None, help="Markdown file written.")
    parser.add_argument("--quick", action="store_true", help="Small sizes, seconds.")
    parser.add_argument("--runs", default=None, help="Rewrite the report from saved runs.")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "CLASSES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    if args.child:
        mode, classes = args.child[0], int(args.child[1])
        run = one_store_run if mode == "store" else one_beam_run
        print(json.dumps(run(args, classes)))
        return
    if args.quick:
        args.classes, args.per_class, args.features = [4, 8], 100, 64
        args.beam_classes, args.beam_per_class = [3], 30
    results = Path(__file__).with_name("results")
    stem = "scale_quick" if args.quick else "scale"
    beam_note = (
        "Apache Beam is not installed in this environment "
        '(`pip install "keras-advguard[beam]"`): the Beam rows were not run.'
    )
    if args.runs:  # the saved runs (one JSON object per line), measured before
        text = Path(args.runs).read_text()
        try:  # scale.json (a list), or the JSON lines a run prints
            runs = json.loads(text)
        except json.JSONDecodeError:
            runs = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        runs = [r for r in runs if isinstance(r, dict) and "classes" in r]
        store_runs = [r for r in runs if "medoid_cpu_s" in r]
        beam_runs = [r for r in runs if "same_medoids_as_store" in r]
        args.argv = [a for a in args.argv if a not in ("--runs", args.runs)]  # same sizes
    else:
        store_runs, beam_runs = [], []
        for classes in args.classes:
            store_runs.append(_child(args, "store", classes))
            print(json.dumps(store_runs[-1]), flush=True)
        try:
            import apache_beam  # noqa: F401
        except ImportError:
            pass
        else:
            for classes in args.beam_classes:
                beam_runs.append(_child(args, "beam", classes))
                print(json.dumps(beam_runs[-1]), flush=True)
    from keras_advguard import _files

    _files.write_json(results / f"{stem}.json", store_runs + beam_runs)
    extra = extrapolate(
        store_runs, args.per_class, args.features, args.layers, args.workers, beam_runs
    )
    text = report(args, store_runs, beam_runs, beam_note, extra)
    output = args.output or str(results / f"{stem}.md")

    def write(tmp):
        Path(tmp).write_text(text + "\n")

    _files.write_atomic(output, write, suffix=".md")
    print(text)


if __name__ == "__main__":
    main()
