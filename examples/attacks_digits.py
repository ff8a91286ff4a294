"""
Title: Attacking a digits classifier: every attack, then adaptive attacks
Author: keras_advguard developers
Date created: 2026/11/20
Last modified: 2026/12/01
Description: Run each attack of `keras_advguard.attacks` on a trained
classifier (digits by default), compare success and perturbation sizes, then attack a defended
model adaptively with BPDA and a custom-loss PGD.
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
import tensorflow as tf  # noqa: E402

from keras_advguard import DetectorModel, attacks  # noqa: E402
from keras_advguard.datasets import DATASET_NAMES, load_dataset  # noqa: E402
from keras_advguard.models import load_or_train  # noqa: E402

# dataset: (reference architecture, its training epochs, L-inf eps, L2 eps)
REFERENCE = {
    "digits": ("digits_cnn", 30, 0.2, 1.5),
    "mnist": ("mnist_cnn", 5, 0.3, 2.0),
    "fashion_mnist": ("mnist_cnn", 5, 0.1, 1.5),
    "cifar10": ("cifar_cnn", 28, 8 / 255, 0.5),
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
n_images = 40 if args.quick else 360
architecture, epochs, eps, eps_l2 = REFERENCE[args.dataset]

"""
## Data and model

Attacks are evaluated on test images the classifier gets right (METHODS.md,
section 7): an attack cannot "succeed" on an image that was already wrong.
"""

try:
    _, (x_test, y_test) = load_dataset(args.dataset, path=args.data_path)
except (FileNotFoundError, ValueError) as error:
    parser.error(f"--dataset {args.dataset}: {error}")
model, info = load_or_train(
    architecture, args.dataset, epochs=epochs, cache_dir=args.cache_dir, path=args.data_path
)
print(f"{architecture} on {args.dataset}: test accuracy {info['test_accuracy']:.3f}")
pred = np.argmax(model.predict(x_test, verbose=0), axis=1)
correct = np.flatnonzero(pred == y_test)[:n_images]
x, y = x_test[correct], y_test[correct]
print(f"attacking {len(x)} correctly classified test images")

"""
## Every attack, one table

Each function takes the Keras model as it is (it ends in softmax; the attacks
find the logits behind it) and returns an `AttackResult`. Budgets are cut in
`--quick` mode.
"""

quick = args.quick
e, e2 = f"{eps:.3g}", f"{eps_l2:.3g}"
runs = {
    f"uniform noise, eps {e}": lambda: attacks.uniform_noise(model, x, y=y, eps=eps, seed=0),
    f"FGSM, eps {e}": lambda: attacks.fgsm(model, x, y=y, eps=eps),
    f"BIM, eps {e}": lambda: attacks.bim(model, x, y=y, eps=eps),
    f"PGD Linf, eps {e}": lambda: attacks.pgd(model, x, y=y, eps=eps),
    f"PGD L2, eps {e2}": lambda: attacks.pgd(model, x, y=y, eps=eps_l2, norm=2),
    f"MIM, eps {e}": lambda: attacks.mim(model, x, y=y, eps=eps),
    f"gradient attack, L2 <= {e2}": lambda: attacks.gradient_attack(model, x, y=y, eps=eps_l2),
    "DeepFool L2": lambda: attacks.deepfool(model, x, y=y),
    "DeepFool Linf": lambda: attacks.deepfool(model, x, y=y, norm=np.inf),
    "C&W L2": lambda: attacks.carlini_wagner_l2(
        model, x, y=y, max_iterations=50 if quick else 500, learning_rate=0.05
    ),
    f"SPSA, eps {e}": lambda: attacks.spsa(
        model,
        x,
        y=y,
        eps=eps,
        nb_iter=10 if quick else 100,
        spsa_samples=32 if quick else 128,
    ),
    "one pixel": lambda: attacks.one_pixel(
        model,
        x,
        y=y,
        maxiter=5 if quick else 100,
        population=50 if quick else 400,
        seed=0,
    ),
    "boundary": lambda: attacks.boundary(model, x, y=y, steps=200 if quick else 5000, seed=0),
}
print(f"{'attack':<26}{'success':>9}{'mean L2':>9}{'mean Linf':>11}{'seconds':>9}")
for name, run in runs.items():
    s = run().summary()
    print(
        f"{name:<26}{s['success_rate']:>9.2f}{s['mean_l2']:>9.3f}"
        f"{s['mean_linf']:>11.3f}{s['seconds']:>9.1f}"
    )

"""
Targeted attacks move towards chosen classes (here: the next class).
"""

targets = (y + 1) % 10
result = attacks.pgd(model, x, y=targets, targeted=True, eps=1.5 * eps)
print(f"targeted PGD reaches the next class for {result.success_rate:.0%} of images")

"""
## BPDA: attacking through a non-differentiable defence

A bit-depth squeezer (round every pixel to 4 levels) in front of the model
stops gradients: `tf.round` has none. `bpda` keeps its exact forward pass and
uses the identity backwards, so PGD sees through it.
"""


def squeeze(images):
    return tf.round(images * 3.0) / 3.0


defended = DetectorModel(model)


def cross_entropy(outputs, labels):
    return keras.ops.sparse_categorical_crossentropy(labels, outputs["logits"], from_logits=True)


try:
    attacks.pgd_with_loss(lambda v: defended(squeeze(v)), x, cross_entropy, y=y, eps=eps)
except ValueError as error:
    print(f"without BPDA: {error}")
result = attacks.pgd_with_loss(
    lambda v: defended(attacks.bpda(squeeze)(v)), x, cross_entropy, y=y, eps=eps, seed=0
)
print(f"with BPDA, squeezed model fooled on {result.success_rate:.0%} of images")

"""
## An adaptive loss over the model's outputs

A naive detector flags inputs whose top softmax probability is low. Plain PGD
stops caring once the label flips; the adaptive loss maximises the log
probability of the best *wrong* class, so its adversarial examples also look
confident.
"""


def confidently_wrong(outputs, labels):
    log_probs = keras.ops.log_softmax(outputs["logits"], axis=1)
    num_classes = keras.ops.shape(log_probs)[1]
    true_class = keras.ops.one_hot(labels, num_classes)
    return keras.ops.max(log_probs - 1e4 * true_class, axis=1)


plain = attacks.pgd(model, x, y=y, eps=eps)
adaptive = attacks.pgd_with_loss(DetectorModel(model), x, confidently_wrong, y=y, eps=eps, seed=0)
for name, res in (("plain PGD", plain), ("adaptive PGD", adaptive)):
    top = model.predict(res.x_adv, verbose=0).max(axis=1)
    print(f"{name}: success {res.success_rate:.0%}, median top probability {np.median(top):.3f}")
