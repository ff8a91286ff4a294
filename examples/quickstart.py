"""
Title: keras_advguard quickstart: tap, attack, score
Author: keras_advguard developers
Date created: 2026/11/20
Last modified: 2026/12/01
Description: Tap a trained classifier, attack it with FGSM and PGD, and
score a baseline detector honestly.
"""

"""
## Setup

Everything runs offline: by default on scikit-learn's bundled 8x8 digits;
`--dataset mnist`, `fashion_mnist` or `cifar10` reads that dataset from the
Keras cache (`~/.keras/datasets/`) or from `--data-path`, never downloading.
The reference model is trained once and cached (`~/.keras_advguard/models`).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_advguard import DetectorModel, MaxSoftmaxDetector, attacks, metrics  # noqa: E402
from keras_advguard.datasets import DATASET_NAMES, load_dataset, validation_split  # noqa: E402
from keras_advguard.models import load_or_train  # noqa: E402

# dataset: (reference architecture, its training epochs, attack radius eps)
REFERENCE = {
    "digits": ("digits_cnn", 30, 0.1),
    "mnist": ("mnist_cnn", 5, 0.3),
    "fashion_mnist": ("mnist_cnn", 5, 0.1),
    "cifar10": ("cifar_cnn", 28, 8 / 255),
}

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument(
    "--dataset",
    default="digits",
    choices=DATASET_NAMES,
    help="Dataset (default: digits, bundled with scikit-learn; the others are read "
    "from the Keras cache or --data-path, never downloaded).",
)
parser.add_argument("--data-path", default=None, help="The dataset's file or folder.")
parser.add_argument("--quick", action="store_true", help="A tiny, fast run.")
parser.add_argument("--cache-dir", default=None, help="Model cache directory.")
args = parser.parse_args()
n_images = 60 if args.quick else 360

"""
## Data and model
"""

architecture, epochs, eps = REFERENCE[args.dataset]
try:
    (x_train, y_train), (x_test, y_test) = load_dataset(args.dataset, path=args.data_path)
except (FileNotFoundError, ValueError) as error:
    parser.error(f"--dataset {args.dataset}: {error}")
model, info = load_or_train(
    architecture, args.dataset, epochs=epochs, cache_dir=args.cache_dir, path=args.data_path
)
print(f"{architecture} on {args.dataset}: test accuracy {info['test_accuracy']:.3f}")

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
fgsm = attacks.fgsm(model, x, y=y, eps=eps)
pgd = attacks.pgd(model, x, y=y, eps=eps, eps_iter=eps / 10, nb_iter=20)
for name, result in (("FGSM", fgsm), ("PGD", pgd)):
    print(
        f"{name}: success {result.success.mean():.2f}, "
        f"mean Linf {result.linf.mean():.3f}, mean L2 {result.l2.mean():.3f}"
    )

"""
## Score a baseline detector honestly

`MaxSoftmaxDetector`: score = 1 - max softmax, higher = more adversarial.
Every detector of the library has the same surface: `score(x)` gives the
scores, `calibrate(x_clean_validation, fpr)` sets the threshold for that false
positive rate on clean *validation* images taken from the training split
(never on test images), and `predict(x)` gives bool flags.
"""

_, (x_val, _) = validation_split(x_train, y_train, fraction=0.2, seed=0)
detector = MaxSoftmaxDetector(model).calibrate(x_val, fpr=0.05)
y_pred = np.argmax(model.predict(x, verbose=0), axis=1)
sets = metrics.evaluation_sets(y, y_pred, pgd.y_pred_after)
x_clean, x_adv = x[sets.clean_index], pgd.x_adv[sets.adversarial_index]
report = metrics.detection_report(
    detector.score(x_clean),
    detector.score(x_adv),
    scores_clean_validation=detector.score(x_val),
)
print(f"clean set {sets.n_clean}, adversarial set {sets.n_adversarial}")
print(
    f"AUC {report['auc']:.3f}, TPR at 5% FPR {report['at_fpr'][0.05]['tpr']:.3f} "
    f"(threshold from {report['n_calibration']} clean validation images)"
)
flags_clean, flags_adv = detector.predict(x_clean), detector.predict(x_adv)
print(
    f"flagged at threshold {detector.threshold_:.4f}: clean {flags_clean.mean():.3f}, "
    f"adversarial {flags_adv.mean():.3f}"
)
print("keras", keras.__version__)
