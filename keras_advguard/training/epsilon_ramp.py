"""`EpsilonRamp`: raise an `AdversarialModel`'s radius linearly during `fit`."""

import keras

from keras_advguard import _validation


class EpsilonRamp(keras.callbacks.Callback):
    """Raise `model.epsilon` linearly from 0 to `model.eps` over the first epochs.

    Small networks trained at a large radius (MNIST at 0.3) often fail to
    start learning; ramping the radius up fixes that. Before each training
    batch `b` of epoch `e` (0-based, `initial_epoch` included, so a resumed
    run continues the ramp) the radius is set to
    `eps * min(1, (e + (b + 1) / steps_per_epoch) / ramp_epochs)`, or
    `eps * min(1, (e + 1) / ramp_epochs)` when the number of steps per epoch
    is unknown (a `tf.data.Dataset` of unknown cardinality).
    `AdversarialModel.fit` adds one when the model has `ramp_epochs > 0`.

    Args:
        ramp_epochs: number of epochs of the ramp, integer >= 1.

    Raises:
        ValueError: `ramp_epochs < 1`; at `fit`, a model without `epsilon`.
        TypeError: `ramp_epochs` not an integer.

    Example:

        >>> import keras, numpy as np
        >>> from keras_advguard.training import AdversarialModel, EpsilonRamp
        >>> classifier = keras.Sequential([
        ...     keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        >>> robust = AdversarialModel(classifier, eps=0.2, steps=2)
        >>> robust.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        >>> x, y = np.full((8, 4), 0.5, dtype="float32"), np.arange(8) % 3
        >>> _ = robust.fit(x, y, epochs=1, batch_size=4, verbose=0,
        ...                callbacks=[EpsilonRamp(4)])
        >>> round(float(robust.epsilon.numpy()), 4)  # after 2 of 8 ramp batches
        0.05
    """

    def __init__(self, ramp_epochs):
        super().__init__()
        _validation.check_positive_int("ramp_epochs", ramp_epochs)
        self.ramp_epochs = int(ramp_epochs)
        self._epoch = 0

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "epsilon") or not hasattr(self.model, "eps"):
            raise ValueError(
                "EpsilonRamp drives an AdversarialModel's `epsilon`. Received: a model "
                f"of type {type(self.model).__name__} without `epsilon`"
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        steps = (self.params or {}).get("steps")
        if steps:
            progress = self._epoch + (batch + 1) / steps
        else:
            progress = self._epoch + 1
        fraction = min(1.0, progress / self.ramp_epochs)
        self.model.epsilon.assign(self.model.eps * fraction)
