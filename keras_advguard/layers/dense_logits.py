"""`DenseLogits`: the pre-activation output of an existing `Dense` layer."""

import keras

from keras_advguard import _validation


@keras.saving.register_keras_serializable(package="keras_advguard")
class DenseLogits(keras.layers.Layer):
    """The pre-activation output `x @ kernel + bias` of an existing `Dense`.

    Used by `DetectorModel` to expose the logits of a classifier whose last
    `Dense` layer applies the softmax itself. The wrapped layer's variables
    are used as they are (shared, not copied).

    Args:
        dense: the `keras.layers.Dense` layer whose pre-activation to compute.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Example:

        >>> import keras, numpy as np
        >>> dense = keras.layers.Dense(2, activation="softmax")
        >>> x = np.ones((1, 3), "float32")
        >>> probabilities = dense(x)
        >>> logits = DenseLogits(dense)(x)
        >>> bool(np.allclose(keras.ops.softmax(logits), probabilities))
        True
    """

    def __init__(self, dense, **kwargs):
        super().__init__(**kwargs)
        if isinstance(dense, dict):
            dense = keras.saving.deserialize_keras_object(dense)
        _validation.check_type("dense", dense, keras.layers.Dense)
        self.dense = dense

    def build(self, input_shape):
        if not self.dense.built:
            self.dense.build(input_shape)
        self.built = True

    def call(self, inputs):
        kernel = keras.ops.cast(self.dense.kernel, self.compute_dtype)
        outputs = keras.ops.matmul(keras.ops.cast(inputs, self.compute_dtype), kernel)
        if self.dense.use_bias:
            outputs = outputs + keras.ops.cast(self.dense.bias, self.compute_dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.dense.units,)

    def get_config(self):
        config = super().get_config()
        config["dense"] = keras.saving.serialize_keras_object(self.dense)
        return config
