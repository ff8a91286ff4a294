"""Apache Beam pipelines: extraction, exact class medoids, batch scoring (floor 4).

Install the optional extra: `pip install "keras-advguard[beam]"`. Importing
`keras_advguard` never imports Apache Beam; importing this module does when
it is installed (the transforms subclass Beam's classes at module level, so
runners pickle them by reference and workers import them from the installed
package). Without Beam, the module still imports and every entry point raises
`ImportError` saying what to install.

The three pipelines of the paper's ImageNet setting, as composable
`PTransform`s, runnable on any Beam runner (DirectRunner in the tests,
Dataflow, Flink or Spark at scale; see the "At scale" page):

1. `ExtractActivations(model_path)`: `RunInference` with `KerasModelHandler`,
   which loads a tapped `.keras` model (`DetectorModel.save`) in safe mode.
   Input elements are `(sample_index, x)` or `(sample_index, (x, label))`;
   output records are dicts `{"sample_index", "label", "predicted_class",
   "activations": {tap: vector}}`. `WriteActivationStore(directory)` writes
   them as an `ActivationStore` (shards in parallel, one index at the end).
2. `ComputeClassMedoids(num_classes)`: keyed by (layer, class), grouped, and
   the exact medoid of each group computed in parallel with the code of
   `ClassMedoids.fit` (same medoids, bit for bit); `WriteMedoids(path,
   tap_names)` writes the medoids file `load_medoids` reads (and
   `MedoidLSTMDetector.from_medoids(model, load_medoids(path))` takes).
3. `ScoreWithDetector(detector_path)`: `(key, x)` -> `(key, score)` with a
   detector saved by `Detector.save` (the classifier inside the file).

`run_medoids` and `run_scoring` build and run these on numpy arrays (tests,
benchmarks, small sets); at scale, apply the transforms to a PCollection
read from your image files.

Why not Beam's `TFModelHandlerNumpy`: its module imports `tensorflow_hub`
(which pulls in `tf-keras`, the legacy Keras 2, next to Keras 3), it loads
through `tf.keras.models.load_model` without the library's custom objects
being guaranteed registered, and its default inference function splits
only flat outputs per example, not the nested
`{"activations": {tap: ...}, ...}` dict of a `DetectorModel`.
`KerasModelHandler` is the same `ModelHandler` interface (batching,
`KeyedModelHandler`, `large_model`) with Keras 3 loading and the nested
split.
"""

import os

import numpy as np

try:  # the optional `beam` extra
    import apache_beam as beam
    from apache_beam.ml.inference import base as inference
except ImportError:  # pragma: no cover - exercised where Beam is missing
    beam = None
    inference = None

_DoFn = beam.DoFn if beam is not None else object
_PTransform = beam.PTransform if beam is not None else object
_ModelHandler = inference.ModelHandler if inference is not None else object

INSTALL = 'pip install "keras-advguard[beam]"'


def _require():
    if beam is None:
        raise ImportError(
            f"keras_advguard.pipelines.beam needs Apache Beam, which is not installed: {INSTALL}"
        )


def _per_example(outputs, i):
    if isinstance(outputs, dict):
        return {key: _per_example(value, i) for key, value in outputs.items()}
    return np.asarray(outputs[i])


class KerasModelHandler(_ModelHandler):
    """A Beam `ModelHandler` for a Keras 3 `.keras` model, e.g. a saved `DetectorModel`.

    `load_model` reads the file with `keras_advguard.load_model` (safe
    mode); `run_inference` stacks a batch of examples (numpy arrays of the
    model's input shape), runs the model once (a `DetectorModel` through
    `iter_activations`, which checks the shape and finiteness of the batch)
    and returns one `PredictionResult` per example whose `inference` is the
    example's slice of the output dict (`{"prediction", "logits",
    "activations": {tap: vector}}` for a `DetectorModel`).

    Args:
        model_path: the `.keras` file (a path every worker can read: a
            shared file system, or `gs://` / `s3://` paths copied locally
            first).
        min_batch_size: smallest batch `RunInference` forms. Defaults to `None`.
        max_batch_size: largest batch. Defaults to `None` (Beam's default).
        large_model: share one model between the worker's processes.
            Defaults to `False`.

    Raises:
        ImportError: Apache Beam is not installed.
    """

    def __init__(self, model_path, *, min_batch_size=None, max_batch_size=None, large_model=False):
        _require()
        super().__init__(
            min_batch_size=min_batch_size, max_batch_size=max_batch_size, large_model=large_model
        )
        self.model_path = os.fspath(model_path)

    def load_model(self):
        from keras_advguard.saving import load_model

        return load_model(self.model_path, compile=False)

    def run_inference(self, batch, model, inference_args=None):
        xb = np.stack([np.asarray(example, dtype=np.float32) for example in batch])
        if hasattr(model, "iter_activations"):
            outputs, _ = next(iter(model.iter_activations(xb, batch_size=max(1, len(xb)))))
        else:
            outputs = model.predict_on_batch(xb)
        return [
            inference.PredictionResult(example, _per_example(outputs, i))
            for i, example in enumerate(batch)
        ]

    def get_num_bytes(self, batch):
        return int(sum(np.asarray(example).nbytes for example in batch))

    def get_metrics_namespace(self):
        return "keras_advguard"


def _keyed(element):
    index, value = element
    if isinstance(value, tuple):
        x, label = value
        return (int(index), None if label is None else int(label)), x
    return (int(index), None), value


def _record(element):
    (index, label), result = element
    out = result.inference
    return {
        "sample_index": index,
        "label": label,
        "predicted_class": int(np.argmax(out["prediction"])),
        "activations": dict(out["activations"]),
    }


class ExtractActivations(_PTransform):
    """`(sample_index, x)` or `(sample_index, (x, label))` -> activation records.

    `RunInference(KeyedModelHandler(KerasModelHandler(model_path)))`, then one
    dict per example: `{"sample_index", "label" (or None), "predicted_class",
    "activations": {tap: vector}}`.

    Args:
        model_path: a tapped `.keras` model (`DetectorModel.save`).
        batch_size: the largest inference batch. Defaults to `64`.
        large_model: see `KerasModelHandler`. Defaults to `False`.
    """

    def __init__(self, model_path, *, batch_size=64, large_model=False):
        _require()
        super().__init__()
        self.model_path = os.fspath(model_path)
        self.batch_size = int(batch_size)
        self.large_model = large_model

    def expand(self, examples):
        handler = inference.KeyedModelHandler(
            KerasModelHandler(
                self.model_path,
                min_batch_size=1,
                max_batch_size=self.batch_size,
                large_model=self.large_model,
            )
        )
        return (
            examples
            | "Key" >> beam.Map(_keyed)
            | "RunInference" >> inference.RunInference(handler)
            | "Record" >> beam.Map(_record)
        )


def _write_shard(records, directory, tap_names):
    from keras_advguard.activation_store import ActivationStore

    records = sorted(records, key=lambda r: r["sample_index"])
    names = tap_names or list(records[0]["activations"])
    index = np.array([r["sample_index"] for r in records], dtype=np.int64)
    has_labels = records[0]["label"] is not None
    layers = [np.stack([np.asarray(r["activations"][n]) for r in records]) for n in names]
    record = ActivationStore.write_shard(
        directory,
        f"{index[0]:012d}-{len(index):06d}",
        index,
        np.array([r["predicted_class"] for r in records], dtype=np.int64),
        layers,
        labels=np.array([r["label"] for r in records], dtype=np.int64) if has_labels else None,
    )
    record["layers"] = [
        {"name": n, "shape": list(a.shape[1:]), "dtype": a.dtype.name}
        for n, a in zip(names, layers, strict=True)
    ]
    record["has_labels"] = has_labels
    return record


def _write_index(records, directory, num_outputs, weights_sha256):
    from keras_advguard.activation_store import ActivationStore

    if not records:
        raise ValueError(f"No activation records reached the store {directory!r}.")
    layers = records[0]["layers"]
    shards = [{"id": r["id"], "rows": r["rows"], "batches": r["batches"]} for r in records]
    ActivationStore.write_index(
        directory,
        layers,
        shards,
        has_labels=records[0]["has_labels"],
        num_outputs=num_outputs,
        weights_sha256=weights_sha256,
    )
    return directory


class WriteActivationStore(_PTransform):
    """Activation records -> an `ActivationStore` folder (shards in parallel, then the index).

    Records are batched into shards of at most `shard_size` rows, each written
    atomically by the worker that holds it (`ActivationStore.write_shard`);
    one final step writes `index.json` with the shards that the runner
    committed, so the files of a retried bundle's failed attempt stay out
    of the index. Outputs the folder's path.

    Args:
        directory: the store folder (shared by all workers).
        shard_size: the largest shard. Defaults to `1024`.
        tap_names: the layers in tap order. Defaults to `None` (the records'
            order).
        num_outputs: the classifier's number of classes, for the index.
            Defaults to `None`.
        weights_sha256: the classifier's fingerprint, for the index.
            Defaults to `None`.
    """

    def __init__(
        self, directory, *, shard_size=1024, tap_names=None, num_outputs=None, weights_sha256=None
    ):
        _require()
        super().__init__()
        self.directory = os.fspath(directory)
        self.shard_size = int(shard_size)
        self.tap_names = None if tap_names is None else list(tap_names)
        self.num_outputs = num_outputs
        self.weights_sha256 = weights_sha256

    def expand(self, records):
        return (
            records
            | "Shards" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.shard_size)
            | "WriteShards" >> beam.Map(_write_shard, self.directory, self.tap_names)
            | "AllShards" >> beam.combiners.ToList()
            | "WriteIndex"
            >> beam.Map(_write_index, self.directory, self.num_outputs, self.weights_sha256)
        )


def _by_layer_and_class(record, only_correct):
    label = record["label"]
    if label is None:
        raise ValueError(
            "Class medoids need the true labels: give the examples as "
            f"(sample_index, (x, label)). Received: a record without a label "
            f"(sample_index={record['sample_index']})"
        )
    if only_correct and record["predicted_class"] != label:
        return
    for name, vector in record["activations"].items():
        yield (name, int(label)), (int(record["sample_index"]), np.asarray(vector))


def _medoid_of_group(element, max_samples_per_class, seed, block_size):
    from keras_advguard.activation_store import class_subset, medoid_position

    (name, label), members = element
    members = sorted(members, key=lambda m: m[0])
    index = np.array([m[0] for m in members], dtype=np.int64)
    keep = class_subset(index, label, max_samples_per_class, seed)
    points = np.stack([members[i][1] for i in keep])
    local = medoid_position(points, block_size)
    return {
        "layer": name,
        "class": label,
        "medoid": points[local],
        "sample_index": int(index[keep][local]),
        "count": len(keep),
    }


class ComputeClassMedoids(_PTransform):
    """Activation records -> one exact medoid per (layer, class), computed in parallel.

    Records are keyed by (layer, label), grouped (`GroupByKey`), and each
    group's members ordered by `sample_index` and reduced with the code of
    `ClassMedoids.fit` (`max_samples_per_class` draws the subset
    `ClassMedoids` draws), so the medoids equal those of `ClassMedoids.fit`
    on the same activations in memory. A group holds one class of one layer
    (`K_c x N_l`): that bounds a worker's memory.

    Args:
        only_correct: only correctly classified records. Defaults to `False`.
        max_samples_per_class: random subset cap. Defaults to `None`.
        seed: seed of the subsets. Defaults to `0`.
        block_size: `ClassMedoids`' block size. Defaults to `512`.

    Output elements: `{"layer", "class", "medoid", "sample_index", "count"}`.
    """

    def __init__(self, *, only_correct=False, max_samples_per_class=None, seed=0, block_size=512):
        _require()
        super().__init__()
        self.only_correct = bool(only_correct)
        self.max_samples_per_class = max_samples_per_class
        self.seed = int(seed)
        self.block_size = int(block_size)

    def expand(self, records):
        return (
            records
            | "KeyByLayerAndClass" >> beam.FlatMap(_by_layer_and_class, self.only_correct)
            | "GroupByLayerAndClass" >> beam.GroupByKey()
            | "Medoid"
            >> beam.Map(_medoid_of_group, self.max_samples_per_class, self.seed, self.block_size)
        )


def _save_medoids(results, path, tap_names, num_classes):
    from keras_advguard.activation_store import save_medoids
    from keras_advguard.detectors import ClassMedoids

    names = list(tap_names) if tap_names else sorted({r["layer"] for r in results})
    if num_classes is None:
        num_classes = max(r["class"] for r in results) + 1 if results else 0
    found = {(r["layer"], r["class"]): r for r in results}
    missing = sorted({c for n in names for c in range(num_classes) if (n, c) not in found})
    if missing or not names:
        raise ValueError(
            "Every class needs at least one sample to have a medoid, but class "
            f"{', '.join(map(str, missing[:20]))} has none. Received: "
            f"num_classes={num_classes}, layers {names}"
        )
    medoids = ClassMedoids(num_classes=num_classes)
    medoids.medoids_ = {
        n: np.stack([found[(n, c)]["medoid"] for c in range(num_classes)]) for n in names
    }
    medoids.medoid_indices_ = {
        n: np.array([found[(n, c)]["sample_index"] for c in range(num_classes)]) for n in names
    }
    medoids.classes_ = np.arange(num_classes)
    medoids.n_samples_per_class_ = np.array(
        [found[(names[0], c)]["count"] for c in range(num_classes)]
    )
    save_medoids(path, medoids)
    return path


class WriteMedoids(_PTransform):
    """Medoid elements (`ComputeClassMedoids`) -> the medoids file (`save_medoids`).

    Args:
        path: the `.npz` file written (atomically, by one worker).
        tap_names: the layers, in tap order (the file's order). Defaults to
            `None` (sorted names).
        num_classes: `C`; a class without a medoid is an error. Defaults to
            `None` (one more than the largest class seen).
    """

    def __init__(self, path, *, tap_names=None, num_classes=None):
        _require()
        super().__init__()
        self.path = os.fspath(path)
        self.tap_names = None if tap_names is None else list(tap_names)
        self.num_classes = num_classes

    def expand(self, medoids):
        return (
            medoids
            | "AllMedoids" >> beam.combiners.ToList()
            | "Save" >> beam.Map(_save_medoids, self.path, self.tap_names, self.num_classes)
        )


class _ScoreFn(_DoFn):
    def __init__(self, detector_path):
        self.detector_path = detector_path
        self.detector = None

    def setup(self):
        from keras_advguard.detectors import load_detector

        self.detector = load_detector(self.detector_path)

    def process(self, batch):
        keys = [key for key, _ in batch]
        xb = np.stack([np.asarray(x, dtype=np.float32) for _, x in batch])
        scores = self.detector.score(xb, batch_size=max(1, len(xb)))
        yield from zip(keys, (float(s) for s in scores))


class ScoreWithDetector(_PTransform):
    """`(key, x)` -> `(key, score)` with a detector saved by `Detector.save`.

    Each worker loads the detector once (`load_detector`, the classifier
    being inside the file: `save(path, include_model=True)`, the default) and
    scores batches of up to `batch_size` inputs.

    Args:
        detector_path: the detector file, readable by every worker.
        batch_size: the largest batch. Defaults to `64`.
    """

    def __init__(self, detector_path, *, batch_size=64):
        _require()
        super().__init__()
        self.detector_path = os.fspath(detector_path)
        self.batch_size = int(batch_size)

    def expand(self, examples):
        return (
            examples
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self.batch_size)
            | "Score" >> beam.ParDo(_ScoreFn(self.detector_path))
        )


# ----------------------------------------------------------------------
# Whole pipelines on numpy arrays


def _examples(pipeline, x, y=None):
    if y is None:
        items = [(i, np.asarray(x[i])) for i in range(len(x))]
    else:
        y = np.asarray(y)
        if y.ndim == 2:
            y = np.argmax(y, axis=1)
        items = [(i, (np.asarray(x[i]), int(y[i]))) for i in range(len(x))]
    return pipeline | "Examples" >> beam.Create(items)


def run_medoids(
    model_path,
    x,
    y,
    medoids_path,
    *,
    num_classes=None,
    store_dir=None,
    only_correct=False,
    max_samples_per_class=None,
    seed=0,
    block_size=512,
    batch_size=64,
    shard_size=1024,
    options=None,
):
    """Extraction + class medoids on a Beam runner, for numpy inputs.

    `x, y -> ExtractActivations -> ComputeClassMedoids -> WriteMedoids`, and
    with `store_dir` also `-> WriteActivationStore` from the same records.

    Args:
        model_path: a tapped `.keras` model (`DetectorModel.save`).
        x: inputs `(N, ...)`.
        y: labels, int `(N,)` or one-hot `(N, C)`.
        medoids_path: the medoids file written (`.npz`).
        num_classes: `C`. Defaults to `None` (one more than the largest label).
        store_dir: also write an `ActivationStore` there. Defaults to `None`.
        only_correct: see `ClassMedoids`. Defaults to `False`.
        max_samples_per_class: see `ClassMedoids`. Defaults to `None`.
        seed: see `ClassMedoids`. Defaults to `0`.
        block_size: see `ClassMedoids`. Defaults to `512`.
        batch_size: the largest inference batch. Defaults to `64`.
        shard_size: the largest store shard. Defaults to `1024`.
        options: `apache_beam.options.pipeline_options.PipelineOptions`.
            Defaults to `None` (the DirectRunner).

    Returns:
        The fitted `ClassMedoids` read back from `medoids_path`.

    Raises:
        ImportError: Apache Beam is not installed.
    """
    _require()
    from keras_advguard.activation_store import load_medoids
    from keras_advguard.saving import load_model

    taps = load_model(os.fspath(model_path), compile=False)
    tap_names = list(taps.tap_names)
    with beam.Pipeline(options=options) as pipeline:
        records = _examples(pipeline, x, y) | "Extract" >> ExtractActivations(
            model_path, batch_size=batch_size
        )
        if store_dir is not None:
            from keras_advguard._fingerprint import weights_fingerprint

            _ = records | "Store" >> WriteActivationStore(
                store_dir,
                shard_size=shard_size,
                tap_names=tap_names,
                num_outputs=int(taps.output["prediction"].shape[-1]),
                weights_sha256=weights_fingerprint(taps),
            )
        _ = (
            records
            | "Medoids"
            >> ComputeClassMedoids(
                only_correct=only_correct,
                max_samples_per_class=max_samples_per_class,
                seed=seed,
                block_size=block_size,
            )
            | "WriteMedoids"
            >> WriteMedoids(medoids_path, tap_names=tap_names, num_classes=num_classes)
        )
    return load_medoids(medoids_path)


def _save_scores(pairs, path):
    from keras_advguard import _files

    pairs = sorted(pairs)
    scores = np.array([s for _, s in pairs], dtype=np.float64)
    _files.write_atomic(os.fspath(path), lambda tmp: np.save(tmp, scores), suffix=".npy")
    return path


def run_scoring(detector_path, x, scores_path, *, batch_size=64, options=None):
    """Score numpy inputs with a saved detector on a Beam runner.

    Args:
        detector_path: a file written by `Detector.save` (classifier included).
        x: inputs `(N, ...)`.
        scores_path: the `.npy` file written: float64 `(N,)` in input order.
        batch_size: the largest batch. Defaults to `64`.
        options: `PipelineOptions`. Defaults to `None` (the DirectRunner).

    Returns:
        The scores, float64 `(N,)`.

    Raises:
        ImportError: Apache Beam is not installed.
    """
    _require()
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            _examples(pipeline, x)
            | "Score" >> ScoreWithDetector(detector_path, batch_size=batch_size)
            | "AllScores" >> beam.combiners.ToList()
            | "Save" >> beam.Map(_save_scores, scores_path)
        )
    return np.load(os.fspath(scores_path))
