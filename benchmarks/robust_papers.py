"""Benchmark: does training against the attacker rescue the papers' detectors? (issue 14)

MNIST at eps 0.3 (L-infinity), the undefended `mnist_cnn`: the papers'
setting, where `adaptive.md` measures every one of these detectors falling
to selective and orthogonal PGD. Each detector is built twice from the same
clean training images, the standard way and trained against its attacker
with `keras_advguard.training.adversarial_fit` (rounds of selective and
orthogonal PGD against the **current** detector):

- `MedoidLSTMDetector` (class-medoid distances of every convolution and
  dense layer + LSTM): standard = `adversarial_fit(..., rounds=0)`
  (oblivious PGD negatives, the paper's training) for as many epochs as
  the adversarial run;
  adversarial = the same start, then `rounds` adaptive rounds.
- `KNNDetector` (Carrara et al.'s kNN vote at `fc8`): standard = the clean
  reference set; adversarial = the reference set augmented, round by round,
  with the examples that fool the classifier, labelled with their source's
  class (`adversarial_fit`'s kNN step).
- `FeatureSqueezingDetector(score="internal")`: a fixed function of the
  classifier with a threshold, nothing to train; measured once, as the row
  that shows it.

Every detector is calibrated on the same clean test images (the first
`n_cal` of a seeded random order of the test split; thresholds at 1/5/10%
FPR) and attacked on the next `n` images' correctly classified ones:
oblivious PGD, selective PGD and orthogonal PGD (both through the Detector
contract: exact `score_tensor` for the LSTM, the kNN's surrogate, BPDA for
squeezing), and per source the union (a fooling image with the lowest
score). Writes `benchmarks/results/robust_papers.md` and `.json`
(`robust_papers_quick.*` with `--quick`: digits, tiny budgets).

Usage:
    nice -n 19 python benchmarks/robust_papers.py [--quick] [--n N] [--steps N]
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common as bench  # noqa: E402
import numpy as np  # noqa: E402
import robust as rb  # noqa: E402

home, log = bench.home, bench.log
RESULTS = Path(__file__).resolve().parent / "results"
FPRS = rb.FPRS


def settings(quick):
    if quick:
        return {
            "dataset": "digits",
            "eps": 0.2,
            "n_ref": 1000,
            "n_train": 400,
            "rounds": 2,
            "epochs_per_round": 3,
            "train_steps": 10,
            "n_cal": 150,
            "n": 60,
            "steps": 30,
            "knn_layer": "fc4",
            "bits": 3,
        }
    return {
        "dataset": "mnist",
        "eps": 0.3,
        "n_ref": 5000,
        "n_train": 2000,
        "rounds": 2,
        "epochs_per_round": 5,
        "train_steps": 20,
        "n_cal": 1000,
        "n": 150,
        "steps": 200,
        "knn_layer": "fc8",
        "bits": 1,
    }


def load(s):
    """`(model, (x_fit, y_fit), (x_test, y_test))`: the undefended classifier and data."""
    from keras_advguard.models import load_or_train

    fit, test = rb.load_data(s)
    if s["dataset"] == "digits":
        model, _ = load_or_train("digits_cnn", "digits", epochs=30)
    else:
        mnist = str(rb.SHARED_MNIST) if rb.SHARED_MNIST.exists() else None
        model, _ = load_or_train("mnist_cnn", "mnist", epochs=5, seed=0, path=mnist)
    return model, fit, test


def _cache(name, s):
    folder = home() / "benchmark_data" / "robust"
    return folder / (
        f"papers_{name}-{s['dataset']}-eps{s['eps']:g}-n{s['n_train']}-r{s['rounds']}"
        f"-e{s['epochs_per_round']}-k{s['train_steps']}.advguard"
    )


def _budget(s):
    return {
        "eps": s["eps"],
        "nb_iter": s["train_steps"],
        "attack": ["selective_pgd", "orthogonal_pgd"],
        "seed": 0,
        "verbose": 1,
    }


def build(model, fit, s):
    """`{label: (detector, seconds, rounds or None)}`: every detector, trained or loaded."""
    import keras

    from keras_advguard import detectors as D
    from keras_advguard import layers as L
    from keras_advguard.training import adversarial_fit

    x_ref, y_ref = fit[0][: s["n_ref"]], fit[1][: s["n_ref"]]
    x_tr, y_tr = fit[0][: s["n_train"]], fit[1][: s["n_train"]]
    total_epochs = (s["rounds"] + 1) * s["epochs_per_round"]
    out = {}

    def cached(name, make):
        path = _cache(name, s)
        meta = path.with_suffix(".json")
        if path.exists() and meta.exists():
            info = json.loads(meta.read_text())
            log(f"{name}: loaded {path.name}")
            return D.load_detector(str(path), model=model), info["seconds"], info["rounds"]
        keras.utils.set_random_seed(0)
        t0 = time.perf_counter()
        detector, rounds = make()
        seconds = time.perf_counter() - t0
        path.parent.mkdir(parents=True, exist_ok=True)
        detector.save(str(path), include_model=False)
        from keras_advguard._files import write_json

        write_json(meta, {"seconds": round(seconds, 1), "rounds": rounds})
        log(f"{name}: trained in {seconds:.0f} s")
        return detector, seconds, rounds

    def lstm(rounds):
        def make():
            detector = D.MedoidLSTMDetector.from_training_data(model, x_ref, y_ref)
            epochs = total_epochs if rounds == 0 else s["epochs_per_round"]
            h = adversarial_fit(
                detector,
                x_tr,
                y_tr,
                rounds=rounds,
                epochs_per_round=epochs,
                batch_size=100,
                **_budget(s),
            )
            return detector, h.rounds

        return make

    def knn(rounds):
        def make():
            detector = D.KNNDetector(model, layer=s["knn_layer"])
            if rounds == 0:  # the paper's detector: the clean reference set only
                return detector.fit(x_tr, y_tr), None
            h = adversarial_fit(detector, x_tr, y_tr, rounds=rounds, **_budget(s))
            return detector, h.rounds

        return make

    out["LSTM (medoids), standard"] = cached("lstm_standard", lstm(0))
    out["LSTM (medoids), adversarial_fit"] = cached("lstm_adversarial", lstm(s["rounds"]))
    out["kNN, standard"] = cached("knn_standard", knn(0))
    out["kNN, adversarial_fit"] = cached("knn_adversarial", knn(s["rounds"]))
    squeezers = [L.BitDepthSqueezer(s["bits"]), L.MedianSmoothingSqueezer(2)]
    out["squeeze (internal), nothing to train"] = (
        D.FeatureSqueezingDetector(model, squeezers, score="internal"),
        0.0,
        None,
    )
    return out


def attack_one(model, detector, sets, s, args):
    """Calibrate, attack the sources, one figures dict per attack and the union."""
    from keras_advguard import attacks, metrics

    x_cal, x, y = sets["x_cal"], sets["x"], sets["y"]
    detector.calibrate(x_cal, fpr=0.05)
    s_cal = detector.score(x_cal)
    thresholds = [float(v) for v in metrics.threshold_at_fpr(s_cal, list(FPRS))]
    s_src = detector.score(x)
    steps = args.steps or s["steps"]
    common = {"eps": s["eps"], "eps_iter": s["eps"] / 10, "y": y, "batch_size": 256}
    runs = rb.Runs(model, detector, y)
    r, dt = rb.timed(attacks.pgd, model, x, nb_iter=100, seed=0, **common)
    runs.add("oblivious PGD-100", r.x_adv, dt, "oblivious")
    for attack in (attacks.selective_pgd, attacks.orthogonal_pgd):
        label = attack.__name__.replace("_pgd", " PGD") + f"-{steps}"
        r, dt = rb.timed(attack, model, x, detector, nb_iter=steps, seed=1, **common)
        runs.add(label, r.x_adv, dt, "adaptive")
    rows = {
        name: rb._row(row["fooled"], row["score"], thresholds, s_cal, s_src, row["seconds"])
        for name, row in runs.rows.items()
    }
    fooled, score = runs.union(list(runs.rows))
    rows["union, per source"] = rb._row(fooled, score, thresholds, s_cal, s_src)
    return {"thresholds": thresholds, "rows": rows, "steps": steps}


def _sets(s, model, test, n):
    x_test, y_test = test
    order = np.random.default_rng(0).permutation(len(x_test))
    x_test, y_test = x_test[order], y_test[order]
    x_cal = x_test[: s["n_cal"]]
    x_att, y_att = x_test[s["n_cal"] : s["n_cal"] + n], y_test[s["n_cal"] : s["n_cal"] + n]
    correct = np.argmax(model.predict(x_att, batch_size=256, verbose=0), 1) == y_att
    return {"x_cal": x_cal, "x": x_att[correct], "y": y_att[correct], "n_images": len(x_att)}


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"


def write_report(path, s, state, quick):
    b = state["budget"]
    lines = [
        "# Do the papers' detectors hold once trained against their attacker? "
        "(`benchmarks/robust_papers.py`)",
        "",
        bench.machine_line("robust_papers.py" + (" --quick" if quick else ""), state["minutes"]),
        "",
        f"Dataset {s['dataset']}, eps {s['eps']:g} (L-infinity); classifier: the undefended "
        f"`{'digits_cnn' if quick else 'mnist_cnn'}` (the papers' setting, `adaptive.md`). "
        f"Detectors built from the first {s['n_ref']} training images (medoids: all of them; "
        f"kNN reference set and LSTM training: the first {s['n_train']}). *adversarial_fit*: "
        f"round 0 on oblivious PGD-{s['train_steps']} examples, then {s['rounds']} rounds of "
        f"selective + orthogonal PGD-{s['train_steps']} against the current detector (LSTM: "
        f"{s['epochs_per_round']} epochs per round, the standard twin the same "
        f"{(s['rounds'] + 1) * s['epochs_per_round']} epochs on the oblivious examples only; "
        "kNN: the fooling examples join the reference set with their source's label). "
        "Nothing was tuned: one configuration per detector, the first run.",
        "",
        f"Calibration: the first {s['n_cal']} images of a seeded random order of the test "
        f"split; attacked: the next {b['n_images']}, of which {b['n_sources']} are "
        f"classified correctly (the sources). Attacks: oblivious PGD-100, selective and "
        f"orthogonal PGD-{b['steps']} (step eps/10, 1 random start), the union per source. "
        "SR@k: share of sources fooled **and** accepted at the k% FPR threshold; TPR@5: "
        "share of the fooling images flagged at 5% FPR; AUC: clean sources vs fooling images.",
        "",
        "| detector | training s | attack | fooled | SR@1 | SR@5 | SR@10 | TPR@5 (fooling) | AUC |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, d in state["detectors"].items():
        for attack, r in d["figures"]["rows"].items():
            sr = r.get("sr", [None] * 3)
            lines.append(
                f"| {name} | {d['seconds']:.0f} | {attack} | {_pct(r['fooled'])} | "
                f"{_pct(sr[0])} | **{_pct(sr[1])}** | {_pct(sr[2])} | "
                f"{_pct(r['tpr_fooling'][1])} | "
                + ("-" if r["auc_fooling"] is None else f"{r['auc_fooling']:.3f}")
                + " |"
            )
    lines += [
        "",
        "`adversarial_fit` rounds (on the training images, before each round's "
        "training, at the 5% threshold of those images):",
        "",
    ]
    lines += [
        "| detector | round | attack | fooled | fooled and undetected | negatives |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, d in state["detectors"].items():
        for r in d["rounds"] or []:
            if r["round"] == 0 and "standard" in name:
                continue
            lines.append(
                f"| {name} | {r['round']} | {r['attack']} | {_pct(r['fooled'])} | "
                f"{_pct(r['evaded'])} | {r['n_negatives']} |"
            )
    bench.write_text(path, "\n".join(lines) + "\n")
    log(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="test images attacked")
    parser.add_argument("--steps", type=int, default=None, help="adaptive attack steps")
    args = parser.parse_args()
    started = time.perf_counter()
    s = settings(args.quick)
    stem = RESULTS / ("robust_papers_quick" if args.quick else "robust_papers")
    model, fit, test = load(s)
    dets = build(model, fit, s)
    sets = _sets(s, model, test, args.n or s["n"])
    log(f"{len(sets['x'])} sources of {sets['n_images']} images")
    state = {"detectors": {}}
    for name, (detector, seconds, rounds) in dets.items():
        log(f"attacking {name}")
        figures = attack_one(model, detector, sets, s, args)
        state["detectors"][name] = {"seconds": seconds, "rounds": rounds, "figures": figures}
        log(f"{name}: union SR@5 {figures['rows']['union, per source']['sr'][1]:.3f}")
    state["budget"] = {
        "n_images": sets["n_images"],
        "n_sources": int(len(sets["x"])),
        "steps": args.steps or s["steps"],
    }
    state["minutes"] = (time.perf_counter() - started) / 60
    from keras_advguard._files import write_json

    write_json(stem.with_suffix(".json"), state)
    write_report(stem.with_suffix(".md"), s, state, args.quick)


if __name__ == "__main__":
    main()
