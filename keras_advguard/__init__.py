"""keras_advguard: guard Keras 3 classifiers against adversarial examples.

Tap a trained classifier's internal layers (`DetectorModel`), sanitize its
hidden activations, detect adversarial inputs from them, attack it and
evaluate every defence honestly.
"""

from keras_advguard.detector_model import DetectorModel, as_logits_fn
from keras_advguard.version import __version__

__all__ = [
    "DetectorModel",
    "__version__",
    "as_logits_fn",
]
