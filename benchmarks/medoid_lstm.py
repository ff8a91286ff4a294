"""Benchmark: distance-space LSTM detector (Caldelli et al.) vs kNN vs logistic regression.

Measures, in one run, on MNIST-CNN (`load_or_train("mnist_cnn", "mnist",
epochs=5, seed=0)`), every convolution and dense layer tapped with global
average pooling (7 layers: conv1, conv2, conv4, conv5, fc7, fc8,
predictions), exact class medoids from the 60,000 training images
(ground-truth labels):

1. Attacks on the sources (the first `--sources` MNIST test images the
   model classifies correctly), the paper's four groups as in the NIPS 2017
   development toolkit plus PGD and C&W-L2:
   uniform noise +/-16/255 (a control: not an attack), FGSM eps 16/255
   (untargeted), FGSM eps 16/255 targeted at a random class, iterative FGSM
   targeted at the same random class (20 steps of 1/255 inside the 16/255
   ball); the same three at MNIST's usual budget eps 0.3 (iterative: 20
   steps of 0.3/16), since MNIST-CNN is rarely fooled at 16/255;
   PGD-Linf eps 0.3 (40 steps of 0.01, random start), C&W-L2
   (5 binary-search steps x 100 Adam steps, lr 0.05; on the first
   `--cw-sources` sources only). Success rate, mean L2/Linf, time.
2. Protocol (METHODS.md section 7): clean = the sources, adversarial = their
   successful versions (uniform noise excluded: see below). K = 5 random
   80/10/10 train/validation/test splits *by source image* (seeds 0..4;
   an image's clean and adversarial versions never straddle splits);
   thresholds at a target FPR from the clean validation images only.
   Detectors: the LSTM on the L x C distance sequence with and without
   per-layer standardization (paper: Adam, BCE, 100 epochs, batch 100);
   kNN (Carrara et al.) on the best single layer, layer and k chosen on
   validation AUC; logistic regression on the flattened L x C features
   (standardized). Mean ROC (PNG) and AUC +/- std over splits, TPR at
   1/5/10% FPR, AUC per attack.
3. Attack unknown: the detectors trained on one attack (clean + that
   attack), tested on each attack: a matrix of AUCs.
4. Uniform-noise control: share of noisy (not label-changing) images each
   detector flags at 5% FPR.
5. Adaptive white-box attacks on the split-0 standardized LSTM detector,
   sources from that split's test set: (a) PGD (eps 0.3, 100 steps of
   0.01) on a joint loss through the whole differentiable detector,
   `min(margin, 2) - c * relu(score_logit - logit(threshold) + 1)`, for
   several c; (b) feature matching: PGD minimizing the standardized
   distances to the target class's medoids at every layer. TPR at 5% FPR
   before (oblivious PGD) and after, and the same inputs scored by the
   split-0 kNN and logistic regression (transfer).

Writes `benchmarks/results/medoid_lstm_mnist.md`, `medoid_lstm_mnist_roc.png`
and `medoid_lstm_mnist.json` (`medoid_lstm_quick.*` with `--quick`: 8x8
digits, tiny subsets, 5 epochs; checks the script only).

`--dataset cifar10` runs the same protocol on the CIFAR-10 subset
(`../shared/data/cifar10-subset.npz`): `cifar_cnn` trained on 3,200 of its
4,000 images (`_splits.py`, shared with `entropy.py`), medoids from
those 3,200, sources = the held-out 800 images the model gets right. The
attacks keep the paper's four groups at 16/255 (CIFAR's usual scale), PGD at
eps 8/255 (20 steps of 2/255) and C&W; the MNIST-only eps 0.3 variants are
dropped, and the adaptive attacks use eps 8/255. Writes
`medoid_lstm_cifar10.*`.

Usage:
    nice python benchmarks/medoid_lstm.py [--quick] [--dataset mnist|cifar10]
        [--sources 2000] [--cw-sources 500] [--epochs 100] [--folds 5]
        [--cache-dir DIR]
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"
FPRS = (0.01, 0.05, 0.1)
FPR = 0.05
EPS16 = 16 / 255
K_CANDIDATES = (1, 2, 5, 10, 20, 50, 100, 200)
STEPS_PER_EXECUTION = 25


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


class Timer:
    def __init__(self):
        self.rows = []

    def __call__(self, name):
        timer = self

        class _Block:
            def __enter__(self):
                self.start = time.perf_counter()
                self.cpu = time.process_time()
                log(name)

            def __exit__(self, *exc):
                seconds = time.perf_counter() - self.start
                cpu = time.process_time() - self.cpu
                timer.rows.append((name, seconds, cpu))
                log(f"{name}: {seconds:.1f} s wall, {cpu:.1f} s CPU")

        return _Block()


# --------------------------------------------------------------------------
# Data, taps, medoids
# --------------------------------------------------------------------------


def load(quick, n_sources, dataset="mnist"):
    import numpy as np

    from keras_advguard.datasets import load_dataset
    from keras_advguard.models import load_or_train

    if dataset == "cifar10" and not quick:
        from _splits import cifar_split_file

        path = str(cifar_split_file())
        (x_train, y_train), (x_test, y_test) = load_dataset("cifar10", path=path)
        model, info = load_or_train(
            "cifar_cnn", "cifar10", epochs=28, batch_size=32, seed=0, path=path
        )
    elif quick:
        (x_train, y_train), (x_test, y_test) = load_dataset("digits")
        model, info = load_or_train("digits_cnn", "digits", epochs=30)
    else:
        (x_train, y_train), (x_test, y_test) = load_dataset("mnist")
        model, info = load_or_train("mnist_cnn", "mnist", epochs=5, seed=0)
    pred = np.argmax(model.predict(x_test, batch_size=512, verbose=0), axis=1)
    correct = np.flatnonzero(pred == y_test)[:n_sources]
    return model, info, (x_train, y_train), (x_test[correct], y_test[correct], correct)


def run_attacks(model, x, y, args, cache):
    """Every attack on the sources, cached as .npz when `cache` is set."""
    import numpy as np

    from keras_advguard import attacks

    rng = np.random.default_rng(0)
    targets = (y + rng.integers(1, 10, size=len(y))) % 10
    n_cw = min(args.cw_sources, len(x))
    cw_iters = 20 if args.quick else 100
    eps = args.eps
    specs = {
        "noise": (
            "uniform noise +/-16/255",
            lambda: attacks.uniform_noise(model, x, eps=EPS16, y=y, seed=0),
        ),
        "fgsm": (
            "FGSM eps 16/255, untargeted",
            lambda: attacks.fgsm(model, x, eps=EPS16, y=y),
        ),
        "fgsm_target": (
            "FGSM eps 16/255, targeted (random class)",
            lambda: attacks.fgsm(model, x, eps=EPS16, y=targets, targeted=True),
        ),
        "ifgsm_target": (
            "iterative FGSM 20 x 1/255 in 16/255, targeted (same class)",
            lambda: attacks.bim(
                model, x, eps=EPS16, eps_iter=1 / 255, nb_iter=20, y=targets, targeted=True
            ),
        ),
        # The same three groups scaled to MNIST's usual budget (eps 0.3): at
        # 16/255 MNIST-CNN is rarely fooled.
        "fgsm_03": (
            "FGSM eps 0.3, untargeted",
            lambda: attacks.fgsm(model, x, eps=0.3, y=y),
        ),
        "fgsm_target_03": (
            "FGSM eps 0.3, targeted (same random class)",
            lambda: attacks.fgsm(model, x, eps=0.3, y=targets, targeted=True),
        ),
        "ifgsm_target_03": (
            "iterative FGSM 20 x 0.3/16 in 0.3, targeted (same class)",
            lambda: attacks.bim(
                model, x, eps=0.3, eps_iter=0.3 / 16, nb_iter=20, y=targets, targeted=True
            ),
        ),
        "pgd": (
            f"PGD-Linf eps {args.eps_text}, {args.pgd_steps} x {args.eps_iter_text}, random start",
            lambda: attacks.pgd(
                model, x, eps=eps, eps_iter=args.eps_iter, nb_iter=args.pgd_steps, y=y, seed=0
            ),
        ),
        "cw": (
            f"C&W-L2 5 x {cw_iters} Adam steps, lr 0.05 (first {n_cw} sources)",
            lambda: attacks.carlini_wagner_l2(
                model,
                x[:n_cw],
                y=y[:n_cw],
                binary_search_steps=5,
                max_iterations=cw_iters,
                learning_rate=0.05,
            ),
        ),
    }
    if args.dataset == "cifar10":
        for key in ("fgsm_03", "fgsm_target_03", "ifgsm_target_03"):
            del specs[key]  # eps 0.3 is MNIST's scale, not CIFAR's
    results = {}
    for key, (description, run) in specs.items():
        file = None if cache is None else cache / f"{key}.npz"
        if file is not None and file.exists():
            data = np.load(file, allow_pickle=False)
            result = {k: data[k] for k in data.files}
            result["seconds"] = float(result["seconds"])
            log(f"attack {key}: from cache")
        else:
            log(f"attack {key}")
            r = run()
            result = {
                "x_adv": r.x_adv,
                "success": r.success,
                "l2": r.l2,
                "linf": r.linf,
                "y_pred_after": r.y_pred_after,
                "seconds": r.seconds,
            }
            if file is not None:
                np.savez(file, **result)
        result["description"] = description
        result["n"] = len(result["x_adv"])
        results[key] = result
        ok = result["success"].astype(bool)
        log(f"  {key}: success {ok.mean():.3f} ({ok.sum()}/{len(ok)}), {result['seconds']:.1f} s")
    return results, targets


# --------------------------------------------------------------------------
# Detectors on fixed features
# --------------------------------------------------------------------------


def train_lstm(detector_model, distance, features, labels, features_all, epochs, seed):
    """Train a fresh detector on precomputed features; return it and its scores on every row."""
    import keras
    import numpy as np

    from keras_advguard.detectors.medoid_lstm_detector import MedoidLSTMDetector

    keras.utils.set_random_seed(seed)
    detector = MedoidLSTMDetector(detector_model, distance)  # LSTM(100) -> Dense(1)
    sequence = detector.sequence_model()
    sequence.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="binary_crossentropy",
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    sequence.fit(features, labels, epochs=epochs, batch_size=100, shuffle=True, verbose=0)
    return detector, np.asarray(sequence.predict(features_all, batch_size=2048, verbose=0))


def train_logreg(features, labels):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    flat = features.reshape(len(features), -1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    return model.fit(flat, labels)


def auc_of(scores, clean_idx, adv_idx):
    from keras_advguard import metrics

    if len(clean_idx) == 0 or len(adv_idx) == 0:
        return float("nan")
    return metrics.roc_auc(scores[clean_idx], scores[adv_idx])


def knn_select(knn_scores, val_clean, val_adv):
    """(layer, k) with the best validation AUC (smallest k, then earliest layer, on ties)."""
    best, best_auc = None, -1.0
    for layer, by_k in knn_scores.items():
        for k, scores in by_k.items():
            auc = auc_of(scores, val_clean, val_adv)
            if auc > best_auc + 1e-12:
                best, best_auc = (layer, k), auc
    return best, best_auc


def operating_points(scores, val_clean, test_clean, test_adv):
    from keras_advguard import metrics

    report = metrics.detection_report(
        scores[test_clean],
        scores[test_adv],
        fprs=FPRS,
        scores_clean_validation=scores[val_clean],
    )
    return report


def summarize(values):
    import numpy as np

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "n/a"
    return f"{values.mean():.3f} +/- {values.std():.3f}"


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Digits, tiny subsets.")
    parser.add_argument("--sources", type=int, default=None)
    parser.add_argument("--cw-sources", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--folds", type=int, default=None)
    parser.add_argument("--adaptive-sources", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="Keep attack results here.")
    parser.add_argument("--skip-adaptive", action="store_true")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10"])
    args = parser.parse_args()
    quick = args.quick
    if args.dataset == "cifar10":
        args.eps, args.eps_text, args.eps_iter, args.eps_iter_text = (
            8 / 255,
            "8/255",
            2 / 255,
            "2/255",
        )
        args.pgd_steps = 20
    else:
        args.eps, args.eps_text, args.eps_iter, args.eps_iter_text = 0.3, "0.3", 0.01, "0.01"
        args.pgd_steps = 40
    args.sources = args.sources or (150 if quick else 2000)
    args.cw_sources = args.cw_sources or (60 if quick else 500)
    args.epochs = args.epochs or (5 if quick else 100)
    args.folds = args.folds or (2 if quick else 5)
    args.adaptive_sources = args.adaptive_sources or (20 if quick else 200)

    import keras
    import numpy as np

    from keras_advguard import metrics
    from keras_advguard.detector_model import DetectorModel
    from keras_advguard.detectors.class_medoids import ClassMedoids
    from keras_advguard.detectors.knn_detector import KNNDetector
    from keras_advguard.layers.medoid_distance import MedoidDistance

    keras.utils.set_random_seed(0)
    timer = Timer()
    start = time.time()
    cache = None
    if args.cache_dir:
        cache = Path(args.cache_dir) / ("quick" if quick else f"{args.dataset}-{args.sources}")
        cache.mkdir(parents=True, exist_ok=True)

    with timer("load data and model"):
        model, info, (x_train, y_train), (x_src, y_src, src_ids) = load(
            quick, args.sources, args.dataset
        )
        taps = DetectorModel(model, layers="conv+dense", pooling="avg")
    names = taps.tap_names
    log("taps:", names)

    with timer("training-set activations"):
        train_out = taps.predict(x_train, batch_size=512, verbose=0)
        train_acts = {n: train_out["activations"][n] for n in names}
    medoid_file = None if cache is None else cache / "medoids.npz"
    medoid_stage = "exact class medoids (ClassMedoids, all training images)"
    if medoid_file is not None and medoid_file.exists():
        with np.load(medoid_file, allow_pickle=False) as data:
            medoids = {n: data[n] for n in names}
            wall, cpu = data["__seconds__"].tolist()
        timer.rows.append((medoid_stage + ", earlier run (cached)", wall, cpu))
        log("medoids: from cache")
    else:
        with timer(medoid_stage):
            medoids = ClassMedoids().fit(train_acts, y_train).medoids_
        if medoid_file is not None:
            np.savez(medoid_file, __seconds__=np.array(timer.rows[-1][1:]), **medoids)
    distance_raw = MedoidDistance.from_medoids(medoids)
    distance_std = MedoidDistance.from_medoids(medoids, standardize=True)
    with timer("standardization statistics (adapt)"):
        distance_std.adapt(train_acts)

    cached = cache is not None and all(
        (cache / f"{key}.npz").exists() for key in ("noise", "pgd", "cw")
    )
    stage = "attacks" + (" (loaded from the cache: times in the Attacks table)" if cached else "")
    with timer(stage):
        results, targets = run_attacks(model, x_src, y_src, args, cache)

    # ---- Sample table: clean sources + successful adversarial versions ----
    attack_keys = [k for k in results if k != "noise"]
    xs, is_adv, group, kind = (
        [x_src],
        [np.zeros(len(x_src), bool)],
        [np.arange(len(x_src))],
        [np.array(["clean"] * len(x_src), dtype=object)],
    )
    for key in attack_keys:
        ok = np.flatnonzero(results[key]["success"].astype(bool))
        xs.append(results[key]["x_adv"][ok])
        is_adv.append(np.ones(len(ok), bool))
        group.append(ok)
        kind.append(np.array([key] * len(ok), dtype=object))
    x_all = np.concatenate(xs)
    is_adv = np.concatenate(is_adv)
    group = np.concatenate(group)
    kind = np.concatenate(kind)
    noise_x = results["noise"]["x_adv"]
    noise_ok = results["noise"]["success"].astype(bool)
    log(f"samples: {int((~is_adv).sum())} clean, {int(is_adv.sum())} adversarial")

    with timer("activations and features of every sample"):
        out = taps.predict(np.concatenate([x_all, noise_x]), batch_size=512, verbose=0)
        acts_all = [out["activations"][n] for n in names]
        pred_all = np.argmax(out["prediction"], axis=1)

        def feats(distance):
            chunks = []
            for s in range(0, len(pred_all), 2048):
                chunks.append(np.asarray(distance([a[s : s + 2048] for a in acts_all])))
            return np.concatenate(chunks)

        feats_all = {"raw": feats(distance_raw), "std": feats(distance_std)}
    n_main = len(x_all)
    noise_rows = np.arange(n_main, n_main + len(noise_x))

    with timer("kNN neighbour search, every layer (k up to 200)"):
        knn_models, knn_scores = {}, {}
        for i, n in enumerate(names):
            knn = KNNDetector().fit_activations(train_acts[n], y_train)
            ks = [k for k in K_CANDIDATES if k <= len(y_train)]
            knn_models[n] = knn
            knn_scores[n] = knn.scores_by_k(acts_all[i], pred_all, ks)

    # ---- Splits ----
    splits = [
        metrics.train_val_test_split_by_group(group, (0.8, 0.1, 0.1), seed=f)
        for f in range(args.folds)
    ]

    def parts(split, allowed=None):
        train, val, test = split
        keep = np.ones(n_main, bool) if allowed is None else np.isin(kind, ["clean", *allowed])
        out = {}
        for name, idx in (("train", train), ("val", val), ("test", test)):
            idx = idx[keep[idx]]
            out[name] = idx
            out[name + "_clean"] = idx[~is_adv[idx]]
            out[name + "_adv"] = idx[is_adv[idx]]
        return out

    # ---- Main comparison ----
    detectors = ["LSTM, standardized", "LSTM, raw distances", "kNN, best layer", "LogReg on L x C"]
    scores_by = {d: [] for d in detectors}
    reports = {d: [] for d in detectors}
    per_attack = {d: {k: [] for k in attack_keys} for d in detectors}
    noise_flag = {d: [] for d in detectors}
    knn_choice, per_layer_auc = [], {n: [] for n in names}
    test_counts = {k: [] for k in attack_keys}
    fold0 = {}

    def noise_flag_rate(scores, threshold, p):
        """Share of the test sources' noisy images (label unchanged) scoring above threshold."""
        test_src = np.unique(group[p["test_clean"]])
        rows = noise_rows[test_src][~noise_ok[test_src]]
        return float(np.mean(scores[rows] > threshold)) if len(rows) else float("nan")

    flat_raw = feats_all["raw"].reshape(len(pred_all), -1)
    with timer(f"main comparison, {args.folds} splits"):
        for f, split in enumerate(splits):
            p = parts(split)
            fold_scores = {}
            for variant, label, distance in (
                ("std", detectors[0], distance_std),
                ("raw", detectors[1], distance_raw),
            ):
                det, fold_scores[label] = train_lstm(
                    taps,
                    distance,
                    feats_all[variant][p["train"]],
                    is_adv[p["train"]].astype("float32"),
                    feats_all[variant],
                    args.epochs,
                    seed=f,
                )
                if f == 0 and variant == "std":
                    fold0["lstm"] = det
            (layer, k), _ = knn_select(knn_scores, p["val_clean"], p["val_adv"])
            knn_choice.append((layer, k))
            fold_scores[detectors[2]] = knn_scores[layer][k]
            for n in names:
                (_, k_n), _ = knn_select({n: knn_scores[n]}, p["val_clean"], p["val_adv"])
                per_layer_auc[n].append(auc_of(knn_scores[n][k_n], p["test_clean"], p["test_adv"]))
            logreg = train_logreg(feats_all["raw"][p["train"]], is_adv[p["train"]])
            fold_scores[detectors[3]] = logreg.predict_proba(flat_raw)[:, 1]
            if f == 0:
                fold0.update(logreg=logreg, knn=(layer, k), split=p)
            for d in detectors:
                s = fold_scores[d]
                scores_by[d].append((s[p["test_clean"]], s[p["test_adv"]]))
                report = operating_points(s, p["val_clean"], p["test_clean"], p["test_adv"])
                reports[d].append(report)
                for key in attack_keys:
                    adv_k = p["test_adv"][kind[p["test_adv"]] == key]
                    per_attack[d][key].append(auc_of(s, p["test_clean"], adv_k))
                    if d == detectors[0]:
                        test_counts[key].append(len(adv_k))
                noise_flag[d].append(noise_flag_rate(s, report["at_fpr"][FPR]["threshold"], p))
            log(
                f"split {f}: "
                + ", ".join(f"{d}: {reports[d][-1]['auc']:.4f}" for d in detectors)
                + f"; kNN layer {layer}, k={k}"
            )

    # ---- Mean ROC figure ----
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_advguard.plots import plot_mean_roc

    suffix = "quick" if quick else args.dataset
    title = "CIFAR-10 subset" if args.dataset == "cifar10" else "MNIST-CNN"
    png = RESULTS / f"medoid_lstm_{suffix}_roc.png"
    figure, axes = plt.subplots(1, 2, figsize=(12.0, 5.6))
    for ax, log_scale in zip(axes, (False, True), strict=True):
        for d in detectors:
            plot_mean_roc(scores_by[d], ax=ax, name=d, plot_chance_level=d == detectors[-1])
        if log_scale:
            ax.set_xscale("log")
            ax.set_xlim(1e-3, 1.0)
            ax.set_title("Same, log-scale FPR")
            ax.get_legend().remove()
        else:
            ax.set_title(f"Mean ROC over {args.folds} splits ({title}, all attacks)")
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)

    # ---- Attack unknown ----
    trainable = [k for k in attack_keys if results[k]["success"].sum() >= (5 if quick else 100)]
    unknown = {
        d: {a: {b: [] for b in attack_keys} for a in trainable}
        for d in detectors[:1] + detectors[2:]
    }
    with timer(f"attack unknown: train on each of {trainable}"):
        for f, split in enumerate(splits):
            for a in trainable:
                p = parts(split, allowed=[a])
                if len(p["train_adv"]) == 0 or len(p["val_adv"]) == 0:
                    continue  # too few successes of this attack in this split
                _, lstm_scores = train_lstm(
                    taps,
                    distance_std,
                    feats_all["std"][p["train"]],
                    is_adv[p["train"]].astype("float32"),
                    feats_all["std"],
                    args.epochs,
                    seed=100 + f,
                )
                (layer, k), _ = knn_select(knn_scores, p["val_clean"], p["val_adv"])
                logreg = train_logreg(feats_all["raw"][p["train"]], is_adv[p["train"]])
                lr_scores = logreg.predict_proba(flat_raw)[:, 1]
                full = parts(split)
                for d, s in (
                    (detectors[0], lstm_scores),
                    (detectors[2], knn_scores[layer][k]),
                    (detectors[3], lr_scores),
                ):
                    for b in attack_keys:
                        adv_b = full["test_adv"][kind[full["test_adv"]] == b]
                        unknown[d][a][b].append(auc_of(s, full["test_clean"], adv_b))
            log(f"attack unknown split {f} done")

    # ---- Adaptive white-box ----
    adaptive_lines = []
    if not args.skip_adaptive:
        with timer("adaptive white-box attacks"):
            adaptive_lines = adaptive(
                SimpleNamespace(
                    fold0=fold0,
                    feats_all=feats_all,
                    group=group,
                    x_src=x_src,
                    y_src=y_src,
                    targets=targets,
                    results=results,
                    knn_models=knn_models,
                    knn_scores=knn_scores,
                    taps=taps,
                    names=names,
                    distance_raw=distance_raw,
                ),
                args,
            )

    total = time.time() - start
    write_report(
        args,
        info,
        names,
        medoids,
        results,
        attack_keys,
        detectors,
        reports,
        per_attack,
        noise_flag,
        noise_ok,
        knn_choice,
        per_layer_auc,
        trainable,
        unknown,
        test_counts,
        adaptive_lines,
        timer.rows,
        total,
        png,
        suffix,
        is_adv,
        np,
    )


def adaptive(ctx, args):
    """Adaptive white-box attacks on the split-0 standardized LSTM detector."""
    import numpy as np
    import tensorflow as tf

    from keras_advguard import attacks, metrics

    fold0, feats_all, knn_scores, names = ctx.fold0, ctx.feats_all, ctx.knn_scores, ctx.names
    detector = fold0["lstm"]
    p = fold0["split"]
    layer, k = fold0["knn"]
    logreg = fold0["logreg"]
    s_val_clean = np.asarray(
        detector.sequence_model().predict(feats_all["std"][p["val_clean"]], verbose=0)
    )
    threshold = float(metrics.threshold_at_fpr(s_val_clean, FPR))
    t_logit = float(np.log(max(threshold, 1e-6) / max(1 - threshold, 1e-6)))
    knn_val = knn_scores[layer][k][p["val_clean"]]
    knn_threshold = float(metrics.threshold_at_fpr(knn_val, FPR))
    lr_val = logreg.predict_proba(
        feats_all["raw"][p["val_clean"]].reshape(len(p["val_clean"]), -1)
    )[:, 1]
    lr_threshold = float(metrics.threshold_at_fpr(lr_val, FPR))

    sources = np.unique(ctx.group[p["test_clean"]])[: args.adaptive_sources]
    x, y, t = ctx.x_src[sources], ctx.y_src[sources], ctx.targets[sources]
    n_iter = 20 if args.quick else 100

    def transfer(x_adv, ok):
        """Flags of the three detectors on x_adv (successful rows only)."""
        out = ctx.taps.predict(x_adv, batch_size=256, verbose=0)
        acts = [out["activations"][n] for n in names]
        pred = np.argmax(out["prediction"], axis=1)
        lstm = detector.predict(x_adv, batch_size=256, verbose=0) > threshold
        knn = ctx.knn_models[layer].score_activations(acts[names.index(layer)], pred, k)
        knn = knn > knn_threshold
        feats = np.asarray(ctx.distance_raw(acts))
        lr = logreg.predict_proba(feats.reshape(len(feats), -1))[:, 1] > lr_threshold
        return {
            name: (float(v[ok].mean()) if ok.any() else float("nan"))
            for name, v in (("lstm", lstm), ("knn", knn), ("lr", lr))
        }

    lines = [
        f"Detector: the split-0 standardized LSTM; threshold {threshold:.4f} at {FPR:.0%} FPR "
        f"on split 0's clean validation images. Sources: {len(sources)} clean test images of "
        f"split 0. Transfer columns: the same inputs against the split-0 kNN (layer {layer}, "
        f"k={k}) and logistic regression at their own 5% FPR thresholds.",
        "",
        "| attack | classifier fooled | LSTM TPR at 5% FPR (fooled only) | fooled and undetected "
        "| kNN TPR | LogReg TPR | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    # Before: the oblivious PGD of the main run on the same sources.
    pgd = ctx.results["pgd"]
    ok = pgd["success"].astype(bool)[sources]
    x_pgd = pgd["x_adv"][sources]
    flags = transfer(x_pgd, ok)
    undetected = ok & ~(detector.predict(x_pgd, verbose=0) > threshold)
    lines.append(
        f"| oblivious PGD eps {args.eps_text} (before) | {ok.mean():.3f} | {flags['lstm']:.3f} | "
        f"{undetected.mean():.3f} | {flags['knn']:.3f} | {flags['lr']:.3f} | - |"
    )

    def forward(xb):
        return detector.call_with_details(xb)

    evaded_any = np.zeros(len(sources), bool)
    for c in (0.1, 1.0, 10.0, 100.0):

        def joint_loss(outputs, yb, c=c):
            logits = tf.cast(outputs["logits"], tf.float32)
            true = tf.one_hot(tf.cast(yb, tf.int32), tf.shape(logits)[-1])
            other = tf.reduce_max(logits - 1e9 * true, axis=-1)
            margin = other - tf.reduce_sum(logits * true, axis=-1)
            penalty = tf.nn.relu(outputs["score_logit"] - t_logit + 1.0)
            return tf.minimum(margin, 2.0) - c * penalty

        r = attacks.pgd_with_loss(
            forward,
            x,
            joint_loss,
            eps=args.eps,
            eps_iter=args.eps_iter,
            nb_iter=n_iter,
            y=y,
            seed=0,
        )
        ok = r.y_pred_after != y
        flags = transfer(r.x_adv, ok)
        undetected = ok & ~(detector.predict(r.x_adv, verbose=0) > threshold)
        evaded_any |= undetected
        lines.append(
            f"| adaptive PGD, joint loss c={c:g} | {ok.mean():.3f} | {flags['lstm']:.3f} | "
            f"{undetected.mean():.3f} | {flags['knn']:.3f} | {flags['lr']:.3f} | {r.seconds:.1f} |"
        )

    def feature_matching(outputs, tb):
        f = outputs["features"]  # standardized distances (B, L, C)
        onehot = tf.one_hot(tf.cast(tb, tf.int32), tf.shape(f)[-1])[:, None, :]
        return -tf.reduce_sum(f * onehot, axis=[1, 2])

    r = attacks.pgd_with_loss(
        forward,
        x,
        feature_matching,
        eps=args.eps,
        eps_iter=args.eps_iter,
        nb_iter=n_iter,
        y=t,
        seed=0,
    )
    ok = r.y_pred_after == t
    flags = transfer(r.x_adv, ok)
    undetected = ok & ~(detector.predict(r.x_adv, verbose=0) > threshold)
    evaded_any |= undetected
    lines.append(
        f"| feature matching to the target's medoids (fooled = target reached) | {ok.mean():.3f} "
        f"| {flags['lstm']:.3f} | {undetected.mean():.3f} | {flags['knn']:.3f} | "
        f"{flags['lr']:.3f} | {r.seconds:.1f} |"
    )
    lines.append(
        f"| any of the adaptive attacks above, per source | | | **{evaded_any.mean():.3f}** | | | |"
    )
    return lines


def write_report(
    args,
    info,
    names,
    medoids,
    results,
    attack_keys,
    detectors,
    reports,
    per_attack,
    noise_flag,
    noise_ok,
    knn_choice,
    per_layer_auc,
    trainable,
    unknown,
    test_counts,
    adaptive_lines,
    timings,
    total,
    png,
    suffix,
    is_adv,
    np,
):
    quick = args.quick
    lines = [
        "# Distance-space LSTM detector (Caldelli et al.) on "
        + (
            "8x8 digits (quick check)"
            if quick
            else "the CIFAR-10 subset (`cifar_cnn`)"
            if args.dataset == "cifar10"
            else "MNIST-CNN"
        ),
        "",
        f"Run by `python benchmarks/medoid_lstm.py{' --quick' if quick else ''}"
        f"{' --dataset cifar10' if args.dataset == 'cifar10' else ''}` on "
        f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs; "
        f"total {total / 60:.1f} min.",
        "",
        "## Setup",
        "",
        (
            "8x8 digits and `digits_cnn` (quick check of the script; numbers meaningless)."
            if quick
            else f"`cifar_cnn` trained 28 epochs (batch 32, seed 0) on 3,200 of the 4,000 "
            f"CIFAR-10 subset images; accuracy {info['test_accuracy']:.4f} on the 800 held-out "
            f"images. Taps {', '.join(names)} (global average pooling), exact L2 medoids of "
            "the 3,200 training images per class (ground-truth labels). Sources come from "
            "the 800 held-out images, so few: every split's test set is small and the spread "
            "is wide."
            if args.dataset == "cifar10"
            else f"`mnist_cnn` (test accuracy {info['test_accuracy']:.4f}), taps "
            f"{', '.join(names)} (global average pooling), exact L2 medoids of the 60,000 "
            "training images per class (ground-truth labels)."
        ),
        f"Sources: the first {results['fgsm']['n']} test images the classifier gets right. "
        f"LSTM: `LSTM(100) -> Dense(1, sigmoid)`, Adam 1e-3, binary cross-entropy, "
        f"{args.epochs} epochs, batch 100, trained on precomputed features through "
        "`MedoidLSTMDetector.sequence_model()` (same weights as the detector; the classifier "
        "is frozen either way, so this is the same training without running it every epoch). "
        f"{args.folds} random 80/10/10 splits by source image (seeds 0..{args.folds - 1}); "
        "thresholds from clean validation images. kNN: k in "
        f"{list(K_CANDIDATES)}, layer and k chosen per split on validation AUC, uniform "
        "weights, the classifier's training activations as the reference set. LogReg: "
        "`StandardScaler + LogisticRegression` on the flattened L x C raw distances.",
        "",
        "## Attacks",
        "",
        "| key | attack | sources | success | mean L2 | mean Linf | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        ok = r["success"].astype(bool)
        l2 = float(np.mean(r["l2"][ok])) if ok.any() else float("nan")
        linf = float(np.mean(r["linf"][ok])) if ok.any() else float("nan")
        lines.append(
            f"| {key} | {r['description']} | {r['n']} | {ok.mean():.3f} ({ok.sum()}) | "
            f"{l2:.3f} | {linf:.3f} | {r['seconds']:.1f} |"
        )
    lines += [
        "",
        f"Samples: {int((~is_adv).sum())} clean, {int(is_adv.sum())} successful adversarial "
        "(uniform noise excluded: it is the control below).",
        "",
        f"## All attacks mixed: mean over {args.folds} splits (+/- std)",
        "",
        "| detector | ROC AUC | TPR at 1% FPR | TPR at 5% FPR | TPR at 10% FPR "
        "| achieved FPR at 5% |",
        "|---|---|---|---|---|---|",
    ]
    for d in detectors:
        rows = reports[d]
        lines.append(
            f"| {d} | {summarize([r['auc'] for r in rows])} | "
            + " | ".join(summarize([r["at_fpr"][fpr]["tpr"] for r in rows]) for fpr in FPRS)
            + f" | {summarize([r['at_fpr'][FPR]['fpr'] for r in rows])} |"
        )
    lines += [
        "",
        f"![mean ROC]({png.name})",
        "",
        "kNN layer and k chosen per split: "
        + ", ".join(f"{layer} k={k}" for layer, k in knn_choice)
        + ". kNN test AUC per layer (k chosen on validation for that layer): "
        + ", ".join(f"{n} {summarize(per_layer_auc[n])}" for n in names)
        + ".",
        "",
        "### AUC per attack (test clean vs that attack's test adversarial images)",
        "",
        "| detector | " + " | ".join(attack_keys) + " |",
        "|---|" + "---|" * len(attack_keys),
    ]
    for d in detectors:
        lines.append(
            f"| {d} | " + " | ".join(summarize(per_attack[d][k]) for k in attack_keys) + " |"
        )
    lines.append(
        "| *test images per split (mean)* | "
        + " | ".join(f"{np.mean(test_counts[k]):.1f}" for k in attack_keys)
        + " |"
    )
    lines += [
        "",
        "## Uniform-noise control",
        "",
        f"Uniform noise +/-16/255 changed the label of {int(noise_ok.sum())} of "
        f"{len(noise_ok)} sources. Share of the noisy images of each split's test sources "
        "(label unchanged) flagged at the 5% FPR threshold (a false alarm on benign noise; "
        "5% would be chance):",
        "",
        "| detector | flagged |",
        "|---|---|",
    ]
    for d in detectors:
        lines.append(f"| {d} | {summarize(noise_flag[d])} |")
    lines += [
        "",
        "## Attack unknown: train on one attack (rows), test on each (columns)",
        "",
        f"Mean test AUC over {args.folds} splits; attacks with fewer than "
        f"{5 if quick else 100} successes are not used for training. Off-diagonal = "
        "attack unknown.",
    ]
    for d, matrix in unknown.items():
        lines += [
            "",
            f"**{d}**",
            "",
            "| train \\ test | " + " | ".join(attack_keys) + " |",
            "|---|" + "---|" * len(attack_keys),
        ]
        off = []
        for a in trainable:
            cells = []
            for b in attack_keys:
                values = np.asarray(matrix[a][b], float)
                mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
                cells.append(f"{mean:.3f}")
                if a != b and np.isfinite(mean):
                    off.append(mean)
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines += ["", f"Mean off-diagonal AUC: {np.mean(off):.3f}" if off else ""]
    if adaptive_lines:
        lines += ["", "## Adaptive white-box attacks", "", *adaptive_lines]
    lines += [
        "",
        "## Timings",
        "",
        "Wall-clock and CPU seconds (process time, all threads) of each stage; the two "
        "cores were shared with other jobs, so wall-clock time overstates the cost.",
        "",
        "| stage | wall (s) | CPU (s) |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {wall:.1f} | {cpu:.1f} |" for name, wall, cpu in timings]
    out = RESULTS / f"medoid_lstm_{suffix}.md"
    out.write_text("\n".join(lines) + "\n")
    raw = {
        "reports": reports,
        "per_attack": per_attack,
        "noise_flag": noise_flag,
        "knn_choice": [[layer, int(k)] for layer, k in knn_choice],
        "per_layer_knn_auc": per_layer_auc,
        "attack_unknown": unknown,
        "timings": timings,
    }
    (RESULTS / f"medoid_lstm_{suffix}.json").write_text(
        json.dumps(raw, indent=1, default=float) + "\n"
    )
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
