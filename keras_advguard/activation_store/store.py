"""`ActivationStore`: the shards, the index, extraction and reading (see the package)."""

import json
import os

import numpy as np

from keras_advguard import _batching, _files, _fingerprint, _validation

FORMAT = "keras_advguard.activation_store"
FORMAT_VERSION = 1
INDEX = "index.json"
SHARDS = "shards"


class ActivationStore:
    """A folder of activation shards with an index, readable one class at a time.

    Open an existing store with `ActivationStore(directory)`; write one with
    `ActivationStore.extract(directory, detector_model, x, y)`. The folder
    format is described in this module's documentation
    (`keras_advguard.activation_store`).

    Memory when reading: `read_class` returns one class of one layer
    (`K_c x N_l`), reading only those rows from the memory-mapped shards;
    besides, the store keeps three int64 arrays of length `N` (sample
    positions, labels, predictions: 30 MB for ImageNet's 1.28 million
    images).

    Args:
        directory: a folder written by `ActivationStore.extract` (or by the
            Beam extraction pipeline).

    Attributes:
        directory: the folder.
        tap_names: the layers, in tap order.
        layer_shapes: `{name: trailing shape}`.
        layer_dtypes: `{name: numpy dtype}`.
        num_samples: the number of rows stored.
        num_outputs: the classifier's number of classes (`None` when unknown).
        complete: whether the extraction finished.
        sample_index: int64 `(num_samples,)`, each row's position in the input.
        labels: int64 `(num_samples,)` class ids, or `None` (stored without
            labels).
        predicted_class: int64 `(num_samples,)`, the classifier's argmax.
        weights_sha256: fingerprint of the classifier the rows came from.

    Raises:
        ValueError: a folder without a valid `index.json`.

    Example:

        >>> import tempfile, keras, numpy as np
        >>> from keras_advguard import DetectorModel
        >>> from keras_advguard.activation_store import ActivationStore
        >>> classifier = keras.Sequential([
        ...     keras.Input((4,)), keras.layers.Dense(3, activation="relu", name="fc"),
        ...     keras.layers.Dense(2, activation="softmax", name="out")])
        >>> x, y = np.random.default_rng(0).random((10, 4)), np.arange(10) % 2
        >>> folder = tempfile.mkdtemp()
        >>> store = ActivationStore.extract(folder, DetectorModel(classifier, "fc"), x, y,
        ...                                 shard_size=4, batch_size=2)
        >>> store.num_samples, len(store.shards), store.tap_names
        (10, 3, ['fc'])
        >>> rows, where = store.read_class("fc", 1)
        >>> rows.shape, where.tolist()
        ((5, 3), [1, 3, 5, 7, 9])
    """

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        index = _read_index(self.directory)
        self.index = index
        self.tap_names = [layer["name"] for layer in index["layers"]]
        self.layer_shapes = {
            layer["name"]: tuple(int(d) for d in layer["shape"]) for layer in index["layers"]
        }
        self.layer_dtypes = {layer["name"]: np.dtype(layer["dtype"]) for layer in index["layers"]}
        self.num_outputs = index.get("num_outputs")
        self.complete = bool(index.get("complete", False))
        self.has_labels = bool(index.get("has_labels", False))
        self.weights_sha256 = index.get("model", {}).get("weights_sha256")
        self.shards = [dict(shard) for shard in index["shards"]]
        rows = [int(shard["rows"]) for shard in self.shards]
        self._offsets = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)]).astype(np.int64)
        self.num_samples = int(self._offsets[-1])
        self.sample_index = self._concat("sample_index")
        self.labels = self._concat("labels") if self.has_labels else None
        self.predicted_class = self._concat("predicted_class")
        # Rows in input order: a permutation of the stored rows.
        self._order = np.argsort(self.sample_index, kind="stable")

    def __repr__(self):
        return (
            f"ActivationStore({self.directory!r}: {self.num_samples} samples, "
            f"{len(self.shards)} shards, layers {self.tap_names}"
            f"{'' if self.complete else ', incomplete'})"
        )

    # ------------------------------------------------------------------
    # Writing

    @classmethod
    def extract(
        cls,
        directory,
        detector_model,
        x,
        y=None,
        *,
        shard_size=1024,
        batch_size=128,
        verbose=0,
    ):
        """Run `detector_model` over `x` and store its activations, resuming if asked.

        The pass streams (`DetectorModel.iter_activations`): memory holds one
        shard (`shard_size` rows of every layer, plus one batch) whatever
        the size of `x`. Each full shard is written atomically and then
        recorded in `index.json`. When `directory` already holds an
        unfinished store of the same model and settings, the samples of its
        recorded shards are skipped (numpy: sliced off; datasets: `skip`,
        so a dataset must yield the same elements in the same order on
        every run) and the extraction goes on from there; a finished store
        is returned as it is.

        Args:
            directory: the store folder (created when missing).
            detector_model: a `keras_advguard.DetectorModel` tapping at least
                one layer.
            x: numpy inputs `(N, ...)`, or a `tf.data.Dataset` of inputs or
                `(inputs, labels)` pairs (batched or not).
            y: labels for a numpy `x`: int `(N,)` class ids or one-hot
                `(N, C)`. Defaults to `None` (none; for a dataset the labels
                come from its pairs).
            shard_size: rows per shard (whole batches: a shard closes at the
                first batch boundary at or past this). Defaults to `1024`.
            batch_size: batch size of the model pass. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            The `ActivationStore`.

        Raises:
            ValueError: a model that taps nothing, labels of the wrong length
                or kind, `y` with a dataset, a folder holding another store
                (another model, layers or settings: the message names what
                differs), plus every error of `DetectorModel.collect`.
            TypeError: arguments of the wrong type.
        """
        _validation.check_positive_int("shard_size", shard_size)
        _validation.check_positive_int("batch_size", batch_size)
        names = list(getattr(detector_model, "tap_names", None) or [])
        if not names:
            raise ValueError(
                "`detector_model` taps no layer, so there is nothing to store. Build it "
                f"with `DetectorModel(model, layers=...)`. Received: tap_names={names}"
            )
        is_dataset = _batching.is_tf_dataset(x)
        if is_dataset:
            if y is not None:
                raise ValueError(
                    "For a tf.data.Dataset the labels come from its (x, y) pairs; `y` must "
                    f"be None. Received: y of type {type(y).__name__}"
                )
            has_labels = _batching.has_labels(x)
        else:
            x = np.asarray(x) if not isinstance(x, np.ndarray) else x
            has_labels = y is not None
            if has_labels:
                y = _class_ids("y", y)
                _validation.check_same_length("x", x, "y", y)
        out = detector_model.output
        layers = [
            {
                "name": name,
                "shape": [int(d or 0) for d in out["activations"][name].shape[1:]],
                "dtype": np.dtype(out["activations"][name].dtype).name,
            }
            for name in names
        ]
        index = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "complete": False,
            "layers": layers,
            "has_labels": bool(has_labels),
            "num_outputs": int(out["prediction"].shape[-1]),
            "model": {
                "name": getattr(detector_model.base_model, "name", None),
                "weights_sha256": _fingerprint.weights_fingerprint(detector_model),
            },
            "writer": {"shard_size": int(shard_size), "batch_size": int(batch_size)},
            "shards": [],
        }
        directory = os.fspath(directory)
        os.makedirs(os.path.join(directory, SHARDS), exist_ok=True)
        if os.path.exists(os.path.join(directory, INDEX)):
            previous = _read_index(directory)
            _check_same_store(directory, previous, index)
            if previous.get("complete"):
                return cls(directory)
            index["shards"] = previous["shards"]
        done_rows = sum(int(s["rows"]) for s in index["shards"])
        done_batches = sum(int(s["batches"]) for s in index["shards"])
        if done_rows:
            rank = len(detector_model.inputs[0].shape)
            if not is_dataset:
                x = x[done_rows:]
                y = y[done_rows:] if has_labels else None
            elif _batching.is_batched(x, rank):
                x = x.skip(done_batches)
            else:
                x = x.skip(done_rows)
        else:
            _files.write_json(os.path.join(directory, INDEX), index)

        buffer = _ShardBuffer(names)
        start = done_rows
        for outputs, yb in detector_model.iter_activations(
            x, batch_size=batch_size, verbose=verbose
        ):
            n = len(outputs["prediction"])
            if has_labels:
                if is_dataset:
                    labels = _class_ids("labels", yb)
                    if len(labels) != n:
                        raise ValueError(
                            "The dataset's labels must be one per input. Received: "
                            f"{len(labels)} labels for a batch of {n} inputs"
                        )
                else:
                    labels = y[start - done_rows : start - done_rows + n]
            else:
                labels = None
            buffer.add(
                np.arange(start, start + n, dtype=np.int64),
                labels,
                np.argmax(outputs["prediction"], axis=-1).astype(np.int64),
                [outputs["activations"][name] for name in names],
            )
            start += n
            if buffer.rows >= shard_size:
                index["shards"].append(
                    buffer.flush(directory, f"{len(index['shards']):06d}", has_labels)
                )
                _files.write_json(os.path.join(directory, INDEX), index)
        if buffer.rows:
            index["shards"].append(
                buffer.flush(directory, f"{len(index['shards']):06d}", has_labels)
            )
        index["complete"] = True
        _files.write_json(os.path.join(directory, INDEX), index)
        return cls(directory)

    @staticmethod
    def write_shard(directory, shard_id, sample_index, predicted_class, activations, labels=None):
        """Write one shard's files atomically (for parallel writers); not indexed yet.

        `extract` calls this for each shard; the Beam extraction calls it
        from its workers, then `write_index` once with every shard's record.

        Args:
            directory: the store folder (its `shards/` is created if missing).
            shard_id: a name unique in the store (letters, digits, `-`, `_`).
            sample_index: int `(K,)`, each row's position in the input.
            predicted_class: int `(K,)`.
            activations: a list of arrays `(K, ...)`, one per layer in tap order.
            labels: int `(K,)` class ids, or `None`. Defaults to `None`.

        Returns:
            The shard's index record `{"id", "rows", "batches"}`.
        """
        shard_id = str(shard_id)
        if not shard_id or not all(ch.isalnum() or ch in "-_" for ch in shard_id):
            raise ValueError(
                "Argument `shard_id` must be a non-empty name of letters, digits, '-' and "
                f"'_'. Received: shard_id={shard_id!r}"
            )
        folder = os.path.join(os.fspath(directory), SHARDS)
        os.makedirs(folder, exist_ok=True)
        sample_index = np.asarray(sample_index, dtype=np.int64)
        members = {"sample_index": sample_index, "predicted_class": predicted_class}
        if labels is not None:
            members["labels"] = labels
        for j, value in enumerate(activations):
            members[f"layer{j:03d}"] = value
        for key, value in members.items():
            value = np.ascontiguousarray(value)
            if len(value) != len(sample_index):
                raise ValueError(
                    f"Every array of a shard must have one row per sample. Received: "
                    f"{key} with {len(value)} rows for {len(sample_index)} samples"
                )
            path = os.path.join(folder, f"{shard_id}.{key}.npy")
            _files.write_atomic(path, lambda tmp, v=value: np.save(tmp, v), suffix=".npy")
        return {"id": shard_id, "rows": int(len(sample_index)), "batches": 1}

    @staticmethod
    def write_index(
        directory,
        layers,
        shards,
        *,
        has_labels,
        num_outputs=None,
        weights_sha256=None,
        model_name=None,
    ):
        """Write `index.json` for shards written with `write_shard` (parallel writers).

        Args:
            directory: the store folder.
            layers: `[{"name", "shape", "dtype"}]` in tap order.
            shards: the shards' records (from `write_shard`); stored sorted
                by id.
            has_labels: whether the shards hold labels.
            num_outputs: the classifier's number of classes. Defaults to `None`.
            weights_sha256: the classifier's weights fingerprint. Defaults to `None`.
            model_name: the classifier's name. Defaults to `None`.

        Returns:
            The `ActivationStore`.
        """
        index = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "complete": True,
            "layers": [
                {"name": str(d["name"]), "shape": [int(s) for s in d["shape"]], "dtype": d["dtype"]}
                for d in layers
            ],
            "has_labels": bool(has_labels),
            "num_outputs": None if num_outputs is None else int(num_outputs),
            "model": {"name": model_name, "weights_sha256": weights_sha256},
            "writer": {"shard_size": None, "batch_size": None},
            "shards": sorted((dict(s) for s in shards), key=lambda s: s["id"]),
        }
        _files.write_json(os.path.join(os.fspath(directory), INDEX), index)
        return ActivationStore(directory)

    # ------------------------------------------------------------------
    # Reading

    def _path(self, shard, key):
        return os.path.join(self.directory, SHARDS, f"{shard['id']}.{key}.npy")

    def _load(self, shard, key, mmap_mode=None):
        return np.load(self._path(shard, key), mmap_mode=mmap_mode, allow_pickle=False)

    def _concat(self, key):
        if not self.shards:
            return np.empty(0, np.int64)
        return np.concatenate([self._load(s, key).astype(np.int64) for s in self.shards])

    def _layer_position(self, layer):
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if not 0 <= layer < len(self.tap_names):
                raise ValueError(
                    f"Argument `layer` must be a layer name or a position in "
                    f"[0, {len(self.tap_names)}). Received: layer={layer}"
                )
            return int(layer)
        if layer not in self.tap_names:
            raise ValueError(
                f"Argument `layer` must be one of the stored layers {self.tap_names}. "
                f"Received: layer={layer!r}"
            )
        return self.tap_names.index(layer)

    def _gather(self, j, rows):
        """Stored rows `rows` (positions in shard order) of layer `j`, in that order."""
        name = self.tap_names[j]
        out = np.empty((len(rows),) + self.layer_shapes[name], self.layer_dtypes[name])
        if len(rows) == 0:
            return out
        shard_of = np.searchsorted(self._offsets, rows, side="right") - 1
        for s in np.unique(shard_of):
            where = np.flatnonzero(shard_of == s)
            shard = self.shards[int(s)]
            values = self._load(shard, f"layer{j:03d}", mmap_mode="r")
            out[where] = values[rows[where] - self._offsets[s]]
            del values
        return out

    def class_rows(self, class_id, *, by="labels", only_correct=False):
        """Stored rows of one class, in input order (positions for `read_rows`).

        Args:
            class_id: the class.
            by: `"labels"` (the true classes) or `"predicted_class"` (the
                classifier's). Defaults to `"labels"`.
            only_correct: keep only the rows whose prediction equals the
                label. Defaults to `False`.

        Returns:
            An int64 array of stored-row positions, ordered by `sample_index`.
        """
        _validation.check_choice("by", by, ("labels", "predicted_class"))
        if (by == "labels" or only_correct) and self.labels is None:
            raise ValueError(
                "This store holds no labels (extracted without `y` or from a dataset "
                "without (x, y) pairs). Use by='predicted_class' and only_correct=False. "
                f"Received: by={by!r}, only_correct={only_correct}"
            )
        group = self.labels if by == "labels" else self.predicted_class
        keep = group[self._order] == int(class_id)
        if only_correct:
            keep &= (self.labels == self.predicted_class)[self._order]
        return self._order[keep]

    def read_rows(self, layer, rows):
        """Activations of `layer` at stored-row positions `rows` (e.g. from `class_rows`)."""
        return self._gather(self._layer_position(layer), np.asarray(rows, dtype=np.int64))

    def read_class(self, layer, class_id, *, by="labels", only_correct=False):
        """One class of one layer: its activations and their input positions.

        Only the class's rows are read from the memory-mapped shards.

        Args:
            layer: a layer name (or its position in `tap_names`).
            class_id: the class.
            by: `"labels"` or `"predicted_class"`. Defaults to `"labels"`.
            only_correct: only correctly classified rows. Defaults to `False`.

        Returns:
            `(activations (K_c, ...), sample_index (K_c,))`, in input order.
        """
        rows = self.class_rows(class_id, by=by, only_correct=only_correct)
        return self.read_rows(layer, rows), self.sample_index[rows]

    def read_layer(self, layer):
        """All rows of one layer, in input order (`num_samples x N_l` in memory)."""
        return self.read_rows(layer, self._order)

    def iter_batches(self, batch_size=1024, layers=None):
        """Yield the stored rows in input order, batch by batch.

        Args:
            batch_size: rows per batch. Defaults to `1024`.
            layers: the layers to read (names). Defaults to `None` (all).

        Yields:
            dicts `{"activations": {name: array}, "labels": array or None,
            "predicted_class": array, "sample_index": array}`.
        """
        _validation.check_positive_int("batch_size", batch_size)
        names = self.tap_names if layers is None else list(layers)
        positions = [self._layer_position(name) for name in names]
        for start in range(0, self.num_samples, batch_size):
            rows = self._order[start : start + batch_size]
            yield {
                "activations": {self.tap_names[j]: self._gather(j, rows) for j in positions},
                "labels": None if self.labels is None else self.labels[rows],
                "predicted_class": self.predicted_class[rows],
                "sample_index": self.sample_index[rows],
            }

    # ------------------------------------------------------------------
    # What the detectors need from it

    def fit_medoids(
        self,
        *,
        num_classes=None,
        only_correct=False,
        max_samples_per_class=None,
        seed=0,
        block_size=512,
        verbose=0,
    ):
        """`ClassMedoids` fitted from the store, one class of one layer in memory at a time.

        The same medoids as `ClassMedoids(...).fit(store_arrays, labels)` on
        the whole arrays in memory (the medoid of each class is computed by
        `ClassMedoids.fit` on that class's rows, in input order; the
        `max_samples_per_class` subset of class `c` is drawn as `ClassMedoids`
        draws it, `numpy.random.default_rng([seed, c])` over the class's
        sample positions), bit for bit.

        Args:
            num_classes: `C`. Defaults to `None`: one more than the largest
                label.
            only_correct: medoids from the correctly classified rows only.
                Defaults to `False`.
            max_samples_per_class: random subset cap. Defaults to `None`.
            seed: seed of the subsets. Defaults to `0`.
            block_size: `ClassMedoids`' block size. Defaults to `512`.
            verbose: `0` silent, `1` a progress bar over classes.

        Returns:
            A fitted `keras_advguard.detectors.ClassMedoids`
            (`medoid_indices_` are positions in the extracted input).

        Raises:
            ValueError: a store without labels, an empty store, a class
                without rows, labels outside `[0, num_classes)`.
        """
        from keras_advguard.activation_store.medoids import fit_store_medoids

        return fit_store_medoids(
            self,
            num_classes=num_classes,
            only_correct=only_correct,
            max_samples_per_class=max_samples_per_class,
            seed=seed,
            block_size=block_size,
            verbose=verbose,
        )

    def adapt(self, distance, batch_size=1024):
        """Fit a `MedoidDistance` layer's standardization from the store, streaming.

        The per-layer mean and standard deviation of the distances over all
        rows and classes, as `MedoidDistance.adapt` computes them on arrays
        in memory (float64 accumulation, a zero deviation becomes 1), but
        reading `batch_size` rows at a time.

        Args:
            distance: a `keras_advguard.layers.MedoidDistance` built with
                `standardize=True` whose `tap_names` are stored layers.
            batch_size: rows per step. Defaults to `1024`.

        Returns:
            `distance`.
        """
        from keras_advguard.activation_store.medoids import adapt_distance

        return adapt_distance(self, distance, batch_size=batch_size)


# ----------------------------------------------------------------------
# Helpers


class _ShardBuffer:
    """The batches of the shard being filled."""

    def __init__(self, names):
        self.names = names
        self.clear()

    def clear(self):
        self.parts = {"sample_index": [], "labels": [], "predicted_class": []}
        self.layers = [[] for _ in self.names]
        self.rows = 0
        self.batches = 0

    def add(self, sample_index, labels, predicted_class, activations):
        self.parts["sample_index"].append(sample_index)
        if labels is not None:
            self.parts["labels"].append(labels)
        self.parts["predicted_class"].append(predicted_class)
        for chunks, value in zip(self.layers, activations, strict=True):
            chunks.append(np.asarray(value))
        self.rows += len(sample_index)
        self.batches += 1

    def flush(self, directory, shard_id, has_labels):
        record = ActivationStore.write_shard(
            directory,
            shard_id,
            np.concatenate(self.parts["sample_index"]),
            np.concatenate(self.parts["predicted_class"]),
            [np.concatenate(chunks) for chunks in self.layers],
            labels=np.concatenate(self.parts["labels"]) if has_labels else None,
        )
        record["batches"] = self.batches
        self.clear()
        return record


def _class_ids(name, values):
    values = _validation.check_array(name, values, min_ndim=1, dtype_kind="iuf", allow_empty=True)
    if values.ndim == 2 and values.shape[1] > 1:
        values = np.argmax(values, axis=1)
    elif values.ndim == 2:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must hold class ids (N,) or one-hot rows (N, C). "
            f"Received: {name} with shape={values.shape}"
        )
    if values.dtype.kind == "f" and (
        not np.all(np.isfinite(values)) or np.any(values != np.round(values))
    ):
        raise ValueError(f"Argument `{name}` must hold integer class ids. Received: {values[:5]}")
    return values.astype(np.int64)


def _read_index(directory):
    path = os.path.join(directory, INDEX)
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        raise ValueError(
            f"Argument `directory` must be an activation store (a folder with {INDEX}). "
            f"Received: directory={directory!r}"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
    if index.get("format") != FORMAT or index.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} is not an activation store index of format {FORMAT!r} version "
            f"{FORMAT_VERSION}. Received: format={index.get('format')!r}, "
            f"format_version={index.get('format_version')!r}"
        )
    return index


def _check_same_store(directory, previous, new):
    def fingerprint(index):
        return (index.get("model") or {}).get("weights_sha256")

    for what, value in (
        ("layers (names, shapes, dtypes)", lambda index: index.get("layers")),
        ("presence of labels", lambda index: index.get("has_labels")),
        ("classifier (weights fingerprint)", fingerprint),
        ("shard_size / batch_size", lambda index: index.get("writer")),
    ):
        if value(previous) != value(new):
            raise ValueError(
                f"The folder {directory!r} holds another activation store: its {what} "
                f"differ. Stored: {value(previous)!r}. Received: {value(new)!r}. Use "
                "another folder, or delete this one to start again."
            )
