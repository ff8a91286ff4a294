"""Benchmark: the feature-response entropy detector (Amirian et al., Table 1), on `evaluate`.

A thin configuration of `keras_advguard.evaluate`: the paper's attacks (FGSM,
gradient attack, one-pixel, DeepFool, boundary, plus PGD and C&W-L2) against
`EntropyDetector` and the engine's baselines, the protocol of METHODS.md
section 7 (sources = correctly classified test images, splits by source,
thresholds at FPR 1/5/10% from clean calibration images only). Two calls:

1. Table 1, oblivious: every attack; the detector at 256 gray levels (the
   default) and, for the gray-levels ablation, at 4, 16, 64 and 1024.
2. Oblivious vs adaptive on the L-infinity attacks (FGSM, PGD, loaded from
   the attack cache): the engine's selective and orthogonal PGD through `score_tensor`.

The paper's Fig. 3 (image / feature response / entropy map, one FGSM image)
and Fig. 4 (entropy histograms, ROC per attack) are drawn from the report's
scores and public APIs. Writes `benchmarks/results/entropy_{dataset}.md`,
`.json` and `_fig3.png`, `_fig4a.png`, `_fig4b.png` (`entropy_quick*` with
`--quick`, which runs on digits).

Usage:
    nice -n 19 python benchmarks/entropy.py --dataset mnist --num-images 500
    python benchmarks/entropy.py --quick
"""

import _common as bench
import numpy as np

FPRS = (0.01, 0.05, 0.1)
LEVELS = (256, 4, 16, 64, 1024)  # the default first: it is named "entropy"
EPS = {"digits": 0.1, "mnist": 0.3, "fashion_mnist": 0.1, "cifar10": 8 / 255}
L2 = {"digits": 1.0, "mnist": 4.0, "fashion_mnist": 2.0, "cifar10": 2.0}
# Amirian et al., Table 1 (VGG19, ImageNet validation): TPR at FPR 1/5/10%, and
# success rate, ground-truth and target confidence after a successful attack.
PAPER_TPR = {
    "fgsm": (0.954, 0.974, 0.983),
    "gradient_attack": (0.922, 0.954, 0.969),
    "one_pixel": (0.917, 0.951, 0.966),
    "deepfool": (0.936, 0.963, 0.976),
    "boundary": (0.934, 0.960, 0.972),
}
PAPER_SUCCESS = {"fgsm": 0.925, "gradient_attack": 0.499, "one_pixel": 0.620}
PAPER_SUCCESS.update(deepfool=0.606, boundary=0.940)


def attack_plan(dataset, quick):
    """Table 1's attacks as `evaluate` specs (name, params)."""
    eps = EPS[dataset]
    pop, gens, boundary, cw, pgd = (20, 3, 100, 10, 10) if quick else (50, 10, 500, 50, 40)
    return [
        ("fgsm", {"eps": eps}),
        ("gradient_attack", {"eps": L2[dataset], "steps": 10}),
        ("one_pixel", {"pixels": 1, "population": pop, "maxiter": gens}),
        ("deepfool", {"norm": 2}),
        ("boundary", {"steps": boundary}),
        ("pgd", {"eps": eps, "nb_iter": pgd}),
        (
            "carlini_wagner_l2",
            {
                "binary_search_steps": 5,
                "max_iterations": cw,
                "learning_rate": 0.01 if dataset == "cifar10" else 0.05,
            },
        ),
    ]


def oblivious_pair(report, name, attack):
    """All test-fold scores of `name` on `attack`: (clean, adversarial)."""
    folds = report.roc.get((name, attack), [])
    if not folds:
        return np.zeros(0), np.zeros(0)
    return np.concatenate([c for c, _ in folds]), np.concatenate([a for _, a in folds])


def paper_table(report):
    rows = []
    for attack, a in report.attacks.items():
        s = report.detectors["entropy"]["oblivious"].get(attack)
        tpr = [bench.pct(t, 1) for t in s["tpr"]] if s else ["-"] * 3
        paper = PAPER_TPR.get(a["attack"])
        rows.append(
            [
                attack,
                f"{a['n_adversarial']} / {a['n_sources']}",
                bench.pct(a["success_rate"], 1),
                bench.pct(PAPER_SUCCESS.get(a["attack"]), 1),
                " / ".join(tpr),
                " / ".join(bench.pct(t, 1) for t in paper) if paper else "-",
                "-" if not s else f"{s['auc']:.3f} ± {s['auc_std']:.3f}",
            ]
        )
    header = [
        "attack",
        "adv. / sources",
        "success %",
        "paper success %",
        "TPR % @ 1/5/10% FPR",
        "paper TPR % (VGG19)",
        "AUC (mean ± std)",
    ]
    return bench.table(header, rows)


def levels_table(report):
    attacks = [a for a in ("fgsm", "pgd") if a in report.attacks]
    rows = []
    for levels in sorted(LEVELS):
        d = report.detectors["entropy" if levels == 256 else f"entropy ({levels} levels)"]
        cells = []
        for a in attacks:
            s = d["oblivious"].get(a)
            cells += ["-", "-"] if s is None else [f"{s['auc']:.3f}", bench.pct(s["tpr"][1], 1)]
        rows.append([levels] + cells)
    return bench.table(["levels"] + [f"{a} {k}" for a in attacks for k in ("AUC", "TPR@5%")], rows)


def figures(report, model, test, dataset, stem):
    import matplotlib.pyplot as plt

    from keras_advguard import EntropyDetector, attacks, plots

    # Fig. 3: one correctly classified test image and its FGSM version.
    x, y = test[0][:20], test[1][:20]
    ok = np.argmax(model.predict(x, verbose=0), axis=1) == y
    x, y = x[ok][:2], y[ok][:2]
    x_adv = attacks.fgsm(model, x, eps=EPS[dataset], y=y).x_adv
    shown = plots.FeatureResponseDisplay.from_detector(EntropyDetector(model), x, x_adv)
    bench.save_figure(shown.figure_, f"{stem}_fig3.png")
    # Fig. 4a: entropy histograms, clean vs PGD; Fig. 4b: ROC per attack.
    clean, adv = oblivious_pair(report, "entropy", "pgd")
    if len(adv):
        shown = plots.EntropyHistogramDisplay(clean, adv, name="PGD").plot()
        bench.save_figure(shown.figure_, f"{stem}_fig4a.png")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for k, attack in enumerate(report.attacks):
        folds = [f for f in report.roc.get(("entropy", attack), []) if len(f[1])]
        if folds:
            plots.plot_mean_roc(folds, ax=ax, name=attack, plot_chance_level=k == 0)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("EntropyDetector: ROC per attack (mean over splits)")
    bench.save_figure(fig, f"{stem}_fig4b.png")


def main():
    p = bench.parser(__doc__)
    p.add_argument("--num-train", type=int, default=2000, help="clean training images used")
    p.add_argument("--report-dir", default=None, help="also `report.save()` both reports here")
    args = bench.parse(p)
    import keras_advguard as ag

    timer = bench.Timer()
    train, test, model, info = bench.load(args.dataset)
    train = bench.subset(train, args.num_train, args.seed)
    common = bench.evaluate_kwargs(args, fpr=FPRS, eps=EPS[args.dataset])
    plan = attack_plan(args.dataset, args.quick)
    detectors = [ag.EntropyDetector(model, levels=levels) for levels in LEVELS]
    labels = ["entropy"] + [f"entropy ({v} levels)" for v in LEVELS[1:]]
    with timer("Table 1: every attack, oblivious"):
        table1 = ag.evaluate(model, train, test, detectors, plan, ("oblivious",), **common)
    bench.rename_detectors(table1, "EntropyDetector", labels)
    linf = [spec for spec in plan if spec[0] in ("fgsm", "pgd")]
    with timer("FGSM and PGD, oblivious and adaptive"):
        adaptive = ag.evaluate(model, train, test, [ag.EntropyDetector(model)], linf, **common)
    bench.rename_detectors(adaptive, "EntropyDetector", labels[:1])
    stem = bench.results_stem("entropy", args.dataset, args.quick, args.out)
    with timer("figures"):
        figures(table1, model, test, args.dataset, stem)
    if args.report_dir:
        table1.save(f"{args.report_dir}/table1")
        adaptive.save(f"{args.report_dir}/adaptive")

    m, steps = table1.meta, adaptive.detectors["entropy"].get("adaptive", {}).get("nb_iter")
    budget = (
        f"{m['n_images']} test images attacked ({m['n_sources']} sources), {m['splits']} splits, "
        f"{m['n_train_used']} clean training images, input-CNN baseline {m['epochs']} epochs, "
        f"adaptive selective / orthogonal PGD {steps} steps at eps "
        f"{adaptive.meta['adaptive_eps']:.3g}"
    )
    script = f"entropy.py --dataset {args.dataset}" + " --quick" * args.quick
    figs = " ".join(f"![Fig. {k}]({stem.name}_fig{k}.png)" for k in ("3", "4a", "4b"))
    text = [
        "# Feature-response entropy detector (Amirian et al.): Table 1 on `evaluate`",
        bench.machine_line(script, timer.total_minutes()),
        f"**Budget (reduced for a shared 2-core CPU): {budget}.** Classifier: "
        f"`{info['architecture']}` on {args.dataset}, test accuracy {info['test_accuracy']:.4f}. "
        "Detector: `EntropyDetector(model)` (guided backpropagation of the last convolution, "
        "256 gray levels, mean local entropy of 3 x 3 windows, higher = adversarial).",
        "## Table 1: ours next to the paper's\n\nPaper: VGG19 on ImageNet validation images; "
        "ours: the model above, mean over the splits, thresholds from each split's clean "
        "calibration images.\n\n" + paper_table(table1),
        "## Gray levels (ablation, same images)\n\n" + levels_table(table1),
        "## What moved and why\n\n" + MOVED,
        "## Figures\n\n" + figs,
        "## Timings\n\n" + timer.markdown(),
        bench.report_body(table1, "Report 1 (`evaluate`, every attack, oblivious)"),
        bench.report_body(adaptive, "Report 2 (`evaluate`, FGSM and PGD, oblivious and adaptive)"),
    ]
    bench.write_text(f"{stem}.md", "\n\n".join(text) + "\n")
    bench.write_json(f"{stem}.json", {"table1": table1.to_dict(), "adaptive": adaptive.to_dict()})
    bench.log(f"wrote {stem}.md")


MOVED = (
    "- Against the paper: our TPRs are far below its 92-98% on every attack. Its "
    "VGG19 has 16 convolutions on 224 x 224 images; on small images and a small CNN "
    "the guided response of a clean image is already spread out, so the entropy "
    "separates only attacks that change many pixels a lot (FGSM, PGD at large eps, "
    "boundary), not the minimal-norm ones (DeepFool, C&W, gradient attack).\n"
    "- Against the previous run of this script (2026-11-20, 500 fixed test and 995 "
    "separate calibration images): thresholds now come from a split's clean "
    "calibration part of the same sources (fewer images, so TPR at 1% FPR is noisier), "
    "every attack runs on the same images, "
    "one-pixel, boundary and C&W run at smaller budgets, and the adaptive attack is the "
    "engine's selective / orthogonal PGD at the largest FPR (10%) instead of the hand-tuned "
    "margin-plus-penalty loss at 5%."
)


if __name__ == "__main__":
    main()
