"""
Title: Sanitizing hidden activations of an MNIST classifier
Author: keras_advguard developers
Date created: 2026/11/21
Last modified: 2026/12/01
Description: Insert mask, median and non-local means sanitizers after the hidden
layers of a trained MNIST-CNN, pick the mask threshold on validation data, and
evaluate against oblivious and adaptive (BPDA) attacks.
"""

"""
## Setup

The reference model is trained once and cached (`~/.keras_advguard/models`).
`--dataset` picks the images (default: MNIST): `mnist`, `fashion_mnist` and
`cifar10` are read from the Keras cache (`~/.keras/datasets/`) or from
`--data-path`, nothing downloads; `digits` is scikit-learn's bundled 8x8
digits, the default with `--quick`, which runs the same steps with the small
digits model in well under a minute. The full benchmark (1,000
test images, three attacks, CIFAR-10) is `benchmarks/sanitizers.py`.
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from keras_advguard import attacks  # noqa: E402
from keras_advguard.datasets import DATASET_NAMES, load_dataset, validation_split  # noqa: E402
from keras_advguard.layers import (  # noqa: E402
    MaskSanitizer,
    MedianSanitizer,
    NLMeansSanitizer,
)
from keras_advguard.models import (  # noqa: E402
    CIFAR_CNN_SANITIZED_LAYERS,
    DIGITS_CNN_SANITIZED_LAYERS,
    MNIST_CNN_SANITIZED_LAYERS,
    load_or_train,
)
from keras_advguard.plots import (  # noqa: E402
    layer_divergence,
    plot_layer_divergence,
    plot_tradeoff,
)
from keras_advguard.sanitize import sanitize  # noqa: E402

# dataset: (reference architecture, its training epochs, sanitized layers, PGD eps)
REFERENCE = {
    "digits": ("digits_cnn", 30, DIGITS_CNN_SANITIZED_LAYERS, 0.2),
    "mnist": ("mnist_cnn", 5, MNIST_CNN_SANITIZED_LAYERS, 0.3),
    "fashion_mnist": ("mnist_cnn", 5, MNIST_CNN_SANITIZED_LAYERS, 0.1),
    "cifar10": ("cifar_cnn", 28, CIFAR_CNN_SANITIZED_LAYERS, 8 / 255),
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
architecture, epochs, layers, eps = REFERENCE[dataset]

"""
## Data and model

Hyper-parameters are chosen on a validation split of the *training* images,
never on the test images the defence is evaluated on. The cached reference
model was trained on all of them, so their clean accuracy is optimistic;
they only rank thresholds. `benchmarks/sanitizers.py` trains its model with
6,000 training images held out and validates on those.
"""

try:
    (x_train, y_train), (x_test, y_test) = load_dataset(dataset, path=args.data_path)
except (FileNotFoundError, ValueError) as error:
    parser.error(f"--dataset {dataset}: {error}")
model, info = load_or_train(architecture, dataset, epochs=epochs, seed=0, path=args.data_path)
n_val, n_test = (60, 60) if args.quick else (300, 500)
print(f"{architecture} on {dataset}: test accuracy {info['test_accuracy']:.4f}")
_, (x_val, y_val) = validation_split(x_train, y_train, fraction=0.1, seed=0)
x_val, y_val = x_val[:n_val], y_val[:n_val]
x_test, y_test = x_test[:n_test], y_test[:n_test]


def accuracy(m, x, y):
    return float(np.mean(np.argmax(m.predict(x, verbose=0), axis=1) == y))


"""
## One call inserts the sanitizers

`sanitize` returns a new model running the same layer objects (weights shared,
nothing retrained) with a fresh sanitizer after each chosen layer; every
consumer of a sanitized output (residual branches included) sees the sanitized
values. The paper's choice for MNIST-CNN is `MNIST_CNN_SANITIZED_LAYERS`
(CONV1, CONV2, CONV4, CONV5, FC7, FC8); for its CIFAR-10 model,
`CIFAR_CNN_SANITIZED_LAYERS`.
"""

defended = sanitize(model, after=layers, sanitizer=MaskSanitizer(alpha=0.1))
print([layer.name for layer in defended.layers])

"""
## Choose the mask threshold on validation data

PGD is crafted on the undefended model (oblivious threat model) once; each
threshold only costs a forward pass. The adaptive curve attacks each sanitized
model through BPDA: `sanitize(..., bpda=True)` keeps the forward pass and
lets the gradient through each mask as the identity (the mask's own gradient
is zero on every masked unit, which would hide them from the attack).
"""

keras.utils.set_random_seed(0)
pgd_val = attacks.pgd(model, x_val, y=y_val, eps=eps, nb_iter=40)
alphas = (0.0, 0.1, 0.2, 0.3, 0.5)
n_curve = 20 if args.quick else 100  # images attacked adaptively per threshold
clean, oblivious, adaptive = [], [], []
for alpha in alphas:
    candidate = sanitize(model, layers, MaskSanitizer(alpha=alpha))
    clean.append(accuracy(candidate, x_val, y_val))
    oblivious.append(accuracy(candidate, pgd_val.x_adv, y_val))
    through = sanitize(model, layers, MaskSanitizer(alpha=alpha), bpda=True)
    keras.utils.set_random_seed(0)
    bpda_pgd = attacks.pgd(through, x_val[:n_curve], y=y_val[:n_curve], eps=eps, nb_iter=40)
    adaptive.append(accuracy(candidate, bpda_pgd.x_adv, y_val[:n_curve]))
    print(
        f"alpha={alpha}: clean {clean[-1]:.3f}, PGD oblivious {oblivious[-1]:.3f}, "
        f"PGD adaptive {adaptive[-1]:.3f}"
    )
# The best oblivious accuracy among thresholds losing at most 2.5 points clean.
ok = [i for i in range(len(alphas)) if clean[i] >= clean[0] - 0.025]
alpha = alphas[max(ok, key=lambda i: oblivious[i])]
print(f"chosen alpha: {alpha}")
display = plot_tradeoff(
    alphas,
    clean,
    {"PGD, oblivious": oblivious, "PGD, adaptive (BPDA)": adaptive},
    chosen=alpha,
)
display.figure_.savefig("sanitize_tradeoff.png")

"""
## Evaluate on test images, both threat models

Oblivious: the adversarial examples of the undefended model, fed to the
sanitized one. Adaptive: crafted through the sanitized model (BPDA for the
mask, the median's and NL-means' own gradients for the others).
"""

keras.utils.set_random_seed(0)
pgd_test = attacks.pgd(model, x_test, y=y_test, eps=eps, nb_iter=40)
print(
    f"undefended: clean {accuracy(model, x_test, y_test):.3f}, "
    f"PGD {accuracy(model, pgd_test.x_adv, y_test):.3f}"
)
conv_layers = [name for name in layers if name.startswith("conv")]
candidates = {
    "mask": (sanitize(model, layers, MaskSanitizer(alpha=alpha)), True),
    # A 1-D median over the units of a dense layer destroys its (unordered)
    # features: median and NL-means go after the convolutions only.
    "median": (sanitize(model, conv_layers, MedianSanitizer(window=3)), False),
    "nlm": (sanitize(model, conv_layers, NLMeansSanitizer(h=1.0)), False),
}
n_adaptive = 20 if args.quick else 100
for name, (sanitized, needs_bpda) in candidates.items():
    if needs_bpda:
        target = sanitize(model, layers, MaskSanitizer(alpha=alpha), bpda=True)
    else:
        target = sanitized
    keras.utils.set_random_seed(0)
    through = attacks.pgd(
        target, x_test[:n_adaptive], y=y_test[:n_adaptive], eps=eps, nb_iter=40, batch_size=50
    )
    print(
        f"{name}: clean {accuracy(sanitized, x_test, y_test):.3f}, "
        f"PGD oblivious {accuracy(sanitized, pgd_test.x_adv, y_test):.3f}, "
        f"PGD adaptive {accuracy(sanitized, through.x_adv, y_test[:n_adaptive]):.3f} "
        f"({n_adaptive} images)"
    )

"""
## Layer-wise divergence (the paper's Fig. 7)

How far, layer by layer, the activations of adversarial inputs are from those
of their clean originals, relative to the clean activation's norm, before and
after sanitizing.
"""

mask_model = candidates["mask"][0]
fooled = pgd_test.success[:100]
divergence = layer_divergence(
    model, mask_model, x_test[:100][fooled], pgd_test.x_adv[:100][fooled], list(layers)
)
for layer, before, after in zip(
    divergence.layers, divergence.before, divergence.after, strict=True
):
    print(f"{layer:>12}: {before:.3f} -> {after:.3f}")
plot_layer_divergence(divergence, labels=("undefended", "mask")).figure_.savefig(
    "sanitize_divergence.png"
)

"""
## Save and reload

The sanitized model is an ordinary functional model: it saves to `.keras` and
reloads in Keras' safe mode with identical outputs.
"""

path = os.path.join(tempfile.mkdtemp(), "mask_sanitized.keras")
mask_model.save(path)
reloaded = keras.models.load_model(path)
same = np.array_equal(reloaded.predict(x_test, verbose=0), mask_model.predict(x_test, verbose=0))
print(f"reloaded from {path}: identical outputs: {same}")
