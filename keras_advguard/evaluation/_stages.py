"""The stages of `evaluate`: attacks (cached), detectors, sanitizers, adaptive attacks."""

import dataclasses
import inspect
import time

import numpy as np

from keras_advguard import metrics
from keras_advguard.evaluation import _cache, _protocol, _threats


class Log:
    def __init__(self, verbose):
        self.verbose = verbose

    def __call__(self, message):
        if self.verbose:
            print(f"[evaluate] {message}", flush=True)


def predict_labels(model, x, batch_size):
    return np.argmax(np.asarray(model.predict(x, batch_size=batch_size, verbose=0)), axis=-1)


def run_attack(cache, model_hash, model, name, params, x, y, config, seed):
    """One oblivious attack, from the cache when it holds it."""
    import keras

    key = _cache.attack_key(model_hash, x, y, name, params, seed, config["clip"])

    result = cache.load(key)
    if result is not None:
        return result, True
    keras.utils.set_random_seed(seed)
    function = _threats.attack_function(name)
    kwargs = dict(params)
    kwargs.update(y=y, clip_min=config["clip"][0], clip_max=config["clip"][1])
    kwargs.update(batch_size=config["batch_size"], verbose=1 if config["verbose"] > 1 else 0)
    if "seed" in inspect.signature(function).parameters:
        kwargs["seed"] = seed
    result = function(model, x, **kwargs)
    cache.store(key, result)
    return result, False


@dataclasses.dataclass
class Attacked:
    """One oblivious attack's run over the evaluated images.

    Attributes:
        rows: indices into the evaluated images that were attacked (all of
            them, or the first `num_images` sources).
        result: the `AttackResult` over those rows.
        targets: the target labels of the rows (a targeted attack), else
            `None`.
    """

    rows: np.ndarray
    result: object
    targets: object = None

    @property
    def targeted(self):
        return self.targets is not None

    def attack_labels(self, y_eval):
        """What the attack is given as `y`: the targets, else the true labels."""
        return self.targets if self.targeted else y_eval[self.rows]

    def success(self, y_eval):
        """Bool `(len(rows),)`: classified as the target (targeted), else not as the truth."""
        after = self.result.y_pred_after
        return after == self.targets if self.targeted else after != y_eval[self.rows]

    def full(self, values, fill):
        """`values` of the rows spread over every evaluated image (`fill` elsewhere)."""
        values = np.asarray(values)
        if len(self.rows) == len(fill) and np.array_equal(self.rows, np.arange(len(fill))):
            return values
        out = np.array(fill, dtype=values.dtype, copy=True)
        out[self.rows] = values
        return out


def _score(detector, x, config):
    if len(x) == 0:
        return np.zeros(0)
    return np.asarray(detector.score(x, batch_size=config["batch_size"], verbose=0), np.float64)


def _fit_supervised(detector, x, is_adversarial, config):
    import keras

    if isinstance(detector, keras.Model) and not getattr(detector, "compiled", True):
        detector.compile()
    detector.fit(
        x,
        is_adversarial.astype("float32"),
        epochs=config["epochs"],
        batch_size=min(32, len(x)),
        verbose=0,
    )
    return detector


class DetectorInputs:
    """What a detector is fitted and scored on: images, or a shared pass's features.

    `sets` maps `"clean"` and each attack label to arrays aligned with the
    sources (row `i` is source `i`, or its adversarial image): the images
    themselves (the detector runs its own pass through `score` / `fit`), or,
    with `shared=True`, the features `features_from_taps` gave for them
    (`score_features` / `fit_features`: the classifier is not run again).
    """

    def __init__(self, sets, config, shared=False):
        self.sets = sets
        self.config = config
        self.shared = shared

    def rows(self, key, idx):
        return self.sets[key][idx]

    def score(self, detector, key, idx):
        if len(idx) == 0:
            return np.zeros(0)
        if self.shared:
            return np.asarray(detector.score_features(self.rows(key, idx)), np.float64)
        return _score(detector, self.rows(key, idx), self.config)

    def fit(self, detector, parts, is_adversarial):
        """Train `detector` on the rows `parts = [(key, idx), ...]`."""
        x = np.concatenate([self.rows(key, idx) for key, idx in parts])
        if not self.shared:
            return _fit_supervised(detector, x, is_adversarial, self.config)
        detector.fit_features(
            x,
            is_adversarial.astype("float32"),
            epochs=self.config["epochs"],
            batch_size=min(32, len(x)),
            verbose=0,
        )
        return detector


def fit_unsupervised(detector, x_fit_clean, y_fit_clean, config):
    """Fit a statistical detector on clean training images (when it learns anything)."""
    if getattr(detector, "supervised", False) or not getattr(detector, "needs_fit", True):
        return detector
    if getattr(detector, "fit", None) is not None:
        detector.fit(x_fit_clean, y_fit_clean, batch_size=config["batch_size"], verbose=0)
    return detector


def evaluate_detector(
    detector, inputs, x_sources, adv_mask, labels, split_list, config, timing, log, name=None
):
    """Per-attack, mixed and attack-unknown figures of one (fitted, if statistical) detector.

    Returns `(entry, fold_scores, final)`: the report entry, the per-fold
    `(scores_clean, scores_adv)` of each attack and of `"mixed"` (ROC
    figures), and the detector the adaptive attack targets (fitted on the
    first split for a trained detector), calibrated at the largest `fpr`.
    """
    fprs = config["fpr"]
    name = name or type(detector).__name__
    supervised = bool(getattr(detector, "supervised", False))
    entry = {
        "class": type(detector).__name__,
        "supervised": supervised,
        "score_tensor_kind": getattr(detector, "score_tensor_kind", "exact"),
        "shared_taps": bool(inputs.shared),
    }
    n = len(x_sources)
    folds = {label: [] for label in labels + ["mixed"]}
    fold_scores = {label: [] for label in labels + ["mixed"]}
    unknown = {train: {test: [] for test in labels} for train in labels + ["mixed"]}
    final = detector
    if not supervised:
        t0 = time.perf_counter()
        clean = inputs.score(detector, "clean", np.arange(n))
        adv = {label: np.full(n, np.nan) for label in labels}  # scored where the attack succeeded
        for label in labels:
            idx = np.flatnonzero(adv_mask[label])
            adv[label][idx] = inputs.score(detector, label, idx)
        timing["score"] += time.perf_counter() - t0
        for split in split_list:
            _measure(split, clean, adv, adv_mask, labels, fprs, folds, fold_scores)
        final.calibrate(
            x_sources[split_list[0].calibration], fpr=max(fprs), batch_size=config["batch_size"]
        )
    else:
        import keras

        # Each trained detector starts from the same seed, so its figures do
        # not depend on what ran before it (attacks from the cache or not).
        keras.utils.set_random_seed(config.get("seed", 0))
        for k, split in enumerate(split_list):
            for train_label in labels + ["mixed"]:
                train_on = labels if train_label == "mixed" else [train_label]
                t0 = time.perf_counter()
                parts = [("clean", split.fit)]
                y_fit = [np.zeros(len(split.fit))]
                for label in train_on:
                    idx = split.fit[adv_mask[label][split.fit]]
                    parts.append((label, idx))
                    y_fit.append(np.ones(len(idx)))
                trained = inputs.fit(detector.clone(), parts, np.concatenate(y_fit))
                timing["fit"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                need = np.concatenate([split.calibration, split.test])
                clean = np.full(n, np.nan)
                clean[need] = inputs.score(trained, "clean", need)
                adv = {label: np.full(n, np.nan) for label in labels}
                for label in labels:
                    idx = split.test[adv_mask[label][split.test]]
                    adv[label][idx] = inputs.score(trained, label, idx)
                timing["score"] += time.perf_counter() - t0
                _measure(
                    split, clean, adv, adv_mask, labels, fprs, folds, fold_scores, [train_label]
                )
                if train_label == "mixed" and k == 0:
                    final = trained
                    final.calibrate(
                        x_sources[split.calibration],
                        fpr=max(fprs),
                        batch_size=config["batch_size"],
                    )
                for test_label in labels:
                    test_adv = adv[test_label][split.test[adv_mask[test_label][split.test]]]
                    unknown[train_label][test_label].append(
                        _protocol.fold_metrics(
                            clean[split.test], test_adv, clean[split.calibration], fprs
                        )
                    )
        log(
            f"{name}: trained {len(split_list) * (len(labels) + 1)} times "
            f"({len(split_list)} splits x {len(labels)} attacks + mixed)"
            + (" on shared-pass features" if inputs.shared else "")
        )
    entry["oblivious"] = {label: _protocol.aggregate(folds[label], fprs) for label in folds}
    if supervised:
        entry["attack_unknown"] = {
            train: {test: _protocol.aggregate(unknown[train][test], fprs) for test in labels}
            for train in unknown
        }
    else:
        entry["attack_unknown"] = {}
    log(f"{name}: mixed AUC " + _fmt(entry["oblivious"]["mixed"], "auc"))
    return entry, fold_scores, final


def one_line(error):
    """`Type: message`, the message's last informative line, at most 300 characters."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:300]


def _fmt(summary, key):
    return "n/a" if summary is None else f"{summary[key]:.3f}"


def _measure(split, clean, adv, adv_mask, labels, fprs, folds, fold_scores, only=None):
    """Add one split's figures per attack and mixed (or only those in `only`)."""
    cal = clean[split.calibration]
    test_clean = clean[split.test]
    mixed = []
    for label in labels:
        test_adv = adv[label][split.test[adv_mask[label][split.test]]]
        mixed.append(test_adv)
        if only is None or label in only:
            folds[label].append(_protocol.fold_metrics(test_clean, test_adv, cal, fprs))
            if len(test_adv):
                fold_scores[label].append((test_clean, test_adv))
    if only is None or "mixed" in only:
        test_adv = np.concatenate(mixed)
        folds["mixed"].append(_protocol.fold_metrics(test_clean, test_adv, cal, fprs))
        if len(test_adv):
            fold_scores["mixed"].append((test_clean, test_adv))


def adaptive_detector(
    model, detector, x_sources, y_sources, split, config, eps, budget, seed, entry, log, name=None
):
    """The adaptive figures of one calibrated detector on the first split's test sources.

    Selective and orthogonal PGD with the constant step eps/10, and selective
    PGD with a step shrinking to eps/200, untargeted and targeted at each
    source's runner-up class (`_threats.ADAPTIVE_DETECTOR_ATTACKS`), all run;
    per source the strongest result is kept (fooled, with the lowest score),
    so a defence is reported against the best of the four.
    """
    fprs = config["fpr"]
    name_in_log = name or type(detector).__name__
    x = x_sources[split.test]
    y = y_sources[split.test]
    cal = _score(detector, x_sources[split.calibration], config)
    clean = _score(detector, x, config)
    thresholds = [float(t) for t in metrics.threshold_at_fpr(cal, list(fprs))]
    per_attack, runs, seconds = {}, [], 0.0
    for name in _threats.ADAPTIVE_DETECTOR_ATTACKS:
        try:
            result = _threats.adaptive_detector_attack(
                model,
                detector,
                x,
                y,
                eps=eps,
                nb_iter=budget["adaptive_iter"],
                clip=config["clip"],
                batch_size=config["batch_size"],
                seed=seed,
                attack=name,
            )
        except Exception as error:  # a score_tensor that cannot be traced: say so
            log(f"{name_in_log}: {name} failed: {one_line(error)}")
            per_attack[name] = {"error": one_line(error)}
            continue
        scores = _score(detector, result.x_adv, config)
        fooled = result.y_pred_after != y
        seconds += float(result.seconds)
        runs.append((fooled, scores))
        per_attack[name] = {
            "success_rate": float(fooled.mean()) if len(x) else 0.0,
            "sr_at_fpr": _protocol.success_at_threshold(fooled, scores, thresholds),
            "seconds": float(result.seconds),
        }
    if not runs:
        return {"error": "; ".join(f"{k}: {v['error']}" for k, v in per_attack.items())}
    # Per source: a fooled result beats an unfooled one; then the lower score.
    rank = np.stack([np.where(f, s, np.inf) for f, s in runs])
    best = np.argmin(rank, axis=0)
    pick = np.arange(len(x))
    fooled = np.stack([f for f, _ in runs])[best, pick]
    scores = np.stack([s for _, s in runs])[best, pick]
    out = {
        "attack": "best of " + ", ".join(n for n in per_attack if "error" not in per_attack[n]),
        "per_attack": per_attack,
        "eps": float(eps),
        "nb_iter": int(budget["adaptive_iter"]),
        "n_sources": int(len(x)),
        "n_fooled": int(fooled.sum()),
        "success_rate": float(fooled.mean()) if len(x) else 0.0,
        "sr_at_fpr": _protocol.success_at_threshold(fooled, scores, thresholds),
        "seconds": seconds,
    }
    # Counts and 95% Wilson intervals: the TPR rests on the few fooled sources.
    evaded = [int(np.sum(fooled & (scores <= t))) for t in thresholds]
    out["n_evaded"] = evaded
    out["sr_interval"] = [_protocol.interval(k, len(x)) for k in evaded]
    measured = _protocol.fold_metrics(clean, scores[fooled], cal, fprs)
    if measured is not None:
        out.update(auc=measured["auc"], tpr=measured["tpr"], fpr=measured["fpr"])
        flagged = [int(np.sum(scores[fooled] > t)) for t in thresholds]
        out["n_flagged"] = flagged
        out["tpr_interval"] = [_protocol.interval(k, out["n_fooled"]) for k in flagged]
    log(
        f"{name_in_log}: adaptive success {out['success_rate']:.3f}, SR@"
        f"{max(fprs):g} {out['sr_at_fpr'][-1]:.3f} ({out['attack']}, per source)"
    )
    return out


def evaluate_sanitizer(
    defence, x_eval, y_eval, attacked, labels, specs, config, cache, seed, adaptive_wanted, log
):
    """Accuracy of a sanitized model, clean and under each attack (both threat models).

    `attacked` maps each attack label to its `Attacked` run; the accuracy
    under an attack is over the images it attacked (all of them unless
    the attack has its own `num_images`), against the true labels.
    """
    batch_size = config["batch_size"]

    def acc(m, x, y):
        return float(np.mean(predict_labels(m, x, batch_size) == y))

    out = {
        "oblivious": {"clean": acc(defence.model, x_eval, y_eval)},
        "adaptive": {},
        "after": list(defence.after or []),
    }
    for label in labels:
        a = attacked[label]
        out["oblivious"][label] = acc(defence.model, a.result.x_adv, y_eval[a.rows])
    if adaptive_wanted:
        adaptive_hash = _cache.model_fingerprint(defence.adaptive_model)
        for label, (name, params) in zip(labels, specs, strict=True):
            a = attacked[label]
            result, _ = run_attack(
                cache,
                adaptive_hash,
                defence.adaptive_model,
                name,
                params,
                x_eval[a.rows],
                a.attack_labels(y_eval),
                config,
                seed,
            )
            out["adaptive"][label] = acc(defence.model, result.x_adv, y_eval[a.rows])
    log(
        f"sanitizer {defence.name}: clean {out['oblivious']['clean']:.3f}, "
        + ", ".join(f"{k} {v:.3f}" for k, v in out["oblivious"].items() if k != "clean")
    )
    return out
