"""Attacks on Keras 3 classifiers, batched, on logits, with one result type.

Every attack is one function `attack(model, x, *, ..., y=None, clip_min=0.0,
clip_max=1.0, batch_size=128, verbose=0)` that accepts a Keras model (attacked
on its pre-softmax logits when it ends in softmax), a `DetectorModel`, or a
callable returning logits, and returns an `AttackResult`. `bpda` and
`pgd_with_loss` are the building blocks of adaptive attacks; `selective_pgd`
and `orthogonal_pgd` attack a classifier and any detectors through the
Detector contract, `apgd` is AutoAttack's step-size-free PGD, `eot` averages
randomized defences and `feature_matching` matches a layer's activations. See
`docs/attacks.md`.
"""

from keras_advguard.attacks._common import AttackResult
from keras_advguard.attacks.apgd import apgd
from keras_advguard.attacks.bim import bim
from keras_advguard.attacks.boundary import boundary
from keras_advguard.attacks.bpda import bpda
from keras_advguard.attacks.carlini_wagner_l2 import carlini_wagner_l2
from keras_advguard.attacks.deepfool import deepfool
from keras_advguard.attacks.eot import eot
from keras_advguard.attacks.feature_matching import feature_matching
from keras_advguard.attacks.fgsm import fgsm
from keras_advguard.attacks.gradient_attack import gradient_attack
from keras_advguard.attacks.mim import mim
from keras_advguard.attacks.one_pixel import one_pixel
from keras_advguard.attacks.orthogonal_pgd import orthogonal_pgd
from keras_advguard.attacks.pgd import pgd
from keras_advguard.attacks.pgd_with_loss import pgd_with_loss
from keras_advguard.attacks.selective_pgd import selective_pgd
from keras_advguard.attacks.spsa import spsa
from keras_advguard.attacks.uniform_noise import uniform_noise

__all__ = [
    "AttackResult",
    "apgd",
    "bim",
    "boundary",
    "bpda",
    "carlini_wagner_l2",
    "deepfool",
    "eot",
    "feature_matching",
    "fgsm",
    "gradient_attack",
    "mim",
    "one_pixel",
    "orthogonal_pgd",
    "pgd",
    "pgd_with_loss",
    "selective_pgd",
    "spsa",
    "uniform_noise",
]
