"""Benchmark: the feature-response entropy detector (Amirian et al., Table 1).

Measures, in one run, for MNIST-CNN and the CIFAR-10 subset model:

1. Table 1 of the paper: per attack (FGSM, gradient attack, one-pixel,
   DeepFool, boundary, plus PGD and C&W-L2) the number of images attacked,
   the attack success rate, the mean ground-truth and target (predicted)
   confidence after a successful attack, the detector's TPR at FPR 1/5/10%
   (thresholds from clean *validation* images, never the test images) and
   its ROC AUC. The paper's VGG19 / ImageNet figures are printed next to ours.
2. An adaptive white-box attack (METHODS.md section 7): PGD on a joint loss
   (`attacks.pgd_with_loss`) that fools the classifier and pushes the
   detector's score below its 5%-FPR threshold, through the detector's
   `differentiable_score` (exact second-order gradient of the guided
   response, BPDA through the rounding to gray levels, a soft histogram in
   place of the level counts). TPR at 5% FPR before (oblivious PGD, same
   images, same ball) and after.
3. Cost: detector scoring time / plain `model.predict` time, same inputs.

Data and models:

- MNIST: `load_or_train("mnist_cnn", "mnist", epochs=5)` (cached, 99.29%).
  The 10,000 test images are shuffled with seed 0. Test images: the first
  500 of them it classifies correctly. Calibration (clean validation): the
  correctly classified images among shuffled images 5,000-5,999, disjoint
  from the test images and never attacked.
- CIFAR-10 subset (`shared/data/cifar10-subset.npz`, 4,000 training images,
  20 test images): a stratified 20% of the 4,000 images is held out
  (`validation_split(..., fraction=0.2, seed=0)`, 800 images) and
  `cifar_cnn` is trained on the other 3,200 with the recipe of
  `docs/datasets_and_models.md` (28 epochs, batch 32, seed 0) through
  `load_or_train(..., path=<derived .npz>)`. The shared cached model
  (`cifar_cnn-cifar10-e28-b32-s0`) is not used: it was trained on all 4,000
  images, so none of them is held out for it. The first 400 held-out images
  are the calibration set, the other 400 the test pool (correctly classified
  ones only).

Writes `benchmarks/results/entropy.md` (`entropy_quick.md` with `--quick`).

Usage:
    python benchmarks/entropy.py [--quick] [--datasets mnist cifar]
"""

import argparse
import os
import platform
import time
from pathlib import Path

from _splits import cifar_split_file  # noqa: E402  (benchmarks/ is on sys.path)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FPRS = (0.01, 0.05, 0.1)

# Amirian et al., Table 1 (VGG19, ImageNet validation set): TPR at FPR 1/5/10%.
PAPER = {
    "FGSM": (0.954, 0.974, 0.983),
    "gradient attack": (0.922, 0.954, 0.969),
    "one pixel": (0.917, 0.951, 0.966),
    "DeepFool": (0.936, 0.963, 0.976),
    "boundary": (0.934, 0.960, 0.972),
}
PAPER_SUCCESS = {
    "FGSM": (0.925, 0.022, 0.588),
    "gradient attack": (0.499, 0.052, 0.371),
    "one pixel": (0.620, 0.037, 0.463),
    "DeepFool": (0.606, 0.041, 0.446),
    "boundary": (0.940, 0.023, 0.583),
}


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


# --------------------------------------------------------------------------
# Data and models
# --------------------------------------------------------------------------


def _correct(model, x, y):
    import numpy as np

    pred = np.argmax(model.predict(x, batch_size=256, verbose=0), axis=1)
    return pred == y


def setup_mnist(n_test, n_val):
    import numpy as np

    from keras_advguard.datasets import load_dataset
    from keras_advguard.models import load_or_train

    path = SHARED_DATA / "mnist.npz"
    path = str(path) if path.exists() else None
    model, info = load_or_train("mnist_cnn", "mnist", epochs=5, seed=0, path=path)
    _, (x, y) = load_dataset("mnist", path=path)
    # A seeded random split of the 10,000 test images: the two halves of the
    # MNIST test set come from different writers (SD-3 and SD-1), so taking
    # the calibration images from one half and the test images from the
    # other would shift the clean score distribution between them.
    order = np.random.default_rng(0).permutation(len(x))
    pool = order[: 2 * n_test]
    keep = pool[_correct(model, x[pool], y[pool])][:n_test]
    val = order[5000 : 5000 + n_val]
    val = val[_correct(model, x[val], y[val])]
    return {
        "name": "MNIST",
        "model": model,
        "info": info,
        "x": x[keep],
        "y": y[keep],
        "x_val": x[val],
        "n_val_total": n_val,
        "describe": (
            f"`mnist_cnn` (C&W architecture) from `load_or_train('mnist_cnn', "
            f"'mnist', epochs=5)`, test accuracy {info['test_accuracy']:.4f}. The "
            "10,000 MNIST test images are shuffled (`numpy.random.default_rng(0)"
            f".permutation`). Test images: the first {len(keep)} of the shuffled "
            f"images it classifies correctly. Calibration: the {len(val)} "
            f"correctly classified of shuffled images 5,000-{5000 + n_val - 1} "
            "(disjoint from the test images, never attacked)."
        ),
    }


def setup_cifar(n_test):
    from keras_advguard.datasets import load_dataset
    from keras_advguard.models import load_or_train

    path = str(cifar_split_file())
    t0 = time.perf_counter()
    model, info = load_or_train("cifar_cnn", "cifar10", epochs=28, batch_size=32, seed=0, path=path)
    log(
        f"cifar_cnn ready in {time.perf_counter() - t0:.0f} s "
        f"(from cache: {info['from_cache']}), held-out accuracy "
        f"{info['test_accuracy']:.3f}"
    )
    _, (x_held, y_held) = load_dataset("cifar10", path=path)
    half = len(x_held) // 2
    x_val, y_val = x_held[:half], y_held[:half]
    x_pool, y_pool = x_held[half:], y_held[half:]
    ok_val = _correct(model, x_val, y_val)
    ok = _correct(model, x_pool, y_pool)
    x, y = x_pool[ok][:n_test], y_pool[ok][:n_test]
    return {
        "name": "CIFAR-10 subset",
        "model": model,
        "info": info,
        "x": x,
        "y": y,
        "x_val": x_val[ok_val],
        "n_val_total": half,
        "describe": (
            f"`cifar_cnn` trained on 3,200 of the 4,000 subset images (28 epochs, "
            f"batch 32, seed 0; {info['train_seconds'] or 'cached'} s), accuracy "
            f"{info['test_accuracy']:.3f} on the 800 held-out images. Test images: "
            f"the {len(x)} correctly classified of held-out images 400-799. "
            f"Calibration: the {int(ok_val.sum())} correctly classified of "
            "held-out images 0-399."
        ),
    }


# --------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------


def attack_plan(dataset, quick):
    """(name, setting, n images, function(model, x, y) -> AttackResult)."""
    from keras_advguard import attacks

    mnist = dataset == "MNIST"
    eps_inf = 0.3 if mnist else 8 / 255
    grad_l2 = 4.0 if mnist else 2.0
    cw_lr = 0.05 if mnist else 0.01
    small = 20 if quick else 100
    pop, gens = (20, 3) if quick else (100, 20)
    boundary_steps = 100 if quick else 2000
    cw_steps = 10 if quick else 100
    extra = []
    if not mnist:
        # A much larger step than the usual 8/255, to see whether the
        # detector separates anything on this model when the noise is big.
        extra.append(
            (
                "FGSM (large eps)",
                "Linf eps 0.1",
                None,
                lambda m, x, y: attacks.fgsm(m, x, eps=0.1, y=y),
            )
        )
    return [
        (
            "FGSM",
            f"Linf eps {eps_inf:.3g}",
            None,
            lambda m, x, y: attacks.fgsm(m, x, eps=eps_inf, y=y),
        ),
        (
            "gradient attack",
            f"L2 <= {grad_l2:g}, 10 sizes",
            None,
            lambda m, x, y: attacks.gradient_attack(m, x, eps=grad_l2, steps=10, y=y),
        ),
        (
            "one pixel",
            f"1 pixel, population {pop}, {gens} generations",
            small,
            lambda m, x, y: attacks.one_pixel(
                m, x, pixels=1, population=pop, maxiter=gens, y=y, seed=0
            ),
        ),
        (
            "DeepFool",
            "L2, overshoot 0.02, 50 iterations",
            None,
            lambda m, x, y: attacks.deepfool(m, x, norm=2, y=y),
        ),
        (
            "boundary",
            f"{boundary_steps} steps",
            small,
            lambda m, x, y: attacks.boundary(m, x, steps=boundary_steps, y=y, seed=0),
        ),
        (
            "PGD",
            f"Linf eps {eps_inf:.3g}, 40 steps, random start",
            None,
            lambda m, x, y: attacks.pgd(m, x, eps=eps_inf, nb_iter=40, y=y),
        ),
        (
            "C&W L2",
            f"5 x {cw_steps} Adam steps, lr {cw_lr:g}",
            None,
            lambda m, x, y: attacks.carlini_wagner_l2(
                m, x, y=y, binary_search_steps=5, max_iterations=cw_steps, learning_rate=cw_lr
            ),
        ),
    ] + extra


def table_rows(setup, detector, quick):
    import keras
    import numpy as np

    from keras_advguard import metrics

    model, x, y = setup["model"], setup["x"], setup["y"]
    plan = attack_plan(setup["name"], quick)
    keras.utils.set_random_seed(0)
    scores_val = detector.score(setup["x_val"])
    scores_clean = detector.score(x)
    rows, adv_scores, adv_images = [], {}, {}
    for name, setting, n, run in plan:
        xs, ys = (x, y) if n is None else (x[:n], y[:n])
        t0 = time.perf_counter()
        result = run(model, xs, ys)
        seconds = time.perf_counter() - t0
        sets = metrics.evaluation_sets(ys, result.y_pred_before, result.y_pred_after)
        x_adv = result.x_adv[sets.adversarial_index]
        row = {
            "attack": name,
            "setting": setting,
            "n": len(xs),
            "n_adv": sets.n_adversarial,
            "success": sets.n_adversarial / max(sets.n_clean, 1),
            "seconds": seconds,
            "l2": float(np.mean(result.l2[sets.adversarial_index]))
            if sets.n_adversarial
            else float("nan"),
        }
        if sets.n_adversarial:
            probs = model.predict(x_adv, batch_size=256, verbose=0)
            idx = np.arange(len(x_adv))
            row["gt_conf"] = float(np.mean(probs[idx, ys[sets.adversarial_index]]))
            row["target_conf"] = float(np.mean(probs[idx, np.argmax(probs, axis=1)]))
            s_adv = detector.score(x_adv)
            adv_scores[name] = s_adv
            report = metrics.detection_report(
                scores_clean, s_adv, FPRS, scores_clean_validation=scores_val
            )
            row["tpr"] = [report["at_fpr"][f]["tpr"] for f in FPRS]
            row["fpr_test"] = [report["at_fpr"][f]["fpr"] for f in FPRS]
            row["auc"] = report["auc"]
            row["mean_entropy_adv"] = float(np.mean(s_adv))
            if name in ABLATION_ATTACKS:
                adv_images[name] = x_adv
        rows.append(row)
        log(
            f"{setup['name']} {name}: {row['n_adv']}/{row['n']} adversarial, "
            f"TPR@5% {row.get('tpr', [None] * 3)[1]}, AUC {row.get('auc')}, "
            f"{seconds:.1f} s"
        )
    return rows, scores_clean, scores_val, adv_images


# --------------------------------------------------------------------------
# Ablation: number of gray levels
# --------------------------------------------------------------------------

ABLATION_ATTACKS = ("FGSM", "PGD")
ABLATION_LEVELS = (4, 16, 64, 256, 1024)


def levels_ablation(setup, detector, adv_images):
    """AUC and TPR at 5% FPR of the score with other numbers of gray levels."""
    from keras_advguard import metrics
    from keras_advguard.detectors.local_spatial_entropy import entropy_score

    responses = {"val": setup["x_val"], "clean": setup["x"], **adv_images}
    responses = {k: detector.feature_response(v) for k, v in responses.items()}
    out = []
    for levels in ABLATION_LEVELS:
        s = {k: entropy_score(r, detector.patch, levels).numpy() for k, r in responses.items()}
        row = {"levels": levels}
        for name in adv_images:
            report = metrics.detection_report(
                s["clean"], s[name], [0.05], scores_clean_validation=s["val"]
            )
            row[name] = (report["auc"], report["at_fpr"][0.05]["tpr"])
        out.append(row)
    return out


# --------------------------------------------------------------------------
# Adaptive white-box attack
# --------------------------------------------------------------------------


def adaptive(setup, detector, n, lambdas, steps, quick):
    """Oblivious PGD vs PGD on `-margin - lam * relu(score - (t - 0.05))`."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_advguard import DetectorModel, attacks

    model, x, y = setup["model"], setup["x"][:n], setup["y"][:n]
    eps = 0.3 if setup["name"] == "MNIST" else 8 / 255
    eps_iter = eps / 30
    threshold = detector.threshold_  # 5% FPR, from the clean validation images
    keras.utils.set_random_seed(0)
    oblivious = attacks.pgd(model, x, eps=eps, nb_iter=40, y=y)
    s_obl = detector.score(oblivious.x_adv)
    taps = DetectorModel(model)
    num_classes = int(model.outputs[0].shape[-1])

    @tf.autograph.experimental.do_not_convert
    def forward(xb):
        return {
            "logits": taps(xb)["logits"],
            "score": detector.differentiable_score(xb, surrogate_bandwidth=4.0),
        }

    out = {
        "n": n,
        "eps": eps,
        "eps_iter": eps_iter,
        "steps": steps,
        "threshold": threshold,
        "oblivious": _adaptive_row(oblivious.success, s_obl, threshold),
        "runs": [],
    }
    best_x = None
    best_key = None
    for lam in lambdas:

        @tf.autograph.experimental.do_not_convert
        def loss_fn(outputs, yb, lam=lam):
            z = tf.cast(outputs["logits"], tf.float32)
            onehot = tf.one_hot(tf.cast(yb, tf.int32), num_classes)
            z_true = tf.reduce_sum(z * onehot, axis=-1)
            z_other = tf.reduce_max(z - 1e9 * onehot, axis=-1)
            margin = tf.maximum(z_true - z_other, -2.0)  # C&W margin, kappa = 2
            excess = tf.nn.relu(tf.cast(outputs["score"], tf.float32) - (threshold - 0.05))
            return -margin - lam * excess

        t0 = time.perf_counter()
        result = attacks.pgd_with_loss(
            forward,
            x,
            loss_fn,
            eps=eps,
            eps_iter=eps_iter,
            nb_iter=steps,
            y=y,
            rand_init=False,
            batch_size=100,
            seed=0,
        )
        seconds = time.perf_counter() - t0
        success = result.y_pred_after != y
        scores = detector.score(result.x_adv)
        row = _adaptive_row(success, scores, threshold)
        row.update(lam=lam, seconds=seconds)
        out["runs"].append(row)
        log(f"{setup['name']} adaptive lambda={lam}: {row} ({seconds:.0f} s)")
        # Per sample, keep the best run: success and undetected first, then
        # success with the lowest score.
        key = np.where(success, scores - 1e6 * (scores <= threshold), np.inf)
        if best_x is None:
            best_x, best_key = result.x_adv.copy(), key
        else:
            better = key < best_key
            best_x[better], best_key[better] = result.x_adv[better], key[better]
    if len(lambdas) > 1:
        pred = np.argmax(model.predict(best_x, batch_size=256, verbose=0), axis=1)
        row = _adaptive_row(pred != y, detector.score(best_x), threshold)
        row["lam"] = "best of " + ", ".join(f"{lam:g}" for lam in lambdas)
        row["seconds"] = sum(r["seconds"] for r in out["runs"])
        out["runs"].append(row)
    return out


def _adaptive_row(success, scores, threshold):
    import numpy as np

    detected = scores > threshold
    n_succ = int(success.sum())
    return {
        "success": float(np.mean(success)),
        "tpr_5": float(np.mean(detected[success])) if n_succ else float("nan"),
        "undetected_success": float(np.mean(success & ~detected)),
        "mean_score": float(np.mean(scores[success])) if n_succ else float("nan"),
    }


# --------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------


def cost(setup, detector, repeats=5):
    """Median times, interleaved repeats after a warm-up, batch 128."""
    import numpy as np
    import tensorflow as tf

    x = setup["x"]
    model = setup["model"]
    forward = tf.function(lambda xb: model(xb, training=False), reduce_retracing=True)

    def compiled_forward():
        for start in range(0, len(x), 128):
            np.asarray(forward(x[start : start + 128]))

    timed = {
        "predict": lambda: model.predict(x, batch_size=128, verbose=0),
        "forward": compiled_forward,
        "score": lambda: detector.score(x),
        "response": lambda: detector.feature_response(x),
    }
    for fn in timed.values():
        fn()  # warm-up: tracing, first-call allocations
    times = {k: [] for k in timed}
    for _ in range(repeats):
        for key, fn in timed.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {"n": len(x), "repeats": repeats, **{k: float(np.median(v)) for k, v in times.items()}}


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _f(value, digits=3):
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}f}"


def render(sections, args, total_seconds):
    import keras
    import tensorflow as tf

    lines = [
        "# Feature-response entropy detector (Amirian et al.): Table 1",
        "",
        f"Run by `python benchmarks/entropy.py{' --quick' if args.quick else ''}` on "
        f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), "
        f"TF {tf.__version__}, Keras {keras.__version__}, "
        f"{time.strftime('%Y-%m-%d')}; {total_seconds / 60:.1f} minutes in all.",
        "",
        "Detector: `EntropyDetector(model)` with its defaults: guided "
        "backpropagation of the last convolution's activations, gray map = "
        "|response| averaged over channels, min-max scaled per image to 256 "
        "levels, mean local spatial entropy of 3 x 3 windows; adversarial = "
        "higher entropy. Thresholds at FPR 1/5/10% from the clean **validation** "
        "images only; TPR measured on the successful adversarial versions of the "
        "test images, against the clean test images (METHODS.md section 7). "
        "`FPR(test)` is the false positive rate those thresholds actually give "
        "on the clean test images.",
        "",
    ]
    for sec in sections:
        setup = sec["setup"]
        lines += [f"## {setup['name']}", "", setup["describe"], ""]
        lines += [
            "| attack | setting | # images | # adv. | success | GT conf. | "
            "target conf. | TPR@1% | TPR@5% | TPR@10% | FPR(test) 1/5/10% | AUC | "
            "mean L2 | time (s) | paper TPR 1/5/10% (VGG19) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sec["rows"]:
            tpr = r.get("tpr", [float("nan")] * 3)
            fprs = r.get("fpr_test")
            paper = PAPER.get(r["attack"])
            lines.append(
                f"| {r['attack']} | {r['setting']} | {r['n']} | {r['n_adv']} | "
                f"{_f(r['success'])} | {_f(r.get('gt_conf'))} | "
                f"{_f(r.get('target_conf'))} | {_f(tpr[0])} | {_f(tpr[1])} | "
                f"{_f(tpr[2])} | "
                + ("/".join(_f(v, 2) for v in fprs) if fprs else "-")
                + f" | {_f(r.get('auc'))} | {_f(r['l2'], 2)} | {r['seconds']:.1f} | "
                + ("/".join(f"{v:.3f}" for v in paper) if paper else "-")
                + " |"
            )
        aucs = [r["auc"] for r in sec["rows"] if "auc" in r]
        lines += [
            "",
            f"Clean test images: {len(setup['x'])} (mean entropy "
            f"{sec['scores_clean'].mean():.3f} bits); calibration images: "
            f"{len(setup['x_val'])} (mean {sec['scores_val'].mean():.3f}); thresholds "
            + ", ".join(f"{f:.0%}: {t:.4f}" for f, t in sec["detector"].thresholds_.items())
            + f". Mean AUC over the attacks: {sum(aucs) / max(len(aucs), 1):.3f} "
            "(paper: 0.990 over its five).",
            "",
        ]
        ab = sec["ablation"]
        if ab and len(ab[0]) > 1:
            names = [k for k in ab[0] if k != "levels"]
            lines += [
                f"### Gray levels ({setup['name']})",
                "",
                "The same responses and images, the score recomputed with other "
                "numbers of gray levels (`levels=`; 256 is the default). AUC and "
                "TPR at 5% FPR (threshold from the validation images).",
                "",
                "| levels | " + " | ".join(f"{n} AUC | {n} TPR@5%" for n in names) + " |",
                "|---|" + "---|---|" * len(names),
            ]
            for r in ab:
                lines.append(
                    f"| {r['levels']} | "
                    + " | ".join(f"{_f(r[n][0])} | {_f(r[n][1])}" for n in names)
                    + " |"
                )
            lines.append("")
        ad = sec["adaptive"]
        if ad is not None:
            lines += [
                f"### Adaptive white-box attack ({setup['name']})",
                "",
                f"The first {ad['n']} test images. Oblivious: `attacks.pgd` (Linf eps "
                f"{ad['eps']:.3g}, 40 steps, random start), which ignores the "
                "detector. Adaptive: `attacks.pgd_with_loss` maximizing "
                "`-max(margin, -2) - lambda * relu(score - (t5 - 0.05))` in the same "
                f"ball ({ad['steps']} steps of {ad['eps_iter']:.3g}, no random "
                "start), where `margin` is the C&W logit margin of the true class and "
                "`score` the detector's `differentiable_score` (exact value; "
                "gradient: second order through the guided ReLUs, identity through "
                "the rounding to gray levels, Gaussian soft histogram of width 4 "
                f"levels). `t5` = {ad['threshold']:.4f} is the 5%-FPR threshold "
                "from the clean validation images. TPR is over the successful "
                "adversarial images; `success & undetected` over all attacked "
                "images (what the attacker wants).",
                "",
                "| attack | success | TPR@5% FPR | success & undetected | mean score "
                "of successes | time (s) |",
                "|---|---|---|---|---|---|",
            ]
            o = ad["oblivious"]
            lines.append(
                f"| oblivious PGD | {_f(o['success'])} | {_f(o['tpr_5'])} | "
                f"{_f(o['undetected_success'])} | {_f(o['mean_score'])} | - |"
            )
            for r in ad["runs"]:
                lam = r["lam"] if isinstance(r["lam"], str) else f"lambda = {r['lam']:g}"
                lines.append(
                    f"| adaptive, {lam} | {_f(r['success'])} | {_f(r['tpr_5'])} | "
                    f"{_f(r['undetected_success'])} | {_f(r['mean_score'])} | "
                    f"{r['seconds']:.0f} |"
                )
            lines.append("")
        c = sec["cost"]
        lines += [
            f"### Cost ({setup['name']})",
            "",
            f"On the {c['n']} clean test images, batch 128, median of {c['repeats']} "
            "interleaved repeats after a warm-up, on the shared CPU (expect +-30%):",
            "",
            "| what | time (s) | detector score / this |",
            "|---|---|---|",
            f"| `model.predict(x)` | {c['predict']:.3f} | {c['score'] / c['predict']:.2f} |",
            f"| compiled forward pass (`tf.function(model)`, same batches) | "
            f"{c['forward']:.3f} | {c['score'] / c['forward']:.2f} |",
            f"| `detector.feature_response(x)` (guided response only) | "
            f"{c['response']:.3f} | {c['score'] / c['response']:.2f} |",
            f"| `detector.score(x)` (response, gray map, entropy) | {c['score']:.3f} | 1 |",
            "",
            "`model.predict` carries a fixed per-call overhead (its data pipeline), "
            "which is why a plain prediction can take longer than the score; the "
            "compiled forward pass is the like-for-like comparison.",
            "",
        ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="A tiny smoke run.")
    parser.add_argument(
        "--datasets", nargs="+", default=["mnist", "cifar"], choices=["mnist", "cifar"]
    )
    parser.add_argument("--no-adaptive", action="store_true")
    args = parser.parse_args()

    from keras_advguard.detectors.entropy_detector import EntropyDetector

    start = time.perf_counter()
    sections = []
    for name in args.datasets:
        if name == "mnist":
            setup = setup_mnist(50 if args.quick else 500, 200 if args.quick else 1000)
            n_adapt, lambdas, steps = (
                (20, [100.0], 10) if args.quick else (200, [10.0, 100.0, 1000.0], 100)
            )
        else:
            setup = setup_cifar(50 if args.quick else 400)
            # Fewer: the CIFAR model costs about twice as much per step, and
            # the oblivious detection there is already near chance.
            n_adapt, lambdas, steps = (20, [100.0], 10) if args.quick else (100, [100.0], 50)
        log(f"{setup['name']}: {len(setup['x'])} test, {len(setup['x_val'])} calibration")
        detector = EntropyDetector(setup["model"]).fit(setup["x_val"])
        rows, scores_clean, scores_val, adv_images = table_rows(setup, detector, args.quick)
        ablation = levels_ablation(setup, detector, adv_images)
        ad = None
        if not args.no_adaptive:
            ad = adaptive(setup, detector, n_adapt, lambdas, steps, args.quick)
        sections.append(
            {
                "setup": setup,
                "detector": detector,
                "rows": rows,
                "scores_clean": scores_clean,
                "scores_val": scores_val,
                "adaptive": ad,
                "ablation": ablation,
                "cost": cost(setup, detector),
            }
        )
        log(f"{setup['name']} done at {(time.perf_counter() - start) / 60:.1f} min")
    text = render(sections, args, time.perf_counter() - start)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("entropy_quick.md" if args.quick else "entropy.md")
    out.write_text(text)
    print(text)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
