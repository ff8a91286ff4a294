"""Benchmark: keras_advguard's attacks on MNIST-CNN.

Measures, in one run, on the same trained model and the same inputs:

1. PGD (L-infinity, eps 0.3, 40 steps, random start, batch 128): our `pgd`
   against raw cleverhans `projected_gradient_descent` over the same batches
   (goal: time ratio <= 1.02) and against ART's `ProjectedGradientDescent`
   on a `TensorFlowV2Classifier` (goal: ours <= 0.8x its time). Interleaved
   repeats, ratio of medians. ART is skipped when it is not installed.
2. Success rate, mean L2 / L-infinity of the successful perturbations and
   time of every attack the papers use, on the first 1,000 MNIST test images
   the model classifies correctly.
3. Our C&W L2 against cleverhans' (with its Keras 3 fix), same budget: the
   effect of cleverhans' batch-mixed trade-off constant (issue #1205).

Model: `load_or_train("mnist_cnn", "mnist", epochs=5)` (trained once,
cached). Data: `../shared/data/mnist.npz`, else the Keras cache.

Writes `benchmarks/results/attacks.md` (`attacks_quick.md` with `--quick`).

Usage:
    python benchmarks/attacks.py [--quick]
"""

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
BATCH = 128


def load(n):
    """The model and the first `n` test images it classifies correctly."""
    import numpy as np

    from keras_advguard.datasets import load_dataset
    from keras_advguard.models import load_or_train

    path = str(SHARED_MNIST) if SHARED_MNIST.exists() else None
    model, info = load_or_train("mnist_cnn", "mnist", epochs=5, path=path)
    _, (x_test, y_test) = load_dataset("mnist", path=path)
    pred = np.argmax(model.predict(x_test[: 2 * n], batch_size=512, verbose=0), axis=1)
    keep = np.flatnonzero(pred == y_test[: 2 * n])[:n]
    return model, info, x_test[keep], y_test[keep]


# --------------------------------------------------------------------------
# 1. PGD timing
# --------------------------------------------------------------------------


def pgd_timing(model, x, repeats):
    import keras
    import numpy as np
    import tensorflow as tf
    from cleverhans.tf2.attacks.projected_gradient_descent import (
        projected_gradient_descent,
    )

    from keras_advguard import DetectorModel, as_logits_fn, attacks

    eps, step, nb_iter = 0.3, 0.01, 40
    logits_fn = as_logits_fn(model)

    def ours():
        return attacks.pgd(
            model, x, eps=eps, eps_iter=step, nb_iter=nb_iter, batch_size=BATCH
        ).x_adv

    def cleverhans():
        out = []
        for start in range(0, len(x), BATCH):
            xb = tf.constant(x[start : start + BATCH])
            out.append(
                projected_gradient_descent(
                    logits_fn,
                    xb,
                    eps,
                    step,
                    nb_iter,
                    np.inf,
                    clip_min=0.0,
                    clip_max=1.0,
                    rand_init=True,
                    rand_minmax=eps,
                ).numpy()
            )
        return np.concatenate(out)

    runners = {"keras_advguard pgd": ours, "raw cleverhans PGD": cleverhans}
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import TensorFlowV2Classifier

        taps = DetectorModel(model)
        logits_model = keras.Model(taps.inputs, taps.output["logits"])
        classifier = TensorFlowV2Classifier(
            model=logits_model,
            nb_classes=10,
            input_shape=x.shape[1:],
            loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
            clip_values=(0.0, 1.0),
        )
        art_attack = ProjectedGradientDescent(
            classifier,
            norm=np.inf,
            eps=eps,
            eps_step=step,
            max_iter=nb_iter,
            num_random_init=1,
            batch_size=BATCH,
            verbose=False,
        )
        import art

        runners[f"ART {art.__version__} PGD"] = lambda: art_attack.generate(x)
    except ImportError:
        pass

    for name in runners:  # warm-up: traces and builds, on small inputs
        if name.startswith("ART"):
            art_attack.generate(x[: 2 * BATCH])
        elif name.startswith("raw"):
            projected_gradient_descent(
                logits_fn,
                tf.constant(x[:BATCH]),
                eps,
                step,
                2,
                np.inf,
                clip_min=0.0,
                clip_max=1.0,
                rand_init=True,
                rand_minmax=eps,
            )
        else:
            attacks.pgd(model, x[: 2 * BATCH], eps=eps, eps_iter=step, nb_iter=2)

    times = {name: [] for name in runners}
    cpu = {name: [] for name in runners}
    outputs = {}
    for _ in range(repeats):  # interleaved, so that drifts hit all alike
        for name, run in runners.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            outputs[name] = run()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    pred = lambda v: np.argmax(logits_fn(v), axis=1)  # noqa: E731
    clean = pred(x)
    rows = []
    for name in runners:
        adv = np.asarray(outputs[name])
        rows.append(
            {
                "name": name,
                "median_s": float(np.median(times[name])),
                "times": times[name],
                "median_cpu_s": float(np.median(cpu[name])),
                "success": float(np.mean(pred(adv) != clean)),
                "linf": float(np.abs(adv - x).reshape(len(x), -1).max(axis=1).max()),
            }
        )
    return rows


# --------------------------------------------------------------------------
# 2. Every attack
# --------------------------------------------------------------------------


def attack_table(model, x, y, quick):
    from keras_advguard import attacks as a

    cw_iters = 20 if quick else 100
    steps = 200 if quick else 2000
    pop, gens = (40, 5) if quick else (100, 30)
    runs = [
        ("uniform noise", "eps 0.1", a.uniform_noise, {"eps": 0.1, "seed": 0}),
        ("uniform noise", "eps 0.2", a.uniform_noise, {"eps": 0.2, "seed": 0}),
        ("uniform noise", "eps 0.3", a.uniform_noise, {"eps": 0.3, "seed": 0}),
        ("FGSM", "eps 0.1", a.fgsm, {"eps": 0.1}),
        ("FGSM", "eps 0.2", a.fgsm, {"eps": 0.2}),
        ("FGSM", "eps 0.3", a.fgsm, {"eps": 0.3}),
        ("PGD Linf", "eps 0.1, 40 steps", a.pgd, {"eps": 0.1}),
        ("PGD Linf", "eps 0.2, 40 steps", a.pgd, {"eps": 0.2}),
        ("PGD Linf", "eps 0.3, 40 steps", a.pgd, {"eps": 0.3}),
        ("BIM", "eps 0.1, 10 steps", a.bim, {"eps": 0.1}),
        ("MIM", "eps 0.1, 10 steps", a.mim, {"eps": 0.1}),
        ("gradient attack", "L2 <= 4, 10 sizes", a.gradient_attack, {"eps": 4.0}),
        ("DeepFool L2", "overshoot 0.02", a.deepfool, {}),
        ("DeepFool Linf", "overshoot 0.02", a.deepfool, {"norm": float("inf")}),
        (
            "C&W L2",
            f"5 x {cw_iters} Adam steps, lr 0.05",
            a.carlini_wagner_l2,
            {"max_iterations": cw_iters, "learning_rate": 0.05},
        ),
        (
            "one pixel",
            f"population {pop}, {gens} generations",
            a.one_pixel,
            {"population": pop, "maxiter": gens, "seed": 0},
        ),
        ("boundary", f"{steps} steps", a.boundary, {"steps": steps, "seed": 0}),
    ]
    rows = []
    for name, setting, attack, params in runs:
        summary = attack(model, x, y=y, batch_size=BATCH, **params).summary()
        print(f"  {name} ({setting}): {summary}", flush=True)
        rows.append((name, setting, summary))
    return rows


# --------------------------------------------------------------------------
# 3. C&W: ours against cleverhans'
# --------------------------------------------------------------------------


def cw_comparison(model, x, y, quick):
    import numpy as np

    from keras_advguard import as_logits_fn, attacks
    from keras_advguard.attacks import _cleverhans_fixes

    iters = 20 if quick else 100
    params = {"max_iterations": iters, "learning_rate": 0.05, "binary_search_steps": 5}
    start = time.perf_counter()
    ours = attacks.carlini_wagner_l2(model, x, y=y, **params)
    ours_s = time.perf_counter() - start
    logits_fn = as_logits_fn(model)
    start = time.perf_counter()
    adv = _cleverhans_fixes.carlini_wagner_l2(logits_fn, x, batch_size=BATCH, **params)
    theirs_s = time.perf_counter() - start
    ok = np.argmax(logits_fn(adv), axis=1) != y
    l2 = np.linalg.norm((adv - x).reshape(len(x), -1), axis=1)
    return [
        (
            "keras_advguard `carlini_wagner_l2`",
            ours.success_rate,
            float(np.mean(ours.l2[ours.success])),
            ours_s,
        ),
        (
            "cleverhans `CarliniWagnerL2` (Keras 3 fix only)",
            float(ok.mean()),
            float(np.mean(l2[ok])) if ok.any() else float("nan"),
            theirs_s,
        ),
    ]


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def write_report(path, args, info, n, timing, table, cw, n_cw, total_s):
    import keras
    import tensorflow as tf

    lines = [
        "# Attacks benchmark: MNIST-CNN",
        "",
        f"Run by `python benchmarks/attacks.py{' --quick' if args.quick else ''}` on "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, TF {tf.__version__}, "
        f"Keras {keras.__version__}, {time.strftime('%Y-%m-%d')}; "
        f"{total_s / 60:.1f} minutes in all.",
        "",
        f"Model: `keras_advguard.models.mnist_cnn` (Carlini & Wagner architecture) "
        f"trained {info['epochs']} epochs, test accuracy {info['test_accuracy']:.4f}. "
        f"Inputs: the first {n:,} MNIST test images it classifies correctly "
        "(METHODS.md section 7), attacked on the logits behind its softmax.",
        "",
        "## PGD: our wrapper against raw cleverhans and ART",
        "",
        f"L-infinity, eps 0.3, step 0.01, 40 steps, random start, batch {BATCH}, "
        f"the same {n:,} images; {args.repeats} interleaved "
        f"{'repeat' if args.repeats == 1 else 'repeats'}, medians. The",
        "machine's 2 cores are shared with other jobs, so wall-clock times drift;",
        "the process CPU time (all threads) is the steadier measure of the work.",
        "",
        "| implementation | wall (s) | wall per repeat (s) | CPU (s) | success | max Linf |",
        "|---|---|---|---|---|---|",
    ]
    for row in timing:
        per = ", ".join(f"{t:.1f}" for t in row["times"])
        lines.append(
            f"| {row['name']} | {row['median_s']:.2f} | {per} | "
            f"{row['median_cpu_s']:.2f} | {row['success']:.3f} | {row['linf']:.3f} |"
        )
    ours = timing[0]

    def ratio(other, key):
        return ours[key] / other[key]

    raw = next(r for r in timing if r["name"].startswith("raw"))
    lines += [
        "",
        f"- ours / raw cleverhans: wall **{ratio(raw, 'median_s'):.3f}**, CPU "
        f"**{ratio(raw, 'median_cpu_s'):.3f}** (goal <= 1.02).",
    ]
    art_rows = [r for r in timing if r["name"].startswith("ART")]
    if art_rows:
        lines.append(
            f"- ours / ART: wall **{ratio(art_rows[0], 'median_s'):.3f}**, CPU "
            f"**{ratio(art_rows[0], 'median_cpu_s'):.3f}** (goal <= 0.8)."
        )
    else:
        lines.append("- ART is not installed here: no ART row.")
    lines += [
        "",
        "Our `pgd` runs cleverhans' `projected_gradient_descent` on each batch. It",
        "adds the input checks, the labels (one forward pass, which saves cleverhans",
        "its own), the compiled logits callable, the final clip and one forward",
        "pass for `y_pred_after`.",
        "",
        f"## Every attack on {n:,} images",
        "",
        "Success: the label changed. Mean L2 / Linf: over the successful samples.",
        "PGD's step is the default `2.5 * eps / 40`.",
        "",
        "| attack | setting | success | mean L2 | mean Linf | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, setting, s in table:
        lines.append(
            f"| {name} | {setting} | {s['success_rate']:.3f} | {s['mean_l2']:.3f} | "
            f"{s['mean_linf']:.3f} | {s['seconds']:.1f} |"
        )
    lines += [
        "",
        "Budgets are cut where the papers' would take hours on 2 CPU cores: C&W",
        "uses 5 x 100 Adam steps at learning rate 0.05 instead of 5 x 1000 at",
        "0.005; the boundary attack 2,000 steps instead of 5,000 (its L2 keeps",
        "shrinking with more); the one-pixel attack a population of 100 for 30",
        "generations instead of 400 for 100. One pixel rarely fools a 99% MNIST",
        "classifier.",
        "",
        "## C&W L2: ours against cleverhans' (issue #1205)",
        "",
        f"The first {n_cw} of the images, the same budget for both (5 binary-search "
        f"steps, lr 0.05, C&W's iterations as above), batch {BATCH}.",
        "",
        "| implementation | success | mean L2 | time (s) |",
        "|---|---|---|---|",
    ]
    for name, success, l2, seconds in cw:
        lines.append(f"| {name} | {success:.3f} | {l2:.3f} | {seconds:.1f} |")
    lines += [
        "",
        "cleverhans keeps the trade-off constant with the images' shape, so with 128",
        "images of 28x28 each sample's margin term is weighted by the sum of the whole",
        "batch's constants: it succeeds, but far from the minimal perturbation.",
        "",
    ]
    path.write_text("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 images, small budgets.")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    n = 100 if args.quick else 1000
    start = time.perf_counter()
    model, info, x, y = load(n)
    print(f"PGD timing on {len(x)} images", flush=True)
    timing = pgd_timing(model, x, args.repeats)
    for row in timing:
        print(f"  {row}", flush=True)
    print("every attack", flush=True)
    table = attack_table(model, x, y, args.quick)
    n_cw = min(len(x), 256)
    print(f"C&W comparison on {n_cw} images", flush=True)
    cw = cw_comparison(model, x[:n_cw], y[:n_cw], args.quick)
    print(f"  {cw}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("attacks_quick.md" if args.quick else "attacks.md")
    write_report(out, args, info, len(x), timing, table, cw, n_cw, time.perf_counter() - start)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
