"""Benchmark: what `evaluate` costs over the same work done by hand, and what its cache saves.

Digits, the reference `digits_cnn`, every available defence, FGSM and PGD,
both threat models, `quick` budgets (80 images, 2 splits, 3 epochs, 20
adaptive steps). Three timings, CPU time (process time, all threads) next to
wall time since the machine's cores are shared:

1. `evaluate(...)` with an empty attack cache;
2. **alone**: the same attacks, fits, scorings, calibrations and adaptive
   attacks called directly, one after the other, with the same inputs
   (what a user would write by hand; no report, no bookkeeping);
3. `evaluate(...)` again with the cache of run 1 (the oblivious attacks and
   the sanitizers' BPDA attacks are loaded).

Ratio 1 / 2 is the engine's overhead (goal <= 1.15); 1 - 3 / 1 is the share
of a run the cache saves. Writes `benchmarks/results/evaluate_overhead.md`.

Usage:
    nice -n 19 python benchmarks/evaluate_overhead.py [--num-images 80] [--defences ...]
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_advguard as ag  # noqa: E402
from keras_advguard import attacks, metrics  # noqa: E402
from keras_advguard.datasets import load_dataset  # noqa: E402
from keras_advguard.evaluation import _defences, _protocol, _stages, _threats  # noqa: E402
from keras_advguard.models import load_or_train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ATTACKS = ["fgsm", "pgd"]


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def by_hand(model, train, test, names, num_images, seed=0):
    """The work of `evaluate(quick=True)`, called directly (same inputs, same order)."""
    budget = {"num_train": 300, "epochs": 3, "adaptive_iter": 20, "splits": 2}
    eps, clip, fprs = 0.1, (0.0, 1.0), (0.01, 0.05, 0.1)
    (x_train, y_train), (x_test, y_test) = train, test
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(x_test), size=num_images, replace=False))
    x, y = x_test[chosen], y_test[chosen]
    sources = np.flatnonzero(np.argmax(model.predict(x, verbose=0), axis=1) == y)
    splits = _protocol.source_splits(y[sources], budget["splits"], seed)
    results = {}
    for name in ATTACKS:
        params = _threats.attack_params(name, {}, eps=eps, quick=True)
        keras.utils.set_random_seed(seed)
        kwargs = {"seed": seed} if name == "pgd" else {}
        results[name] = getattr(attacks, name)(model, x, y=y, **params, **kwargs)
    pick = np.sort(rng.choice(len(x_train), size=budget["num_train"], replace=False))
    x_fit, y_fit = x_train[pick], y_train[pick]
    xs, ys = x[sources], y[sources]
    fooled = {n: results[n].y_pred_after[sources] != ys for n in ATTACKS}
    first = splits[0]
    for item in names:
        defence = _defences.build(item, model, quick=True, seed=seed)
        if defence.kind == "sanitizer":
            for m in (defence.model,):
                m.predict(x, verbose=0)
                for n in ATTACKS:
                    m.predict(results[n].x_adv, verbose=0)
            for n in ATTACKS:
                params = _threats.attack_params(n, {}, eps=eps, quick=True)
                keras.utils.set_random_seed(seed)
                adv = getattr(attacks, n)(defence.adaptive_model, x, y=y, **params)
                defence.model.predict(adv.x_adv, verbose=0)
            continue
        detector = defence.detector
        if item == "medoid_lstm":
            detector = _defences.build_lstm(model, x_fit, y_fit, quick=True, seed=seed)
        if not detector.supervised:
            if detector.needs_fit:  # entropy / squeezing: `fit` would only calibrate
                detector.fit(x_fit, y_fit, verbose=0)
            detector.score(xs)
            for n in ATTACKS:
                detector.score(results[n].x_adv[sources][fooled[n]])
            detector.calibrate(xs[first.calibration], fpr=max(fprs))
            final = detector
        else:
            final = None
            for split in splits:
                for train_on in ATTACKS + ["mixed"]:
                    used = ATTACKS if train_on == "mixed" else [train_on]
                    parts = [xs[split.fit]] + [
                        results[n].x_adv[sources][split.fit[fooled[n][split.fit]]] for n in used
                    ]
                    labels = np.concatenate(
                        [np.zeros(len(parts[0]))] + [np.ones(len(p)) for p in parts[1:]]
                    )
                    trained = _stages._fit_supervised(
                        detector.clone(), np.concatenate(parts), labels, {"epochs": 3}
                    )
                    trained.score(xs[np.concatenate([split.calibration, split.test])])
                    for n in ATTACKS:
                        trained.score(results[n].x_adv[sources][split.test[fooled[n][split.test]]])
                    if train_on == "mixed" and final is None:
                        final = trained.calibrate(xs[split.calibration], fpr=max(fprs))
        calibration = final.score(xs[first.calibration])
        final.score(xs[first.test])
        metrics.threshold_at_fpr(calibration, list(fprs))
        for attack in _threats.ADAPTIVE_DETECTOR_ATTACKS:  # the adaptive attacks evaluate runs
            adv = _threats.adaptive_detector_attack(
                model, final, xs[first.test], ys[first.test], eps=eps, attack=attack,
                nb_iter=budget["adaptive_iter"], clip=clip, batch_size=128, seed=seed,
            )  # fmt: skip
            final.score(adv.x_adv)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-images", type=int, default=80)
    parser.add_argument("--defences", nargs="+", default=None, help="Default: all available.")
    args = parser.parse_args()
    train, test = load_dataset("digits")
    model, _ = load_or_train("digits_cnn", "digits", epochs=30)
    names = list(_defences.with_baselines(args.defences))
    cache = tempfile.mkdtemp(prefix="evaluate-overhead-")
    kwargs = dict(attacks=ATTACKS, quick=True, num_images=args.num_images, splits=2, verbose=0)

    # warm-up: trace the attacks and models once, so no run pays the first tracing
    ag.evaluate(
        model, train, test, defences=["mask"], cache_dir=False, **{**kwargs, "num_images": 20}
    )

    load_before = os.getloadavg()
    with Clock() as cold:
        report = ag.evaluate(model, train, test, defences=names, cache_dir=cache, **kwargs)
    failed = [n for n, d in {**report.detectors, **report.sanitizers}.items() if "error" in d]
    names = [n for n in names if n not in failed]
    if failed:  # time the same set both ways
        with Clock() as cold:
            report = ag.evaluate(model, train, test, defences=names, cache_dir=False, **kwargs)
        cache = tempfile.mkdtemp(prefix="evaluate-overhead-")
        ag.evaluate(model, train, test, defences=names, cache_dir=cache, **kwargs)
    with Clock() as alone:
        by_hand(model, train, test, names, args.num_images)
    with Clock() as warm:
        rerun = ag.evaluate(model, train, test, defences=names, cache_dir=cache, **kwargs)

    lines = [
        "# `evaluate` overhead and attack cache",
        "",
        f"Digits, `digits_cnn`, {args.num_images} test images, attacks {', '.join(ATTACKS)}, "
        f"both threat models, quick budgets (2 splits, 3 epochs, 20 adaptive steps). "
        f"Defences: {', '.join(names)}"
        + (f" (left out, they failed in this tree: {', '.join(failed)})" if failed else "")
        + ". CPU time is the fairer figure on a shared machine.",
        "",
        "| run | wall s | CPU s |",
        "| --- | --- | --- |",
        f"| evaluate, empty cache | {cold.wall:.1f} | {cold.cpu:.1f} |",
        f"| same attacks, fits, scores and adaptive attacks called alone | {alone.wall:.1f} | "
        f"{alone.cpu:.1f} |",
        f"| evaluate again, cache filled ({rerun.meta['cache_hits']} attack runs loaded) | "
        f"{warm.wall:.1f} | {warm.cpu:.1f} |",
        "",
        f"- overhead, evaluate / alone: **{cold.wall / alone.wall:.2f}** wall, "
        f"**{cold.cpu / alone.cpu:.2f}** CPU (goal <= 1.15)",
        f"- the cache saves **{100 * (1 - warm.wall / cold.wall):.0f}%** of the wall time "
        f"({100 * (1 - warm.cpu / cold.cpu):.0f}% CPU) of a rerun",
        "- evaluate's own stage timing (cold run, s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in report.meta["timing"].items()),
        f"- one shared activation pass for: "
        f"{', '.join(n for n, d in report.detectors.items() if d.get('shared_taps')) or 'none'}"
        " (scored, and the medoid LSTM trained on every split and attack, from its features; "
        "by hand each detector runs its own passes, and the LSTM re-runs the classifier at "
        "every epoch); the cache holds the oblivious attacks and the sanitizers' BPDA attacks, "
        "while fits and adaptive detector attacks are recomputed on a rerun",
        f"- load average (1 min) before / after the timed runs: {load_before[0]:.1f} / "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        "",
        f"Python {platform.python_version()}, Keras {keras.__version__}, "
        f"{os.cpu_count()} CPUs. Command: `python benchmarks/evaluate_overhead.py "
        f"--num-images {args.num_images}`.",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    from keras_advguard import _files

    text = "\n".join(lines)
    _files.write_atomic(RESULTS / "evaluate_overhead.md", lambda tmp: Path(tmp).write_text(text))
    print(text)


if __name__ == "__main__":
    main()
