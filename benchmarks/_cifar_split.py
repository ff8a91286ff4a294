"""The CIFAR-10 subset split shared by the benchmarks that train their own `cifar_cnn`.

`../shared/data/cifar10-subset.npz` has 4,000 training images and only 20
test images, too few to measure anything. The benchmarks therefore hold out
800 of the 4,000 (`validation_split(fraction=0.2, seed=0)`, stratified) and
train `cifar_cnn` on the other 3,200. The split is written once, as an `.npz`
that `load_dataset("cifar10", path=...)` and `load_or_train(..., path=...)`
read, under `$KERAS_ADVGUARD_HOME/benchmark_data/`.

Used by `entropy.py` and `medoid_lstm.py`. `sanitizers.py` (2,880 / 320 /
800: the same 800 held out, 320 more for validation) and `squeeze.py`
(3,000 / 1,000) predate this helper and keep their own splits so that their
published tables stay reproducible.
"""

import os
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    home = os.environ.get("KERAS_ADVGUARD_HOME", os.path.expanduser("~/.keras_advguard"))
    target = Path(home) / "benchmark_data" / "cifar10-subset-fit3200-heldout800-s0.npz"
    if target.exists():
        return target
    with np.load(source) as data:
        x, y = data["x_train"], data["y_train"].reshape(-1).astype(np.int64)
    (i_fit, y_fit), (i_held, y_held) = validation_split(np.arange(len(y)), y, fraction=0.2, seed=0)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        x_train=x[i_fit],
        y_train=y_fit.astype(np.uint8),
        x_test=x[i_held],
        y_test=y_held.astype(np.uint8),
    )
    os.replace(tmp, target)
    return target
