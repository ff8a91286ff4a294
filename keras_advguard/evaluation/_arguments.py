"""`evaluate`'s argument checks: everything is validated before any work."""

import os

from keras_advguard import _validation
from keras_advguard.evaluation import _cache, _defences, _threats

THREAT_MODELS = ("oblivious", "adaptive")

# Budgets of a full run and of `quick=True` (a smoke test in seconds on digits).
BUDGETS = {
    False: {
        "num_images": None,
        "num_train": None,
        "max_splits": None,
        "epochs": 30,
        "adaptive_iter": 100,
    },
    True: {"num_images": 150, "num_train": 300, "max_splits": 2, "epochs": 3, "adaptive_iter": 20},
}


def read_dataset(name, dataset, input_rank, *, limit=None, seed=0, batch_size=256):
    """The `(x, y)` pairs of a `tf.data.Dataset` as numpy arrays, read once.

    With `limit`, only a uniform random sample of `limit` pairs is kept
    (reservoir sampling, seeded), so memory stays bounded by the sample
    whatever the dataset's size; the sample keeps the dataset's order.
    Batched and unbatched datasets work; one-hot labels become class ids.

    Raises:
        ValueError: a dataset that does not yield `(images, labels)` pairs,
            or one that yields nothing.
    """
    import numpy as np

    from keras_advguard import _batching

    if not _batching.has_labels(dataset):
        raise ValueError(
            f"Argument `{name}` must yield (images, labels) pairs. Received: a dataset "
            f"with element_spec={dataset.element_spec}"
        )
    rng = np.random.default_rng(seed)
    xs, ys, keys = [], [], []
    for xb, yb in _batching.iterate_batches(
        dataset, batch_size, with_labels=True, input_rank=input_rank
    ):
        xb, yb = np.asarray(xb), np.asarray(yb)
        if yb.ndim == 2 and yb.shape[1] > 1:
            yb = np.argmax(yb, axis=1)
        _validation.check_finite(f"{name} (images)", xb)
        if limit is None:
            xs.append(xb)
            ys.append(yb)
            continue
        # Reservoir sampling with random keys: keep the `limit` smallest keys.
        keys.append(rng.random(len(xb)))
        xs.append(xb)
        ys.append(yb)
        order = np.argsort(np.concatenate(keys), kind="stable")[:limit]
        keep = np.sort(order)
        x_all, y_all = np.concatenate(xs), np.concatenate(ys)
        k_all = np.concatenate(keys)
        xs, ys, keys = [x_all[keep]], [y_all[keep]], [k_all[keep]]
    if not xs:
        raise ValueError(f"Argument `{name}` must not be empty. Received: a dataset of 0 pairs")
    return np.concatenate(xs), np.concatenate(ys)


def _check_pair(name, value, input_rank=None, limit=None, seed=0):
    from keras_advguard import _batching

    if _batching.is_tf_dataset(value):
        value = read_dataset(name, value, input_rank, limit=limit, seed=seed)
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise TypeError(
            f"Argument `{name}` must be a pair (x, y) of images and labels, or a "
            f"tf.data.Dataset of such pairs. Received: {name} of type {type(value).__name__}"
        )
    x = _validation.check_array(f"{name}[0] (x)", value[0], min_ndim=2, dtype_kind="fiu")
    _validation.check_finite(f"{name}[0] (x)", x)
    y = _validation.check_array(f"{name}[1] (y)", value[1], dtype_kind="iu")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"Argument `{name}[1]` (y) must hold integer labels of shape (N,). "
            f"Received: shape={y.shape}"
        )
    _validation.check_same_length(f"{name}[0] (x)", x, f"{name}[1] (y)", y)
    return x.astype("float32", copy=False), y.astype("int64")


def check_arguments(
    model,
    train,
    test,
    defences,
    attacks,
    threat_models,
    fpr,
    splits,
    seed,
    cache_dir,
    verbose,
    eps,
    clip,
    quick,
    num_images,
    epochs,
    batch_size,
    adaptive_eps=None,
    adaptive_steps=None,
    return_adversarial=False,
    baselines=True,
):
    import keras

    _validation.check_type("model", model, keras.Model, "a keras.Model")
    rank = len(model.inputs[0].shape) if model.inputs else None
    _validation.check_number("seed", seed, min_value=0, integer=True)
    if num_images is not None:
        _validation.check_positive_int("num_images", num_images)
    x_train, y_train = _check_pair("train", train, rank)
    x_test, y_test = _check_pair("test", test, rank, limit=num_images, seed=seed)
    if model.inputs and len(model.inputs) == 1:
        expected = tuple(model.inputs[0].shape[1:])
        for name, x in (("train", x_train), ("test", x_test)):
            got = tuple(x.shape[1:])
            if len(got) != len(expected) or any(e not in (None, g) for e, g in zip(expected, got)):
                raise ValueError(
                    f"The images of `{name}` do not fit the model's input: expected "
                    f"(N, {', '.join(str(d) for d in expected)}). Received: {name}[0] "
                    f"with shape={x.shape}"
                )
    num_classes = int(model.outputs[0].shape[-1]) if model.outputs else None
    for name, y in (("train", y_train), ("test", y_test)):
        if len(y) and (y.min() < 0 or (num_classes and y.max() >= num_classes)):
            raise ValueError(
                f"The labels of `{name}` must be class indices in [0, {num_classes - 1}]. "
                f"Received: labels in [{y.min()}, {y.max()}]"
            )
    _validation.check_type("quick", quick, bool)
    _validation.check_number("seed", seed, min_value=0, integer=True)
    _validation.check_number("splits", splits, min_value=2, integer=True)
    _validation.check_choice("verbose", verbose, (0, 1, 2))
    _validation.check_positive_int("batch_size", batch_size)
    if isinstance(threat_models, str):
        threat_models = (threat_models,)
    _validation.check_type("threat_models", threat_models, (list, tuple), "a list of names")
    if not threat_models:
        raise ValueError("Argument `threat_models` must not be empty. Received: threat_models=()")
    for t in threat_models:
        _validation.check_choice("threat_models", t, THREAT_MODELS)
    fprs = [fpr] if isinstance(fpr, int | float) else list(fpr)
    if not fprs:
        raise ValueError("Argument `fpr` must not be empty. Received: fpr=()")
    for f in fprs:
        _validation.check_number("fpr", f, min_value=0.0, max_value=1.0)
        if not 0.0 < float(f) < 1.0:
            raise ValueError(f"Argument `fpr` must lie in (0, 1), exclusive. Received: fpr={f}")
    if clip is None:
        lo = float(min(x_train.min(), x_test.min()))
        hi = float(max(x_train.max(), x_test.max()))
        clip = (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi)
    else:
        _validation.check_type("clip", clip, (list, tuple), "a pair (clip_min, clip_max)")
        if len(clip) != 2 or not float(clip[0]) < float(clip[1]):
            raise ValueError(
                f"Argument `clip` must be (clip_min, clip_max) with clip_min < clip_max. "
                f"Received: clip={clip!r}"
            )
        for name, x in (("train", x_train), ("test", x_test)):
            if x.min() < clip[0] or x.max() > clip[1]:
                raise ValueError(
                    f"The images of `{name}` must lie in clip={tuple(clip)}. "
                    f"Received: values in [{x.min()}, {x.max()}]"
                )
    clip = (float(clip[0]), float(clip[1]))
    if eps is None:
        eps = 0.1 * (clip[1] - clip[0])
    eps = float(_validation.check_number("eps", eps, min_value=0.0))
    if eps <= 0:
        raise ValueError(f"Argument `eps` must be > 0. Received: eps={eps}")
    budget = BUDGETS[bool(quick)]
    if num_images is None:
        num_images = min(budget["num_images"] or len(x_test), len(x_test))
    _validation.check_positive_int("num_images", num_images)
    if num_images > len(x_test):
        raise ValueError(
            f"Argument `num_images` must not exceed the {len(x_test)} test images. "
            f"Received: num_images={num_images}"
        )
    if epochs is None:
        epochs = budget["epochs"]
    _validation.check_positive_int("epochs", epochs)
    if budget["max_splits"]:
        splits = min(int(splits), budget["max_splits"])
    specs = _threats.check_attacks(
        list(attacks) if isinstance(attacks, tuple) and not _threats._is_spec(attacks) else attacks
    )
    split = [(n, *_threats.split_options(n, p)) for n, p in specs]
    specs = [(n, _threats.attack_params(n, p, eps=eps, quick=quick)) for n, p, _ in split]
    options = [o for _, _, o in split]
    for (name, _), o in zip(specs, options, strict=True):
        if o.get("num_images", 0) > num_images:
            raise ValueError(
                f"The `num_images` of attack {name!r} must not exceed the evaluation's "
                f"num_images={num_images}. Received: num_images={o['num_images']}"
            )
    _threats.labels_of(specs, options)
    _validation.check_type("return_adversarial", return_adversarial, bool)
    _validation.check_type("baselines", baselines, bool)
    if cache_dir is False:
        cache_dir = None
    elif cache_dir is None:
        cache_dir = _cache.default_cache_dir()
    else:
        _validation.check_type("cache_dir", cache_dir, (str, os.PathLike))
        cache_dir = os.fspath(cache_dir)
    return {
        "train": (x_train, y_train),
        "test": (x_test, y_test),
        "defences": _defences.check_defences(defences),
        "attacks": specs,
        "attack_options": options,
        "return_adversarial": bool(return_adversarial),
        "baselines": bool(baselines),
        "threat_models": tuple(threat_models),
        "fpr": tuple(float(f) for f in fprs),
        "splits": int(splits),
        "clip": clip,
        "eps": eps,
        "num_images": int(num_images),
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "cache_dir": cache_dir,
        "verbose": verbose,
        "seed": int(seed),
        "adaptive_eps": _optional_positive("adaptive_eps", adaptive_eps, float),
        "adaptive_steps": _optional_positive("adaptive_steps", adaptive_steps, int),
    }


def _optional_positive(name, value, kind):
    """`None`, or `value` checked as a positive `kind` (`float` or `int`)."""
    if value is None:
        return None
    if kind is int:
        _validation.check_positive_int(name, value)
        return int(value)
    _validation.check_number(name, value, min_value=0.0, min_inclusive=False)
    return float(value)
