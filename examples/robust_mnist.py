"""
Title: Adversarial training with `fit`: a classifier that holds under PGD
Author: keras_advguard developers
Date created: 2026/12/01
Last modified: 2026/12/01
Description: Wrap a Keras classifier in `AdversarialModel`, train it with the
ordinary `compile`/`fit` on PGD (Madry et al.) or TRADES examples, compare
its accuracy under a PGD attack with a standard-trained twin, then guard it
with a detector trained against its own attacker and evaluate both together.
"""

"""
## Setup

Every detector of the library falls to an attacker who knows it is there (see
"Defences that hold" in the docs). Adversarial training is the defence that
holds: the classifier is trained on the worst examples in the `eps` ball
around each training image, found by an attack run inside the training step.

This example runs on MNIST (`--dataset mnist`, eps 0.3, the default; give
the `.npz` with `--data-path` when it is not in the Keras cache), on
Fashion-MNIST (eps 0.1) or CIFAR-10 (eps 8/255), read offline, or in seconds
on scikit-learn's bundled 8x8 digits (`--dataset digits`, eps 0.2, the
default with `--quick`).
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_advguard.attacks import pgd  # noqa: E402
from keras_advguard.datasets import DATASET_NAMES, load_dataset, validation_split  # noqa: E402
from keras_advguard.models import cifar_cnn, digits_cnn, mnist_cnn  # noqa: E402
from keras_advguard.training import AdversarialModel  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--quick", action="store_true", help="A tiny, fast run (digits).")
parser.add_argument(
    "--dataset",
    default=None,
    choices=DATASET_NAMES,
    help="Dataset (default: mnist; digits, bundled with scikit-learn, with --quick; "
    "the others are read from the Keras cache or --data-path, never downloaded).",
)
parser.add_argument("--data-path", default=None, help="The dataset's file or folder.")
parser.add_argument("--method", default="pgd", choices=("pgd", "trades"))
parser.add_argument("--epochs", type=int, default=None)
parser.add_argument("--output", default=None, help="Where to save the trained classifier.")
args = parser.parse_args()
dataset = args.dataset or ("digits" if args.quick else "mnist")
# dataset: (architecture, eps, training epochs)
build, eps, full_epochs = {
    "digits": (digits_cnn, 0.2, 30),
    "mnist": (mnist_cnn, 0.3, 10),
    "fashion_mnist": (mnist_cnn, 0.1, 10),
    "cifar10": (cifar_cnn, 8 / 255, 30),
}[dataset]
epochs = args.epochs or (6 if args.quick else full_epochs)
n_eval = 100 if args.quick else 1000

"""
## Data

Hyper-parameters are watched on images held out from the training split
(`validation_split`); the test split is only used for the final figures.
"""

try:
    (x_train, y_train), (x_test, y_test) = load_dataset(dataset, path=args.data_path)
except (FileNotFoundError, ValueError) as error:
    parser.error(f"--dataset {dataset}: {error}")
(x_fit, y_fit), (x_val, y_val) = validation_split(x_train, y_train, fraction=0.1, seed=0)
if args.quick:
    x_fit, y_fit = x_fit[:960], y_fit[:960]
x_eval, y_eval = x_test[:n_eval], y_test[:n_eval]
print(f"{dataset}: {len(x_fit)} training, {len(x_val)} held-out, {len(x_eval)} test images")

"""
## A standard-trained classifier

The same architecture, trained the usual way, for comparison.
"""

keras.utils.set_random_seed(0)
standard = build()
standard.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
standard.fit(x_fit, y_fit, epochs=epochs, batch_size=128, verbose=0)

"""
## The same classifier, trained adversarially

`AdversarialModel` is a `keras.Model` whose `train_step` first attacks the
batch (here PGD with `steps` iterations and a random start, compiled with the
training step), then updates the weights on the attacked batch. The radius
rises linearly from 0 to `eps` over the first `ramp_epochs` epochs, which
lets a small network start learning at a large radius. Everything else is
ordinary Keras: `compile`, `fit` with callbacks and `validation_data` (the
validation figures are clean accuracy; the training "accuracy" is measured
on the adversarial examples).
"""

keras.utils.set_random_seed(0)
classifier = build()
robust = AdversarialModel(
    classifier,
    method=args.method,
    eps=eps,
    steps=3 if args.quick else 7,
    step_size=eps / 3,
    random_start=True,
    ramp_epochs=1 if args.quick else max(1, epochs // 5),
)
robust.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = robust.fit(
    x_fit,
    y_fit,
    epochs=epochs,
    batch_size=128,
    validation_data=(x_val, y_val),
    callbacks=[keras.callbacks.TerminateOnNaN()],
    verbose=0,
)
for epoch, (acc, val) in enumerate(
    zip(history.history["accuracy"], history.history["val_accuracy"]), start=1
):
    print(f"epoch {epoch}: adversarial training accuracy {acc:.3f}, held-out clean {val:.3f}")

"""
## Robust accuracy under PGD

An image counts as robust when its PGD-attacked version (eps ball, random
start, 20 steps here; use 100 steps and restarts for a publishable figure) is
still classified as its true label.
"""


def accuracies(model):
    clean = np.mean(np.argmax(model.predict(x_eval, verbose=0), axis=1) == y_eval)
    attacked = pgd(model, x_eval, eps=eps, eps_iter=eps / 8, nb_iter=20, y=y_eval)
    return clean, np.mean(attacked.y_pred_after == y_eval)


for name, model in (("standard", standard), (args.method, robust.unwrap())):
    clean, under_attack = accuracies(model)
    print(f"{name:>8}: clean {clean:.3f}, under PGD-20 at eps {eps}: {under_attack:.3f}")

"""
## Guard it with a detector trained against its own attacker

`ClassConditionalInputDetector` (Yin et al., asymmetric adversarial training)
learns, for each class `k`, "a clean image of class `k`" against images of
other classes that PGD on the detector itself pushed to look like one; an
input is scored at the class the classifier predicts. It is trained with the
ordinary `fit` on clean images and labels. `evaluate` then reports the
combination under the oblivious attacker and the adaptive one (selective and
orthogonal PGD on classifier and detector together); `{"fit": False}` tells
it the detector is already trained.

A robust classifier's own confidence is a detector too (`MaxSoftmaxDetector`),
and it misses other images than the trained detector. `UnionDetector` flags an
input when either does: each component's score is put on a common scale by
its clean median and 95% quantile (fitted on held-out clean images, ones the
detector was not trained on), the union's score is the largest of them, and
the union is calibrated and attacked as one detector, so the adaptive attacker
must evade both at once.
"""

import keras_advguard as ag  # noqa: E402
from keras_advguard.detectors import (  # noqa: E402
    ClassConditionalInputDetector,
    MaxSoftmaxDetector,
    UnionDetector,
)

keras.utils.set_random_seed(0)
detector = ClassConditionalInputDetector(
    robust.unwrap(), eps=eps, steps=5 if args.quick else 20, filters=(16, 32), dense_units=64
)
detector.fit(x_fit, y_fit, epochs=3 if args.quick else 6, verbose=0)
union = UnionDetector([detector, MaxSoftmaxDetector(robust.unwrap())]).fit(x_val)
report = ag.evaluate(
    robust.unwrap(),
    (x_fit, y_fit),
    (x_test, y_test),
    defences=[
        ("asymmetric", detector, {"fit": False}),
        ("asymmetric_or_max_softmax", union, {"fit": False}),
    ],
    attacks=[("apgd", {"loss": "ce", "nb_iter": 10 if args.quick else 100})],
    eps=eps,
    num_images=120 if args.quick else 1000,
    splits=2,
    adaptive_steps=10 if args.quick else 200,
    baselines=False,
    cache_dir=False,
    verbose=0,
)
pred = np.argmax(robust.unwrap().predict(x_eval, verbose=0), axis=1)
for name, guard in (("asymmetric", detector), ("asymmetric_or_max_softmax", union)):
    entry = report.detectors[name]
    guard.calibrate(x_val, fpr=0.05)
    accepted = ~guard.predict(x_eval)
    print(
        f"{name} at 5% FPR: clean accepted and correct "
        f"{np.mean(accepted & (pred == y_eval)):.3f}; oblivious APGD AUC "
        f"{entry['oblivious']['mixed']['auc']:.3f}; adaptive attacker fools the classifier "
        f"on {entry['adaptive']['success_rate']:.3f} of the sources, fools it undetected "
        f"(SR@5) on {entry['adaptive']['sr_at_fpr'][1]:.3f}"
    )

"""
## Keep the plain classifier

`unwrap()` (or `.model`) is the trained classifier itself: a plain Keras model
with no dependency on the wrapper, saved and loaded like any other.
"""

output = args.output or os.path.join(tempfile.mkdtemp(), f"robust_{dataset}.keras")
robust.unwrap().save(output)
reloaded = keras.models.load_model(output)
same = np.array_equal(reloaded.predict(x_eval, verbose=0), classifier.predict(x_eval, verbose=0))
print(f"saved to {output}; reloaded outputs identical: {same}")
