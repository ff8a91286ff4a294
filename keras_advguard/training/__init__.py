"""Adversarial training with the ordinary Keras `compile`/`fit` (floor 3).

`AdversarialModel` wraps a classifier and trains it on PGD (Madry et al.) or
TRADES (Zhang et al.) examples generated inside the compiled training step;
`EpsilonRamp` raises the radius during the first epochs. `adversarial_fit`
trains a Keras detector on examples crafted against the current detector.
"""

from keras_advguard.training.adversarial_model import AdversarialModel
from keras_advguard.training.detector_training import adversarial_fit
from keras_advguard.training.epsilon_ramp import EpsilonRamp

__all__ = ["AdversarialModel", "EpsilonRamp", "adversarial_fit"]
