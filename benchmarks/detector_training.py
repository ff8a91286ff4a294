"""Benchmark: detectors before vs after adversarial training, under adaptive attacks.

For each detector, trained the standard way and trained against its attacker:

- `InputCNNDetector`: standard = `fit` on clean training images vs oblivious
  PGD examples (`adversarial_fit(..., rounds=0)`); adversarial =
  `training.adversarial_fit` with selective + orthogonal PGD regenerated
  against the current detector between rounds (same total epochs).
- `ClassConditionalInputDetector` (Yin et al.'s asymmetric training):
  standard = `eps=0` (one-vs-rest on clean images); adversarial = its own
  PGD inside `fit`.

Each is calibrated at 5% FPR on clean validation images and attacked on
correctly classified test images: oblivious PGD (classifier only), selective
PGD and orthogonal PGD against classifier + detector, and the per-image
worst of the two adaptive attacks. Reported: classifier fooled, SR@5 (fooled
and undetected at 5% FPR), TPR@5 of the attacked images, ROC AUC (clean
test vs attacked), and the accepted-and-correct accuracy: clean test images
accepted by the detector and correctly classified, and attacked sources
where the attack failed or was caught (`1 - SR@5`).

`--dataset mnist` (smaller budgets, stated in the report) also guards the
cached adversarially trained MNIST classifier
(`robust_mnist_cnn-pgd-eps0.3-k7-a0.1-r1.keras`) with a class-conditional
detector: the combination a user would deploy.

Writes `benchmarks/results/detector_training.md` (the digits section) or
`detector_training_mnist.md`.

Usage:
    nice -n 19 python benchmarks/detector_training.py [--dataset digits|mnist]
        [--n N] [--steps N] [--epochs N]
"""

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
ROBUST_MNIST = Path("~/.keras_advguard/models/robust_mnist_cnn-pgd-eps0.3-k7-a0.1-r1.keras")
FPR = 0.05


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def setup(args):

    from keras_advguard.datasets import load_dataset
    from keras_advguard.models import load_or_train

    if args.dataset == "digits":
        model, _ = load_or_train("digits_cnn", "digits", epochs=30)
        (x_train, y_train), (x_test, y_test) = load_dataset("digits")
        eps, n_val, n_fit = 0.2, 150, len(x_train)
        filters, dense = (16, 32), 64
    else:
        import keras

        path = str(SHARED_MNIST) if SHARED_MNIST.exists() else None
        model = keras.models.load_model(ROBUST_MNIST.expanduser())
        (x_train, y_train), (x_test, y_test) = load_dataset("mnist", path=path)
        eps, n_val, n_fit = 0.3, 500, args.n_fit
        filters, dense = (16, 32), 64
    pred_test = np.argmax(model.predict(x_test, verbose=0, batch_size=256), axis=1)
    x_val = x_test[:n_val]
    rest = np.arange(n_val, len(x_test))
    keep = rest[pred_test[rest] == y_test[rest]][: args.n]
    return {
        "model": model,
        "eps": eps,
        "filters": filters,
        "dense": dense,
        "x_fit": x_train[:n_fit],
        "y_fit": y_train[:n_fit],
        "x_val": x_val,
        "x_clean_test": x_test[n_val:],
        "y_clean_test": y_test[n_val:],
        "pred_clean_test": pred_test[n_val:],
        "x": x_test[keep],
        "y": y_test[keep],
        "clean_accuracy": float(np.mean(pred_test[n_val:] == y_test[n_val:])),
    }


def evaluate(detector, s, args, oblivious):
    """Rows `{attack: figures}` of one detector at 5% FPR."""

    from keras_advguard import attacks, metrics

    model, eps, steps = s["model"], s["eps"], args.steps
    detector.calibrate(s["x_val"], fpr=FPR)
    t = detector.threshold_
    s_val = detector.score(s["x_val"])
    s_clean = detector.score(s["x"])
    s_test = detector.score(s["x_clean_test"])
    accepted_correct = float(np.mean((s_test <= t) & (s["pred_clean_test"] == s["y_clean_test"])))
    runs = {
        "oblivious PGD": (oblivious.x_adv, oblivious.success, oblivious.seconds),
        "oblivious APGD-CE": (s["apgd"].x_adv, s["apgd"].success, s["apgd"].seconds),
    }
    for name in ("selective_pgd", "orthogonal_pgd"):
        result = getattr(attacks, name)(
            model,
            s["x"],
            detector,
            eps=eps,
            nb_iter=steps,
            y=s["y"],
            restarts=args.restarts,
            seed=1,
        )
        runs[name] = (result.x_adv, result.success, result.seconds)
    runs["targeted joint PGD (2nd class)"] = _joint(detector, s, args)
    rows = {}
    scores = {}
    for name, (x_adv, fooled, seconds) in runs.items():
        sc = detector.score(x_adv)
        scores[name] = (sc, fooled)
        rows[name] = _figures(metrics, s_val, sc, fooled, s_clean, seconds)
    # Per image, the worst of the adaptive attacks: fooled and lowest score.
    sel, orth = scores["selective_pgd"], scores["orthogonal_pgd"]
    key_sel = np.where(sel[1], sel[0], np.inf)
    key_orth = np.where(orth[1], orth[0], np.inf)
    pick_orth = key_orth < key_sel
    worst_scores = np.where(pick_orth, orth[0], sel[0])
    worst_fooled = np.where(pick_orth, orth[1], sel[1])
    rows["worst adaptive, per image"] = _figures(
        metrics, s_val, worst_scores, worst_fooled, s_clean, None
    )
    joint_scores, joint_fooled = scores["targeted joint PGD (2nd class)"]
    pick_joint = np.where(joint_fooled, joint_scores, np.inf) < np.minimum(key_sel, key_orth)
    rows["worst of selective, orthogonal, joint"] = _figures(
        metrics,
        s_val,
        np.where(pick_joint, joint_scores, worst_scores),
        np.where(pick_joint, joint_fooled, worst_fooled),
        s_clean,
        None,
    )
    rows["detector alone (bound, see below)"] = _detector_alone(detector, s, args, s_val, s_clean)
    for row in rows.values():
        row["accepted_correct_clean"] = accepted_correct
    return rows


def _second_class(s):

    probs = np.asarray(s["model"].predict(s["x"], verbose=0))
    probs[np.arange(len(probs)), s["y"]] = -np.inf
    return np.argmax(probs, axis=1)


def _target_score(detector, targets):
    """`x -> score at class `targets`` (class-conditional) or the plain score."""
    import tensorflow as tf

    from keras_advguard.detectors import ClassConditionalInputDetector

    if isinstance(detector, ClassConditionalInputDetector):

        def fn(xb, tb):
            logits = tf.cast(detector(xb, training=False), tf.float32)
            return -tf.gather(logits, tf.cast(tb, tf.int32), axis=1, batch_dims=1)

        return fn
    return lambda xb, tb: detector.score_tensor(xb)


def _joint(detector, s, args):
    """Targeted PGD on `-CE(f(x'), t) - score_t(x')`, t the classifier's 2nd class."""
    import keras
    import tensorflow as tf

    from keras_advguard import as_logits_fn, attacks

    targets = _second_class(s)
    logits_fn = as_logits_fn(s["model"])
    score = _target_score(detector, targets)
    sd = float(np.std(detector.score(s["x_val"]))) + 1e-6

    def outputs(xb):
        return {"logits": tf.cast(logits_fn(xb), tf.float32), "x": xb}

    def loss(out, tb):
        ce = keras.ops.sparse_categorical_crossentropy(tb, out["logits"], from_logits=True)
        return -ce - score(out["x"], tb) / sd

    result = attacks.pgd_with_loss(
        outputs,
        s["x"],
        loss,
        eps=s["eps"],
        eps_iter=s["eps"] / 10,
        nb_iter=args.steps,
        y=targets,
        seed=2,
    )
    fooled = np.argmax(np.asarray(s["model"].predict(result.x_adv, verbose=0)), 1) != s["y"]
    return result.x_adv, fooled, result.seconds


def _detector_alone(detector, s, args, s_val, s_clean):
    """PGD on the detector only (class-conditional: at the classifier's 2nd class).

    The share of sources whose perturbed image scores at or below the 5%
    threshold *at that class* bounds what an attack that also fools the
    classifier (to that class) could reach; "fooled" is counted as all.
    """

    from keras_advguard import attacks

    targets = _second_class(s)
    score = _target_score(detector, targets)

    def outputs(xb):
        return {"logits": xb[:, :1, 0, 0] * 0.0, "x": xb}

    result = attacks.pgd_with_loss(
        outputs,
        s["x"],
        lambda out, tb: -score(out["x"], tb),
        eps=s["eps"],
        eps_iter=s["eps"] / 10,
        nb_iter=args.steps,
        y=targets,
        seed=3,
    )
    from keras_advguard.detectors import ClassConditionalInputDetector

    if isinstance(detector, ClassConditionalInputDetector):
        logits = detector.detector_logits(result.x_adv)
        adv = -logits[np.arange(len(targets)), targets]
    else:
        adv = detector.score(result.x_adv)
    return _figures_plain(s_val, adv, s_clean, result.seconds)


def _figures_plain(s_val, s_adv, s_clean, seconds):
    from keras_advguard import metrics

    fooled = np.ones(len(s_adv), bool)
    row = _figures(metrics, s_val, s_adv, fooled, s_clean, seconds)
    row["fooled"] = float("nan")
    return row


def _figures(metrics, s_val, s_adv, fooled, s_clean, seconds):
    report = metrics.success_rate_at_fpr(s_val, s_adv, fooled, fprs=(FPR,), scores_clean=s_clean)
    at = report["at_fpr"][FPR]
    return {
        "fooled": report["n_fooled"] / report["n"],
        "sr5": at["sr"],
        "tpr5": at["tpr"],
        "auc": report["auc"],
        "seconds": seconds,
    }


def train_detectors(s, args):
    """`{name: (detector, training seconds)}`."""
    import keras

    from keras_advguard import attacks
    from keras_advguard.detectors import ClassConditionalInputDetector, InputCNNDetector
    from keras_advguard.training import adversarial_fit

    model, eps = s["model"], s["eps"]
    out = {}
    budget = {"eps": eps, "nb_iter": args.train_steps, "seed": 0}
    e = args.epochs

    if args.dataset == "digits":
        keras.utils.set_random_seed(0)
        t0 = time.perf_counter()
        oblivious = attacks.pgd(model, s["x_fit"], y=s["y_fit"], eps=eps, nb_iter=args.train_steps)
        cnn = InputCNNDetector(model, filters=s["filters"], dense_units=s["dense"])
        adversarial_fit(
            cnn,
            s["x_fit"],
            s["y_fit"],
            rounds=0,
            epochs_per_round=4 * e,
            x_adv=oblivious.x_adv[oblivious.success],
            batch_size=64,
            **budget,
        )
        out["InputCNN, standard (oblivious PGD)"] = (cnn, time.perf_counter() - t0)
        log("InputCNN standard trained")

        keras.utils.set_random_seed(0)
        t0 = time.perf_counter()
        cnn_adv = InputCNNDetector(model, filters=s["filters"], dense_units=s["dense"])
        h = adversarial_fit(
            cnn_adv,
            s["x_fit"],
            s["y_fit"],
            rounds=3,
            epochs_per_round=e,
            attack=["selective_pgd", "orthogonal_pgd"],
            x_adv=oblivious.x_adv[oblivious.success],
            batch_size=64,
            verbose=1,
            **budget,
        )
        out["InputCNN, adversarial_fit (3 rounds)"] = (cnn_adv, time.perf_counter() - t0)
        s["rounds"] = h.rounds
        log("InputCNN adversarial trained")

    for label, det_eps in (("standard (eps=0)", 0.0), ("asymmetric adversarial", eps)):
        if args.dataset == "mnist" and det_eps == 0.0 and not args.with_baseline:
            continue
        keras.utils.set_random_seed(0)
        t0 = time.perf_counter()
        det = ClassConditionalInputDetector(
            model,
            filters=s["filters"],
            dense_units=s["dense"],
            eps=det_eps,
            steps=args.train_steps,
        )
        det.fit(s["x_fit"], s["y_fit"], epochs=args.cc_epochs, batch_size=64, verbose=0)
        out[f"ClassConditional, {label}"] = (det, time.perf_counter() - t0)
        log(f"ClassConditional {label} trained")
    return out


def _robust_epochs():
    """Epochs of the cached robust classifier (its training records), or "?"."""
    import json

    meta = ROBUST_MNIST.expanduser().with_suffix(".json")
    return len(json.loads(meta.read_text())["records"]) if meta.exists() else "?"


def write_report(path, s, args, trained, results, started):
    lines = [
        "# Detectors trained against the attacker (`benchmarks/detector_training.py`)",
        "",
    ]
    if args.dataset == "digits":
        lines.append(
            'Classifier: `digits_cnn` on digits (`load_or_train("digits_cnn", "digits", '
            f"epochs=30)`, clean accuracy {s['clean_accuracy']:.4f} on the test images after the "
            f"calibration ones). eps {s['eps']} (L-inf)."
        )
    else:
        lines.append(
            "Classifier: the adversarially trained MNIST CNN "
            "(`robust_mnist_cnn-pgd-eps0.3-k7-a0.1-r1.keras`, PGD-7 training, "
            f"{_robust_epochs()} epochs; clean "
            f"accuracy {s['clean_accuracy']:.4f} on the test images after the calibration ones). "
            f"eps {s['eps']} (L-inf). Detectors trained on the first {len(s['x_fit'])} MNIST "
            "training images only (CPU budget)."
        )
    lines += [
        "",
        f"Detectors trained on {len(s['x_fit'])} clean training images (negatives: PGD-"
        f"{args.train_steps}); calibrated at 5% FPR on {len(s['x_val'])} clean test images; "
        f"attacked: {len(s['x'])} correctly classified test images after them. **Attack budget:"
        f" {args.steps} steps of eps/10, {args.restarts} restart(s)** for every attack "
        "below (the issue's goal is >= 500 steps and restarts: "
        "reduced here, 2 shared CPU cores; SR figures are lower bounds of what a larger "
        "budget reaches).",
        "",
        "SR@5: share of attacked sources that fool the classifier and score at or below the "
        "5%-FPR threshold. TPR@5: share of attacked images flagged. AUC: clean versions of "
        "the sources vs attacked. Accepted & correct: clean = share of clean test images "
        "accepted and correctly classified; attacked = `1 - SR@5` (the attack failed or "
        "was caught).",
        "",
        "Attacks: oblivious PGD and APGD-CE attack the classifier only; selective and "
        "orthogonal PGD attack classifier + detector through the Detector contract; the "
        "targeted joint PGD maximises `-CE(f(x'), t) - score_t(x') / sd` towards the "
        "classifier's second most likely class `t` (`sd`: standard deviation of the clean "
        "validation scores; a class-conditional detector scored at `t`); the worst rows take, "
        "per image, the fooling attack with the lowest score. *Detector alone (bound)*: PGD "
        "on the detector's score only (class-conditional: `d_t` at the second class), "
        "ignoring the classifier, scored at `t`; its SR@5 counts every source as fooled, so "
        "it bounds what a better-targeted joint attack could reach (if it could also fool "
        "the classifier to `t`).",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, run under "
        f"`nice -n 19`. Total time {(time.time() - started) / 60:.1f} min.",
        "",
        "| detector | training (s) | attack | fooled | SR@5 | TPR@5 | AUC | accepted & "
        "correct (clean) | accepted & correct (attacked) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in results.items():
        seconds = trained[name][1]
        for attack, r in rows.items():
            fooled = "-" if np.isnan(r["fooled"]) else f"{r['fooled']:.3f}"
            lines.append(
                f"| {name} | {seconds:.0f} | {attack} | {fooled} | {r['sr5']:.3f} | "
                f"{r['tpr5']:.3f} | {r['auc']:.3f} | {r['accepted_correct_clean']:.3f} | "
                f"{1 - r['sr5']:.3f} |"
            )
    if s.get("rounds"):
        lines += [
            "",
            "`adversarial_fit` rounds of the InputCNN (before each round's training, on its "
            "training images, at the 5% threshold of those images):",
            "",
            "| round | attack | fooled | fooled and undetected | new negatives |",
            "|---:|---|---:|---:|---:|",
        ]
        for r in s["rounds"]:
            fooled = "-" if r["fooled"] is None else f"{r['fooled']:.3f}"
            evaded = "-" if r["evaded"] is None else f"{r['evaded']:.3f}"
            lines.append(f"| {r['round']} | {r['attack']} | {fooled} | {evaded} | {r['n_new']} |")
    if "robust" in s:
        lines += ["", s["robust"]]
    path.write_text("\n".join(lines) + "\n")
    log(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--n", type=int, default=150, help="attacked test images")
    parser.add_argument("--n-fit", type=int, default=5000, help="MNIST training images")
    parser.add_argument("--steps", type=int, default=200, help="evaluation attack steps")
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=10, help="training attack steps")
    parser.add_argument("--epochs", type=int, default=4, help="InputCNN epochs per round")
    parser.add_argument("--cc-epochs", type=int, default=20, help="class-conditional epochs")
    parser.add_argument("--with-baseline", action="store_true", help="MNIST: also eps=0")
    parser.add_argument("--out", default=None, help="report path (default: results/)")
    args = parser.parse_args()
    started = time.time()

    from keras_advguard import attacks

    s = setup(args)
    log(f"{args.dataset}: {len(s['x'])} sources, clean accuracy {s['clean_accuracy']:.4f}")
    oblivious = attacks.pgd(s["model"], s["x"], y=s["y"], eps=s["eps"], nb_iter=args.steps, seed=1)
    apgd = attacks.apgd(s["model"], s["x"], y=s["y"], eps=s["eps"], nb_iter=args.steps, seed=1)
    s["apgd"] = apgd
    if args.dataset == "mnist":
        robust_acc = 1 - oblivious.success_rate
        s["robust"] = (
            f"Robust classifier alone on the {len(s['x'])} sources (correctly classified): "
            f"accuracy under PGD-{args.steps} {robust_acc:.3f}, under APGD-CE-{args.steps} "
            f"{1 - apgd.success_rate:.3f}; the table's `accepted & correct (attacked)` is the "
            "combination's figure on the same sources."
        )
        log(s["robust"])
    trained = train_detectors(s, args)
    results = {}
    for name, (detector, _) in trained.items():
        results[name] = evaluate(detector, s, args, oblivious)
        log(f"{name}: " + ", ".join(f"{a} SR@5 {r['sr5']:.3f}" for a, r in results[name].items()))
    suffix = "" if args.dataset == "digits" else "_mnist"
    out = Path(args.out) if args.out else RESULTS / f"detector_training{suffix}.md"
    write_report(out, s, args, trained, results, started)


if __name__ == "__main__":
    main()
