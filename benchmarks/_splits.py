"""Held-out splits the benchmarks train their own reference models on.

Each split is written once, as an `.npz` that `load_dataset(name, path=...)`
and `load_or_train(..., path=...)` read, under
`$KERAS_ADVGUARD_HOME/benchmark_data/`.

- `cifar_split_file()`: `../shared/data/cifar10-subset.npz` has 4,000
  training images and only 20 test images, too few to measure anything. 800
  of the 4,000 are held out (`validation_split(fraction=0.2, seed=0)`,
  stratified) and `cifar_cnn` trains on the other 3,200. Used by every
  benchmark that takes `--dataset cifar10` (through `_common.load`);
  a benchmark that keeps an older split of its own says so in its docstring.
- `mnist_split_file()`: 6,000 of MNIST's 60,000 training images held out
  for validation (`validation_split(fraction=0.1, seed=0)`); used by
  `sanitizers.py` to choose the paper-matched attack strength on images the
  model never saw.
"""

import os
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _target(name):
    home = os.environ.get("KERAS_ADVGUARD_HOME", os.path.expanduser("~/.keras_advguard"))
    return Path(home) / "benchmark_data" / name


def _write_once(target, **arrays):
    """Write `arrays` to `target` atomically (a temporary file, then a rename)."""
    import numpy as np

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, target)
    return target


def cifar_split_file():
    """Write (once) and return the 3,200 / 800 split of the CIFAR-10 subset."""
    import numpy as np

    from keras_advguard.datasets import validation_split

    source = SHARED_DATA / "cifar10-subset.npz"
    if not source.exists():
        raise FileNotFoundError(
            f"The CIFAR-10 subset is not at {source}. Put `cifar10-subset.npz` (see "
            "shared/data/README) in the `shared/data` folder next to the repository."
        )
    target = _target("cifar10-subset-fit3200-heldout800-s0.npz")
    if target.exists():
        return target
    with np.load(source) as data:
        x, y = data["x_train"], data["y_train"].reshape(-1).astype(np.int64)
    (i_fit, y_fit), (i_held, y_held) = validation_split(np.arange(len(y)), y, fraction=0.2, seed=0)
    return _write_once(
        target,
        x_train=x[i_fit],
        y_train=y_fit.astype(np.uint8),
        x_test=x[i_held],
        y_test=y_held.astype(np.uint8),
    )


def mnist_split_file():
    """Write (once) MNIST with 6,000 training images held out, as an .npz.

    `x_train` = the 54,000 images of `validation_split(fraction=0.1, seed=0)`
    the model is trained on, `x_val` = the 6,000 held out, `x_test` = the
    10,000 official test images. Reads `../shared/data/mnist.npz`, else the
    Keras cache.
    """
    import numpy as np

    from keras_advguard.datasets import validation_split

    source = SHARED_DATA / "mnist.npz"
    if not source.exists():
        source = Path(os.path.expanduser("~/.keras/datasets/mnist.npz"))
    if not source.exists():
        raise FileNotFoundError(
            "MNIST is neither in shared/data nor in ~/.keras/datasets/mnist.npz; copy "
            "`mnist.npz` (see shared/data/README) to one of them."
        )
    target = _target("mnist-fit54000-val6000-s0.npz")
    if target.exists():
        return target
    with np.load(source) as data:
        x, y = data["x_train"], data["y_train"].astype(np.int64)
        x_test, y_test = data["x_test"], data["y_test"]
    (i_fit, _), (i_val, _) = validation_split(np.arange(len(y)), y, fraction=0.1, seed=0)
    return _write_once(
        target,
        x_train=x[i_fit],
        y_train=y[i_fit].astype(np.uint8),
        x_val=x[i_val],
        y_val=y[i_val].astype(np.uint8),
        x_test=x_test,
        y_test=y_test,
    )
