"""Keras layers of keras_advguard: sanitizers, squeezers and distances.

Every layer here is registered with
`keras.saving.register_keras_serializable(package="keras_advguard")` and loads
with `keras.models.load_model` in safe mode.

Public layers are re-exported one per line with the explicit `X as X` form
(PEP 484 re-export, accepted by ruff): add a line, nothing else to edit.
"""

from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer as BitDepthSqueezer
from keras_advguard.layers.dense_logits import DenseLogits as DenseLogits
from keras_advguard.layers.mask_sanitizer import MaskSanitizer as MaskSanitizer
from keras_advguard.layers.median_sanitizer import MedianSanitizer as MedianSanitizer
from keras_advguard.layers.median_smoothing_squeezer import (
    MedianSmoothingSqueezer as MedianSmoothingSqueezer,
)
from keras_advguard.layers.medoid_distance import MedoidDistance as MedoidDistance
from keras_advguard.layers.nl_means_sanitizer import (
    NLMeansSanitizer as NLMeansSanitizer,
)
from keras_advguard.layers.nl_means_squeezer import NLMeansSqueezer as NLMeansSqueezer
