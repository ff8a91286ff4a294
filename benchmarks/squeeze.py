"""Benchmark: feature squeezing, output score (Xu et al.) vs internal score (Jonas & Evans).

Measures, in one run:

1. The paper's experiment and more: detection rate at a false positive rate
   below 5% (threshold from clean *validation* images) and ROC AUC of the
   output score (each squeezer, and the max over squeezers) and of the
   internal score (each squeezer, and the max), for untargeted FGSM
   eps = 0.1 (the paper's attack), PGD, C&W-L2 and DeepFool, on MNIST-CNN and
   on the CIFAR-10-subset model.
2. Jonas & Evans' Fig. 1 and Fig. 2 (PNG files) and their medians per layer.
3. Side by side with ART 1.20's `FeatureSqueezing` (bit depth) and
   `SpatialSmoothing` (median) preprocessors: squeezed images and output
   scores compared, time ratio of the whole scoring (skipped when ART is not
   installed).
4. Adaptive white-box PGD through the squeezers (BPDA through bit-depth
   rounding, the median's own selection gradient) with the detector score in
   the loss (`attacks.pgd_with_loss`), detection at 5% FPR before/after.

Data (stated in the results):

- MNIST: `load_or_train("mnist_cnn", "mnist", epochs=5, seed=0)` (trained on
  the 60,000 training images). MNIST test images 0..999 are the clean
  validation set (threshold only); images 1000..(1000 + n) the evaluation
  set, keeping those the model gets right.
- CIFAR-10 subset (`shared/data/cifar10-subset.npz`, 4,000 train / 20 test
  images): its 4,000 training images are split (stratified,
  `validation_split(fraction=0.25, seed=0)`) into 3,000 to train `cifar_cnn`
  (28 epochs, batch 32, seed 0) and 1,000 held out; the held-out images are
  split again in half (stratified, seed 0): 500 clean validation, 500
  evaluation. The 20 official test images are not used.

Writes `benchmarks/results/squeeze.md` and `squeeze_fig{1,2}_{dataset}.png`
(`squeeze_quick.md` and no figures with `--quick`).

Usage:
    nice python benchmarks/squeeze.py [--quick] [--skip-cifar] [--skip-adaptive]
"""

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"
CIFAR_SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz"
FPR = 0.05
BATCH = 128


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


# --------------------------------------------------------------------------
# Data and models
# --------------------------------------------------------------------------


def correct_only(model, x, y):
    import numpy as np

    pred = np.argmax(model.predict(x, batch_size=512, verbose=0), axis=1)
    keep = pred == y
    return x[keep], y[keep]


def load_mnist(n_val, n_eval):
    from keras_advguard.datasets import load_dataset
    from keras_advguard.models import load_or_train

    model, info = load_or_train("mnist_cnn", "mnist", epochs=5, seed=0)
    _, (x_test, y_test) = load_dataset("mnist")
    x_val = x_test[:n_val]
    x_eval, y_eval = correct_only(model, x_test[1000 : 1000 + n_eval], y_test[1000 : 1000 + n_eval])
    desc = (
        f"`mnist_cnn` trained 5 epochs on the 60,000 MNIST training images "
        f"(test accuracy {info['test_accuracy']:.4f}). Clean validation: MNIST test images "
        f"0..{n_val - 1} ({n_val} images, threshold only). Evaluation: MNIST test images "
        f"1000..{1000 + n_eval - 1}, the {len(x_eval)} the model classifies correctly."
    )
    return model, x_val, x_eval, y_eval, desc


def cifar_split_file():
    """Write (once) the 3,000 / 1,000 split of the CIFAR-10 subset as an .npz."""
    import numpy as np

    from keras_advguard.datasets import validation_split

    raw = np.load(CIFAR_SUBSET)
    x, y = raw["x_train"], raw["y_train"].reshape(-1).astype(np.int64)
    (fit_idx, _), (held_idx, _) = validation_split(np.arange(len(y)), y, fraction=0.25, seed=0)
    home = os.environ.get("KERAS_ADVGUARD_HOME") or os.path.expanduser("~/.keras_advguard")
    target = Path(home) / "data" / "cifar10-subset-fit3000-holdout1000.npz"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            x_train=x[fit_idx],
            y_train=y[fit_idx],
            x_test=x[held_idx],
            y_test=y[held_idx],
        )
        os.replace(tmp, target)
    return target


def load_cifar(n_eval):

    from keras_advguard.datasets import load_dataset, validation_split
    from keras_advguard.models import load_or_train

    path = cifar_split_file()
    model, info = load_or_train(
        "cifar_cnn", "cifar10", epochs=28, batch_size=32, seed=0, path=str(path)
    )
    (x_fit, _), (x_held, y_held) = load_dataset("cifar10", path=str(path))
    (x_eval, y_eval), (x_val, _) = validation_split(x_held, y_held, fraction=0.5, seed=0)
    x_eval, y_eval = x_eval[:n_eval], y_eval[:n_eval]
    n_all = len(x_eval)
    x_eval, y_eval = correct_only(model, x_eval, y_eval)
    desc = (
        f"`cifar_cnn` trained 28 epochs (batch 32) on {len(x_fit):,} of the 4,000 training "
        f"images of the CIFAR-10 subset; accuracy on the 1,000 held-out images "
        f"{info['test_accuracy']:.3f}. Clean validation: {len(x_val)} held-out images "
        f"(threshold only). Evaluation: {n_all} other held-out images, the {len(x_eval)} "
        f"the model classifies correctly."
    )
    return model, x_val, x_eval, y_eval, desc


def squeezers_for(dataset):
    """Xu et al.'s detector configurations: MNIST and CIFAR-10."""
    from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer
    from keras_advguard.layers.median_smoothing_squeezer import MedianSmoothingSqueezer
    from keras_advguard.layers.nl_means_squeezer import NLMeansSqueezer

    if dataset == "mnist":
        return [
            ("bit depth 1", BitDepthSqueezer(1)),
            ("median 2x2", MedianSmoothingSqueezer(2)),
            ("median 3x3", MedianSmoothingSqueezer(3)),
        ]
    return [
        ("bit depth 5", BitDepthSqueezer(5)),
        ("median 2x2", MedianSmoothingSqueezer(2)),
        ("NL means 13-3-2", NLMeansSqueezer(13, 3, 2.0)),
    ]


def attack_plan(dataset, quick):
    """(name, setting, function, kwargs, number of images or None for all)."""
    from keras_advguard import attacks as a

    small = 40 if quick else None
    pgd_eps, pgd_iter = (0.3, 40) if dataset == "mnist" else (8 / 255, 20)
    return [
        ("FGSM", "eps 0.1", a.fgsm, {"eps": 0.1}, None),
        (
            "PGD",
            f"Linf eps {pgd_eps:.3g}, {pgd_iter} steps",
            a.pgd,
            {"eps": pgd_eps, "nb_iter": pgd_iter, "seed": 0},
            None,
        ),
        (
            "C&W L2",
            "5 x 100 Adam steps, lr 0.05",
            a.carlini_wagner_l2,
            {"binary_search_steps": 5, "max_iterations": 100, "learning_rate": 0.05},
            small or 300,
        ),
        ("DeepFool", "L2, overshoot 0.02", a.deepfool, {"norm": 2}, small or 500),
    ]


# --------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------


def report(clean_val, clean_test, adv):
    from keras_advguard import metrics

    r = metrics.detection_report(clean_test, adv, fprs=[FPR], scores_clean_validation=clean_val)
    at = r["at_fpr"][FPR]
    return {"tpr": at["tpr"], "fpr": at["fpr"], "auc": r["auc"]}


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def detection(dataset, model, x_val, x_eval, y_eval, quick, sections, timings):

    from keras_advguard.detectors.feature_squeezing_detector import FeatureSqueezingDetector

    named = squeezers_for(dataset)
    names = [n for n, _ in named]
    detectors = {
        kind: FeatureSqueezingDetector(model, [s for _, s in named], score=kind)
        for kind in ("output", "internal")
    }
    t0 = time.time()
    val = {k: d.squeezer_scores(x_val, batch_size=BATCH) for k, d in detectors.items()}
    t_val = time.time() - t0
    clean = {k: d.squeezer_scores(x_eval, batch_size=BATCH) for k, d in detectors.items()}
    timings.append(
        (
            f"{dataset}: scores of {len(x_val) + len(x_eval)} clean images, both detectors",
            t_val + time.time() - t0,
        )
    )
    for d in detectors.values():
        d.fit(x_val, fpr=FPR)
    tap_names = detectors["internal"].tap_names

    plan = attack_plan(dataset, quick)
    rows = []
    fgsm_all = None
    for name, setting, fn, kwargs, n in plan:
        xs, ys = x_eval[:n], y_eval[:n]
        t0 = time.time()
        result = fn(model, xs, y=ys, batch_size=BATCH, **kwargs)
        timings.append((f"{dataset}: {name} on {len(xs)} images", time.time() - t0))
        ok = result.success
        t0 = time.time()
        adv_scores = {
            k: d.squeezer_scores(result.x_adv, batch_size=BATCH) for k, d in detectors.items()
        }
        timings.append(
            (f"{dataset}: scores of the {name} images, both detectors", time.time() - t0)
        )
        summary = result.summary()
        entry = {
            "attack": name,
            "setting": setting,
            "n": len(xs),
            "n_adv": int(ok.sum()),
            "mean_l2": summary["mean_l2"],
            "mean_linf": summary["mean_linf"],
            "res": {},
        }
        if ok.sum():
            for kind in detectors:
                for k, sq in enumerate(names + ["max over squeezers"]):
                    pick = (lambda s: s.max(1)) if k == len(names) else (lambda s, k=k: s[:, k])
                    entry["res"][(kind, sq)] = report(
                        pick(val[kind]), pick(clean[kind]), pick(adv_scores[kind][ok])
                    )
        rows.append(entry)
        if name == "FGSM":
            fgsm_all = (result, adv_scores)

    # The paper's experiment on every FGSM input, successful or not.
    result, adv_scores = fgsm_all
    paper_all = {}
    for kind in detectors:
        for k, sq in enumerate(names + ["max over squeezers"]):
            pick = (lambda s: s.max(1)) if k == len(names) else (lambda s, k=k: s[:, k])
            paper_all[(kind, sq)] = report(
                pick(val[kind]), pick(clean[kind]), pick(adv_scores[kind])
            )

    lines = [
        f"Squeezers (Xu et al.'s {dataset.upper()} configuration): {', '.join(names)}. "
        f"Internal score layers (`is_activation_layer`): {', '.join(f'`{t}`' for t in tap_names)}.",
        "",
        f"TPR = detection rate of the successful adversarial images at the threshold giving "
        f"FPR <= {FPR:.0%} on the {len(x_val)} clean validation images; FPR = what that "
        f"threshold gives on the clean evaluation images; AUC on the evaluation images. "
        f"Columns: one squeezer at a time, then the max over the squeezers "
        f"(Xu et al.'s joint detector; for the internal score, the max of the per-squeezer means).",
        "",
    ]
    header = "| attack | n adv / n | score | " + " | ".join(names + ["max over squeezers"]) + " |"
    lines += [header, "|" + "---|" * (3 + len(names) + 1)]
    for entry in rows:
        label = f"{entry['attack']} ({entry['setting']})"
        count = f"{entry['n_adv']} / {entry['n']}"
        if not entry["res"]:
            lines.append(
                f"| {label} | {count} | - | " + " | ".join(["-"] * (len(names) + 1)) + " |"
            )
            continue
        for kind in detectors:
            cells = []
            for sq in names + ["max over squeezers"]:
                r = entry["res"][(kind, sq)]
                cells.append(f"TPR **{r['tpr']:.3f}** (FPR {r['fpr']:.3f}), AUC {r['auc']:.3f}")
            lines.append(f"| {label} | {count} | {kind} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"FGSM eps 0.1, **every** perturbed image ({len(result.x_adv)}, successful or not, "
        "as the paper counts its 10,000 FGSM images): "
        + "; ".join(
            f"{kind} {sq}: TPR {r['tpr']:.3f}, AUC {r['auc']:.3f}"
            for kind in detectors
            for sq in names + ["max over squeezers"]
            for r in [paper_all[(kind, sq)]]
        )
        + "."
    )
    lines.append("")
    res = rows[0]["res"]
    if res:
        best_out = max(names, key=lambda s: res[("output", s)]["tpr"])
        best_int = max(names, key=lambda s: res[("internal", s)]["tpr"])
        lines.append(
            f"**Paper's comparison (FGSM eps 0.1, successful images):** best output-layer squeezer "
            f"({best_out}, chosen on the evaluation set, as the paper reports its best) "
            f"TPR {res[('output', best_out)]['tpr']:.3f}; internal score with the same "
            f"squeezer TPR {res[('internal', best_out)]['tpr']:.3f}; best internal "
            f"({best_int}) TPR {res[('internal', best_int)]['tpr']:.3f}; joint internal "
            f"TPR {res[('internal', 'max over squeezers')]['tpr']:.3f}. "
            "Paper (CIFAR-10 DenseNet, 10,000 images): 12% vs 98%."
        )
        lines.append("")
    lines.append(
        "Attacks: "
        + "; ".join(
            f"{e['attack']}: success {e['n_adv']}/{e['n']}, "
            f"mean L2 {fmt(e['mean_l2'])}, mean Linf {fmt(e['mean_linf'])}"
            for e in rows
        )
        + "."
    )
    sections.append((f"Detection: {dataset}", lines))
    return detectors, fgsm_all[0]


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------


def figures(dataset, model, x_eval, fgsm_result, squeezer, sections, quick):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from keras_advguard.plots import LayerDivergenceDisplay

    x_adv = fgsm_result.x_adv
    x_succ = x_adv[fgsm_result.success]
    fig1 = LayerDivergenceDisplay.from_adversarial(model, x_eval[: len(x_adv)], x_adv, noise_seed=0)
    fig2 = LayerDivergenceDisplay.from_squeezer(model, squeezer, x_eval, x_succ)
    lines = [
        f"Fig. 1: cosine distance clean vs FGSM (eps 0.1, all {len(x_adv)} perturbed images) "
        "and clean vs Gaussian-direction noise of the same per-image L2 norm (not clipped). "
        f"Fig. 2: squeezed ({squeezer.name}) vs not squeezed, clean ({len(x_eval)}) vs "
        f"successful FGSM ({len(x_succ)}). Medians per layer:",
        "",
        "| layer | "
        + " | ".join(list(fig1.distances) + [f"fig2 {k}" for k in fig2.distances])
        + " |",
        "|---|" + "---|" * (len(fig1.distances) + len(fig2.distances)),
    ]
    for j, layer in enumerate(fig1.layer_names):
        cells = [f"{np.median(v[:, j]):.4f}" for v in fig1.distances.values()]
        cells += [f"{np.median(v[:, j]):.4f}" for v in fig2.distances.values()]
        lines.append(f"| `{layer}` | " + " | ".join(cells) + " |")
    if not quick:
        for k, display in (("1", fig1), ("2", fig2)):
            out = RESULTS / f"squeeze_fig{k}_{dataset}.png"
            display.figure_.savefig(out, dpi=90)
            lines.append("")
            lines.append(f"![Fig. {k}, {dataset}]({out.name})")
    plt.close("all")
    sections.append((f"Divergence (Jonas & Evans Fig. 1 and 2): {dataset}", lines))


# --------------------------------------------------------------------------
# ART
# --------------------------------------------------------------------------


def art_comparison(model, x, sections, repeats):
    import numpy as np

    from keras_advguard._activations import apply_in_batches
    from keras_advguard.detectors.feature_squeezing_detector import FeatureSqueezingDetector
    from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer
    from keras_advguard.layers.median_smoothing_squeezer import MedianSmoothingSqueezer

    try:
        import art
        from art.defences.preprocessor import FeatureSqueezing, SpatialSmoothing
    except ImportError:
        sections.append(("ART comparison", ["ART is not installed: skipped."]))
        return
    cases = [
        (
            "bit depth 1",
            BitDepthSqueezer(1),
            FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=1),
        ),
        (
            "bit depth 5",
            BitDepthSqueezer(5),
            FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=5),
        ),
        (
            "median 2x2",
            MedianSmoothingSqueezer(2),
            SpatialSmoothing(window_size=2, channels_first=False, clip_values=(0.0, 1.0)),
        ),
    ]
    lines = [
        f"ART {art.__version__}, the MNIST model, {len(x)} clean evaluation images. ART's "
        "preprocessors only squeeze; the output score is then computed the same way for "
        "both: `sum |model(x) - model(squeezed x)|` (ART: numpy squeeze, then "
        "`model.predict` on both; ours: `FeatureSqueezingDetector(model, [squeezer]).score`, "
        "squeeze and both forward passes in one `tf.function`, softmax recomputed from the "
        f"logits in float32). Time: {repeats} interleaved repeats, medians, both warmed up.",
        "",
        "| squeezer | squeezed images: max abs diff | scores: max abs diff "
        "| score: ours (s) | score: ART (s) | ours / ART | squeeze only: ours (s) "
        "| squeeze only: ART (s) | ours / ART |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, layer, art_pre in cases:
        detector = FeatureSqueezingDetector(model, [layer])

        def ours(detector=detector):
            return detector.score(x, batch_size=BATCH)

        def theirs(art_pre=art_pre):
            squeezed, _ = art_pre(x)
            p = model.predict(x, batch_size=BATCH, verbose=0)
            q = model.predict(squeezed.astype("float32"), batch_size=BATCH, verbose=0)
            return np.abs(p.astype(np.float64) - q).sum(axis=1)

        def ours_squeeze(layer=layer):
            return apply_in_batches(layer, x, BATCH)

        def theirs_squeeze(art_pre=art_pre):
            return art_pre(x)[0]

        fns = {"ours": ours, "art": theirs, "ours_sq": ours_squeeze, "art_sq": theirs_squeeze}
        outputs = {k: fn() for k, fn in fns.items()}  # warm-up (traces, caches)
        times = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) for k, v in times.items()}
        image_diff = np.max(np.abs(outputs["ours_sq"] - outputs["art_sq"]))
        score_diff = np.max(np.abs(outputs["ours"] - outputs["art"]))
        lines.append(
            f"| {name} | {image_diff:.2e} | {score_diff:.2e} | {med['ours']:.3f} "
            f"| {med['art']:.3f} | **{med['ours'] / med['art']:.2f}** | {med['ours_sq']:.3f} "
            f"| {med['art_sq']:.3f} | **{med['ours_sq'] / med['art_sq']:.2f}** |"
        )
    lines += [
        "",
        "ART has no internal-layer score; its `FeatureSqueezing` is bit depth only and its "
        "`SpatialSmoothing` is the same scipy median call as Xu et al.'s. Score differences "
        "come from the softmax being recomputed from the logits in float32 (ours) instead "
        "of taken from the model's output; image differences from ART returning its "
        "bit-depth levels in float64 (`k / (2**bits - 1)` rounded to float64, ours to "
        "float32; equal for 1 bit). 'Squeeze only': our layer called batch by batch "
        "(eager) vs ART's numpy call on the whole array.",
    ]
    sections.append(("ART comparison", lines))


# --------------------------------------------------------------------------
# Adaptive white-box attack
# --------------------------------------------------------------------------


def adaptive(dataset, model, detectors, x, y, sections, timings, quick):
    import keras
    import numpy as np
    from keras import ops

    from keras_advguard import as_logits_fn, attacks
    from keras_advguard.layers.bit_depth_squeezer import BitDepthSqueezer
    from keras_advguard.layers.nl_means_squeezer import NLMeansSqueezer

    # CIFAR: 10 steps (each step runs the model on x and its 3 squeezed copies).
    eps, nb_iter = (0.3, 40) if dataset == "mnist" else (8 / 255, 10)
    if quick:
        nb_iter = 5
    logits_fn = as_logits_fn(model)

    def wrap(squeezer):
        # Bit depth has no gradient; NL means has one, but its 169 unrolled
        # offsets take minutes to differentiate on 2 CPU cores: identity for both.
        if isinstance(squeezer, (BitDepthSqueezer, NLMeansSqueezer)):
            return attacks.bpda(squeezer)
        return squeezer

    def capped_margin(z, yb):
        onehot = ops.one_hot(ops.cast(yb, "int32"), z.shape[-1])
        true = ops.sum(z * onehot, axis=-1)
        other = ops.max(z - 1e9 * onehot, axis=-1)
        return ops.minimum(other - true, 5.0)

    # (name, c, whether the squeezed inputs must be misclassified too)
    variants = [("A: margin - c * penalty", 10.0, False), ("B: all views - c * penalty", 1.0, True)]

    t0 = time.time()
    oblivious = attacks.pgd(model, x, y=y, eps=eps, nb_iter=nb_iter, seed=0, batch_size=BATCH)
    timings.append((f"{dataset}: oblivious PGD on {len(x)} images", time.time() - t0))
    lines = [
        f"{len(x)} evaluation images, L-infinity eps {eps:.3g}, {nb_iter} steps, step "
        f"{2.5 * eps / nb_iter:.3g}, random start. Oblivious: `attacks.pgd` on the classifier "
        "alone. Adaptive: `attacks.pgd_with_loss` on a loss that sees the detector, the "
        "score computed by `detector.score_tensor(x, wrap_squeezer=...)` with bit-depth "
        "and NL-means squeezers wrapped in `attacks.bpda` (identity gradient; the "
        "medians keep their selection gradient). With `m(v) = min(best other logit - true "
        "logit, 5)` and the penalty `relu(score - 0.5 t) / t` (t = the detector's 5% FPR "
        "threshold, so the score is pushed under half of it):",
        "",
        "- A maximises `m(x) - 10 * penalty` (Carlini & Wagner's recipe for detectors);",
        "- B maximises `m(x) + sum_k m(sq_k(x)) - 1 * penalty`: the squeezed inputs must "
        "be misclassified too, so the classifier's outputs agree (He et al.'s recipe "
        "against feature squeezing).",
        "",
        "'Evades' = misclassified and not flagged, over all attacked images; 'A or B' counts "
        "an image when either version evades (the adversary keeps the one that works). "
        "Both variants were picked in a small trial on 100 other MNIST images (c in "
        "{0, 1, 10}); no stronger search was run.",
        "",
        "| detector | attack | misclassified | TPR on misclassified | evades | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, detector in detectors.items():
        t = detector.threshold_
        ok = oblivious.success
        flags = detector.predict(oblivious.x_adv) == 1
        lines.append(
            f"| {kind} | oblivious PGD | {ok.mean():.3f} | "
            f"{flags[ok].mean() if ok.any() else float('nan'):.3f} | {(ok & ~flags).mean():.3f} | "
            f"{oblivious.seconds:.1f} |"
        )
        evaded = np.zeros(len(x), dtype=bool)
        for name, c, all_views in variants:

            def forward(xb, detector=detector, all_views=all_views):
                out = {
                    "logits": logits_fn(xb),
                    "score": detector.score_tensor(xb, wrap_squeezer=wrap),
                }
                if all_views:
                    out["views"] = [logits_fn(wrap(s)(xb)) for s in detector.squeezers]
                return out

            def loss_fn(outputs, yb, t=t, c=c):
                total = capped_margin(outputs["logits"], yb)
                for z in outputs.get("views", []):
                    total = total + capped_margin(z, yb)
                return total - c * ops.relu(outputs["score"] - 0.5 * t) / t

            keras.utils.set_random_seed(0)
            result = attacks.pgd_with_loss(
                forward, x, loss_fn, eps=eps, nb_iter=nb_iter, y=y, seed=0, batch_size=BATCH
            )
            ok = result.y_pred_after != y
            flags = detector.predict(result.x_adv) == 1
            evaded |= ok & ~flags
            timings.append((f"{dataset}: adaptive PGD {name[0]} vs {kind}", result.seconds))
            lines.append(
                f"| {kind} | adaptive PGD {name} | {ok.mean():.3f} | "
                f"{flags[ok].mean() if ok.any() else float('nan'):.3f} | "
                f"{(ok & ~flags).mean():.3f} | {result.seconds:.1f} |"
            )
        lines.append(f"| {kind} | adaptive PGD, A or B | | | **{evaded.mean():.3f}** | |")
    sections.append((f"Adaptive white-box attack: {dataset}", lines))


# --------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Tiny subsets (checks the script).")
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--skip-cifar", action="store_true")
    parser.add_argument("--skip-adaptive", action="store_true")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    start = time.time()
    sections, timings = [], []
    quick = args.quick
    n_val, n_eval = (200, 100) if quick else (1000, 2000)

    if not args.skip_mnist:
        log("MNIST")
        model, x_val, x_eval, y_eval, desc = load_mnist(n_val, n_eval)
        sections.append(("Data: mnist", [desc]))
        detectors, fgsm = detection("mnist", model, x_val, x_eval, y_eval, quick, sections, timings)
        log("MNIST figures")
        figures("mnist", model, x_eval, fgsm, detectors["output"].squeezers[1], sections, quick)
        log("ART")
        art_comparison(model, x_eval[: 200 if quick else 1000], sections, repeats=1 if quick else 3)
        if not args.skip_adaptive:
            log("MNIST adaptive")
            # The last images: the loss variants were tried on MNIST test images 1000..1099.
            n_adv = 40 if quick else 200
            adaptive(
                "mnist",
                model,
                detectors,
                x_eval[-n_adv:],
                y_eval[-n_adv:],
                sections,
                timings,
                quick,
            )

    if not args.skip_cifar and CIFAR_SUBSET.exists():
        log("CIFAR")
        model, x_val, x_eval, y_eval, desc = load_cifar(100 if quick else 500)
        sections.append(("Data: cifar", [desc]))
        detectors, fgsm = detection("cifar", model, x_val, x_eval, y_eval, quick, sections, timings)
        log("CIFAR figures")
        figures("cifar", model, x_eval, fgsm, detectors["output"].squeezers[1], sections, quick)
        if not args.skip_adaptive:
            log("CIFAR adaptive")
            n_adv = 40 if quick else 60
            adaptive(
                "cifar", model, detectors, x_eval[:n_adv], y_eval[:n_adv], sections, timings, quick
            )

    total = time.time() - start
    name = "squeeze_quick.md" if quick else "squeeze.md"
    out = [
        "# Feature squeezing: output score (Xu et al.) vs internal score (Jonas & Evans)",
        "",
        f"Run by `python benchmarks/squeeze.py{' --quick' if quick else ''}` on "
        f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), "
        f"TF {tf.__version__}, Keras {keras.__version__}, {time.strftime('%Y-%m-%d')}; "
        f"{total / 60:.1f} minutes in all.",
        "",
    ]
    for title, lines in sections:
        out += [f"## {title}", "", *lines, ""]
    out += ["## Timings", "", "| step | seconds |", "|---|---|"]
    out += [f"| {step} | {sec:.1f} |" for step, sec in timings]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text("\n".join(out) + "\n")
    log(f"wrote {RESULTS / name} in {total / 60:.1f} min")


if __name__ == "__main__":
    main()
