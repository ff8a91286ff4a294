"""
Title: keras_advguard quickstart: tap, attack, score
Author: keras_advguard developers
Date created: 2026/11/20
Last modified: 2026/11/20
Description: Tap a trained digits classifier, attack it with FGSM and PGD, and
score a baseline detector honestly.
"""

"""
## Setup

Everything runs offline on scikit-learn's bundled 8x8 digits. The reference
model is trained once and cached (`~/.keras_advguard/models`).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_advguard import DetectorModel, attacks, metrics  # noqa: E402
from keras_advguard.datasets import load_dataset, validation_split  # noqa: E402
from keras_advguard.models import load_or_train  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--quick", action="store_true", help="A tiny, fast run.")
parser.add_argument("--cache-dir", default=None, help="Model cache directory.")
args = parser.parse_args()
n_images = 60 if args.quick else 360

"""
## Data and model
"""

(x_train, y_train), (x_test, y_test) = load_dataset("digits")
model, info = load_or_train("digits_cnn", "digits", epochs=30, cache_dir=args.cache_dir)
print(f"digits_cnn test accuracy: {info['test_accuracy']:.3f}")

"""
## Tap the internal layers

One functional model, sharing the classifier's weights, exposing the logits
and every convolution and dense layer (global-average pooled).
"""

taps = DetectorModel(model, layers="conv+dense", pooling="avg")
acts = taps.activations(x_test[:n_images], batch_size=64)
for name, value in acts.items():
    print(f"{name:>12}: {value.shape}")

"""
## Attack

Attacks run on the pre-softmax logits, found behind the model's softmax.
"""

x, y = x_test[:n_images], y_test[:n_images]
fgsm = attacks.fgsm(model, x, y=y, eps=0.1)
pgd = attacks.pgd(model, x, y=y, eps=0.1, eps_iter=0.01, nb_iter=20)
for name, result in (("FGSM", fgsm), ("PGD", pgd)):
    print(
        f"{name}: success {result.success.mean():.2f}, "
        f"mean Linf {result.linf.mean():.3f}, mean L2 {result.l2.mean():.3f}"
    )

"""
## Score a baseline detector honestly

Score = 1 - max softmax. The threshold for 5% false positives is calibrated on
clean *validation* images taken from the training split, never on test images.
"""


def score(inputs):
    return 1.0 - model.predict(inputs, verbose=0).max(axis=1)


_, (x_val, _) = validation_split(x_train, y_train, fraction=0.2, seed=0)
y_pred = np.argmax(model.predict(x, verbose=0), axis=1)
sets = metrics.evaluation_sets(y, y_pred, pgd.y_pred_after)
report = metrics.detection_report(
    score(x[sets.clean_index]),
    score(pgd.x_adv[sets.adversarial_index]),
    scores_clean_validation=score(x_val),
)
print(f"clean set {sets.n_clean}, adversarial set {sets.n_adversarial}")
print(
    f"AUC {report['auc']:.3f}, TPR at 5% FPR {report['at_fpr'][0.05]['tpr']:.3f} "
    f"(threshold from {report['n_calibration']} clean validation images)"
)
print("keras", keras.__version__)
