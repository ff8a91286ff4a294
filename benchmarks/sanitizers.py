"""Benchmark: sanitizing hidden activations (Table 2, Fig. 7) on `keras_advguard.evaluate`.

A thin configuration of the evaluation engine. The paper does not state its
attack strength; its undefended MNIST-CNN keeps 70.53% under FGSM and 53.47%
under PGD (METHODS.md section 3). So:

1. **Paper-matched eps, on validation.** For FGSM and for PGD (40 steps of
   `2.5 eps / 40`, random start: the engine's PGD), bisection of eps until
   the undefended accuracy on a VALIDATION set matches the paper's figure.
   Validation = training images of the cached reference model; with
   `--held-out` (MNIST) the 6,000 training images `_splits.mnist_split_file()`
   holds out, the model trained (once, cached) on the other 54,000. The test
   split is never looked at.
2. **Table 2.** `evaluate` with the median, mask and NL-means sanitizers
   (after every convolution and hidden dense layer: the paper's CONV1, CONV2,
   CONV4, CONV5, FC7, FC8 on MNIST-CNN) against FGSM and PGD at the matched
   eps and at eps 0.3, both threat models: oblivious (crafted on the
   undefended model) and adaptive (the same attack through the sanitized
   model, BPDA through every sanitizer). NL-means (about 80 times slower)
   runs in its own, smaller `evaluate` call.
3. **Mask trade-off** (validation): `evaluate` over a grid of mask `alpha`.
4. **Fig. 7**: `plots.layer_divergence` over PGD (eps 0.3) pairs.

Writes `benchmarks/results/sanitizers_{dataset}.md`, `.json`,
`_fig7.png`, `_tradeoff.png` (`sanitizers_quick*` with `--quick`).

Usage:
    nice python benchmarks/sanitizers.py [--dataset mnist] [--quick]
        [--num-images 500] [--nlm-images 100] [--num-val 400] [--pgd-steps 40]
        [--adaptive-steps 100] [--cw] [--out DIR]
"""

import _common

# Table 2 of the paper, MNIST (%): clean, FGSM, C&W, PGD.
PAPER = {
    "undefended": (98.65, 70.53, 2.34, 53.47),
    "median": (None, 75.27, 82.94, 77.32),
    "mask": (96.24, 81.95, 87.28, 83.57),
    "nl_means": (None, 75.84, 80.27, 76.28),
}
TARGETS = {"fgsm": 0.7053, "pgd": 0.5347}
ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.5)
FIG7_LAYERS = ["conv1", "conv2", "pool3", "conv4", "conv5", "pool6", "fc7", "fc8"]
MOVED = (
    "What moved and why: at eps 0.3 the undefended model keeps far less than the paper's "
    "70.53 / 53.47, so the paper's attacks were weaker than that; the matched eps makes the "
    "undefended VALIDATION accuracy the paper's, and the sanitizers' oblivious accuracy at "
    "that eps is the comparable figure (how far the test split's undefended accuracy moves "
    "from the paper's at the matched eps is stated above). The adaptive column (BPDA "
    "through every sanitizer; the paper does "
    "not report one) is the robustness figure. Before the engine, the layers were chosen "
    "per sanitizer on validation (the median after conv1-2 only); `evaluate` sanitizes "
    "every convolution and hidden dense layer, the paper's placement, where the 3x3 "
    "median (1-D windows on the dense layers) costs clean accuracy."
)
MOVED_CIFAR = (
    "What moved and why: the paper's Table 2 is MNIST; this is the small `cifar_cnn` on the "
    "4,000-image CIFAR-10 subset (trained on 3,200, about 50% accurate on the 800 held out, "
    "from which the test images come), so no figure here is comparable to the paper's. The "
    "validation images are training images of that model (far more accurate on them than on "
    "the test split), so the matched eps gives a test-split undefended accuracy well below "
    "the paper's targets. eps 8/255 is CIFAR-10's usual budget. The adaptive column (BPDA "
    "through every sanitizer; the paper does not report one) is the robustness figure. Before "
    "the engine (docs/sanitizers.md: a model on 2,880 images, 48.8% on 500 held out, layers "
    "chosen per sanitizer on validation, no matched eps) the sanitizers kept 3.6-13.0% (FGSM) "
    "and 1.0-10.8% (PGD) at 8/255 oblivious, at most 1.2% adaptive; `evaluate` sanitizes "
    "every convolution and hidden dense layer."
)
SETTINGS = {"median": "window=3", "mask": "alpha=0.3", "nl_means": "h=1.0 (x map std)"}


def sanitizers():
    from keras_advguard.layers import MaskSanitizer, MedianSanitizer, NLMeansSanitizer

    return {"median": MedianSanitizer(window=3), "mask": MaskSanitizer(alpha=0.3)}, {
        "nl_means": NLMeansSanitizer(h=1.0)
    }


def load(args):
    """`(train, test, (x_val, y_val), model, info, note)`."""
    import numpy as np

    if args.held_out and args.dataset == "mnist":
        from _splits import mnist_split_file

        path = str(mnist_split_file())
        train, test, model, info = _common.load("mnist", path=path)
        with np.load(path) as data:
            x_val = data["x_val"][: args.num_val, ..., None].astype("float32") / 255.0
            y_val = data["y_val"][: args.num_val].astype("int64")
        note = "the first {} of the 6,000 training images held out (never trained on)"
    else:
        train, test, model, info = _common.load(args.dataset)
        pick = np.random.default_rng(args.seed).choice(len(train[1]), args.num_val, replace=False)
        x_val, y_val = train[0][pick], train[1][pick]
        note = (
            "{} random training images (the cached model trained on them: `--held-out` for MNIST)"
        )
    return train, test, (x_val, y_val), model, info, note.format(len(x_val))


def scaled(pgd, eps):
    """PGD's `nb_iter` and its step `eps_iter` (given as a multiple of eps) for radius `eps`."""
    return {"nb_iter": pgd["nb_iter"], "eps_iter": round(pgd["eps_iter"] * eps, 8)}


def match_eps(model, x_val, y_val, name, nb_iter, seed):
    """Bisection of eps: undefended validation accuracy = the paper's figure."""
    import numpy as np

    from keras_advguard import attacks

    def accuracy(eps):
        kw = {"eps_iter": min(eps, 2.5 * eps / nb_iter), "nb_iter": nb_iter, "seed": seed}
        result = getattr(attacks, name)(
            model, x_val, eps=eps, y=y_val, **(kw if name == "pgd" else {})
        )
        _common.log(f"  {name} eps {eps:.4f}: accuracy {np.mean(result.y_pred_after == y_val):.4f}")
        return float(np.mean(result.y_pred_after == y_val))

    return _common.bisect(accuracy, TARGETS[name], 0.0, 0.4, tol=0.004)


def main(argv=None):
    p = _common.parser(__doc__)
    p.add_argument("--nlm-images", type=int, default=None, help="test images of the NL-means run")
    p.add_argument("--num-val", type=int, default=None, help="validation images (eps, trade-off)")
    p.add_argument("--cw", action="store_true", help="add C&W-L2 (3 x 100 steps) to Table 2")
    p.add_argument("--pgd-steps", type=int, default=None, help="PGD steps (default 40)")
    p.add_argument("--held-out", action="store_true", help="MNIST: model on 54,000, 6,000 held out")
    args = _common.parse(p, argv)
    args.num_val = args.num_val or (100 if args.quick else 400)
    import matplotlib.pyplot as plt
    import numpy as np

    import keras_advguard as ag
    from keras_advguard import attacks, plots
    from keras_advguard.layers import MaskSanitizer
    from keras_advguard.sanitize import sanitize

    timer = _common.Timer()
    with timer("load data and model"):
        train, test, (x_val, y_val), model, info, val_note = load(args)
    nb_iter = 10 if args.quick else (args.pgd_steps or 40)
    with timer("paper-matched eps on validation (bisection)"):
        matched = {n: match_eps(model, x_val, y_val, n, nb_iter, args.seed) for n in TARGETS}
    eps_f, eps_p = round(matched["fgsm"][0], 4), round(matched["pgd"][0], 4)
    ref = 8 / 255 if args.dataset == "cifar10" else 0.3  # the usual budget of the dataset
    pgd = {"nb_iter": nb_iter, "eps_iter": 2.5 / nb_iter}  # eps_iter: times eps, below
    specs = [("fgsm", {"eps": eps_f}), ("pgd", {"eps": eps_p, **scaled(pgd, eps_p)})]
    specs += [("fgsm", {"eps": ref}), ("pgd", {"eps": ref, **scaled(pgd, ref)})] + (
        [("carlini_wagner_l2", {"binary_search_steps": 3, "learning_rate": 0.05})]
        if args.cw
        else []
    )
    common = dict(
        attacks=specs,
        splits=2,
        seed=args.seed,
        cache_dir=False if args.no_cache else None,
        eps=ref,
        quick=args.quick,
        epochs=args.epochs or 3,
        adaptive_steps=args.adaptive_steps,
    )
    fast, slow = sanitizers()
    n_main = args.num_images or (None if args.quick else 500)
    n_nlm = args.nlm_images or (40 if args.quick else 100)
    with timer(f"evaluate: median, mask ({n_main or 150} test images)"):
        report = ag.evaluate(model, train, test, list(fast.values()), num_images=n_main, **common)
    with timer(f"evaluate: NL-means ({n_nlm} test images)"):
        report_nlm = ag.evaluate(
            model, train, test, list(slow.values()), num_images=n_nlm, **common
        )
    with timer(f"evaluate: mask trade-off on validation, alpha in {ALPHAS}"):
        grid = [MaskSanitizer(alpha=a) for a in ALPHAS]
        common_val = dict(common, attacks=specs[:2])
        report_val = ag.evaluate(model, train, (x_val, y_val), grid, **common_val)
    stem = _common.results_stem("sanitizers", args.dataset, args.quick, args.out)
    layers = {"digits": ["conv1", "conv2", "fc4"]}.get(args.dataset, FIG7_LAYERS)
    if args.dataset == "cifar10":
        layers = FIG7_LAYERS[:-1]
    with timer("figures: trade-off and Fig. 7"):
        curves = list(report_val.sanitizers.values())
        labels = list(report_val.attacks)
        robust = {
            f"{a}, {t}": [c[t][a] for c in curves]
            for t in ("oblivious", "adaptive")
            for a in labels
        }
        display = plots.plot_tradeoff(
            ALPHAS,
            [c["oblivious"]["clean"] for c in curves],
            robust,
            chosen=0.3,
            title=f"{args.dataset}: mask sanitizer (validation, paper-matched eps)",
        )
        _common.save_figure(display.figure_, f"{stem}_tradeoff.png")
        n_fig = min(300, n_main or 300)  # Fig. 7 pairs come from the first n_fig test images
        x, y = test[0][:n_fig], test[1][:n_fig]
        adv = attacks.pgd(
            model, x, eps=ref, eps_iter=ref * 2.5 / nb_iter, nb_iter=nb_iter, y=y, seed=0
        )
        ok = np.flatnonzero((np.argmax(model.predict(x, verbose=0), -1) == y) & adv.success)[:100]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
        paths = list(ag.resolve_layers(model, "conv+dense"))[:-1]
        for ax, (name, layer) in zip(axes, {**fast, **slow}.items(), strict=True):
            d = plots.layer_divergence(
                model, sanitize(model, paths, layer), x[ok], adv.x_adv[ok], layers
            )
            plots.plot_layer_divergence(
                d, ax=ax, labels=("undefended", name), title=f"{name}: {len(ok)} PGD pairs"
            )
        fig.tight_layout()
        _common.save_figure(fig, f"{stem}_fig7.png")
    text = [
        f"# Sanitizing hidden activations on {args.dataset}"
        + (" (quick check: numbers meaningless)" if args.quick else ""),
        "",
        _common.machine_line(
            "sanitizers.py" + (" --quick" if args.quick else f" --dataset {args.dataset}"),
            timer.total_minutes(),
        ),
        "",
        f"**Budget** (2 shared CPU cores): `{info['architecture']}` (test accuracy "
        f"{info['test_accuracy']:.4f}, trained on {info['num_train']} images); Table 2 on "
        f"{report.meta['n_images']} test images (NL-means: {report_nlm.meta['n_images']}); "
        f"PGD {nb_iter} steps; validation = {val_note}; sanitizers after "
        f"{', '.join(paths)}; settings {SETTINGS} (the pre-engine run's validation choices); "
        f"baselines trained {common['epochs']} epochs, 2 splits. "
        "Protocol: `keras_advguard.evaluate`.",
        "",
        eps_section(matched, len(x_val)),
        paper_section(report, report_nlm, eps_f, eps_p, usual=ref, dataset=args.dataset),
        f"![trade-off]({stem.name}_tradeoff.png) ![Fig. 7]({stem.name}_fig7.png)",
        "",
    ]
    for title, r in (("Table 2", report), ("NL-means", report_nlm), ("trade-off", report_val)):
        text.append(_common.report_body(r, f"Evaluation report: {title} run"))
    text.append("## Timings\n\n" + timer.markdown() + "\n")
    _common.write_text(f"{stem}.md", "\n".join(text))
    doc = {
        "matched_eps": {
            k: {"eps": v[0], "accuracy": v[1], "history": v[2]} for k, v in matched.items()
        }
    }
    doc.update(
        table2=report.to_dict(), nl_means=report_nlm.to_dict(), tradeoff=report_val.to_dict()
    )
    _common.write_json(f"{stem}.json", doc)
    _common.log(f"wrote {stem}.md, .json, _tradeoff.png, _fig7.png")


def eps_section(matched, n_val):
    rows = [
        [
            n,
            _common.pct(TARGETS[n]),
            f"{eps:.4f}",
            _common.pct(acc),
            " ".join(f"{e:.3f}:{100 * a:.1f}" for e, a in hist),
        ]
        for n, (eps, acc, hist) in matched.items()
    ]
    return "\n".join(
        [
            "## Paper-matched attack strength (validation)",
            "",
            f"Bisection of eps on {n_val} validation images: the undefended accuracy "
            "(over all images, as the paper's) against the paper's figure.",
            "",
            _common.table(
                [
                    "attack",
                    "paper accuracy (%)",
                    "eps found",
                    "validation accuracy (%)",
                    "evaluated eps:accuracy",
                ],
                rows,
            ),
            "",
        ]
    )


def paper_section(report, report_nlm, eps_f, eps_p, usual=0.3, dataset="mnist"):
    """Paper's Table 2 next to ours: at the matched eps and at `usual`, both threat models."""
    labels = list(report.attacks)
    n = report.meta["n_images"]
    rows = []
    for name, r, key in [
        ("undefended", report, None),
        ("median", report, "MedianSanitizer"),
        ("mask", report, "MaskSanitizer"),
        ("nl_means", report_nlm, "NLMeansSanitizer"),
    ]:
        paper = PAPER[name]
        if key is None:
            obl, ada = r.undefended, r.undefended
        else:
            s = r.sanitizers.get(key, {})
            if "error" in s or not s:
                rows.append([name, "failed: " + s.get("error", "missing")] + [""] * 8)
                continue
            obl, ada = s["oblivious"], s.get("adaptive", {})
        cells = [name, f"{_common.pct(paper[0] and paper[0] / 100)} / {_common.pct(obl['clean'])}"]
        for label in labels[:4]:
            ref = paper[1] if label.startswith("fgsm") else paper[3]
            ours = [_common.pct(obl.get(label)), _common.pct(ada.get(label))]
            cells.append(" / ".join([_common.pct(ref and ref / 100)] + ours))
        rows.append(cells)
    head = ["model", "clean: paper / ours"] + [
        f"{label}: paper / oblivious / adaptive" for label in labels[:4]
    ]
    return "\n".join(
        [
            "## Next to the paper (Table 2, MNIST, accuracy %)",
            "",
            _common.table(head, rows),
            "",
            f"Matched eps (validation): FGSM {eps_f:g}, PGD {eps_p:g}; eps {usual:.4g} is "
            f"{dataset}'s usual budget. On the test split the undefended model keeps "
            f"{_common.pct(report.undefended.get(labels[0]))} (FGSM) and "
            f"{_common.pct(report.undefended.get(labels[1]))} (PGD) at the matched eps, against "
            "the paper's 70.53 / 53.47: the validation match does not carry over exactly "
            "(the validation images are training images of the cached model unless "
            f"`--held-out`; {n} images give a standard error of about "
            f"{100 * (0.25 / n) ** 0.5:.1f} points or less). "
            "The paper's C&W column is left out (`--cw` adds it). "
            + (MOVED_CIFAR if dataset == "cifar10" else MOVED),
            "",
        ]
    )


if __name__ == "__main__":
    main()
