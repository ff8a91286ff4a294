"""
Title: Detecting adversarial MNIST digits from their distances to class medoids
Author: keras_advguard developers
Date created: 2026/11/22
Last modified: 2026/11/22
Description: Tap every layer of a classifier, measure how far an input's
activations are from each class's medoid, layer after layer, and let an LSTM
read that L x C distance sequence (Caldelli et al., ICIP 2019).
"""

"""
## Setup

The MNIST model is trained once and cached (`~/.keras_advguard/models`);
MNIST itself is read from the Keras cache (`~/.keras/datasets/mnist.npz`),
nothing downloads. `--quick` runs the same steps on scikit-learn's bundled
8x8 digits and the small digits model, in well under a minute.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_advguard import attacks, metrics  # noqa: E402
from keras_advguard.datasets import load_dataset  # noqa: E402
from keras_advguard.detectors import KNNDetector, MedoidLSTMDetector  # noqa: E402
from keras_advguard.models import load_or_train  # noqa: E402
from keras_advguard.plots import plot_activation_tsne  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--quick", action="store_true", help="8x8 digits, a fast run.")
args = parser.parse_args()
keras.utils.set_random_seed(0)

"""
## Data and model

The classifier's own training set gives the class medoids; test images the
classifier gets right are the *sources* of the clean and adversarial inputs
the detector learns from.
"""

if args.quick:
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    model, info = load_or_train("digits_cnn", "digits", epochs=30)
    n_sources, epochs, eps = 300, 30, 0.3
else:
    (x_train, y_train), (x_test, y_test) = load_dataset("mnist")
    model, info = load_or_train("mnist_cnn", "mnist", epochs=5, seed=0)
    n_sources, epochs, eps = 1000, 100, 0.3
print(f"{model.name}: test accuracy {info['test_accuracy']:.4f}")

correct = np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test
x_src, y_src = x_test[correct][:n_sources], y_test[correct][:n_sources]

"""
## The detector

`from_training_data` taps every convolution and dense layer (global average
pooling of feature maps), computes the exact L2 medoid of every class at
every layer from the training set, and standardizes each layer's distances.
The result is a Keras model: image -> taps -> distances `(L, C)` ->
`LSTM(100)` -> `Dense(1, sigmoid)`. The classifier inside is frozen.
"""

detector = MedoidLSTMDetector.from_training_data(model, x_train, y_train, standardize=True)
print("tapped layers:", detector.tap_names)
print("distance sequence:", detector.features(x_src[:1]).shape[1:], "(layers, classes)")

"""
## Adversarial examples

Two attacks the detector trains on (PGD, untargeted; C&W-L2 with a reduced
budget). Only the successful adversarial versions count, and every split
keeps a source image's clean and adversarial versions together.
"""

pgd = attacks.pgd(model, x_src, eps=eps, eps_iter=0.01, nb_iter=40, y=y_src, seed=0)
half = n_sources // 2
cw = attacks.carlini_wagner_l2(
    model,
    x_src[:half],
    y=y_src[:half],
    max_iterations=20 if args.quick else 100,
    learning_rate=0.05,
)
for name, result in (("PGD", pgd), ("C&W-L2", cw)):
    l2 = result.l2[result.success].mean()
    print(f"{name}: success {result.success.mean():.3f}, mean L2 {l2:.3f}")

x = np.concatenate([x_src, pgd.x_adv[pgd.success], cw.x_adv[cw.success]])
is_adv = np.r_[np.zeros(len(x_src)), np.ones(pgd.success.sum() + cw.success.sum())]
source = np.r_[np.arange(len(x_src)), np.flatnonzero(pgd.success), np.flatnonzero(cw.success)]
train, val, test = metrics.train_val_test_split_by_group(source, (0.8, 0.1, 0.1), seed=0)
print(f"train {len(train)}, validation {len(val)}, test {len(test)} inputs")

"""
## Training: an ordinary `fit` on images

`compile()` defaults to the paper's Adam + binary cross-entropy (+ an AUC
metric); `fit` defaults to 100 epochs of batch 100. Callbacks and validation
data work as in any Keras model.
"""

detector.compile()
detector.fit(
    x[train],
    is_adv[train],
    epochs=epochs,
    validation_data=(x[val], is_adv[val]),
    callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=20, restore_best_weights=True)],
    verbose=0,
)
scores = detector.predict(x, verbose=0)

"""
## Evaluation

The threshold comes from clean *validation* images (5% false positives).
"""


def evaluate(name, scores):
    test_clean, test_adv = test[is_adv[test] == 0], test[is_adv[test] == 1]
    report = metrics.detection_report(
        scores[test_clean],
        scores[test_adv],
        fprs=[0.05],
        scores_clean_validation=scores[val[is_adv[val] == 0]],
    )
    at = report["at_fpr"][0.05]
    print(f"{name:>22}: AUC {report['auc']:.3f}, TPR {at['tpr']:.3f} at FPR {at['fpr']:.3f}")


evaluate("medoid LSTM", scores)

"""
## Baseline: kNN on one layer (Carrara et al.)

Score = 1 - share of the k nearest training activations whose label is the
predicted class; k is chosen on the validation inputs.
"""

layer = detector.tap_names[-2]
knn = KNNDetector(model, layer).fit(
    x_train, y_train, validation_data=(x[val], is_adv[val]), k_candidates=[1, 5, 20, 50]
)
print(f"kNN on {layer}: k = {knn.n_neighbors_}")
evaluate(f"kNN ({layer})", knn.score(x))

"""
## The paper's Fig. 2: t-SNE of layer activations

Training activations of the source class and the target class of one
successful adversarial image, with a clean image of each class and the
adversarial image highlighted, at an early and a late layer.
"""

i = int(np.flatnonzero(pgd.success)[0])
source_class, target_class = int(y_src[i]), int(pgd.y_pred_after[i])
other = int(np.flatnonzero(y_src == target_class)[0])
display = plot_activation_tsne(
    model,
    x_train,
    y_train,
    layers=[detector.tap_names[0], detector.tap_names[-2]],
    x_clean=x_src[[i, other]],
    x_adv=pgd.x_adv[[i]],
    classes=[source_class, target_class],
    max_per_class=60 if args.quick else 300,
    names=[f"clean ({source_class})", f"clean ({target_class})", "adversarial"],
    n_threads=1,
)
display.figure_.savefig("medoid_lstm_tsne.png", dpi=80)
print("wrote medoid_lstm_tsne.png")

"""
## Save and load

One `.keras` file holds the classifier, the medoids, the standardization and
the LSTM; it loads in Keras' safe mode.
"""

detector.save("medoid_lstm_detector.keras")
reloaded = keras.models.load_model("medoid_lstm_detector.keras")
assert np.array_equal(reloaded.predict(x[:50], verbose=0), detector.predict(x[:50], verbose=0))
print("reloaded detector gives identical scores")
