"""The stages of `evaluate`: attacks (cached), detectors, sanitizers, adaptive attacks."""

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


def unique_names(names):
    """`names` with `_2`, `_3`... appended to repeats."""
    seen, out = {}, []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
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


def evaluate_detector(
    detector,
    x_sources,
    y_sources,
    adv_images,
    adv_mask,
    labels,
    split_list,
    config,
    x_fit_clean,
    y_fit_clean,
    timing,
    log,
):
    """Per-attack, mixed and attack-unknown figures of one detector.

    Returns `(entry, fold_scores, final)`: the report entry, the per-fold
    `(scores_clean, scores_adv)` of each attack and of `"mixed"` (ROC
    figures), and the detector the adaptive attack targets (fitted on the
    first split for a trained detector).
    """
    fprs = config["fpr"]
    supervised = bool(getattr(detector, "supervised", False))
    entry = {
        "class": type(detector).__name__,
        "supervised": supervised,
        "score_tensor_kind": getattr(detector, "score_tensor_kind", "exact"),
    }
    folds = {label: [] for label in labels + ["mixed"]}
    fold_scores = {label: [] for label in labels + ["mixed"]}
    unknown = {train: {test: [] for test in labels} for train in labels + ["mixed"]}
    final = detector
    if not supervised:
        t0 = time.perf_counter()
        if getattr(detector, "fit", None) is not None:
            detector.fit(x_fit_clean, y_fit_clean, batch_size=config["batch_size"], verbose=0)
        timing["fit"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        clean = _score(detector, x_sources, config)
        adv = {
            label: np.full(len(x_sources), np.nan) for label in labels
        }  # scored where the attack succeeded
        for label in labels:
            idx = np.flatnonzero(adv_mask[label])
            adv[label][idx] = _score(detector, adv_images[label][idx], config)
        timing["score"] += time.perf_counter() - t0
        for split in split_list:
            _measure(split, clean, adv, adv_mask, labels, fprs, folds, fold_scores)
        t_cal = clean[split_list[0].calibration]
        final.calibrate(
            x_sources[split_list[0].calibration], fpr=max(fprs), batch_size=config["batch_size"]
        )
        entry["calibration_scores"] = t_cal
    else:
        for k, split in enumerate(split_list):
            for train_label in labels + ["mixed"]:
                train_on = labels if train_label == "mixed" else [train_label]
                t0 = time.perf_counter()
                x_fit = [x_sources[split.fit]]
                y_fit = [np.zeros(len(split.fit))]
                for label in train_on:
                    idx = split.fit[adv_mask[label][split.fit]]
                    x_fit.append(adv_images[label][idx])
                    y_fit.append(np.ones(len(idx)))
                trained = _fit_supervised(
                    detector.clone(), np.concatenate(x_fit), np.concatenate(y_fit), config
                )
                timing["fit"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                need = np.concatenate([split.calibration, split.test])
                clean = np.full(len(x_sources), np.nan)
                clean[need] = _score(trained, x_sources[need], config)
                adv = {label: np.full(len(x_sources), np.nan) for label in labels}
                for label in labels:
                    idx = split.test[adv_mask[label][split.test]]
                    adv[label][idx] = _score(trained, adv_images[label][idx], config)
                timing["score"] += time.perf_counter() - t0
                if train_label == "mixed":
                    _measure(
                        split,
                        clean,
                        adv,
                        adv_mask,
                        labels,
                        fprs,
                        folds,
                        fold_scores,
                        only=["mixed"],
                    )
                    if k == 0:
                        final = trained
                        final.calibrate(
                            x_sources[split.calibration],
                            fpr=max(fprs),
                            batch_size=config["batch_size"],
                        )
                else:
                    _measure(
                        split,
                        clean,
                        adv,
                        adv_mask,
                        labels,
                        fprs,
                        folds,
                        fold_scores,
                        only=[train_label],
                    )
                for test_label in labels:
                    test_adv = adv[test_label][split.test[adv_mask[test_label][split.test]]]
                    unknown[train_label][test_label].append(
                        _protocol.fold_metrics(
                            clean[split.test], test_adv, clean[split.calibration], fprs
                        )
                    )
        log(
            f"{type(detector).__name__}: trained {len(split_list) * (len(labels) + 1)} times "
            f"({len(split_list)} splits x {len(labels)} attacks + mixed)"
        )
    entry["oblivious"] = {label: _protocol.aggregate(folds[label], fprs) for label in folds}
    if supervised:
        entry["attack_unknown"] = {
            train: {test: _protocol.aggregate(unknown[train][test], fprs) for test in labels}
            for train in unknown
        }
    else:
        entry["attack_unknown"] = {}
    entry.pop("calibration_scores", None)
    log(f"{type(detector).__name__}: mixed AUC " + _fmt(entry["oblivious"]["mixed"], "auc"))
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
    model, detector, x_sources, y_sources, split, config, eps, budget, seed, entry, log
):
    """The adaptive figures of one calibrated detector on the first split's test sources."""
    fprs = config["fpr"]
    x = x_sources[split.test]
    y = y_sources[split.test]
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
        )
    except Exception as error:  # a score_tensor that cannot be traced: say so
        log(f"{type(detector).__name__}: adaptive attack failed: {one_line(error)}")
        return {"error": one_line(error)}
    cal = _score(detector, x_sources[split.calibration], config)
    clean = _score(detector, x, config)
    scores = _score(detector, result.x_adv, config)
    fooled = result.y_pred_after != y
    thresholds = [float(t) for t in metrics.threshold_at_fpr(cal, list(fprs))]
    out = {
        "attack": "selective_pgd",
        "eps": float(eps),
        "nb_iter": int(budget["adaptive_iter"]),
        "n_sources": int(len(x)),
        "n_fooled": int(fooled.sum()),
        "success_rate": float(fooled.mean()) if len(x) else 0.0,
        "sr_at_fpr": _protocol.success_at_threshold(fooled, scores, thresholds),
        "seconds": float(result.seconds),
    }
    measured = _protocol.fold_metrics(clean, scores[fooled], cal, fprs)
    if measured is not None:
        out.update(auc=measured["auc"], tpr=measured["tpr"], fpr=measured["fpr"])
    log(
        f"{type(detector).__name__}: adaptive success {out['success_rate']:.3f}, SR@"
        f"{max(fprs):g} {out['sr_at_fpr'][-1]:.3f}"
    )
    return out


def evaluate_sanitizer(
    defence, x_eval, y_eval, results, labels, specs, config, cache, seed, adaptive_wanted, log
):
    """Accuracy of a sanitized model, clean and under each attack (both threat models)."""
    batch_size = config["batch_size"]
    acc = lambda m, x: float(np.mean(predict_labels(m, x, batch_size) == y_eval))  # noqa: E731
    out = {"oblivious": {"clean": acc(defence.model, x_eval)}, "adaptive": {}}
    for label in labels:
        out["oblivious"][label] = acc(defence.model, results[label].x_adv)
    if adaptive_wanted:
        adaptive_hash = _cache.model_fingerprint(defence.adaptive_model)
        for label, (name, params) in zip(labels, specs, strict=True):
            result, _ = run_attack(
                cache,
                adaptive_hash,
                defence.adaptive_model,
                name,
                params,
                x_eval,
                y_eval,
                config,
                seed,
            )
            out["adaptive"][label] = acc(defence.model, result.x_adv)
    log(
        f"sanitizer {defence.name}: clean {out['oblivious']['clean']:.3f}, "
        + ", ".join(f"{k} {v:.3f}" for k, v in out["oblivious"].items() if k != "clean")
    )
    return out
