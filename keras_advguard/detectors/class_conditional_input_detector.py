"""Class-conditional input-space detectors trained asymmetrically (Yin et al., ICLR 2020)."""

import math

import keras
import numpy as np
from keras import ops

from keras_advguard import _perturb, _validation
from keras_advguard.detectors import _keras_detector
from keras_advguard.detectors.input_cnn_detector import (
    build_cnn,
    check_cnn_arguments,
    cnn_features,
    cnn_layers,
    image_classifier_input,
)

TARGETS = ("random", "easiest", "mixed")
"""How `fit` picks the class a negative is pushed towards."""

_FIT_DEFAULTS = {"epochs": 10, "batch_size": 64}
_NORMS = {"inf": "inf", "linf": "inf", "2": "l2", "l2": "l2"}


def _canonical_norm(norm):
    key = "inf" if isinstance(norm, (float, np.floating)) and math.isinf(norm) else str(norm)
    key = key.lower()
    if isinstance(norm, bool) or key not in _NORMS:
        raise ValueError(
            "Argument `norm` must be 'inf' (L-infinity, also np.inf) or 2 (L2, also 'l2'). "
            f"Received: norm={norm!r}"
        )
    return _NORMS[key]


@keras.saving.register_keras_serializable(package="keras_advguard")
class ClassConditionalInputDetector(_keras_detector.KerasDetector, keras.Model):
    """K class-conditional detectors on the input, trained against their own PGD.

    Asymmetric adversarial training (Yin, Kolouri and Rohde, ICLR 2020): for
    each class `k` a binary detector `d_k(x)` (a logit) tells "a clean image
    of class `k`" from "an image perturbed to look like one". Detector `k`
    is trained on clean class-`k` images (positives, never perturbed: the
    asymmetry) against images of the other classes that a PGD attack on
    `d_k` itself has pushed, within the `eps` ball, to look like class `k`
    (negatives). At test time an input is scored at the class the guarded
    classifier predicts, `score(x) = -d_{f(x)}(x)`: an attacker who changes
    the classifier's decision to `t` must also make `d_t` believe the image
    is a clean `t`, and `d_t` was trained against exactly that.

    The K detectors share one convolutional trunk (`len(filters)` blocks of
    `Conv2D(f, kernel_size, "same", relu) -> MaxPooling2D(2)`, then
    `Flatten -> Dense(dense_units, relu)`) and have one logit each
    (`Dense(num_classes)`, float32); Yin et al. train K separate networks,
    which costs K times as much. Each logit is trained as an independent
    binary detector (sigmoid cross-entropy on its own positives and
    negatives), not as a softmax.

    Training is the ordinary `compile`/`fit` on **clean** images and their
    class labels: `train_step` generates the negatives inside the compiled
    step, like `keras_advguard.training.AdversarialModel` does for a
    classifier. For every batch `(x, y)`, each image gets a target class
    `t != y` (`target`: uniformly random, the "easiest" one, the wrong class
    with the largest `d_t(x)`, or per image one of the two at random), then
    `steps` steps of PGD maximise `d_t(x')` from a random start in the ball
    (inference mode); the update minimises the loss given to `compile`
    (defaults: Adam, binary cross-entropy on the logits) over the positives
    `(d_y(x), 1)` and the negatives `(d_t(x'), 0)`, in equal numbers. With
    `eps=0` the negatives are the clean images of other classes: ordinary
    one-vs-rest training, the non-adversarial baseline. `evaluate` and the
    validation pass of `fit` measure the same objective (with the attack).

    The detector contract (`supervised = False`: fitted on clean data only,
    the adversarial inputs are its own): `score(x)` float64 `(N,)`, higher =
    more adversarial; `score_tensor(x)` the same score, differentiable
    (`score_tensor_kind = "exact"`; the classifier's decision is piecewise
    constant, the gradient flows through `d`); `calibrate`, `predict` (bool
    after `calibrate`; Keras's `predict`, the `(N, K)` logits, with a
    `FutureWarning`, before), `clone()` (fresh weights), `save`/`load` (a
    `.keras` file or the detectors' archive, atomic, refusing a classifier
    with other weights). Without a classifier (built from a shape, or loaded
    without one) an input is scored at the detector's own most confident
    class, `-max_k d_k(x)` (Yin et al.'s integrated classifier).

    Args:
        model: the classifier it guards (a built `keras.Model` with one image
            input and `(B, K)` outputs), or an input shape `(H, W, C)` (then
            give `num_classes`).
        num_classes: number of classes `K`. Defaults to `None`: the
            classifier's output width.
        filters: output channels of the convolution blocks. Defaults to
            `(32, 64)`.
        kernel_size: side of the convolution kernels. Defaults to `3`.
        dense_units: width of the hidden dense layer. Defaults to `128`.
        eps: radius of the training attack's ball (>= 0). Defaults to `0.3`
            (MNIST's L-infinity setting).
        steps: PGD steps per training batch (>= 1). Defaults to `10`.
        step_size: PGD step. Defaults to `None`: `2.5 * eps / steps`.
        step_decay: the last PGD step as a fraction of `step_size`, in
            `(0, 1]`; the steps in between shrink geometrically. A
            decaying step reaches the narrow maxima of `d_t` that a
            constant sign step jumps over (an attacker with a small step
            finds them). Defaults to `1.0` (a constant step).
        norm: `"inf"` (also `np.inf`) or `2`. Defaults to `"inf"`.
        random_start: start the training attack at a uniformly random point
            of the ball. Defaults to `True`.
        target: `"random"`, `"easiest"` or `"mixed"` (see above). Defaults
            to `"mixed"`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        weights_sha256: the guarded classifier's weights fingerprint. Set
            from `model`; given explicitly only when a config is restored.
            Defaults to `None`.
        **kwargs: `keras.Model` keyword arguments such as `name`.

    Call arguments:
        inputs: a batch of images `(B, H, W, C)`.
        training: Keras's training flag. Defaults to `None`.

    Returns:
        The K detector logits `(B, K)` (float32): `d_k(x)`, higher = more
        like a clean image of class `k`.

    Raises:
        TypeError: `model` is neither a Keras model nor a shape, or an
            argument of the wrong type.
        ValueError: an input shape that is not `(H, W, C)`, fewer than two
            classes, a non-positive size, `eps < 0`, `step_size < 0`, a
            `step_decay` outside `(0, 1]`, an unknown `norm` or `target`, or
            `clip_min >= clip_max`.

    Example:

        >>> import numpy as np
        >>> from keras_advguard.detectors import ClassConditionalInputDetector
        >>> rng = np.random.default_rng(0)
        >>> y = np.arange(40) % 2
        >>> x = (0.25 + 0.5 * y[:, None, None, None]
        ...      + 0.1 * rng.random((40, 8, 8, 1))).astype("float32")
        >>> detector = ClassConditionalInputDetector(
        ...     (8, 8, 1), num_classes=2, filters=(4,), dense_units=8, eps=0.1, steps=3
        ... )
        >>> history = detector.fit(x, y, epochs=2, verbose=0)
        >>> sorted(history.history)
        ['auc', 'loss']
        >>> detector.calibrate(x, fpr=0.1).predict(x).shape
        (40,)

    Reference:
        X. Yin, S. Kolouri and G. K. Rohde, "Adversarial Example Detection
        and Classification with Asymmetrical Adversarial Training", ICLR 2020.
    """

    supervised = False
    score_tensor_kind = "exact"

    def __init__(
        self,
        model,
        num_classes=None,
        filters=(32, 64),
        kernel_size=3,
        dense_units=128,
        eps=0.3,
        steps=10,
        step_size=None,
        step_decay=1.0,
        norm="inf",
        random_start=True,
        target="mixed",
        clip_min=0.0,
        clip_max=1.0,
        weights_sha256=None,
        **kwargs,
    ):
        # === Checks ===
        classifier, input_shape, fingerprint = image_classifier_input(model, type(self).__name__)
        if classifier is not None:
            weights_sha256 = fingerprint
            outputs = classifier.outputs[0].shape
            if num_classes is None:
                if len(outputs) != 2 or outputs[-1] is None:
                    raise ValueError(
                        "Argument `model` must output (B, K) class scores, or give "
                        f"`num_classes`. Received: output shape {tuple(outputs)}"
                    )
                num_classes = int(outputs[-1])
        if num_classes is None:
            raise ValueError(
                "Argument `num_classes` is needed when `model` is an input shape. "
                "Received: num_classes=None"
            )
        _validation.check_positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(
                f"Argument `num_classes` must be at least 2. Received: num_classes={num_classes}"
            )
        filters = check_cnn_arguments(filters, kernel_size, dense_units)
        _validation.check_number("eps", eps, min_value=0.0)
        _validation.check_positive_int("steps", steps)
        if step_size is not None:
            _validation.check_number("step_size", step_size, min_value=0.0)
        _perturb.check_step_decay(step_decay)
        norm = _canonical_norm(norm)
        _validation.check_type("random_start", random_start, bool)
        _validation.check_choice("target", target, TARGETS)
        _validation.check_number("clip_min", clip_min)
        _validation.check_number("clip_max", clip_max)
        if not clip_min < clip_max:
            raise ValueError(
                "Argument `clip_min` must be smaller than `clip_max`. "
                f"Received: clip_min={clip_min}, clip_max={clip_max}"
            )
        if weights_sha256 is not None:
            _validation.check_type("weights_sha256", weights_sha256, str)
        super().__init__(**kwargs)

        # === Configuration ===
        self.input_shape_ = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.filters = tuple(int(f) for f in filters)
        self.kernel_size = int(kernel_size)
        self.dense_units = int(dense_units)
        self.eps = float(eps)
        self.steps = int(steps)
        self.step_size = None if step_size is None else float(step_size)
        self.step_decay = float(step_decay)
        self.norm = norm
        self.random_start = bool(random_start)
        self.target = target
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)
        self.weights_sha256 = weights_sha256
        object.__setattr__(self, "_classifier", classifier)  # not a sublayer

        # === Layers ===
        self.blocks, self.flatten, self.hidden = cnn_layers(
            self.filters, self.kernel_size, self.dense_units
        )
        self.head = keras.layers.Dense(self.num_classes, dtype="float32", name="logits")

        # === Build now (all shapes are known) ===
        self.build((None,) + self.input_shape_)

    def build(self, input_shape):
        build_cnn(self, input_shape)

    def call(self, inputs, training=None):
        return self.head(cnn_features(self, inputs, training))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    @property
    def effective_step_size(self):
        """The training attack's step: `step_size`, or `2.5 * eps / steps`."""
        return 2.5 * self.eps / self.steps if self.step_size is None else self.step_size

    # ------------------------------------------------------------------
    # The detector contract

    @property
    def model(self):
        """The guarded classifier (`None` when built from a shape or loaded without one)."""
        return self._classifier

    def score(self, x, *, batch_size=128, verbose=0):
        """Adversarial scores `-d_k(x)`, `k` the classifier's class: float64 `(N,)`.

        Args:
            x: numpy images `(N, H, W, C)` or a `tf.data.Dataset` of images or
                `(images, labels)` pairs (labels ignored). Shape and finite
                values are checked on every batch.
            batch_size: batch size. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A float64 array `(N,)`.
        """
        from keras_advguard.detectors._base import iterate_inputs

        scores = []
        for xb in iterate_inputs(x, self._input_shape(), batch_size=batch_size, verbose=verbose):
            logits = np.asarray(self._run(self, xb), dtype=np.float64)
            if self._classifier is None:
                classes = np.argmax(logits, axis=1)
            else:
                classes = np.argmax(np.asarray(self._run(self._classifier, xb)), axis=1)
            scores.append(-np.take_along_axis(logits, classes[:, None], axis=1)[:, 0])
        return np.concatenate(scores) if scores else np.zeros(0)

    @staticmethod
    def _run(network, xb):
        if network.distribute_strategy.num_replicas_in_sync == 1:
            return network.predict_on_batch(xb)
        # Keras's predict_on_batch runs the whole batch on every replica.
        return keras.Model.predict(network, xb, batch_size=len(xb), verbose=0)

    def score_tensor(self, x):
        """The score of a batch as a differentiable float32 tensor `(B,)` (exact).

        `-d_k(x)` at the classifier's predicted class `k` (piecewise
        constant in `x`: no gradient flows through the decision).
        """
        logits = ops.cast(self(x, training=False), "float32")
        if self._classifier is None:
            classes = ops.argmax(logits, axis=1)
        else:
            classes = ops.argmax(ops.stop_gradient(self._classifier(x, training=False)), axis=1)
        picked = ops.take_along_axis(logits, ops.expand_dims(classes, 1), axis=1)
        return -ops.squeeze(picked, axis=1)

    def detector_logits(self, x, *, batch_size=128, verbose=0):
        """All K detector logits `d_k(x)`: float64 `(N, K)`.

        Args:
            x: numpy images or a `tf.data.Dataset` (as in `score`).
            batch_size: batch size. Defaults to `128`.
            verbose: `0` silent, `1` a progress bar. Defaults to `0`.

        Returns:
            A float64 array `(N, K)`; `argmax` over classes is Yin et al.'s
            integrated (generative) classification.
        """
        from keras_advguard.detectors._base import iterate_inputs

        out = [
            np.asarray(self._run(self, xb), dtype=np.float64)
            for xb in iterate_inputs(x, self._input_shape(), batch_size=batch_size, verbose=verbose)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.num_classes))

    def _fingerprint_of_fit(self):
        return self.weights_sha256

    def _input_shape(self):
        return (None,) + self.input_shape_

    def _guarded_model(self):
        return self._classifier

    def _clone_fresh(self):
        config = self.get_config()
        config.pop("name", None)
        clone = type(self).from_config(config)
        object.__setattr__(clone, "_classifier", self._classifier)
        return clone

    def _rebind(self, model):
        """This detector guarding `model` (same weights as the fitted classifier)."""
        object.__setattr__(self, "_classifier", model)
        return self

    # ------------------------------------------------------------------
    # Asymmetric adversarial training

    def compile(self, optimizer="adam", loss="default", metrics="default", **kwargs):
        """Configure training; without arguments Adam, sigmoid cross-entropy and AUC.

        The loss receives the detector **logits** of the positives and the
        negatives (`y_true` 1 / 0), so the defaults are
        `keras.losses.BinaryCrossentropy(from_logits=True)` and
        `keras.metrics.AUC(from_logits=True)`. `fit` compiles with them when
        `compile` was never called.

        Args:
            optimizer: Defaults to `"adam"`.
            loss: Defaults to `"default"` (see above).
            metrics: Defaults to `"default"`: `[AUC(from_logits=True)]`;
                `None` for none.
            **kwargs: the other `keras.Model.compile` arguments.
        """
        if isinstance(loss, str) and loss == "default":
            loss = keras.losses.BinaryCrossentropy(from_logits=True)
        if isinstance(metrics, str) and metrics == "default":
            metrics = [keras.metrics.AUC(from_logits=True, name="auc")]
        keras.Model.compile(self, optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def negative_targets(self, x, labels, seed=None):
        """The class each image's negative is pushed towards (`target`), `!= labels`.

        Args:
            x: a batch of clean images (tensor or array).
            labels: their integer classes `(B,)`.
            seed: optional integer seed of the random choices. Defaults to
                `None`.

        Returns:
            An int32 tensor `(B,)` of target classes, each different from
            its label.
        """
        import tensorflow as tf

        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        k = self.num_classes
        gen = tf.random.Generator.from_seed(seed) if seed is not None else None
        shape = tf.shape(labels)

        def uniform_int(lo, hi):
            if gen is not None:
                return gen.uniform(shape, lo, hi, dtype=tf.int32)
            return tf.random.uniform(shape, lo, hi, dtype=tf.int32)

        random = tf.math.floormod(labels + uniform_int(1, k), k)
        if self.target == "random":
            return random
        logits = tf.cast(self(tf.convert_to_tensor(x), training=False), tf.float32)
        masked = tf.where(tf.one_hot(labels, k) > 0, tf.fill(tf.shape(logits), -np.inf), logits)
        easiest = tf.argmax(masked, axis=1, output_type=tf.int32)
        if self.target == "easiest":
            return easiest
        return tf.where(uniform_int(0, 2) > 0, random, easiest)

    def generate(self, x, targets):
        """The training negatives: PGD maximising `d_t(x')` in the `eps` ball.

        Args:
            x: a batch of clean images in `[clip_min, clip_max]`.
            targets: the integer class `t` per image (`negative_targets`).

        Returns:
            A float32 tensor shaped like `x`, within `eps` of `x` in `norm`,
            inside `[clip_min, clip_max]`, without gradient.
        """
        import tensorflow as tf

        x = tf.cast(tf.convert_to_tensor(x), tf.float32)
        if self.eps == 0:
            return tf.stop_gradient(x)
        onehot = tf.one_hot(tf.cast(tf.reshape(targets, [-1]), tf.int32), self.num_classes)
        eps, step = self.eps, self.effective_step_size

        def objective(xa):
            return tf.reduce_sum(onehot * tf.cast(self(xa, training=False), tf.float32))

        start = x
        if self.random_start:
            start = _perturb.project(
                x,
                x + _perturb.random_in_ball(tf.shape(x), eps, self.norm),
                self.eps,
                self.norm,
                self.clip_min,
                self.clip_max,
            )

        return _perturb.ascend(
            objective,
            x,
            start,
            steps=self.steps,
            step=step,
            step_decay=self.step_decay,
            eps=self.eps,
            norm=self.norm,
            clip_min=self.clip_min,
            clip_max=self.clip_max,
        )

    def _batch_objective(self, data, training):
        import tensorflow as tf

        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.cast(x, tf.float32)
        x = tf.debugging.assert_all_finite(
            x, "Argument `x` must hold finite values only: a training batch has NaN or Inf."
        )
        labels = _integer_labels(y)
        targets = self.negative_targets(x, labels)
        x_neg = self.generate(x, targets)
        logits_pos = tf.cast(self(x, training=training), tf.float32)
        logits_neg = tf.cast(self(x_neg, training=training), tf.float32)
        pos = tf.gather(logits_pos, labels, axis=1, batch_dims=1)
        neg = tf.gather(logits_neg, targets, axis=1, batch_dims=1)
        y_true = tf.concat([tf.ones_like(pos), tf.zeros_like(neg)], axis=0)
        y_pred = tf.concat([pos, neg], axis=0)
        return x, y_true, y_pred

    def train_step(self, data):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            x, y_true, y_pred = self._batch_objective(data, True)
            loss = self.compute_loss(x=x, y=y_true, y_pred=y_pred)
            self._track_loss(loss, y_true)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_weights
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self.compute_metrics(x, y_true, y_pred)

    def test_step(self, data):
        x, y_true, y_pred = self._batch_objective(data, False)
        loss = self.compute_loss(x=x, y=y_true, y_pred=y_pred, training=False)
        self._track_loss(loss, y_true)
        return self.compute_metrics(x, y_true, y_pred)

    def _track_loss(self, loss, y_true):
        import tensorflow as tf

        tracker = getattr(self, "_loss_tracker", None)
        if tracker is not None:
            tracker.update_state(loss, sample_weight=tf.shape(y_true)[0])

    def fit(self, x=None, y=None, batch_size=None, epochs=_FIT_DEFAULTS["epochs"], **kwargs):
        """Train asymmetrically on clean images and their classes.

        `keras.Model.fit` with defaults `epochs=10` and, for arrays,
        `batch_size=64`; compiles with `compile()`'s defaults when needed.
        The negatives are generated inside every training step (see the
        class docstring). Every other `keras.Model.fit` argument
        (`validation_data=(x_val, y_val)`, `callbacks`, ...) works as usual.

        Args:
            x: clean images `(N, H, W, C)` in `[clip_min, clip_max]`, or a
                `tf.data.Dataset` of `(images, labels)` pairs.
            y: their classes, integers `(N,)` or one-hot `(N, K)`. Defaults
                to `None`: the guarded classifier's predictions (arrays only).
            batch_size: Defaults to `64` for arrays, `None` for datasets.
            epochs: Defaults to `10`.
            **kwargs: passed to `keras.Model.fit`.

        Returns:
            The `History`.

        Raises:
            ValueError: NaN or infinite images, images outside
                `[clip_min, clip_max]`, labels outside `[0, K)`, `x` and `y`
                of different lengths, or `y=None` without a classifier.
        """
        import tensorflow as tf

        if not _keras_detector.is_dataset_like(x):
            x, y = self._check_fit_arrays(x, y, "x", "y")
            if batch_size is None:
                batch_size = _FIT_DEFAULTS["batch_size"]
        else:
            kwargs.setdefault("shuffle", False)
        validation = kwargs.get("validation_data")
        if isinstance(validation, (tuple, list)) and len(validation) >= 2:
            if not _keras_detector.is_dataset_like(validation[0]):
                checked = self._check_fit_arrays(
                    validation[0], validation[1], "validation_data[0]", "validation_data[1]"
                )
                kwargs["validation_data"] = (*checked, *validation[2:])
        if not self.compiled:
            self.compile()
        try:
            return keras.Model.fit(self, x, y, batch_size=batch_size, epochs=epochs, **kwargs)
        except tf.errors.InvalidArgumentError as e:
            if "finite values only" in str(e):
                raise ValueError(
                    "Argument `x` must hold finite values only. Received: a dataset batch "
                    "with NaN or infinite values (found while training)."
                ) from None
            raise

    def _check_fit_arrays(self, x, y, name_x, name_y):
        x = _validation.check_array(name_x, x, dtype_kind="fiu", allow_empty=False)
        if x.shape[1:] != self.input_shape_:
            shape = ", ".join(map(str, self.input_shape_))
            raise ValueError(
                f"Argument `{name_x}` must have shape (N, {shape}) "
                f"like the detector's input. Received: {name_x} with shape={x.shape}"
            )
        _validation.check_finite(name_x, x)
        x = x.astype("float32", copy=False)
        low, high = float(x.min()), float(x.max())
        if low < self.clip_min - 1e-6 or high > self.clip_max + 1e-6:
            raise ValueError(
                f"Argument `{name_x}` must lie in [clip_min, clip_max] = "
                f"[{self.clip_min}, {self.clip_max}]. Received: values in [{low}, {high}]"
            )
        if y is None:
            if self._classifier is None:
                raise ValueError(
                    f"Argument `{name_y}` (the classes of `{name_x}`) is needed: this detector "
                    "has no classifier to label them. Received: y=None"
                )
            y = np.argmax(np.asarray(self._classifier.predict(x, verbose=0)), axis=1)
        y = _validation.check_array(name_y, y, dtype_kind="fiub")
        _validation.check_same_length(name_x, x, name_y, y)
        y = np.argmax(y, axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y))
        if np.any(y != np.round(y)) or np.any((y < 0) | (y >= self.num_classes)):
            bad = y[(y != np.round(y)) | (y < 0) | (y >= self.num_classes)]
            raise ValueError(
                f"Argument `{name_y}` must hold class indices in [0, {self.num_classes}) or "
                f"one-hot rows. Received: {name_y} with values {bad[:5].tolist()}"
            )
        return x, y.astype("int32")

    # ------------------------------------------------------------------
    # Config

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "model": list(self.input_shape_),
            "num_classes": self.num_classes,
            "filters": list(self.filters),
            "kernel_size": self.kernel_size,
            "dense_units": self.dense_units,
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "step_decay": self.step_decay,
            "norm": self.norm,
            "random_start": self.random_start,
            "target": self.target,
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
            "weights_sha256": self.weights_sha256,
        }

    def get_build_config(self):
        return None

    def build_from_config(self, config):
        return None


def _integer_labels(y):
    """Integer class ids `(B,)` from integer `(B,)`/`(B, 1)` or one-hot `(B, K)` labels."""
    import tensorflow as tf

    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] is not None and y.shape[-1] > 1:
        return tf.argmax(y, axis=1, output_type=tf.int32)
    return tf.cast(tf.reshape(y, [-1]), tf.int32)
