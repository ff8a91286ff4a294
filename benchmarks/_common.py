"""Plumbing shared by the paper benchmarks (`medoid_lstm.py`, `sanitizers.py`, ...).

Each benchmark is a thin configuration of `keras_advguard.evaluate`; this
module holds what they all need around it, once:

- `parser(doc)`: an `argparse.ArgumentParser` with the common options
  `--dataset {digits,mnist,fashion_mnist,cifar10}`, `--quick`, `--out`,
  `--num-images`, `--epochs`, `--splits`, `--seed`, `--no-cache`,
  `--adaptive-steps`; a script
  adds its own options to it.
- `load(dataset, quick)`: the dataset (`load_dataset`) and its reference
  classifier (`models.load_or_train`, cached), as `(train, test, model, info)`.
- `log(message)`, `Timer` (wall and CPU seconds of named stages), `home()`
  (`$KERAS_ADVGUARD_HOME`, else `~/.keras_advguard`).
- `table(header, rows)`: a markdown table; `machine_line()`: the machine,
  versions and date line every results file starts with.
- `results_stem(name, dataset, quick, out)`: `benchmarks/results/{name}_{dataset}`
  (`_quick` with `--quick`), or under `--out`.
- `write_text`, `write_json`, `save_figure`: atomic writes
  (`keras_advguard._files.write_atomic`).
- `bisect(f, target, lo, hi)`: the `x` where a monotone `f(x)` crosses
  `target` (e.g. the attack strength at which the undefended accuracy
  matches a paper's figure).

Keep this API small: the benchmarks import these names.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")

# Reference classifier of each dataset: (architecture, load_or_train kwargs).
REFERENCE_MODELS = {
    "digits": ("digits_cnn", {"epochs": 30}),
    "mnist": ("mnist_cnn", {"epochs": 5, "seed": 0}),
    "fashion_mnist": ("mnist_cnn", {"epochs": 5, "seed": 0}),
    "cifar10": ("cifar_cnn", {"epochs": 28, "batch_size": 32, "seed": 0}),
}


def home():
    """The library's cache folder: `$KERAS_ADVGUARD_HOME`, else `~/.keras_advguard`."""
    return Path(os.environ.get("KERAS_ADVGUARD_HOME", os.path.expanduser("~/.keras_advguard")))


def log(message):
    """Print `message` with the time of day, flushed."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def parser(doc, default_dataset="mnist"):
    """An `ArgumentParser` with the options every paper benchmark takes."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default=default_dataset)
    p.add_argument("--quick", action="store_true", help="tiny budgets on digits: a smoke test")
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results)")
    p.add_argument("--num-images", type=int, default=None, help="test images attacked")
    p.add_argument("--epochs", type=int, default=None, help="epochs of trained detectors")
    p.add_argument("--splits", type=int, default=None, help="splits by source image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="do not use the attack cache")
    p.add_argument(
        "--adaptive-steps", type=int, default=None, help="steps of each adaptive detector attack"
    )
    return p


def parse(p, argv=None):
    """Parse `argv`; `--quick` implies `--dataset digits`."""
    args = p.parse_args(argv)
    if args.quick:
        args.dataset = "digits"
    return args


def data_path(dataset):
    """The local data file of `dataset` in `../shared/data`, or `None` (Keras cache)."""
    name = {"mnist": "mnist.npz", "cifar10": "cifar10-subset.npz"}.get(dataset)
    if name and (SHARED_DATA / name).exists():
        return str(SHARED_DATA / name)
    return None


def load(dataset, path=None):
    """`(train, test, model, info)`: `dataset` and its cached reference classifier.

    `path` (an `.npz` such as `_splits.mnist_split_file()`) replaces the
    dataset's default file, so a model can be trained on a split of it.
    """
    from keras_advguard.datasets import load_dataset
    from keras_advguard.models import load_or_train

    if path is None and dataset == "cifar10":
        from _splits import cifar_split_file  # the subset's 20 test images are too few

        path = str(cifar_split_file())
    elif path is None:
        path = data_path(dataset)
    train, test = load_dataset(dataset, path=path)
    architecture, kwargs = REFERENCE_MODELS[dataset]
    model, info = load_or_train(architecture, dataset, path=path, **kwargs)
    return train, test, model, info


class Timer:
    """Named stages with their wall-clock and CPU seconds: `with timer("attacks"): ...`."""

    def __init__(self):
        self.rows = []
        self.start = time.perf_counter()

    def __call__(self, name):
        timer = self

        class _Block:
            def __enter__(self):
                self.t0, self.c0 = time.perf_counter(), time.process_time()
                log(name)

            def __exit__(self, *exc):
                wall, cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
                timer.rows.append((name, wall, cpu))
                log(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU")

        return _Block()

    def total_minutes(self):
        return (time.perf_counter() - self.start) / 60

    def markdown(self):
        rows = [[n, f"{w:.1f}", f"{c:.1f}"] for n, w, c in self.rows]
        return table(["stage", "wall (s)", "CPU (s)"], rows)


def table(header, rows):
    """A markdown table (cells converted with `str`)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def pct(value, digits=2):
    """`value` in [0, 1] as a percentage string; `-` for `None`."""
    return "-" if value is None else f"{100 * value:.{digits}f}"


def machine_line(script, minutes=None):
    """`Run by ... on <machine>, <cores> CPU cores, TF x, Keras y, <date>; N min.`."""
    import keras
    import tensorflow as tf

    from keras_advguard.version import __version__

    line = (
        f"Run by `python benchmarks/{script}` on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores shared with other jobs, keras_advguard {__version__}, "
        f"TF {tf.__version__}, Keras {keras.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    return line + (f"; {minutes:.1f} min in all." if minutes is not None else ".")


def results_stem(name, dataset, quick=False, out=None):
    """`Path` prefix of a benchmark's results files (the folder is created)."""
    folder = Path(out) if out else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}_{'quick' if quick else dataset}"


def write_text(path, text):
    """Write `text` (UTF-8) to `path` atomically."""
    from keras_advguard import _files

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _files.write_atomic(os.fspath(path), write)


def write_json(path, document):
    """Write `document` as strict JSON (NaN refused) to `path` atomically."""
    write_text(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


def save_figure(fig, path, dpi=110):
    """Save a matplotlib figure as PNG to `path` atomically and close it."""
    import matplotlib.pyplot as plt

    from keras_advguard import _files

    try:
        _files.write_atomic(os.fspath(path), lambda tmp: fig.savefig(tmp, dpi=dpi), ".png")
    finally:
        plt.close(fig)


def bisect(f, target, lo, hi, *, tol=1e-3, max_iter=20, decreasing=True):
    """The `x` in `[lo, hi]` where the monotone `f(x)` is closest to `target`.

    Bisection on the sign of `f(x) - target` (`f` decreasing by default, as
    accuracy is in the attack strength), stopped when the interval is
    shorter than `tol` or after `max_iter` evaluations; each evaluation is
    recorded.

    Returns:
        `(x, fx, history)`: the best evaluated point, its value and the list
        of `(x, f(x))` evaluated, in order.

    Raises:
        ValueError: `lo >= hi`.
    """
    if not lo < hi:
        raise ValueError(f"bisect needs lo < hi. Received: lo={lo}, hi={hi}")
    sign = 1.0 if decreasing else -1.0
    history = []
    for _ in range(max_iter):
        if hi - lo < tol:
            break
        mid = 0.5 * (lo + hi)
        value = float(f(mid))
        history.append((mid, value))
        if sign * (value - target) > 0:  # still above the target: go stronger
            lo = mid
        else:
            hi = mid
    if not history:
        mid = 0.5 * (lo + hi)
        history.append((mid, float(f(mid))))
    x, fx = min(history, key=lambda h: abs(h[1] - target))
    return x, fx, history


def rename_detectors(report, class_name, labels):
    """Name a report's detector instances: `evaluate` calls them `Cls`, `Cls_2`, ... in order.

    Rewrites the keys of `report.detectors` and `report.roc` (public
    attributes) so its tables and figures show `labels` instead; returns it.
    """
    auto = [class_name if k == 0 else f"{class_name}_{k + 1}" for k in range(len(labels))]
    names = dict(zip(auto, labels, strict=True))
    report.detectors = {names.get(k, k): v for k, v in report.detectors.items()}
    report.roc = {(names.get(d, d), a): v for (d, a), v in report.roc.items()}
    return report


def subset(pair, n, seed=0):
    """A seeded random `n` of the images and labels of `pair` (all when `n` is `None`)."""
    import numpy as np

    x, y = pair
    pick = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return x[pick], y[pick]


def evaluate_kwargs(args, *, splits=3, epochs=5, **extra):
    """The `evaluate` keyword arguments set by the common options (`--splits`, `--quick`...)."""
    return dict(
        splits=args.splits or splits,
        seed=args.seed,
        quick=args.quick,
        num_images=args.num_images,
        epochs=args.epochs or (3 if args.quick else epochs),
        cache_dir=False if args.no_cache else None,
        adaptive_steps=args.adaptive_steps,
        **extra,
    )


def report_body(report, title):
    """`report.to_markdown()` under the heading `title` (its own heading dropped)."""
    return f"# {title}\n\n" + report.to_markdown().split("\n", 1)[1]
