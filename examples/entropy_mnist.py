"""
Title: Detecting adversarial MNIST digits by the entropy of their feature response
Author: keras_advguard developers
Date created: 2026/11/20
Last modified: 2026/12/01
Description: Guided backpropagation shows where a CNN looks; adversarial inputs
make it look everywhere. Calibrate a threshold on the entropy of that response
on clean images, detect FGSM and PGD, and draw the paper's figures.
"""

"""
## Setup

Amirian et al. (2018) observed that a CNN's *feature response* (guided
backpropagation of its last convolutional layer's activations to the input) is
focused on the object for a clean image and spread out for an adversarial one.
The detector turns the response into a gray image, measures the entropy of the
gray levels in every 3 x 3 window, averages it, and flags images whose mean
entropy is above a threshold chosen on clean images.

Everything runs offline. `--dataset` picks the images (default: MNIST):
`mnist`, `fashion_mnist` and `cifar10` are read from the Keras cache
(`~/.keras/datasets/`) or from `--data-path`, nothing downloads; the model is
the library's cached reference for the dataset (for MNIST
`load_or_train("mnist_cnn", "mnist", epochs=5)`, 99.29%). `--quick` runs on
scikit-learn's bundled 8 x 8 digits by default (on images that small, 3 x 3
windows cover most of the response and the detector separates little: the
run only exercises the code; `--quick --dataset mnist` shows the effect).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_advguard import attacks, metrics  # noqa: E402
from keras_advguard.datasets import DATASET_NAMES, load_dataset  # noqa: E402
from keras_advguard.detectors import EntropyDetector  # noqa: E402
from keras_advguard.models import load_or_train  # noqa: E402
from keras_advguard.plots import (  # noqa: E402
    AttackRocDisplay,
    EntropyHistogramDisplay,
    FeatureResponseDisplay,
)

# dataset: (reference architecture, its training epochs, attack radius eps)
REFERENCE = {
    "digits": ("digits_cnn", 30, 0.3),
    "mnist": ("mnist_cnn", 5, 0.3),
    "fashion_mnist": ("mnist_cnn", 5, 0.1),
    "cifar10": ("cifar_cnn", 28, 8 / 255),
}

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument(
    "--dataset",
    default=None,
    choices=DATASET_NAMES,
    help="Dataset (default: mnist; digits, bundled with scikit-learn, with --quick; "
    "the others are read from the Keras cache or --data-path, never downloaded).",
)
parser.add_argument("--data-path", default=None, help="The dataset's file or folder.")
parser.add_argument("--quick", action="store_true", help="Small budgets (digits by default).")
parser.add_argument("--cache-dir", default=None, help="Model cache directory.")
parser.add_argument("--out", default="entropy_figures", help="Where to save figures.")
args = parser.parse_args()
dataset = args.dataset or ("digits" if args.quick else "mnist")
architecture, epochs, eps = REFERENCE[dataset]
n_test = 100 if args.quick else 1000
n_val = 300 if args.quick else 2000

"""
## Data and model

The clean images the threshold is calibrated on (validation) and the clean
images it is evaluated on (test) are disjoint halves of a shuffled test set,
and only correctly classified images are used (METHODS.md, section 7).
"""

try:
    _, (x_test, y_test) = load_dataset(dataset, path=args.data_path)
except (FileNotFoundError, ValueError) as error:
    parser.error(f"--dataset {dataset}: {error}")
model, info = load_or_train(
    architecture, dataset, epochs=epochs, cache_dir=args.cache_dir, path=args.data_path
)
print(f"{architecture} on {dataset}: test accuracy {info['test_accuracy']:.4f}")

order = np.random.default_rng(0).permutation(len(x_test))
half = len(order) // 2
pred = np.argmax(model.predict(x_test, batch_size=256, verbose=0), axis=1)
correct = pred == y_test
test_index = [i for i in order[:half] if correct[i]][:n_test]
val_index = [i for i in order[half:] if correct[i]][:n_val]
x, y = x_test[test_index], y_test[test_index]
x_val = x_test[val_index]
print(f"{len(x)} clean test images, {len(x_val)} clean validation images")

"""
## Calibrate the detector on clean images only

Nothing is trained: `calibrate` scores the clean validation images and keeps
the threshold that at most 5% of them exceed (the target false positive
rate). Nothing about any attack is used. `score(x)` gives the mean entropy,
`predict(x)` the flags `score(x) > threshold_`.
"""

detector = EntropyDetector(model).calibrate(x_val, fpr=0.05)
print("tapped layer:", detector.layer_path_)
print(
    f"threshold at {detector.fpr_:.0%} FPR: {detector.threshold_:.4f} bits "
    f"(from {detector.n_calibration_} clean validation images)"
)

"""
## Attack, then detect

FGSM (one step) and PGD (iterated, random start), both in the L-infinity ball.
The adversarial set is the successful attacks on correctly classified images.
"""

keras.utils.set_random_seed(0)
runs = {
    "FGSM": attacks.fgsm(model, x, eps=eps, y=y),
    "PGD": attacks.pgd(model, x, eps=eps, nb_iter=10 if args.quick else 40, y=y),
}
scores_val = detector.score(x_val)
scores_clean = detector.score(x)
scores_adv = {}
for name, result in runs.items():
    sets = metrics.evaluation_sets(y, result.y_pred_before, result.y_pred_after)
    x_adv = result.x_adv[sets.adversarial_index]
    if not len(x_adv):
        print(f"{name}: no successful adversarial image")
        continue
    scores_adv[name] = detector.score(x_adv)
    report = metrics.detection_report(
        scores_clean, scores_adv[name], scores_clean_validation=scores_val
    )
    tprs = " / ".join(f"{report['at_fpr'][f]['tpr']:.3f}" for f in (0.01, 0.05, 0.1))
    print(
        f"{name}: {sets.n_adversarial} adversarial of {sets.n_clean}; mean entropy "
        f"clean {scores_clean.mean():.3f} vs adversarial {scores_adv[name].mean():.3f}; "
        f"TPR at FPR 1/5/10%: {tprs}; AUC {report['auc']:.3f}"
    )
print(f"clean test images flagged at the 5% threshold: {detector.predict(x).mean():.3f}")
for name in scores_adv:
    flagged = detector.predict(runs[name].x_adv[runs[name].success])
    print(f"{name} adversarial images flagged at the 5% threshold: {flagged.mean():.3f}")

"""
## The paper's figures

Fig. 3: image, feature response and local spatial entropy, clean and
adversarial. Fig. 4a: the distribution of the mean entropy. Fig. 4b: ROC per
attack.
"""

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

os.makedirs(args.out, exist_ok=True)
first = runs["FGSM"]
shown = np.flatnonzero(first.success)[:3]
if len(shown):
    fig3 = FeatureResponseDisplay.from_detector(detector, x[shown], first.x_adv[shown])
    fig3.figure_.savefig(os.path.join(args.out, "fig3_feature_response.png"), dpi=100)
    plt.close(fig3.figure_)
if "FGSM" in scores_adv:
    fig4a = EntropyHistogramDisplay(
        scores_clean, scores_adv["FGSM"], threshold=detector.threshold_, name="FGSM"
    ).plot()
    fig4a.figure_.savefig(os.path.join(args.out, "fig4a_histogram.png"), dpi=100)
    plt.close(fig4a.figure_)
if scores_adv:
    fig4b = AttackRocDisplay.from_scores(scores_clean, scores_adv)
    fig4b.figure_.savefig(os.path.join(args.out, "fig4b_roc.png"), dpi=100)
    plt.close(fig4b.figure_)
print("figures in", os.path.abspath(args.out))

"""
## Save and load

One file, written atomically: the parameters, the threshold, the tapped
layer and a SHA-256 of the model's weights (`include_model=False`: the model
is yours to keep; the default stores it too). `load` refuses a model whose
weights differ from the one the detector was calibrated on.
"""

path = os.path.join(args.out, "entropy_detector.advguard")
detector.save(path, include_model=False)
restored = EntropyDetector.load(path, model)
np.testing.assert_array_equal(restored.predict(x), detector.predict(x))
print("reloaded detector gives the same decisions:", restored)
