"""Benchmark: the distance-space LSTM detector (Caldelli et al.) on `keras_advguard.evaluate`.

A thin configuration of the evaluation engine: the paper's attack groups
(as far as the engine's untargeted attacks go), the medoid LSTM and the kNN
baseline of Carrara et al., the engine's baselines (max-softmax, an input
CNN), both threat models. Splits by source image, thresholds from clean
calibration images, training, the attack-unknown matrix, the adaptive
attack (selective PGD on the LSTM's `score_tensor`) and the attack cache all
come from `evaluate` (`docs/evaluate.md`).

Attacks (untargeted, true labels), on MNIST-like data (eps 0.3 scale) and
digits: FGSM eps 16/255 and iterative FGSM (BIM) 20 x 1/255 in 16/255 (the
paper's ImageNet budget; on MNIST only with `--paper-eps`: they fool ~4% of
the sources), the same two at eps 0.3 (20 x 0.3/16), PGD-Linf
eps 0.3 (40 x 0.01, random start), C&W-L2 (5 x 100 Adam steps, lr 0.05).
On CIFAR-10: the 16/255 pair, PGD eps 8/255 (20 x 2/255) and C&W.

Writes `benchmarks/results/medoid_lstm_{dataset}.md`, `.json` and
`_roc.png` (`medoid_lstm_quick.*` with `--quick`: digits, tiny budgets).

Usage:
    nice python benchmarks/medoid_lstm.py [--dataset mnist] [--quick]
        [--num-images 600] [--num-train 10000] [--epochs 10] [--splits 3]
        [--cw-steps 100] [--adaptive-steps 100] [--out DIR] [--no-cache]
"""

import _common

# Paper: ImageNet InceptionV3, NIPS 2017 DEV set, 5 folds (METHODS.md section 2).
PAPER = {"medoid_lstm": 0.904, "knn": 0.832}
# This script before the engine (commit-time tables medoid_lstm_{mnist,cifar10}.md:
# 2,000 / 403 sources, 100 epochs on precomputed features, 5 splits, targeted
# variants; kNN at the best layer chosen per split on validation).
PREVIOUS = {
    "mnist": {"medoid_lstm": 0.999, "knn": 0.933},
    "cifar10": {"medoid_lstm": 0.777, "knn": 0.742},
}
MOVED = (
    "What moved and why: the paper's 0.904 / 0.832 are ImageNet (InceptionV3, 12 blocks "
    "x 1000 classes), not directly comparable; the ordering LSTM > kNN holds. Against the "
    "pre-engine MNIST table (0.999 / 0.933) both fall, for budget and protocol reasons: "
    "a few hundred sources, 2 splits and 5 epochs (budget above) instead of 2,000 sources, "
    "5 splits and 100 epochs, so the LSTM is undertrained; no targeted attacks (the "
    "engine's attacks take the true labels) and no 16/255 group on MNIST (`--paper-eps`); "
    "kNN on the last hidden layer (the engine's default; the pre-engine per-layer AUC of "
    "fc8 was 0.769, of the best layer, conv4, 0.933); the logistic-regression and "
    "uniform-noise rows are gone (not engine defences). The baselines, new here, beat "
    "the LSTM at this budget. The adaptive columns are new: selective / orthogonal PGD "
    "through each detector's score (the oblivious AUC is not a robustness claim)."
)
MOVED_CIFAR = (
    "What moved and why: the paper's 0.904 / 0.832 are ImageNet (InceptionV3, 12 blocks "
    "x 1000 classes), not directly comparable. Here the classifier is the small `cifar_cnn` "
    "trained on 3,200 images of the 4,000-image CIFAR-10 subset (about 50% accurate on the "
    "800 held out), so half the attacked images are not sources and each split's test part "
    "is a few dozen images (wide spread); its activations separate clean from adversarial "
    "images far less than an ImageNet network's. Against the pre-engine CIFAR table (0.777 / "
    "0.742: 403 sources, 5 splits, 100 epochs on precomputed features, targeted variants, "
    "kNN at the best layer per split) the budget is smaller (above), the engine's attacks "
    "are untargeted only, and kNN is on the last hidden layer (pre-engine per-layer AUC of "
    "fc7: 0.531, of the best layer, conv5: 0.749). The adaptive columns are new: selective / "
    "orthogonal PGD through each detector's score (the oblivious AUC is not a robustness "
    "claim)."
)


def attacks_for(dataset, quick, paper_eps=False, cw_steps=100):
    e16 = 16 / 255
    steps = 20 if quick else cw_steps
    cw = {"binary_search_steps": 5, "max_iterations": steps, "learning_rate": 0.05}
    low = [("fgsm", {"eps": e16}), ("bim", {"eps": e16, "eps_iter": 1 / 255, "nb_iter": 20})]
    if dataset in ("mnist", "fashion_mnist") and not paper_eps:
        low = []  # at 16/255 MNIST-CNN is fooled on ~4% of the sources: too few to train on
    if dataset == "cifar10":
        strong = [("pgd", {"eps": 8 / 255, "eps_iter": 2 / 255, "nb_iter": 20})]
    else:
        strong = [
            ("fgsm", {"eps": 0.3}),
            ("bim", {"eps": 0.3, "eps_iter": 0.3 / 16, "nb_iter": 20}),
            ("pgd", {"eps": 0.3, "eps_iter": 0.01, "nb_iter": 40}),
        ]
    return low + strong + [("carlini_wagner_l2", cw)]


def main(argv=None):
    p = _common.parser(__doc__)
    p.add_argument("--num-train", type=int, default=10_000, help="training images (medoids, kNN)")
    p.add_argument("--paper-eps", action="store_true", help="keep the 16/255 attacks on MNIST")
    p.add_argument("--cw-steps", type=int, default=100, help="C&W steps per binary-search step")
    args = _common.parse(p, argv)
    import numpy as np

    import keras_advguard as ag

    timer = _common.Timer()
    with timer("load data and model"):
        (x_train, y_train), test, model, info = _common.load(args.dataset)
    rng = np.random.default_rng(args.seed)
    n_train = min(args.num_train, len(x_train))
    pick = np.sort(rng.choice(len(x_train), size=n_train, replace=False))
    attacks = attacks_for(args.dataset, args.quick, args.paper_eps, args.cw_steps)
    num_images = args.num_images or (None if args.quick else 600)
    epochs = args.epochs or (None if args.quick else 10)
    splits = args.splits or 3
    with timer("evaluate"):
        report = ag.evaluate(
            model,
            (x_train[pick], y_train[pick]),
            test,
            defences=["medoid_lstm", "knn"],
            attacks=attacks,
            splits=splits,
            seed=args.seed,
            cache_dir=False if args.no_cache else None,
            eps=0.3 if args.dataset != "cifar10" else 8 / 255,
            quick=args.quick,
            num_images=num_images,
            epochs=epochs,
            adaptive_steps=args.adaptive_steps,
        )
    stem = _common.results_stem("medoid_lstm", args.dataset, args.quick, args.out)
    with timer("figures"):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 5))
        report.plot_roc("mixed", ax=ax)
        ax.set_title(f"Medoid LSTM vs kNN and baselines, all attacks mixed ({args.dataset})")
        _common.save_figure(fig, f"{stem}_roc.png")
    m = report.meta
    header = [
        f"# Distance-space LSTM detector (Caldelli et al.) on {args.dataset}"
        + (" (quick check: numbers meaningless)" if args.quick else ""),
        "",
        _common.machine_line(
            "medoid_lstm.py" + (" --quick" if args.quick else f" --dataset {args.dataset}"),
            timer.total_minutes(),
        ),
        "",
        f"**Budget** (2 shared CPU cores): `{info['architecture']}` (test accuracy "
        f"{info['test_accuracy']:.4f}); {m['n_images']} test images attacked "
        f"({m['n_sources']} sources); medoids and kNN from {n_train} training images; "
        f"{m['splits']} splits by source image; trained detectors {m['epochs']} epochs "
        f"(batch 32); adaptive selective / orthogonal PGD eps {m['adaptive_eps']:.4g}, "
        f"{args.adaptive_steps or (20 if args.quick else 100)} steps. "
        "Everything else is `keras_advguard.evaluate`'s protocol (docs/evaluate.md).",
        "",
        comparison(report, args),
        "",
        f"![mean ROC]({stem.name}_roc.png)",
        "",
    ]
    body = _common.report_body(report, "Evaluation report")
    _common.write_text(f"{stem}.md", "\n".join(header) + "\n" + body + "\n" + timing(timer))
    _common.write_json(f"{stem}.json", report.to_dict())
    _common.log(f"wrote {stem}.md, .json, _roc.png")
    return report


def comparison(report, args):
    """The paper's AUCs, the pre-engine table's and ours, and what moved."""
    rows = []
    for name in ("medoid_lstm", "knn", "max_softmax", "input_cnn"):
        d = report.detectors.get(name, {})
        mixed = (d.get("oblivious") or {}).get("mixed")
        adaptive = d.get("adaptive") or {}
        rows.append(
            [
                name,
                PAPER.get(name, "-"),
                PREVIOUS.get(args.dataset, {}).get(name, "-"),
                "n/a" if not mixed else f"{mixed['auc']:.3f} ± {mixed['auc_std']:.3f}",
                "-" if "auc" not in adaptive else f"{adaptive['auc']:.3f}",
                "-" if "sr_at_fpr" not in adaptive else _common.pct(adaptive["sr_at_fpr"][-1], 1),
            ]
        )
    fpr = f"{100 * max(report.fprs):g}%"
    moved = {"mnist": MOVED, "cifar10": MOVED_CIFAR}.get(
        args.dataset, "No earlier table on this dataset: the figures are not comparable."
    )
    if args.quick:
        moved = "A quick check: the figures are not comparable."
    return "\n".join(
        [
            "## Next to the paper",
            "",
            _common.table(
                [
                    "detector",
                    "paper AUC (ImageNet)",
                    f"before the engine ({args.dataset})",
                    "AUC, all attacks mixed (ours)",
                    "adaptive AUC",
                    f"adaptive SR @ {fpr} FPR (%)",
                ],
                rows,
            ),
            "",
            moved,
        ]
    )


def timing(timer):
    return "\n## Timings\n\n" + timer.markdown() + "\n"


if __name__ == "__main__":
    main()
