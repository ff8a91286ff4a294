"""
Title: Evaluate every defence of a classifier in one call
Author: keras_advguard developers
Date created: 2026/12/01
Last modified: 2026/12/01
Description: Run `keras_advguard.evaluate` on a trained classifier: every
detector and sanitizer against oblivious and adaptive attacks, under one
protocol, with a report in markdown, JSON, PNG and HTML.
"""

"""
## Setup

Runs offline on scikit-learn's bundled 8x8 digits by default; `--dataset`
takes `mnist`, `fashion_mnist` or `cifar10`, read from the Keras cache
(`~/.keras/datasets/`) or from `--data-path`, never downloaded. The reference
model is trained once and cached.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_advguard as ag  # noqa: E402
from keras_advguard.datasets import DATASET_NAMES, load_dataset  # noqa: E402
from keras_advguard.models import load_or_train  # noqa: E402

# dataset: (reference architecture, its training epochs, attack radius eps)
REFERENCE = {
    "digits": ("digits_cnn", 30, 0.1),
    "mnist": ("mnist_cnn", 5, 0.3),
    "fashion_mnist": ("mnist_cnn", 5, 0.1),
    "cifar10": ("cifar_cnn", 28, 8 / 255),
}

parser = argparse.ArgumentParser(description="Evaluate every defence of a classifier.")
parser.add_argument(
    "--dataset",
    default="digits",
    choices=DATASET_NAMES,
    help="Dataset (default: digits, bundled with scikit-learn; the others are read "
    "from the Keras cache or --data-path, never downloaded).",
)
parser.add_argument("--data-path", default=None, help="The dataset's file or folder.")
parser.add_argument("--quick", action="store_true", help="Tiny budgets (seconds).")
parser.add_argument("--out", default="evaluate-report", help="Report folder.")
args = parser.parse_args()

"""
## Data and model

Any classifier works: a `keras.Model` ending in softmax or in logits, with
images in `[0, 1]`. Here, the library's reference model for the dataset.
"""

architecture, epochs, eps = REFERENCE[args.dataset]
try:
    train, test = load_dataset(args.dataset, path=args.data_path)
except (FileNotFoundError, ValueError) as error:
    parser.error(f"--dataset {args.dataset}: {error}")
model, info = load_or_train(architecture, args.dataset, epochs=epochs, path=args.data_path)
print(f"{architecture} on {args.dataset}: test accuracy {info['test_accuracy']:.4f}")

"""
## One call

`evaluate` attacks the test images (FGSM and PGD here), builds the clean and
adversarial sets, splits them by source image, fits each detector (the trained
ones once per split and attack), calibrates every threshold on clean
validation images only, and attacks every defence adaptively. The baselines
(max-softmax and a small CNN on the input) are always in the report.
"""

defences = ["knn", "squeeze", "mask"] if args.quick else None  # None: all of them
report = ag.evaluate(
    model,
    train,
    test,
    defences=defences,
    attacks=["fgsm", "pgd"],
    eps=eps,
    splits=5,
    quick=args.quick,
    verbose=1,
)

"""
## The report

The tables (oblivious and adaptive side by side), then the files: report.md,
report.json, the figures, and report.html with the figures embedded.
"""

print(report.to_markdown())
files = report.save(args.out)
print(f"Wrote {', '.join(sorted(files))} to {args.out}")
