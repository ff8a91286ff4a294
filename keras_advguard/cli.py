"""The `advguard` command line: `advguard demo`.

The CLI composes the library's floors below it and holds no method logic of
its own: datasets and reference models, `DetectorModel` taps, attacks, and
the detection metrics and plots.
"""

import argparse
import os
import sys
import time

DEMO_ATTACKS = {
    # name: (attack function name, keyword arguments)
    "FGSM": ("fgsm", {"eps": 0.1}),
    "PGD": ("pgd", {"eps": 0.1, "eps_iter": 0.01, "nb_iter": 20}),
}
_ARCHITECTURE = {"digits": "digits_cnn", "mnist": "mnist_cnn", "cifar10": "cifar_cnn"}
_EPOCHS = {"digits": 30, "mnist": 5, "cifar10": 28}
_SANITIZED = {
    "digits": lambda m: m.DIGITS_CNN_SANITIZED_LAYERS,
    "mnist": lambda m: m.MNIST_CNN_SANITIZED_LAYERS,
    "cifar10": lambda m: m.CIFAR_CNN_SANITIZED_LAYERS,
}


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="advguard",
        description="keras_advguard: guard Keras classifiers against adversarial examples.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="Train (or load the cached) reference model, attack it, score a baseline detector.",
        description=(
            "Offline end-to-end demo: loads the dataset, trains or loads the cached "
            "reference model, taps its internal layers, crafts FGSM and PGD examples, "
            "prints a table and writes a ROC plot of a max-softmax baseline detector."
        ),
    )
    demo.add_argument(
        "--dataset",
        default="digits",
        choices=sorted(_ARCHITECTURE),
        help="digits (bundled with scikit-learn, default), mnist or cifar10 (local files).",
    )
    demo.add_argument("--path", default=None, help="Explicit path of the dataset file.")
    demo.add_argument(
        "--out",
        default="advguard-demo",
        help="Output directory (default: advguard-demo).",
    )
    demo.add_argument(
        "--num-images",
        type=int,
        default=300,
        help="Number of test images to attack (default: 300).",
    )
    demo.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="Training epochs (default: per dataset).",
    )
    demo.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
    demo.add_argument(
        "--cache-dir",
        default=None,
        help="Model cache directory (default: ~/.keras_advguard).",
    )
    demo.add_argument("--quick", action="store_true", help="Tiny run for smoke tests (few images).")
    demo.add_argument("--verbose", type=int, default=0, choices=(0, 1), help="Progress bars.")
    return parser


def _max_softmax_score(probabilities):
    """Baseline detector: 1 - max softmax probability (higher = more suspicious)."""
    import numpy as np

    return 1.0 - np.max(probabilities, axis=1)


def _format_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep] + body)


def run_demo(args):
    """Run the demo; return the report as a dict (also printed)."""
    import keras
    import numpy as np

    from keras_advguard import attacks, metrics, plots
    from keras_advguard.datasets import load_dataset
    from keras_advguard.detector_model import DetectorModel
    from keras_advguard.models import load_or_train

    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    epochs = args.epochs or _EPOCHS[args.dataset]
    num_images = 40 if args.quick else args.num_images
    if num_images < 4:
        raise ValueError(f"`--num-images` must be >= 4. Received: --num-images={num_images}")
    os.makedirs(args.out, exist_ok=True)

    (_, _), (x_test, y_test) = load_dataset(args.dataset, path=args.path)
    model, info = load_or_train(
        _ARCHITECTURE[args.dataset],
        args.dataset,
        epochs=epochs,
        seed=args.seed,
        cache_dir=args.cache_dir,
        path=args.path,
        verbose=args.verbose,
    )
    source = "loaded from cache" if info["from_cache"] else "trained"
    print(
        f"Model {info['architecture']} on {args.dataset}: {source}, "
        f"test accuracy {info['test_accuracy']:.4f} ({info['path']})"
    )

    detector_model = DetectorModel(model, layers="conv+dense")
    print(f"Tapped layers ({len(detector_model.tap_names)}): {', '.join(detector_model.tap_names)}")

    # Threshold calibration on clean validation images, evaluation on others:
    # the first half of the chosen test images calibrates, the second half is
    # attacked and scored (never the same images).
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(x_test), size=min(2 * num_images, len(x_test)), replace=False)
    half = len(chosen) // 2
    x_val, x_eval, y_eval = (
        x_test[chosen[:half]],
        x_test[chosen[half:]],
        y_test[chosen[half:]],
    )

    val_out = detector_model.predict(x_val, verbose=0)
    eval_out = detector_model.predict(x_eval, verbose=0)
    y_pred_clean = np.argmax(eval_out["prediction"], axis=1)
    clean_acc = metrics.robust_accuracy(y_eval, y_pred_clean)
    scores_val = _max_softmax_score(val_out["prediction"])

    header = [
        "attack",
        "success rate",
        "robust acc.",
        "mean L2",
        "mean Linf",
        "n clean / adv",
        "AUC (max-softmax)",
        "TPR @ 5% FPR",
        "seconds",
    ]
    rows = [["none (clean)", "-", f"{clean_acc:.3f}", "-", "-", "-", "-", "-", "-"]]
    report = {"clean_accuracy": clean_acc, "attacks": {}}
    folds = {}
    results = {}
    for name, (function, params) in DEMO_ATTACKS.items():
        result = getattr(attacks, function)(
            model, x_eval, y=y_eval, batch_size=128, verbose=args.verbose, **params
        )
        sets = metrics.evaluation_sets(y_eval, y_pred_clean, result.y_pred_after)
        results[name] = (result, sets)
        adv_out = detector_model.predict(result.x_adv, verbose=0)
        scores_clean = _max_softmax_score(eval_out["prediction"][sets.clean_index])
        scores_adv = _max_softmax_score(adv_out["prediction"][sets.adversarial_index])
        success = metrics.attack_success_rate(y_eval, y_pred_clean, result.y_pred_after)
        robust = metrics.robust_accuracy(y_eval, result.y_pred_after)
        entry = {
            "success_rate": success,
            "robust_accuracy": robust,
            "mean_l2": float(np.mean(result.l2)),
            "mean_linf": float(np.mean(result.linf)),
            "n_clean": sets.n_clean,
            "n_adversarial": sets.n_adversarial,
            "seconds": result.seconds,
        }
        if sets.n_adversarial > 0 and sets.n_clean > 0:
            entry["auc"] = metrics.roc_auc(scores_clean, scores_adv)
            entry["tpr_at_5"] = float(
                metrics.tpr_at_fpr(
                    scores_clean, scores_adv, 0.05, scores_clean_validation=scores_val
                )
            )
            folds[name] = (scores_clean, scores_adv)
        report["attacks"][name] = entry
        rows.append(
            [
                f"{name} ({', '.join(f'{k}={v}' for k, v in params.items())})",
                f"{success:.3f}",
                f"{robust:.3f}",
                f"{entry['mean_l2']:.3f}",
                f"{entry['mean_linf']:.3f}",
                f"{sets.n_clean} / {sets.n_adversarial}",
                f"{entry['auc']:.3f}" if "auc" in entry else "n/a",
                f"{entry['tpr_at_5']:.3f}" if "tpr_at_5" in entry else "n/a",
                f"{result.seconds:.1f}",
            ]
        )

    table = _format_table(header, rows)
    print()
    print(
        f"{args.dataset}: {len(x_eval)} test images attacked; max-softmax threshold "
        f"calibrated on {len(x_val)} other clean test images."
    )
    print(table)

    defence_table, report["defences"] = _defences(args, model, x_val, x_eval, y_eval, results)
    print()
    print(
        "Defences (oblivious attacks: crafted on the undefended model). Detector "
        "thresholds at 5% FPR calibrated on the clean validation images."
    )
    print(defence_table)
    table = table + "\n\n## Defences (oblivious attacks)\n\n" + defence_table

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for i, (name, (sc, sa)) in enumerate(folds.items()):
        plots.DetectionRocDisplay.from_scores(
            sc, sa, name=f"max-softmax vs {name}", ax=ax, plot_chance_level=i == 0
        )
    ax.set_title(f"Baseline detector on {args.dataset}")
    png = os.path.join(args.out, "roc_max_softmax.png")
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(f"# advguard demo on {args.dataset}\n\n{table}\n")
    elapsed = time.perf_counter() - start
    print(f"\nWrote {png} and {os.path.join(args.out, 'report.md')} in {elapsed:.1f} s.")
    report["roc_png"] = png
    report["seconds"] = elapsed
    return report


def _defences(args, model, x_val, x_eval, y_eval, results):
    """Score each defence of the library on the demo's attacks.

    Returns a markdown table and a dict of the figures.
    """
    import numpy as np

    from keras_advguard import attacks, metrics, models
    from keras_advguard.datasets import load_dataset
    from keras_advguard.detectors import (
        EntropyDetector,
        FeatureSqueezingDetector,
        MedoidLSTMDetector,
    )
    from keras_advguard.layers import BitDepthSqueezer, MaskSanitizer, MedianSmoothingSqueezer
    from keras_advguard.sanitize import sanitize

    figures = {}
    rows = []
    names = list(results)

    # Sanitizer: accuracy of the sanitized model on clean and attacked inputs.
    sanitized = sanitize(
        model, after=list(_SANITIZED[args.dataset](models)), sanitizer=MaskSanitizer()
    )

    def accuracy(m, x):
        return metrics.robust_accuracy(y_eval, np.argmax(m.predict(x, verbose=0), axis=1))

    for label, m in (("undefended", model), ("MaskSanitizer(alpha=0.1)", sanitized)):
        accs = [accuracy(m, x_eval)] + [accuracy(m, results[n][0].x_adv) for n in names]
        figures[label] = dict(zip(["clean"] + names, accs))
        rows.append([label, "accuracy"] + [f"{a:.3f}" for a in accs])

    # Detectors: AUC and TPR at 5% FPR on each attack's successful examples.
    (x_train, y_train), _ = load_dataset(args.dataset, path=args.path)
    n_fit = 100 if args.quick else 300
    rng = np.random.default_rng(args.seed)
    fit_idx = rng.choice(len(x_train), size=min(n_fit, len(x_train)), replace=False)
    x_fit, y_fit = x_train[fit_idx], y_train[fit_idx]
    pgd_fit = attacks.pgd(model, x_fit, y=y_fit, **DEMO_ATTACKS["PGD"][1], seed=args.seed)
    lstm = MedoidLSTMDetector.from_training_data(model, x_train, y_train)
    lstm.compile()
    lstm.fit(
        np.concatenate([x_fit, pgd_fit.x_adv[pgd_fit.success]]),
        np.concatenate([np.zeros(len(x_fit)), np.ones(int(pgd_fit.success.sum()))]),
        epochs=10 if args.quick else 30,
        batch_size=32,
        verbose=0,
    )
    detectors = {
        "medoid LSTM (trained on PGD)": lambda x: lstm.predict(x, verbose=0).ravel(),
        "entropy": EntropyDetector(model).score,
        "squeeze, output": FeatureSqueezingDetector(
            model, [BitDepthSqueezer(4), MedianSmoothingSqueezer(2)], score="output"
        ).score,
        "squeeze, internal": FeatureSqueezingDetector(
            model, [BitDepthSqueezer(4), MedianSmoothingSqueezer(2)], score="internal"
        ).score,
    }
    for label, score in detectors.items():
        scores_val = np.asarray(score(x_val))
        cells, figures[label] = [], {}
        for name in names:
            result, sets = results[name]
            sc = np.asarray(score(x_eval[sets.clean_index]))
            sa = np.asarray(score(result.x_adv[sets.adversarial_index]))
            if len(sa) == 0 or len(sc) == 0:
                cells.append("n/a")
                continue
            auc = metrics.roc_auc(sc, sa)
            tpr = float(metrics.tpr_at_fpr(sc, sa, 0.05, scores_clean_validation=scores_val))
            figures[label][name] = {"auc": auc, "tpr_at_5": tpr}
            cells.append(f"AUC {auc:.3f}, TPR {tpr:.3f}")
        rows.append([label, "detection"] + cells)
    header = ["defence", "measure", "clean"] + names
    rows = [r if len(r) == len(header) else r[:2] + ["-"] + r[2:] for r in rows]
    return _format_table(header, rows), figures


def main(argv=None):
    """Entry point of the `advguard` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            run_demo(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"advguard: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
