"""`AdversarialModel`: Madry PGD and TRADES adversarial training with `fit`."""

import math

import keras
import numpy as np

from keras_advguard import _perturb, _validation
from keras_advguard.detector_model import DetectorModel

METHODS = ("pgd", "trades")
"""Training objectives accepted by `AdversarialModel`."""

_NORMS = {"inf": "inf", "linf": "inf", "2": "l2", "l2": "l2"}

_TRADES_START_STD = 0.001
"""Standard deviation of TRADES' Gaussian start (Zhang et al.'s code)."""


class _Untracked:
    """Holds an object out of Keras' attribute tracking (no duplicate weights)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _canonical_norm(norm):
    key = "inf" if isinstance(norm, (float, np.floating)) and math.isinf(norm) else str(norm)
    key = key.lower()
    if key not in _NORMS or isinstance(norm, bool):
        raise ValueError(
            "Argument `norm` must be 'inf' (L-infinity, also np.inf) or 2 "
            f"(L2, also 'l2'). Received: norm={norm!r}"
        )
    return _NORMS[key]


@keras.saving.register_keras_serializable(package="keras_advguard")
class AdversarialModel(keras.Model):
    """Adversarial training of a Keras classifier with the ordinary `compile`/`fit`.

    Wraps a classifier and overrides `train_step`: every training batch is
    first attacked inside the same compiled TensorFlow graph (the attack is
    traced once with the training step), then the weights are updated on the
    objective of `method`:

    - `"pgd"` (Madry et al., 2018): the compiled loss on PGD examples,
      `(1 - clean_weight) * L(f(x_adv), y) + clean_weight * L(f(x), y)`. The
      inner PGD maximises the cross-entropy of the logits, starting at a
      uniform random point of the ball when `random_start`.
    - `"trades"` (Zhang et al., 2019): `L(f(x), y) + beta * KL(p(x) || p(x_adv))`
      (KL summed over classes, averaged over the batch), where the inner
      maximisation is on the same KL, started at `x + 0.001 * N(0, 1)` when
      `random_start` (Zhang et al.'s start).

    `L` is the loss given to `compile` (e.g. `"sparse_categorical_crossentropy"`
    on the softmax output). The attacks step along the gradient's sign
    (L-infinity) or its L2-normalised direction (L2), project onto the
    `epsilon` ball around `x` and clip to `[clip_min, clip_max]`. They run in
    inference mode (dropout off); the update runs in training mode. The
    metrics compiled with the model are measured on the training-time
    adversarial examples; `evaluate` and the validation pass of `fit` measure
    the clean inputs (`call` is the wrapped classifier).

    The current radius is the non-trainable variable `epsilon`. With
    `ramp_epochs > 0`, `fit` adds an `EpsilonRamp` callback (unless one is
    given) that raises it linearly from 0 to `eps` over the first
    `ramp_epochs` epochs, batch by batch; the step size scales with it.
    Outside `fit` (`train_on_batch`), assign `epsilon` yourself.

    Mixed precision works as in Keras: under the `"mixed_float16"` policy
    `compile` wraps the optimizer in a `LossScaleOptimizer` and `train_step`
    scales the loss through `optimizer.scale_loss`. The attacks compute the
    input gradient in float32 at the input (the classifier computes in its own
    policy).

    Non-finite inputs: `fit` refuses numpy `x` (and numpy `validation_data`)
    holding NaN or Inf with a `ValueError` before training starts; batches of
    a `tf.data.Dataset` are checked inside `train_step` (a
    `tf.errors.InvalidArgumentError` naming `x`).

    The trained classifier is `model` (also `unwrap()`): a plain Keras model
    sharing the trained weights, to save and deploy without this wrapper.
    Requires the TensorFlow backend.

    Args:
        model: a built Functional or Sequential `keras.Model` classifier with
            one input and one output (softmax probabilities or logits; the
            logits are found as `DetectorModel` finds them).
        method: `"pgd"` or `"trades"`. Defaults to `"pgd"`.
        eps: radius of the ball, >= 0. Defaults to `0.3`.
        steps: attack iterations per batch, >= 1. Defaults to `10`.
        step_size: attack step at the full radius, > 0. Defaults to
            `2.5 * eps / steps` (Madry et al.'s rule).
        random_start: whether the attack starts at a random point (see
            above). Defaults to `True`.
        clean_weight: `"pgd"` only: weight in `[0, 1]` of the clean loss.
            Defaults to `0.0` (Madry et al.: adversarial examples only).
        beta: `"trades"` only: weight >= 0 of the KL term. Defaults to `6.0`.
        ramp_epochs: epochs over which `epsilon` rises from 0 to `eps`
            (integer >= 0; `0`: the full radius from the start). Defaults to
            `0`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        norm: `"inf"` (or `np.inf`) or `2` (or `"l2"`). Defaults to `"inf"`.
        **kwargs: `keras.Model` keyword arguments such as `name`.

    Call arguments:
        inputs: a batch for the wrapped classifier.
        training: forwarded to the classifier.

    Returns:
        Called on a batch: the classifier's output.

    Raises:
        ValueError: `eps < 0`, `steps < 1`, an unknown `method` or `norm`,
            `clip_min >= clip_max`, `clean_weight` outside `[0, 1]`,
            `beta < 0`, `step_size <= 0`, `ramp_epochs < 0`, a model whose
            logits cannot be reached; at `fit`, numpy inputs that are not
            finite or lie outside `[clip_min, clip_max]`.
        TypeError: arguments of the wrong type (`model` not a `keras.Model`).

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard.training import AdversarialModel
        >>> classifier = keras.Sequential([
        ...     keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        >>> robust = AdversarialModel(classifier, method="pgd", eps=0.1, steps=3)
        >>> robust.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        >>> x = np.random.default_rng(0).uniform(size=(32, 4)).astype("float32")
        >>> y = np.arange(32) % 3
        >>> history = robust.fit(x, y, epochs=1, batch_size=16, verbose=0)
        >>> robust.unwrap() is classifier, round(float(robust.epsilon.numpy()), 4)
        (True, 0.1)

    Reference:
        A. Madry, A. Makelov, L. Schmidt, D. Tsipras and A. Vladu, "Towards
        Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
        H. Zhang, Y. Yu, J. Jiao, E. P. Xing, L. El Ghaoui and M. I. Jordan,
        "Theoretically Principled Trade-off between Robustness and Accuracy",
        ICML 2019.
    """

    def __init__(
        self,
        model,
        method="pgd",
        eps=0.3,
        steps=10,
        step_size=None,
        random_start=True,
        clean_weight=0.0,
        beta=6.0,
        ramp_epochs=0,
        clip_min=0.0,
        clip_max=1.0,
        norm="inf",
        **kwargs,
    ):
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        _validation.check_type("model", model, keras.Model, "a keras.Model")
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "AdversarialModel compiles its attack into a TensorFlow training "
                f"step and needs the TensorFlow backend. Received: backend="
                f"{keras.backend.backend()!r}"
            )
        _validation.check_type("method", method, str)
        _validation.check_choice("method", method, METHODS)
        eps = float(_validation.check_number("eps", eps, min_value=0))
        _validation.check_positive_int("steps", steps)
        if step_size is None:
            step_size = 2.5 * eps / steps
        else:
            step_size = float(
                _validation.check_number("step_size", step_size, min_value=0, min_inclusive=False)
            )
        _validation.check_type("random_start", random_start, bool)
        clean_weight = float(
            _validation.check_number("clean_weight", clean_weight, min_value=0, max_value=1)
        )
        beta = float(_validation.check_number("beta", beta, min_value=0))
        _validation.check_number("ramp_epochs", ramp_epochs, min_value=0, integer=True)
        _validation.check_clip(clip_min, clip_max)
        norm = _canonical_norm(norm)

        # Reaches the logits (pre-softmax) while sharing every weight.
        logits_model = DetectorModel(model)
        super().__init__(**kwargs)
        self.model = model
        self._logits = _Untracked(logits_model)
        self.method = method
        self.eps = eps
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.random_start = random_start
        self.clean_weight = clean_weight
        self.beta = beta
        self.ramp_epochs = int(ramp_epochs)
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)
        self.norm = norm
        self.epsilon = self.add_weight(
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(0.0 if self.ramp_epochs else eps),
            trainable=False,
            name="epsilon",
        )
        self.built = True

    # ------------------------------------------------------------------
    # Keras API
    # ------------------------------------------------------------------

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def unwrap(self):
        """The trained classifier: a plain Keras model sharing the weights.

        Returns:
            The wrapped `keras.Model` (the same object as `model`).
        """
        return self.model

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "model": keras.saving.serialize_keras_object(self.model),
            "method": self.method,
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "clean_weight": self.clean_weight,
            "beta": self.beta,
            "ramp_epochs": self.ramp_epochs,
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
            "norm": self.norm,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        **kwargs,
    ):
        """`keras.Model.fit`, with input checks and the `epsilon` ramp.

        Same arguments and return value as `keras.Model.fit`. Numpy `x` (and
        the inputs of numpy `validation_data`) must be finite and lie in
        `[clip_min, clip_max]` (`ValueError` otherwise). When `ramp_epochs >
        0` and no `EpsilonRamp` is among `callbacks`, one is added.
        """
        from keras_advguard.training.epsilon_ramp import EpsilonRamp

        if isinstance(x, np.ndarray):
            self._check_numpy_inputs("x", x)
        if isinstance(validation_data, (tuple, list)) and validation_data:
            if isinstance(validation_data[0], np.ndarray):
                self._check_numpy_inputs("validation_data", validation_data[0])
        callbacks = list(callbacks or [])
        if self.ramp_epochs and not any(isinstance(c, EpsilonRamp) for c in callbacks):
            callbacks.append(EpsilonRamp(self.ramp_epochs))
        return super().fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=callbacks,
            validation_split=validation_split,
            validation_data=validation_data,
            **kwargs,
        )

    def train_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if x.dtype.is_floating:
            x = tf.debugging.assert_all_finite(
                x, "Argument `x` must hold finite values only: a training batch has NaN or Inf."
            )
        x_adv = self.generate(x, y)
        logits_model = self._logits.value
        with tf.GradientTape() as tape:
            loss, y_pred = self._objective(logits_model, x, y, x_adv, sample_weight, True)
            if self._loss_tracker is not None:
                self._loss_tracker.update_state(loss, sample_weight=tf.shape(x)[0])
            scaled = self.optimizer.scale_loss(loss) if self.optimizer is not None else loss
        variables = self.trainable_weights
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # ------------------------------------------------------------------
    # The attack and the objective
    # ------------------------------------------------------------------

    def generate(self, x, y):
        """The training attack of `method` at the current `epsilon`.

        The examples the next update is computed on (PGD on the
        cross-entropy, or TRADES' inner maximisation of the KL divergence),
        in inference mode. Runs eagerly or inside a `tf.function`.

        Args:
            x: a batch of inputs (tensor or array) in `[clip_min, clip_max]`.
            y: its labels: integers `(N,)`/`(N, 1)` or one-hot `(N, C)`
                (TRADES ignores them).

        Returns:
            A float32 `tf.Tensor` shaped like `x`, within `epsilon` of `x` in
            `norm` and inside `[clip_min, clip_max]`, without gradient.
        """
        import tensorflow as tf

        logits_model = self._logits.value
        x = tf.cast(tf.convert_to_tensor(x), tf.float32)
        eps = tf.cast(tf.convert_to_tensor(self.epsilon), tf.float32)
        scale = eps / self.eps if self.eps > 0 else tf.zeros_like(eps)
        step = self.step_size * scale

        def logits_of(xa):
            return tf.cast(logits_model(xa, training=False)["logits"], tf.float32)

        if self.method == "pgd":
            labels = _labels(y, logits_of(x).shape[-1])

            def objective(logits):
                return tf.reduce_sum(_cross_entropy(labels, logits))

            start = x
            if self.random_start:
                start = x + _perturb.random_in_ball(tf.shape(x), eps, self.norm)
        else:
            p_clean = tf.stop_gradient(tf.nn.softmax(logits_of(x)))

            def objective(logits):
                return tf.reduce_sum(_kl(p_clean, logits))

            start = x
            if self.random_start:
                start = x + _TRADES_START_STD * tf.random.normal(tf.shape(x))
        start = _perturb.project(x, start, eps, self.norm, self.clip_min, self.clip_max)

        return _perturb.ascend(
            lambda xa: objective(logits_of(xa)),
            x,
            start,
            steps=self.steps,
            step=step,
            eps=eps,
            norm=self.norm,
            clip_min=self.clip_min,
            clip_max=self.clip_max,
        )

    def adversarial_loss(self, x, y, x_adv, sample_weight=None):
        """The training objective of `method` for given adversarial examples.

        What `train_step` minimises, evaluated in inference mode (dropout
        off), e.g. to inspect a batch or to check it by hand. Needs `compile`
        (the loss `L`).

        Args:
            x: clean inputs.
            y: their labels, as the compiled loss takes them.
            x_adv: adversarial inputs shaped like `x` (e.g. `generate(x, y)`).
            sample_weight: optional per-sample weights `(N,)`.

        Returns:
            A scalar float32 `tf.Tensor`.
        """
        import tensorflow as tf

        if not self.compiled:
            raise ValueError(
                "`adversarial_loss` uses the loss given to `compile`: call "
                "`compile(optimizer=..., loss=...)` first."
            )
        x = tf.convert_to_tensor(x)
        x_adv = tf.convert_to_tensor(x_adv, dtype=x.dtype)
        loss, _ = self._objective(self._logits.value, x, y, x_adv, sample_weight, False)
        return loss

    def _objective(self, logits_model, x, y, x_adv, sample_weight, training):
        import tensorflow as tf

        x_adv = tf.cast(x_adv, x.dtype)
        if self.method == "pgd" and self.clean_weight == 0.0:
            out_adv = logits_model(x_adv, training=training)
            y_pred = out_adv["prediction"]
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
            return loss, y_pred
        out_clean = logits_model(x, training=training)
        out_adv = logits_model(x_adv, training=training)
        y_pred = out_adv["prediction"]
        if self.method == "pgd":
            w = self.clean_weight
            clean = self.compute_loss(
                x=x, y=y, y_pred=out_clean["prediction"], sample_weight=sample_weight
            )
            adv = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
            return w * clean + (1.0 - w) * adv, y_pred
        clean = self.compute_loss(
            x=x, y=y, y_pred=out_clean["prediction"], sample_weight=sample_weight
        )
        logits_clean = tf.cast(out_clean["logits"], tf.float32)
        logits_adv = tf.cast(out_adv["logits"], tf.float32)
        kl = _kl(tf.nn.softmax(logits_clean), logits_adv, log_p=tf.nn.log_softmax(logits_clean))
        if sample_weight is not None:
            kl = kl * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        kl = tf.reduce_mean(kl)
        return tf.cast(clean, tf.float32) + self.beta * kl, y_pred

    def _check_numpy_inputs(self, name, x):
        if x.dtype.kind in "fc":
            _validation.check_finite(name, x)
        if x.size:
            lo, hi = float(np.min(x)), float(np.max(x))
            if lo < self.clip_min or hi > self.clip_max:
                raise ValueError(
                    f"The inputs of `{name}` must lie in [clip_min, clip_max] = "
                    f"[{self.clip_min}, {self.clip_max}] (the attack's valid range). "
                    f"Received: {name} with values in [{lo}, {hi}]"
                )


def _labels(y, num_classes):
    """`y` as float32 one-hot rows `(N, C)` (sparse or one-hot input)."""
    import tensorflow as tf

    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] == num_classes and num_classes > 1:
        return tf.cast(y, tf.float32)
    return tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), num_classes)


def _cross_entropy(onehot, logits):
    import tensorflow as tf

    return -tf.reduce_sum(onehot * tf.nn.log_softmax(logits), axis=-1)


def _kl(p, logits_q, log_p=None):
    """Per-sample `KL(p || softmax(logits_q))`, summed over classes."""
    import tensorflow as tf

    if log_p is None:
        log_p = tf.math.log(tf.maximum(p, 1e-12))
    return tf.reduce_sum(p * (log_p - tf.nn.log_softmax(logits_q)), axis=-1)
