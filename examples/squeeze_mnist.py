"""
Title: Feature squeezing on MNIST: output layer vs internal layers
Author: keras_advguard developers
Date created: 2026/11/21
Last modified: 2026/11/21
Description: Detect FGSM adversarial examples by squeezing the input and comparing
either the softmax outputs (Xu et al.) or every activation layer (Jonas & Evans).
"""

"""
## Setup

The MNIST model is trained once and cached (`~/.keras_advguard/models`); MNIST
itself is read from the Keras cache (`~/.keras/datasets/mnist.npz`), nothing
downloads. `--quick` runs the same steps on scikit-learn's bundled 8x8 digits
and the small digits model, in well under a minute.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from keras_advguard import attacks, metrics  # noqa: E402
from keras_advguard.datasets import load_dataset  # noqa: E402
from keras_advguard.detectors.feature_squeezing_detector import (  # noqa: E402
    FeatureSqueezingDetector,
)
from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer  # noqa: E402
from keras_advguard.layers.median_smoothing_squeezer import (  # noqa: E402
    MedianSmoothingSqueezer,
)
from keras_advguard.models import load_or_train  # noqa: E402
from keras_advguard.plots import LayerDivergenceDisplay  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--quick", action="store_true", help="8x8 digits, a fast run.")
args = parser.parse_args()

"""
## Data and model

The threshold of a detector is chosen on clean *validation* images, never on
the images it is evaluated on: here the first test images calibrate, the next
ones evaluate.
"""

if args.quick:
    _, (x_test, y_test) = load_dataset("digits")
    model, info = load_or_train("digits_cnn", "digits", epochs=30)
    n_val, n_eval = 180, 180
else:
    _, (x_test, y_test) = load_dataset("mnist")
    model, info = load_or_train("mnist_cnn", "mnist", epochs=5, seed=0)
    n_val, n_eval = 1000, 1000
print(f"{model.name}: test accuracy {info['test_accuracy']:.4f}")

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

`fit` sets the threshold at a 5% false positive rate on clean validation
images.
"""

detectors = {
    kind: FeatureSqueezingDetector(model, squeezers, score=kind).fit(x_val, fpr=0.05)
    for kind in ("output", "internal")
}
print("internal score layers:", detectors["internal"].tap_names)

"""
## FGSM, eps = 0.1, untargeted

Only the successful adversarial images count (their label changed).
"""

result = attacks.fgsm(model, x_eval, eps=0.1, y=y_eval)
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
        f"(threshold {detector.threshold_:.4f}), AUC {report['auc']:.3f}"
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

The detector is saved as JSON (squeezers as Keras configs, threshold) with the
model beside it as a `.keras` file; nothing is pickled.
"""

detectors["internal"].save("squeeze_detector.json")
loaded = FeatureSqueezingDetector.load("squeeze_detector.json")
assert np.array_equal(loaded.predict(x_eval[:20]), detectors["internal"].predict(x_eval[:20]))
print("reloaded detector:", loaded)
