"""The public import surface exists and every name in `__all__` resolves."""

import importlib

import pytest

import keras_advguard

PUBLIC = {
    "keras_advguard": [
        "ActivationStore",
        "DetectorModel",
        "as_logits_fn",
        "rebuild_model",
        "resolve_layers",
        "MaskSanitizer",
        "MedianSanitizer",
        "NLMeansSanitizer",
        "MedoidDistance",
        "BitDepthSqueezer",
        "MedianSmoothingSqueezer",
        "NLMeansSqueezer",
        "ClassMedoids",
        "MedoidLSTMDetector",
        "KNNDetector",
        "EntropyDetector",
        "FeatureSqueezingDetector",
        "sanitize",
        "sanitizer_name",
        "save_model",
        "load_model",
        "evaluate",
        "EvaluationReport",
        "__version__",
    ],
    "keras_advguard.evaluation": ["evaluate", "EvaluationReport", "default_cache_dir"],
    "keras_advguard.attacks": [
        "AttackResult",
        "fgsm",
        "bim",
        "pgd",
        "mim",
        "carlini_wagner_l2",
        "spsa",
        "uniform_noise",
        "deepfool",
        "one_pixel",
        "boundary",
        "gradient_attack",
        "bpda",
        "pgd_with_loss",
        "selective_pgd",
        "orthogonal_pgd",
        "apgd",
        "eot",
        "feature_matching",
    ],
    "keras_advguard.datasets": ["load_dataset", "validation_split"],
    "keras_advguard.models": [
        "mnist_cnn",
        "digits_cnn",
        "cifar_cnn",
        "load_or_train",
        "MNIST_CNN_SANITIZED_LAYERS",
    ],
    "keras_advguard.metrics": [
        "roc_curve",
        "roc_auc",
        "threshold_at_fpr",
        "tpr_at_fpr",
        "detection_report",
        "attack_success_rate",
        "robust_accuracy",
        "evaluation_sets",
        "EvaluationSets",
        "stratified_kfold",
        "train_val_test_split_by_group",
        "success_rate_at_fpr",
        "proportion_interval",
    ],
    "keras_advguard.plots": [
        "DetectionRocDisplay",
        "plot_mean_roc",
        "FeatureResponseDisplay",
        "EntropyHistogramDisplay",
        "AttackRocDisplay",
        "ActivationTsneDisplay",
        "plot_activation_tsne",
        "layer_divergence",
        "plot_layer_divergence",
        "plot_tradeoff",
        "CosineDivergenceDisplay",
        "layer_cosine_distances",
        "same_norm_noise",
    ],
    "keras_advguard.layers": [
        "MaskSanitizer",
        "MedianSanitizer",
        "NLMeansSanitizer",
        "MedoidDistance",
        "BitDepthSqueezer",
        "MedianSmoothingSqueezer",
        "NLMeansSqueezer",
    ],
    "keras_advguard.detectors": [
        "ClassMedoids",
        "MedoidLSTMDetector",
        "KNNDetector",
        "feature_response",
        "local_spatial_entropy",
        "EntropyDetector",
        "FeatureSqueezingDetector",
        "MaxSoftmaxDetector",
        "InputCNNDetector",
        "ClassConditionalInputDetector",
        "Detector",
        "load_detector",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_exist(module):
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lacks {missing}"


@pytest.mark.parametrize(
    "module",
    [
        "keras_advguard",
        "keras_advguard.attacks",
        "keras_advguard.detectors",
        "keras_advguard.evaluation",
    ],
)
def test_all_resolves(module):
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert getattr(mod, name) is not None


def test_layers_are_registered_for_safe_loading():
    import keras

    for name in [
        "BitDepthSqueezer",
        "MedianSmoothingSqueezer",
        "NLMeansSqueezer",
        "MedoidLSTMDetector",
        "MaskSanitizer",
        "MedianSanitizer",
        "NLMeansSanitizer",
        "MedoidDistance",
        "DetectorModel",
        "DenseLogits",
    ]:
        assert keras.saving.get_registered_object(f"keras_advguard>{name}") is not None


def test_version():
    assert keras_advguard.__version__.count(".") == 2
