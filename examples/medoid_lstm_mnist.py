"""
Title: Detecting adversarial MNIST digits from their distances to class medoids
Author: keras_advguard developers
Date created: 2026/11/22
Last modified: 2026/12/01
Description: Tap every layer of a classifier, measure how far an input's
activations are from each class's medoid, layer after layer, and let an LSTM
read that L x C distance sequence (Caldelli et al., ICIP 2019).
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

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_advguard import attacks, metrics  # noqa: E402
from keras_advguard.datasets import DATASET_NAMES, load_dataset  # noqa: E402
from keras_advguard.detectors import KNNDetector, MedoidLSTMDetector, load_detector  # noqa: E402
from keras_advguard.models import load_or_train  # noqa: E402
from keras_advguard.plots import plot_activation_tsne  # noqa: E402

# dataset: (reference architecture, its training epochs, PGD eps)
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
args = parser.parse_args()
dataset = args.dataset or ("digits" if args.quick else "mnist")
architecture, model_epochs, eps = REFERENCE[dataset]
keras.utils.set_random_seed(0)

"""
## Data and model

The classifier's own training set gives the class medoids; test images the
classifier gets right are the *sources* of the clean and adversarial inputs
the detector learns from.
"""

try:
    (x_train, y_train), (x_test, y_test) = load_dataset(dataset, path=args.data_path)
except (FileNotFoundError, ValueError) as error:
    parser.error(f"--dataset {dataset}: {error}")
model, info = load_or_train(architecture, dataset, epochs=model_epochs, path=args.data_path)
n_sources, epochs = (300, 30) if args.quick else (1000, 100)
print(f"{architecture} on {dataset}: test accuracy {info['test_accuracy']:.4f}")

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

pgd = attacks.pgd(model, x_src, eps=eps, eps_iter=eps / 30, nb_iter=40, y=y_src, seed=0)
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
scores = detector.score(x)

"""
## Evaluation

`score(x)` gives the LSTM's output, higher = more adversarial. The threshold
comes from clean *validation* images (5% false positives): `calibrate` sets
it, `predict` then flags inputs (bool).
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
detector.calibrate(x[val[is_adv[val] == 0]], fpr=0.05)
flags = detector.predict(x[test])
print(
    f"{'':>22}  flagged at threshold {detector.threshold_:.3f}: clean "
    f"{flags[is_adv[test] == 0].mean():.3f}, adversarial {flags[is_adv[test] == 1].mean():.3f}"
)

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

One file holds the classifier, the medoids, the standardization, the LSTM
and the threshold, written atomically; it loads in Keras' safe mode.
`load_detector` reads any detector back (`MedoidLSTMDetector.load(path,
model)` also refuses a classifier whose weights differ). A path ending in
`.keras` writes a plain Keras file instead, for `keras.models.load_model`
and Keras's callbacks.
"""

detector.save("medoid_lstm_detector.advguard")
reloaded = load_detector("medoid_lstm_detector.advguard")
np.testing.assert_allclose(reloaded.score(x), scores, atol=1e-6)
np.testing.assert_array_equal(reloaded.predict(x), detector.predict(x))
print("reloaded detector gives identical scores and decisions")
