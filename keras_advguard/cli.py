"""The `advguard` command line: `advguard evaluate`, `advguard demo`, `advguard --version`.

The CLI composes the library's floors below it and holds no method logic of
its own: it checks every argument before any work starts (one line on
stderr and exit code 2 for a bad one), loads the model and the data, runs
`keras_advguard.evaluate` and writes its report. Nothing is written until
the report is complete, and the report folder is written as a whole.
"""

import argparse
import os
import sys

# Reference model (architecture, epochs) of `advguard demo` per dataset.
_REFERENCE = {
    "digits": ("digits_cnn", 30),
    "mnist": ("mnist_cnn", 5),
    "fashion_mnist": ("mnist_cnn", 5),
    "cifar10": ("cifar_cnn", 28),
}
# Default attack radius per named dataset (L-infinity, images in [0, 1]).
_EPS = {"digits": 0.1, "mnist": 0.3, "fashion_mnist": 0.1, "cifar10": 8 / 255}
_DATA_KEYS = ("x_train", "y_train", "x_test", "y_test")


class UsageError(ValueError):
    """A bad command-line argument: reported in one line, exit code 2."""


def _cache_root():
    home = os.environ.get("KERAS_ADVGUARD_HOME") or os.path.join("~", ".keras_advguard")
    return os.path.expanduser(home)


def _build_parser():
    from keras_advguard.evaluation import ATTACK_NAMES, DEFENCE_NAMES
    from keras_advguard.version import __version__

    parser = argparse.ArgumentParser(
        prog="advguard",
        description="keras_advguard: guard Keras classifiers against adversarial examples.",
    )
    parser.add_argument("--version", action="version", version=f"advguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, *, out_default=None):
        p.add_argument(
            "--defences",
            nargs="+",
            choices=DEFENCE_NAMES,
            default=None,
            metavar="NAME",
            help=f"Defences to evaluate (default: all): {', '.join(DEFENCE_NAMES)}. The "
            "baselines max_softmax and input_cnn are always added.",
        )
        p.add_argument(
            "--attacks",
            nargs="+",
            choices=ATTACK_NAMES,
            default=["fgsm", "pgd"],
            metavar="NAME",
            help=f"Attacks (default: fgsm pgd): {', '.join(ATTACK_NAMES)}.",
        )
        p.add_argument(
            "--eps",
            type=float,
            default=None,
            help="Attack radius, L-infinity (default: per dataset for --dataset, "
            "else a tenth of the input range).",
        )
        p.add_argument(
            "--out",
            required=out_default is None,
            default=out_default,
            help="Report folder (report.md, report.json, report.html, PNGs); "
            "created at the end, as a whole"
            + (f" (default: {out_default})." if out_default else "."),
        )
        p.add_argument(
            "--num-images",
            type=int,
            default=None,
            help="Test images to attack (default: all; 150 with --quick).",
        )
        p.add_argument("--splits", type=int, default=5, help="Splits by source image (default: 5).")
        p.add_argument(
            "--detector-epochs",
            type=int,
            default=None,
            help="Training epochs of the trained detectors (default: 30; 5 with --quick).",
        )
        p.add_argument(
            "--threat-models",
            nargs="+",
            choices=("oblivious", "adaptive"),
            default=["oblivious", "adaptive"],
            help="Threat models (default: both).",
        )
        p.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
        p.add_argument(
            "--cache-dir",
            default=None,
            help="Cache folder: reference models in DIR/models, attack results in "
            "DIR/attacks (default: $KERAS_ADVGUARD_HOME, else ~/.keras_advguard; "
            f"here: {_cache_root()}).",
        )
        p.add_argument(
            "--no-cache", action="store_true", help="Do not read or write cached attacks."
        )
        p.add_argument(
            "--quick", action="store_true", help="Tiny budgets for a smoke test (seconds)."
        )
        p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Progress.")

    evaluate = sub.add_parser(
        "evaluate",
        help="Evaluate defences of your saved .keras classifier on your data.",
        description=(
            "Loads a saved classifier (safe mode) and an .npz with x_train, y_train, "
            "x_test, y_test (or a named dataset), attacks the classifier, evaluates "
            "every defence against the oblivious and the adaptive attacks under one "
            "protocol, prints a summary and writes the report."
        ),
    )
    evaluate.add_argument("--model", required=True, help="The classifier, a .keras file.")
    evaluate.add_argument(
        "--data",
        default=None,
        help="An .npz with x_train, y_train, x_test, y_test (images in [0, 1] or "
        "[-1, 1], or uint8 0..255, scaled to [0, 1]); with --dataset, the file or "
        "folder of that dataset.",
    )
    evaluate.add_argument(
        "--dataset",
        default=None,
        choices=sorted(_REFERENCE),
        help="A named dataset (read from the Keras cache, or --data); also sets the default eps.",
    )
    common(evaluate)

    demo = sub.add_parser(
        "demo",
        help="`evaluate` on a bundled dataset with the cached reference model.",
        description=(
            "Offline end-to-end demo: loads the dataset, trains (once) or loads the "
            "cached reference model, and runs `advguard evaluate` on it."
        ),
    )
    demo.add_argument(
        "--dataset",
        default="digits",
        choices=sorted(_REFERENCE),
        help="digits (bundled with scikit-learn, default), mnist, fashion_mnist or "
        "cifar10 (local files).",
    )
    demo.add_argument("--path", default=None, help="Explicit path of the dataset file.")
    demo.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="Training epochs of the reference model (default: digits 30, mnist 5, "
        "fashion_mnist 5, cifar10 28).",
    )
    common(demo, out_default="advguard-demo")
    return parser


# ---------------------------------------------------------------------------
# Checks: everything before any work
# ---------------------------------------------------------------------------


def _can_write_in(folder):
    """Whether a file can be created in `folder` (a real probe: root ignores modes)."""
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".advguard-probe-")
    except OSError:
        return False
    os.close(fd)
    os.remove(probe)
    return True


def _check_writable_folder(flag, path):
    """`path` is (or can be created as) a writable folder; nothing is left behind."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError(f"{flag} names an existing file, not a folder: {path}")
        if not _can_write_in(path):
            raise UsageError(f"{flag} is not writable: {path}")
        return path
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} cannot be created: {parent} is a file ({path})")
    if not _can_write_in(parent):
        raise UsageError(f"{flag} cannot be created: {parent} is not writable ({path})")
    return path


def _check_numbers(args):
    if args.num_images is not None and args.num_images < 4:
        raise UsageError(f"--num-images must be >= 4. Received: --num-images={args.num_images}")
    if args.splits < 2:
        raise UsageError(f"--splits must be >= 2. Received: --splits={args.splits}")
    if args.detector_epochs is not None and args.detector_epochs < 1:
        raise UsageError(
            f"--detector-epochs must be >= 1. Received: --detector-epochs={args.detector_epochs}"
        )
    if getattr(args, "epochs", None) is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1. Received: --epochs={args.epochs}")
    if args.eps is not None and not args.eps > 0:
        raise UsageError(f"--eps must be > 0. Received: --eps={args.eps}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0. Received: --seed={args.seed}")


def _load_model(path):
    import keras

    if not os.path.exists(path):
        raise UsageError(f"--model: no such file: {path}")
    if not os.path.isfile(path):
        raise UsageError(f"--model is not a file: {path}")
    try:
        import keras_advguard  # noqa: F401  (registers the library's layers)

        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"--model cannot be loaded as a Keras model ({path}): {reason}") from None
    if not isinstance(model, keras.Model) or len(model.inputs or []) != 1:
        raise UsageError(f"--model must be a classifier with one input: {path}")
    if len(model.outputs or []) != 1 or len(model.outputs[0].shape) != 2:
        raise UsageError(f"--model must have one output of shape (N, classes): {path}")
    return model


def _read_npz(path):
    import numpy as np

    if not os.path.exists(path):
        raise UsageError(f"--data: no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _DATA_KEYS if k not in data.files]
            if missing:
                raise UsageError(
                    f"--data must hold {', '.join(_DATA_KEYS)}; "
                    f"missing {', '.join(missing)}: {path}"
                )
            return tuple(data[k] for k in _DATA_KEYS)
    except UsageError:
        raise
    except Exception as error:
        raise UsageError(f"--data cannot be read as an .npz file ({path}): {error}") from None


def _check_data(arrays, model, source):
    """Shapes, labels, finiteness and range; returns `(train, test, note)`."""
    import numpy as np

    x_train, y_train, x_test, y_test = arrays
    expected = tuple(model.inputs[0].shape[1:])
    note = ""
    out = []
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype.kind not in "fiu":
            raise UsageError(f"{source}: {name} must hold numbers. Received: dtype={x.dtype}")
        if x.ndim == len(expected) - 1 and expected[-1] == 1:
            x = x[..., None]
        got = x.shape[1:]
        if len(got) != len(expected) or any(e not in (None, g) for e, g in zip(expected, got)):
            raise UsageError(
                f"{source}: {name} has shape {x.shape}, the model takes "
                f"(N, {', '.join(str(d) for d in expected)})"
            )
        if len(x) == 0:
            raise UsageError(f"{source}: {name} is empty")
        if x.dtype.kind == "f":
            bad = int(np.size(x) - np.isfinite(x).sum())
            if bad:
                raise UsageError(f"{source}: {name} holds {bad} NaN or infinite value(s)")
        if x.dtype == np.uint8:
            x = x.astype("float32") / 255.0
            note = "uint8 images scaled to [0, 1]"
        x = x.astype("float32")
        lo, hi = float(x.min()), float(x.max())
        if not ((lo >= 0.0 and hi <= 1.0) or (lo >= -1.0 and hi <= 1.0)):
            raise UsageError(
                f"{source}: {name} has values in [{lo:g}, {hi:g}]; expected images in "
                "[0, 1] or [-1, 1] (or uint8 0..255)"
            )
        out.append(x)
    num_classes = int(model.outputs[0].shape[-1])
    labels = []
    for name, y, x in (("y_train", y_train, out[0]), ("y_test", y_test, out[1])):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise UsageError(
                f"{source}: {name} must hold integer class labels of shape (N,). "
                f"Received: shape={y.shape}, dtype={y.dtype}"
            )
        if len(y) != len(x):
            raise UsageError(f"{source}: {name} has {len(y)} labels for {len(x)} images")
        if y.min() < 0 or y.max() >= num_classes:
            raise UsageError(
                f"{source}: {name} holds labels in [{y.min()}, {y.max()}]; the model has "
                f"{num_classes} classes"
            )
        labels.append(y.astype("int64"))
    clip = (0.0, 1.0) if min(float(out[0].min()), float(out[1].min())) >= 0.0 else (-1.0, 1.0)
    return (out[0], labels[0]), (out[1], labels[1]), clip, note


def _prepare(args):
    """Check every argument, load the model and the data. No file is written."""
    _check_numbers(args)
    out = _check_writable_folder("--out", args.out)
    cache_root = None
    if not args.no_cache or args.command == "demo":
        cache_root = _check_writable_folder("--cache-dir", args.cache_dir or _cache_root())
    if args.command == "demo":
        from keras_advguard.datasets import load_dataset

        train, test = load_dataset(args.dataset, path=args.path)
        model, source, clip, note = None, args.dataset, (0.0, 1.0), ""
    else:
        model = _load_model(args.model)
        if args.dataset is None and args.data is None:
            raise UsageError("evaluate needs --data (an .npz) or --dataset")
        if args.dataset is not None:
            from keras_advguard.datasets import load_dataset

            (x_train, y_train), (x_test, y_test) = load_dataset(args.dataset, path=args.data)
            source = f"--dataset {args.dataset}"
            arrays = (x_train, y_train, x_test, y_test)
        else:
            source = f"--data {args.data}"
            arrays = _read_npz(args.data)
        train, test, clip, note = _check_data(arrays, model, source)
    n_test = len(test[0])
    if args.num_images is not None and args.num_images > n_test:
        raise UsageError(
            f"--num-images {args.num_images} exceeds the {n_test} test images of {source}"
        )
    eps = args.eps
    if eps is None:
        eps = _EPS.get(args.dataset, 0.1 * (clip[1] - clip[0]))
    return {
        "out": out,
        "cache_root": cache_root,
        "model": model,
        "train": train,
        "test": test,
        "clip": clip,
        "eps": eps,
        "note": note,
        "source": source,
    }


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _reference_model(args, prepared):
    from keras_advguard.models import load_or_train

    architecture, default_epochs = _REFERENCE[args.dataset]
    model, info = load_or_train(
        architecture,
        args.dataset,
        epochs=args.epochs or default_epochs,
        seed=args.seed,
        cache_dir=os.path.join(prepared["cache_root"], "models"),
        path=args.path,
        verbose=0,
    )
    how = "loaded from cache" if info["from_cache"] else "trained"
    print(
        f"Model {info['architecture']} on {args.dataset} ({info['epochs']} epochs): {how}, "
        f"test accuracy {info['test_accuracy']:.4f} ({info['path']})"
    )
    return model


def run(args):
    """Run `evaluate` or `demo` for parsed `args`; return the `EvaluationReport`.

    Raises:
        UsageError: a bad argument (before any work).
    """
    from keras_advguard.evaluation import evaluate

    prepared = _prepare(args)
    model = prepared["model"]
    if args.command == "demo":
        model = _reference_model(args, prepared)
    if prepared["note"]:
        print(f"Data: {prepared['note']}.")
    cache_dir = False
    if not args.no_cache:
        cache_dir = os.path.join(prepared["cache_root"], "attacks")
    report = evaluate(
        model,
        prepared["train"],
        prepared["test"],
        defences=args.defences,
        attacks=list(args.attacks),
        threat_models=tuple(args.threat_models),
        splits=args.splits,
        seed=args.seed,
        cache_dir=cache_dir,
        verbose=1 if args.verbose else 0,
        eps=prepared["eps"],
        clip=prepared["clip"],
        quick=args.quick,
        num_images=args.num_images,
        epochs=args.detector_epochs,
    )
    print()
    print(report.to_markdown())
    files = report.save(prepared["out"])
    print(f"Done: {report.summary()}")
    print(f"Wrote {len(files)} files to {prepared['out']} (open report.html).")
    return report


def main(argv=None):
    """Entry point of the `advguard` console script; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _build_parser().parse_args(argv)
    try:
        run(args)
    except (UsageError, FileNotFoundError) as error:
        print(f"advguard: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"advguard: error: {message}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"advguard: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
