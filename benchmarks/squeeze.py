"""Benchmark: feature squeezing, output score (Xu et al.) vs internal score (Jonas & Evans).

A thin configuration of `keras_advguard.evaluate`: Xu et al.'s squeezers for
the dataset (MNIST-like: bit depth 1, median 2x2 and 3x3; CIFAR-10: bit depth
5, median 2x2, non-local means 13-3-2), each alone and all together (the max
over squeezers), with the output score and the internal score, against the
paper's untargeted FGSM eps 0.1, plus PGD, C&W-L2 and DeepFool. The protocol
is the engine's (METHODS.md section 7): sources = correctly classified test
images, splits by source, the threshold at 5% FPR from clean calibration
images only. Two calls:

1. every detector (8), every attack, oblivious;
2. the two joint detectors on FGSM and PGD (loaded from the attack cache),
   oblivious vs adaptive (the engine's selective and orthogonal PGD through `score_tensor`,
   BPDA through the squeezers).

Jonas & Evans' Fig. 1 (per-layer cosine distance, clean vs FGSM and clean vs
noise of the same norm) and Fig. 2 (squeezed vs not squeezed) are drawn with
`plots.LayerDivergenceDisplay` on FGSM images from `attacks.fgsm`. Writes
`benchmarks/results/squeeze_{dataset}.md`, `.json`, `_fig1.png`, `_fig2.png`
(`squeeze_quick*` with `--quick`, which runs on digits).

Usage:
    nice -n 19 python benchmarks/squeeze.py --dataset mnist --num-images 500
    python benchmarks/squeeze.py --quick
"""

import _common as bench
import numpy as np

FPR = 0.05
PGD = {"digits": (0.2, 40), "mnist": (0.3, 40), "fashion_mnist": (0.1, 40)}
PGD["cifar10"] = (8 / 255, 20)
KINDS = ("output", "internal")
# Jonas & Evans (CIFAR-10 DenseNet, untargeted FGSM eps 0.1, 10,000 images):
# detection at FPR < 5%, best output-layer squeezer (median 2x2) vs internal score.
PAPER = {"output": 0.12, "internal": 0.98}


def squeezers(dataset):
    """Xu et al.'s configuration: `[(name, layer)]`."""
    from keras_advguard import BitDepthSqueezer, MedianSmoothingSqueezer, NLMeansSqueezer

    if dataset == "cifar10":
        return [
            ("bit depth 5", BitDepthSqueezer(5)),
            ("median 2x2", MedianSmoothingSqueezer(2)),
            ("NL means 13-3-2", NLMeansSqueezer(13, 3, 2.0)),
        ]
    return [
        ("bit depth 1", BitDepthSqueezer(1)),
        ("median 2x2", MedianSmoothingSqueezer(2)),
        ("median 3x3", MedianSmoothingSqueezer(3)),
    ]


def attack_plan(dataset, quick, cw_steps=50):
    eps, steps = PGD[dataset]
    return [
        ("fgsm", {"eps": 0.1}),
        ("pgd", {"eps": eps, "nb_iter": 10 if quick else steps}),
        (
            "carlini_wagner_l2",
            {
                "binary_search_steps": 5,
                "max_iterations": 10 if quick else cw_steps,
                "learning_rate": 0.01 if dataset == "cifar10" else 0.05,
            },
        ),
        ("deepfool", {"norm": 2}),
    ]


def detectors(model, named):
    """Joint output, joint internal, then each squeezer alone: `{report name: detector}`."""
    from keras_advguard import FeatureSqueezingDetector

    out = {
        f"{k}: max over squeezers": FeatureSqueezingDetector(model, [s for _, s in named], k)
        for k in KINDS
    }
    for kind in KINDS:
        for name, layer in named:
            out[f"{kind}: {name}"] = FeatureSqueezingDetector(model, [layer], kind)
    return out


def paper_table(report, named):
    columns = [n for n, _ in named] + ["max over squeezers"]
    rows = []
    for attack, a in report.attacks.items():
        for kind in KINDS:
            cells = []
            for c in columns:
                s = report.detectors[f"{kind}: {c}"]["oblivious"].get(attack)
                cells.append(
                    "-" if s is None else f"**{bench.pct(s['tpr'][0], 1)}** ({s['auc']:.3f})"
                )
            rows.append([attack, f"{a['n_adversarial']} / {a['n_sources']}", kind] + cells)
    return bench.table(["attack", "adv. / sources", "score"] + columns, rows)


def headline(report):
    """The paper's comparison: FGSM eps 0.1, TPR at 5% FPR, best squeezer of each score."""
    fgsm = {n: d["oblivious"].get("fgsm") for n, d in report.detectors.items() if ": " in n}
    if any(v is None for v in fgsm.values()):
        return "FGSM eps 0.1 fooled too few sources to measure."
    rows = []
    for kind in KINDS:
        best = max(
            (n for n in fgsm if n.startswith(kind) and "max" not in n),
            key=lambda n: fgsm[n]["tpr"][0],
        )
        joint = fgsm[f"{kind}: max over squeezers"]["tpr"][0]
        rows.append(
            [
                kind,
                best.split(": ")[1],
                bench.pct(fgsm[best]["tpr"][0], 1),
                bench.pct(joint, 1),
                bench.pct(PAPER[kind], 0),
            ]
        )
    header = [
        "score",
        "best squeezer (on the test folds, as the paper)",
        "its TPR %",
        "max over squeezers TPR %",
        "paper TPR % (CIFAR-10 DenseNet)",
    ]
    return bench.table(header, rows)


def adaptive_table(detectors):
    """Oblivious vs adaptive, FGSM and PGD mixed, at 5% FPR: `detectors` of report 2."""
    rows = []
    for name, d in detectors.items():
        obl, ada = (d.get("oblivious") or {}).get("mixed"), d.get("adaptive") or {}
        if not obl or "auc" not in ada:
            continue
        rows.append(
            [
                name,
                f"{obl['auc']:.3f} / {ada['auc']:.3f}",
                f"{bench.pct(obl['tpr'][-1], 1)} / {bench.pct(ada['tpr'][-1], 1)}",
                bench.pct(ada["sr_at_fpr"][-1], 1),
            ]
        )
    header = [
        "detector",
        "AUC oblivious / adaptive",
        "TPR % @ 5% FPR oblivious / adaptive",
        "adaptive SR % (fooled and undetected)",
    ]
    return (
        "Oblivious = FGSM and PGD mixed, crafted on the classifier alone; adaptive = the "
        "stronger per source of selective and orthogonal PGD on the classifier and the "
        "detector's `score_tensor` (BPDA through the squeezers), on the first split's test "
        "sources. A low adaptive SR is the attack's failure, not a robustness proof.\n\n"
        + bench.table(header, rows)
    )


def figures(model, test, named, n, stem):
    """Jonas & Evans Fig. 1 and 2 on `n` test images, and their medians per layer."""
    from keras_advguard import attacks, plots

    x, y = test[0][:n], test[1][:n]
    ok = np.argmax(model.predict(x, verbose=0), axis=1) == y
    x, y = x[ok], y[ok]
    result = attacks.fgsm(model, x, eps=0.1, y=y)
    fig1 = plots.LayerDivergenceDisplay.from_adversarial(model, x, result.x_adv, noise_seed=0)
    squeezer = named[1][1]  # median 2x2, the paper's
    fig2 = plots.LayerDivergenceDisplay.from_squeezer(
        model, squeezer, x, result.x_adv[result.success]
    )
    header = ["layer"] + list(fig1.distances) + [f"fig. 2 {k}" for k in fig2.distances]
    rows = [
        [f"`{layer}`"]
        + [f"{np.median(v[:, j]):.4f}" for v in fig1.distances.values()]
        + [f"{np.median(v[:, j]):.4f}" for v in fig2.distances.values()]
        for j, layer in enumerate(fig1.layer_names)
    ]
    bench.save_figure(fig1.figure_, f"{stem}_fig1.png")
    bench.save_figure(fig2.figure_, f"{stem}_fig2.png")
    return (
        f"{len(x)} correctly classified test images, FGSM eps 0.1 ({int(result.success.sum())} "
        f"successful). Fig. 1: clean vs FGSM (all) and clean vs Gaussian noise of the same L2 "
        f"norm; Fig. 2: {named[1][0]} squeezed vs not, clean vs successful FGSM. Medians per "
        "layer:\n\n" + bench.table(header, rows)
    )


def main():
    p = bench.parser(__doc__)
    p.add_argument("--num-train", type=int, default=2000, help="clean training images used")
    p.add_argument("--figure-images", type=int, default=500, help="test images of fig. 1 and 2")
    p.add_argument("--report-dir", default=None, help="also `report.save()` both reports here")
    p.add_argument("--no-adaptive", action="store_true", help="skip call 2 (the adaptive one)")
    p.add_argument(
        "--adaptive-images", type=int, default=None, help="test images of call 2 (default: same)"
    )
    p.add_argument("--cw-steps", type=int, default=50, help="C&W steps per binary-search step")
    args = bench.parse(p)
    import keras_advguard as ag

    timer = bench.Timer()
    train, test, model, info = bench.load(args.dataset)
    train = bench.subset(train, args.num_train, args.seed)
    common = bench.evaluate_kwargs(args, fpr=(FPR,))
    named = squeezers(args.dataset)
    plan = attack_plan(args.dataset, args.quick, args.cw_steps)
    every = detectors(model, named)
    with timer("every squeezer and score, every attack, oblivious"):
        report = ag.evaluate(
            model, train, test, list(every.values()), plan, ("oblivious",), **common
        )
    bench.rename_detectors(report, "FeatureSqueezingDetector", list(every))
    joint = detectors(model, named)
    joint = [joint[f"{k}: max over squeezers"] for k in KINDS]
    adaptive = report  # --no-adaptive: report 1 stands in, with no adaptive figures
    if not args.no_adaptive:
        with timer("joint detectors, FGSM and PGD, oblivious and adaptive"):
            common_adaptive = dict(common, num_images=args.adaptive_images or common["num_images"])
            adaptive = ag.evaluate(model, train, test, joint, plan[:2], **common_adaptive)
    bench.rename_detectors(adaptive, "FeatureSqueezingDetector", list(every)[:2])
    stem = bench.results_stem("squeeze", args.dataset, args.quick, args.out)
    with timer("figures 1 and 2"):
        fig_text = figures(model, test, named, 100 if args.quick else args.figure_images, stem)
    if args.report_dir:
        report.save(f"{args.report_dir}/oblivious")
        adaptive.save(f"{args.report_dir}/adaptive")

    m, a = report.meta, adaptive.detectors["internal: max over squeezers"].get("adaptive", {})
    budget = (
        f"{m['n_images']} test images attacked ({m['n_sources']} sources), {m['splits']} splits, "
        f"{m['n_train_used']} clean training images, input-CNN baseline {m['epochs']} epochs, "
        f"adaptive call: {adaptive.meta['n_images']} test images "
        f"({adaptive.meta['n_sources']} sources), selective / orthogonal PGD "
        f"{a.get('nb_iter', '?')} steps at eps {adaptive.meta['adaptive_eps']:.3g}, "
        f"C&W {plan[2][1]['max_iterations']} steps per binary-search step"
    )
    script = (
        f"squeeze.py --dataset {args.dataset}"
        + " --quick" * args.quick
        + " --no-adaptive" * args.no_adaptive
    )
    taps = ", ".join(f"`{t}`" for t in every["internal: max over squeezers"].tap_names)
    text = [
        "# Feature squeezing: output (Xu et al.) vs internal score (Jonas & Evans), on `evaluate`",
        bench.machine_line(script, timer.total_minutes()),
        f"**Budget (reduced for a shared 2-core CPU): {budget}.** Classifier: "
        f"`{info['architecture']}` on {args.dataset}, test accuracy {info['test_accuracy']:.4f}. "
        f"Internal score layers: {taps}.",
        "## The paper's comparison\n\n" + headline(report),
        "## Oblivious vs adaptive (joint detectors)\n\n"
        + (
            "Not run (`--no-adaptive`): the figures above are oblivious only."
            if args.no_adaptive
            else adaptive_table(adaptive.detectors)
        ),
        "## Every squeezer and score\n\nTPR % at the threshold giving 5% FPR on each split's "
        "clean calibration images (mean over splits), AUC in brackets.\n\n"
        + paper_table(report, named),
        "## What moved and why\n\n" + (MOVED_CIFAR if args.dataset == "cifar10" else MOVED),
        "## Divergence (Jonas & Evans Fig. 1 and 2)\n\n" + fig_text,
        f"![Fig. 1]({stem.name}_fig1.png) ![Fig. 2]({stem.name}_fig2.png)",
        "## Timings\n\n" + timer.markdown(),
        bench.report_body(report, "Report 1 (`evaluate`, every detector, oblivious)"),
        "" if args.no_adaptive else bench.report_body(adaptive, "Report 2 (joint, adaptive)"),
    ]
    bench.write_text(f"{stem}.md", "\n\n".join(text) + "\n")
    bench.write_json(
        f"{stem}.json", {"oblivious": report.to_dict(), "adaptive": adaptive.to_dict()}
    )
    bench.log(f"wrote {stem}.md")


MOVED = (
    "- Against the paper: its 12% (output) vs 98% (internal) is CIFAR-10 on a DenseNet, where "
    "the squeezers barely move the softmax of an FGSM image. On MNIST-like data the bit-depth "
    "squeezer undoes most of an L-infinity perturbation, so the output score already "
    "detects most successful FGSM images and the internal score does not add to it; with "
    "several squeezers the max of the per-squeezer internal scores is dominated by the "
    "median squeezers' large clean scores, so the joint internal detector is weaker than "
    "its best single squeezer.\n"
    "- Against the previous run of this script (2026-11-20: 1,000 fixed validation images, "
    "1,975 evaluation images, C&W and DeepFool on their own 300 / 500 images): every attack "
    "now runs on the same images (the engine has no per-attack count), the threshold comes "
    "from each split's clean calibration part (fewer images: a noisier 5% threshold), C&W "
    "has 50 instead of 100 steps per binary-search step, the adaptive attack is the "
    "engine's selective / orthogonal PGD instead of the two hand-written loss variants, "
    "and the ART side-by-side and the 'every FGSM input, successful or not' figure are gone (the "
    "engine scores successful attacks only)."
)


MOVED_CIFAR = (
    "- Against the paper: its 12% (output, best squeezer) vs 98% (internal) is a 94%-accurate "
    "DenseNet trained on the full CIFAR-10 and 10,000 test images. Here the classifier is "
    "the small `cifar_cnn` trained on 3,200 images of the 4,000-image CIFAR-10 subset (about "
    "50% accurate on the 800 held out, which are the test images), so only about half the "
    "attacked images are sources, each split's test part is small, and a 5% threshold from a "
    "few dozen clean calibration images is noisy. A weak classifier's softmax is already "
    "unsure on clean images, so squeezing moves clean and adversarial outputs alike.\n"
    "- Against the pre-engine CIFAR run (squeeze.md, 2026-11-20: FGSM TPR 3.8% output, "
    "10.0% internal, both with median 2x2): that model trained on 3,000 images (52.2% on "
    "the 1,000 held out), the threshold came from 500 fixed clean validation images and "
    "264 sources were scored; now the threshold comes from each split's clean calibration "
    "part, every attack runs on the same images, the budgets are smaller (above), and the "
    "adaptive attack is the engine's selective / orthogonal PGD through `score_tensor` "
    "(BPDA through the squeezers) instead of the two hand-written loss variants."
)


if __name__ == "__main__":
    main()
