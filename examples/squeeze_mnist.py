"""
Title: Feature squeezing on MNIST: output layer vs internal layers
Author: keras_advguard developers
Date created: 2026/11/21
Last modified: 2026/12/01
Description: Detect FGSM adversarial examples by squeezing the input and comparing
either the softmax outputs (Xu et al.) or every activation layer (Jonas & Evans).
"""

"""
## Setup

The reference model is trained once and cached (`~/.keras_advguard/models`).
`--dataset` picks the images (default: MNIST): `mnist`, `fashion_mnist` and
`cifar10` are read from the Keras cache (`~/.keras/datasets/`) or from
`--data-path`, nothing downloads; `digits` is scikit-learn's bundled 8x8
digits, the default with `--quick`, which runs the same steps with the small
digits model in well under a minute.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from keras_advguard import attacks, metrics  # noqa: E402
from keras_advguard.datasets import DATASET_NAMES, load_dataset  # noqa: E402
from keras_advguard.detectors import FeatureSqueezingDetector, load_detector  # noqa: E402
from keras_advguard.layers import BitDepthSqueezer, MedianSmoothingSqueezer  # noqa: E402
from keras_advguard.models import load_or_train  # noqa: E402
from keras_advguard.plots import LayerDivergenceDisplay  # noqa: E402

# dataset: (reference architecture, its training epochs, FGSM eps)
REFERENCE = {
    "digits": ("digits_cnn", 30, 0.1),
    "mnist": ("mnist_cnn", 5, 0.1),
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
args = parser.parse_args()
dataset = args.dataset or ("digits" if args.quick else "mnist")
architecture, epochs, eps = REFERENCE[dataset]

"""
## Data and model

The threshold of a detector is chosen on clean *validation* images, never on
the images it is evaluated on: here the first test images calibrate, the next
ones evaluate.
"""

try:
    _, (x_test, y_test) = load_dataset(dataset, path=args.data_path)
except (FileNotFoundError, ValueError) as error:
    parser.error(f"--dataset {dataset}: {error}")
model, info = load_or_train(architecture, dataset, epochs=epochs, seed=0, path=args.data_path)
n_val, n_eval = (180, 180) if args.quick else (1000, 1000)
print(f"{architecture} on {dataset}: test accuracy {info['test_accuracy']:.4f}")

x_val = x_test[:n_val]
x_eval, y_eval = x_test[n_val : n_val + n_eval], y_test[n_val : n_val + n_eval]
correct = np.argmax(model.predict(x_eval, verbose=0), axis=1) == y_eval
x_eval, y_eval = x_eval[correct], y_eval[correct]
print(f"{len(x_val)} validation images, {len(x_eval)} correctly classified evaluation images")

"""
## Squeezers

Xu et al.'s MNIST squeezers: 1-bit depth (a binarisation at 0.5), and 2x2 and
3x3 median smoothing. They are Keras layers, so they could also sit inside a
model.
"""

squeezers = [BitDepthSqueezer(1), MedianSmoothingSqueezer(2), MedianSmoothingSqueezer(3)]

"""
## Two detectors

- `score="output"`: max over squeezers of the L1 distance between the softmax
  outputs of `x` and of the squeezed `x`.
- `score="internal"`: mean over the activation layers of the cosine distance
  between the flattened activations of `x` and of the squeezed `x` (max over
  squeezers).

Nothing is trained: `calibrate` sets the threshold at a 5% false positive
rate on clean validation images.
"""

detectors = {
    kind: FeatureSqueezingDetector(model, squeezers, score=kind).calibrate(x_val, fpr=0.05)
    for kind in ("output", "internal")
}
print("internal score layers:", detectors["internal"].tap_names)

"""
## FGSM, untargeted

Eps 0.1 on MNIST (Xu et al.), 8/255 on CIFAR-10. Only the successful
adversarial images count (their label changed).
"""

result = attacks.fgsm(model, x_eval, eps=eps, y=y_eval)
x_adv = result.x_adv[result.success]
print(f"FGSM success: {result.success.sum()} / {len(x_eval)}")

for kind, detector in detectors.items():
    if len(x_adv) == 0:
        break
    report = metrics.detection_report(
        detector.score(x_eval),
        detector.score(x_adv),
        fprs=[0.05],
        scores_clean_validation=detector.score(x_val),
    )
    at = report["at_fpr"][0.05]
    print(
        f"{kind:>8} score: detection rate {at['tpr']:.3f} at FPR {at['fpr']:.3f} "
        f"(threshold {detector.threshold_:.4f}), AUC {report['auc']:.3f}; "
        f"predict flags {detector.predict(x_adv).mean():.3f} of the adversarial images"
    )

"""
## Layer-wise divergence (Jonas & Evans, Fig. 1 and Fig. 2)

Fig. 1: how far each activation layer moves from the clean image, for the
adversarial image and for random noise of the same L2 norm. Fig. 2: how far
it moves when the image is squeezed, for clean and adversarial images.
"""

fig1 = LayerDivergenceDisplay.from_adversarial(model, x_eval, result.x_adv)
fig1.figure_.savefig("squeeze_fig1.png", dpi=80)
if len(x_adv):
    fig2 = LayerDivergenceDisplay.from_squeezer(model, squeezers[1], x_eval, x_adv)
    fig2.figure_.savefig("squeeze_fig2.png", dpi=80)
print("wrote squeeze_fig1.png and squeeze_fig2.png")

"""
## Save and load

One file, written atomically: the squeezers as Keras configs, the threshold,
a SHA-256 of the classifier's weights and the classifier itself (`.keras`);
nothing is pickled. `load_detector` reads any detector back, by the class
name stored in the file (or `FeatureSqueezingDetector.load(path, model)`, which
refuses a model whose weights differ).
"""

detectors["internal"].save("squeeze_detector.advguard")
loaded = load_detector("squeeze_detector.advguard")
np.testing.assert_array_equal(loaded.predict(x_eval), detectors["internal"].predict(x_eval))
print("reloaded detector, same decisions:", loaded)
