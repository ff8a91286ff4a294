"""Benchmark: adversarial training of MNIST-CNN with `AdversarialModel`.

Trains `models.mnist_cnn` from scratch with PGD adversarial training (Madry
et al.) at eps 0.3 (L-infinity) on 54,000 MNIST training images; 6,000 are
held out (`validation_split(fraction=0.1, seed=0)`) and, after every epoch,
the first 500 of them measure clean accuracy and robust accuracy under PGD-20
(nothing is chosen on the test split). The CPU budget is small: few epochs,
few inner PGD steps with a large step, a radius ramped up over the first
epochs, and a wall-clock cap. Every epoch is checkpointed atomically (the
wrapper with its optimizer state, and a JSON of the per-epoch records)
under `$KERAS_ADVGUARD_HOME/robust_training/`, so an interrupted run resumes
where it stopped; the trained classifier is cached as a plain `.keras` file
in `$KERAS_ADVGUARD_HOME/models/`.

Then, on a seeded random 1,000 of the MNIST test images (its two halves come
from different writers, so the head is no fair sample): clean accuracy, robust accuracy
under PGD-100 (step 0.01, random start, `keras_advguard.attacks.pgd`) and,
when the library has it, APGD (`keras_advguard.attacks.apgd`). Robust
accuracy counts an image as robust when its attacked version is still
classified as its true label (clean errors count as failures).

Writes `benchmarks/results/robust_training.md` (`robust_training_quick.md`
with `--quick`, a minutes-long smoke run on 2,000 images).

Usage:
    nice -n 19 python benchmarks/robust_training.py [--quick] [--epochs 5]
        [--steps 7] [--step-size 0.1] [--ramp-epochs 1] [--max-minutes 55]
        [--phase all|train|evaluate]

`--max-minutes` caps the wall clock of this invocation: training stops after
the epoch past which another epoch would not fit. Run it again to resume.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import _common as bench  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
EPS = 0.3
MADRY = {"clean": 0.985, "pgd": 0.896, "autoattack": 0.885}


home = bench.home


def load_data(quick):
    import numpy as np

    from keras_advguard.datasets import load_dataset, validation_split

    path = str(SHARED_MNIST) if SHARED_MNIST.exists() else None
    (x_train, y_train), (x_test, y_test) = load_dataset("mnist", path=path)
    (x_fit, y_fit), (x_val, y_val) = validation_split(x_train, y_train, fraction=0.1, seed=0)
    if quick:
        fit, val = (x_fit[:2000], y_fit[:2000]), (x_val[:100], y_val[:100])
        return fit, val, (x_test[:200], y_test[:200])
    # A seeded random 1,000 of the 10,000 test images: MNIST's two test halves
    # come from different writers, so the first 1,000 are no fair sample.
    pick = np.random.default_rng(0).permutation(len(x_test))[:1000]
    return (x_fit, y_fit), (x_val[:500], y_val[:500]), (x_test[pick], y_test[pick])


def robust_accuracy(model, x, y, *, nb_iter, eps_iter, batch_size=250):
    import numpy as np

    from keras_advguard.attacks import pgd

    result = pgd(model, x, eps=EPS, eps_iter=eps_iter, nb_iter=nb_iter, y=y, batch_size=batch_size)
    return float(np.mean(result.y_pred_after == y)), result


def clean_accuracy(model, x, y):
    import numpy as np

    pred = np.argmax(model.predict(x, batch_size=500, verbose=0), axis=1)
    return float(np.mean(pred == y))


class EpochRecorder:
    """Keras callback: held-out accuracy, timing and an atomic checkpoint per epoch."""

    def __new__(cls, *args, **kwargs):
        import keras

        class _Recorder(keras.callbacks.Callback):
            def __init__(self, val, ckpt, progress, records, deadline, quick):
                super().__init__()
                self.val, self.ckpt, self.progress = val, ckpt, progress
                self.records, self.deadline, self.quick = records, deadline, quick

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                from keras_advguard._files import write_atomic, write_json

                seconds = time.perf_counter() - self.start
                x_val, y_val = self.val
                classifier = self.model.unwrap()
                clean = clean_accuracy(classifier, x_val, y_val)
                robust, _ = robust_accuracy(classifier, x_val, y_val, nb_iter=20, eps_iter=0.025)
                record = {
                    "epoch": epoch + 1,
                    "train_seconds": round(seconds, 1),
                    "epsilon": round(float(self.model.epsilon.numpy()), 4),
                    "train_loss": round(float(logs["loss"]), 4),
                    "train_adv_accuracy": round(float(logs["accuracy"]), 4),
                    "val_clean_accuracy": clean,
                    "val_pgd20_accuracy": robust,
                }
                self.records.append(record)
                print(json.dumps(record), flush=True)
                write_atomic(self.ckpt, self.model.save, ".keras")
                write_json(self.progress, {"records": self.records})
                if time.time() + seconds > self.deadline:  # the next epoch would not fit
                    print("wall-clock cap reached: stopping after this epoch", flush=True)
                    self.model.stop_training = True

        return _Recorder(*args, **kwargs)


def train(args, stem, data):
    import keras

    from keras_advguard._files import write_atomic, write_json
    from keras_advguard.models import mnist_cnn
    from keras_advguard.training import AdversarialModel

    (x_fit, y_fit), val, _ = data
    work = home() / "robust_training"
    work.mkdir(parents=True, exist_ok=True)
    ckpt, progress = work / f"{stem}.ckpt.keras", work / f"{stem}.progress.json"
    records = []
    if ckpt.exists() and progress.exists():
        robust = keras.models.load_model(ckpt)
        records = json.loads(progress.read_text())["records"]
        print(f"resuming after epoch {len(records)} from {ckpt}", flush=True)
    else:
        keras.utils.set_random_seed(0)
        robust = AdversarialModel(
            mnist_cnn(),
            method=args.method,
            eps=EPS,
            steps=args.steps,
            step_size=args.step_size,
            ramp_epochs=args.ramp_epochs,
        )
        robust.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    done = len(records)
    if done < args.epochs:
        recorder = EpochRecorder(
            val, ckpt, progress, records, time.time() + 60 * args.max_minutes, args.quick
        )
        robust.fit(
            x_fit,
            y_fit,
            batch_size=128,
            epochs=args.epochs,
            initial_epoch=done,
            shuffle=True,
            verbose=0,
            callbacks=[recorder],
        )
    model_dir = home() / "models"
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / f"{stem}.keras"
    write_atomic(final, robust.unwrap().save, ".keras")
    write_json(model_dir / f"{stem}.json", {"records": records, "config": _config(robust)})
    return final, records


def _config(robust):
    config = robust.get_config()
    config.pop("model")
    return config


def evaluate(final, data, save_partial):
    import keras
    import numpy as np

    from keras_advguard import attacks

    _, _, (x_test, y_test) = data
    model = keras.models.load_model(final)
    rows = {"n": len(x_test), "clean": clean_accuracy(model, x_test, y_test)}
    start = time.perf_counter()
    rows["pgd100"], result = robust_accuracy(model, x_test, y_test, nb_iter=100, eps_iter=0.01)
    rows["pgd100_seconds"] = round(time.perf_counter() - start, 1)
    survived = result.y_pred_after == y_test
    rows["worst_case"] = float(np.mean(survived))
    save_partial(rows)
    if hasattr(attacks, "apgd"):
        for loss in ("ce", "dlr"):
            start = time.perf_counter()
            try:
                result = attacks.apgd(model, x_test, eps=EPS, nb_iter=100, loss=loss, y=y_test)
            except Exception as e:  # noqa: BLE001 - report, do not hide
                rows[f"apgd_{loss}_error"] = f"{type(e).__name__}: {e}"
                continue
            ok = result.y_pred_after == y_test
            rows[f"apgd_{loss}"] = float(np.mean(ok))
            rows[f"apgd_{loss}_seconds"] = round(time.perf_counter() - start, 1)
            survived &= ok
            rows["worst_case"] = float(np.mean(survived))
            save_partial(rows)
    return rows


def write_report(args, stem, records, rows, out, n_fit):
    import keras
    import tensorflow as tf

    lines = [
        "# Adversarial training of MNIST-CNN (`keras_advguard.training`)",
        "",
        f"Generated by `benchmarks/robust_training.py{' --quick' if args.quick else ''}` on "
        f"{platform.machine()}, CPU only (2 cores shared with other jobs, `nice -n 19`), "
        f"TF {tf.__version__}, Keras {keras.__version__}, {time.strftime('%Y-%m-%d')}.",
        "",
        f"`AdversarialModel(mnist_cnn(), method={args.method!r}, eps=0.3, steps={args.steps}, "
        f"step_size={args.step_size}, random_start=True, ramp_epochs={args.ramp_epochs})`, "
        f"Adam 1e-3, batch 128, trained from scratch on {n_fit:,} MNIST training images "
        "(6,000 held out; the first 500 of them, 100 with `--quick`, give the per-epoch "
        "validation figures). "
        f"Checkpoint / cache stem: `{stem}`.",
        "",
        "## How the figures moved with epochs (held-out training images)",
        "",
        "| epoch | train s | eps | train loss | train adv. acc | val clean | val PGD-20 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r['epoch']} | {r['train_seconds']:.0f} | {r['epsilon']:.3f} | "
            f"{r['train_loss']:.3f} | {r['train_adv_accuracy']:.3f} | "
            f"{r['val_clean_accuracy']:.3f} | {r['val_pgd20_accuracy']:.3f} |"
        )
    total = sum(r["train_seconds"] for r in records)
    lines += [
        "",
        f"Training time: {total / 60:.1f} min for {len(records)} epochs "
        f"({total / max(len(records), 1):.0f} s per epoch, wall clock on the shared CPU).",
        "",
        f"## Test ({rows['n']:,} MNIST test images, a seeded random sample, eps 0.3, L-infinity)",
        "",
        "| model | clean | PGD-100 | APGD-CE | APGD-DLR | worst case | AutoAttack |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| Madry et al. (2018), 100k iterations of PGD-40 training | "
        f"{MADRY['clean']:.3f} | {MADRY['pgd']:.3f} | - | - | - | {MADRY['autoattack']:.3f} |",
    ]

    def cell(key):
        return f"{rows[key]:.3f}" if key in rows else "not run"

    lines.append(
        f"| this run ({len(records)} epochs, PGD-{args.steps} training) | {cell('clean')} | "
        f"{cell('pgd100')} | {cell('apgd_ce')} | {cell('apgd_dlr')} | {cell('worst_case')} "
        "| not run |"
    )
    lines += [
        "",
        f"{rows['n']} test images. PGD-100: step 0.01, uniform random start, one restart, "
        f"true labels ({rows['pgd100_seconds']} s). APGD-CE / APGD-DLR: "
        "`keras_advguard.attacks.apgd`, 100 steps, one restart "
        f"({rows.get('apgd_ce_seconds', '-')} s / {rows.get('apgd_dlr_seconds', '-')} s). "
        "Worst case: an image counts as robust only if it survives every attack run "
        "(the per-image union). AutoAttack proper (with its targeted APGD-T and FAB and "
        "Square) was not run.",
        "",
    ]
    if rows.get("partial"):
        lines += [
            "The evaluation was cut short: the worst case is over the attacks with a figure "
            "in the table only.",
            "",
        ]
    for key in ("apgd_ce_error", "apgd_dlr_error"):
        if key in rows:
            lines += [f"{key}: {rows[key]}", ""]
    from keras_advguard._files import write_atomic

    def write(tmp):
        Path(tmp).write_text("\n".join(lines), encoding="utf-8")

    write_atomic(out, write, ".md")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--method", default="pgd", choices=("pgd", "trades"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--step-size", type=float, default=0.1)
    parser.add_argument("--ramp-epochs", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=55.0)
    parser.add_argument("--phase", default="all", choices=("all", "train", "evaluate", "report"))
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.steps, args.ramp_epochs = 2, 3, 1
    stem = (
        f"robust_mnist_cnn-{args.method}-eps0.3-k{args.steps}-a{args.step_size}"
        f"-r{args.ramp_epochs}{'-quick' if args.quick else ''}"
    )
    data = load_data(args.quick)
    final = home() / "models" / f"{stem}.keras"
    records = []
    if args.phase in ("all", "train"):
        final, records = train(args, stem, data)
    else:
        records = json.loads((home() / "models" / f"{stem}.json").read_text())["records"]
    RESULTS.mkdir(exist_ok=True)
    name = "robust_training_quick.md" if args.quick else "robust_training.md"
    if args.phase == "report":  # rewrite the table from the stored figures
        rows = json.loads((RESULTS / f"{Path(name).stem}.json").read_text())["test"]
        write_report(args, stem, records, rows, RESULTS / name, len(data[0][0]))
    if args.phase in ("all", "evaluate"):
        from keras_advguard._files import write_json

        def save_partial(rows):  # each attack's figure as soon as it is known
            write_json(
                RESULTS / f"{Path(name).stem}.json",
                {"records": records, "test": dict(rows, partial=True)},
            )

        rows = evaluate(final, data, save_partial)
        write_json(RESULTS / f"{Path(name).stem}.json", {"records": records, "test": rows})
        write_report(args, stem, records, rows, RESULTS / name, len(data[0][0]))


if __name__ == "__main__":
    main()
