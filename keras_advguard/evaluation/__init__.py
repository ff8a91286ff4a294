"""Evaluate defences against attacks under one protocol (floor 4).

`evaluate(model, train, test, defences, attacks)` runs the protocol of
METHODS.md section 7 for every defence (detectors through the Detector
contract, sanitizers by accuracy), under the oblivious and the adaptive
threat models, and returns an `EvaluationReport` (markdown, JSON, PNG and a
self-contained HTML page). Attack results are cached on disk by content hash.
See `docs/evaluate.md`.
"""

from keras_advguard.evaluation._cache import default_cache_dir
from keras_advguard.evaluation._defences import BASELINES, DEFENCE_NAMES
from keras_advguard.evaluation._threats import ATTACK_NAMES
from keras_advguard.evaluation.evaluate import THREAT_MODELS, evaluate
from keras_advguard.evaluation.report import EvaluationReport

__all__ = [
    "ATTACK_NAMES",
    "BASELINES",
    "DEFENCE_NAMES",
    "EvaluationReport",
    "THREAT_MODELS",
    "default_cache_dir",
    "evaluate",
]
