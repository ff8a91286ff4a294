"""The public surface of `keras_advguard.attacks`: one function per module."""

import importlib
import inspect

import keras_advguard.attacks as attacks

ATTACKS = [
    "apgd",
    "bim",
    "boundary",
    "carlini_wagner_l2",
    "deepfool",
    "feature_matching",
    "fgsm",
    "gradient_attack",
    "mim",
    "one_pixel",
    "orthogonal_pgd",
    "pgd",
    "selective_pgd",
    "spsa",
    "uniform_noise",
]


def test_public_names():
    assert sorted(attacks.__all__) == sorted(
        [*ATTACKS, "AttackResult", "bpda", "eot", "pgd_with_loss"]
    )
    for name in attacks.__all__:
        assert getattr(attacks, name).__doc__


def test_one_function_per_module_named_after_it():
    for name in [*ATTACKS, "bpda", "eot", "pgd_with_loss"]:
        module = importlib.import_module(f"keras_advguard.attacks.{name}")
        public = [
            n
            for n, obj in vars(module).items()
            if inspect.isfunction(obj)
            and not n.startswith("_")
            and obj.__module__ == module.__name__
        ]
        assert public == [name]


def test_common_signature():
    for name in ATTACKS:
        params = inspect.signature(getattr(attacks, name)).parameters
        assert list(params)[:2] == ["model", "x"]
        for keyword, default in (("clip_min", 0.0), ("clip_max", 1.0), ("verbose", 0)):
            assert params[keyword].default == default, (name, keyword)
            assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY
        assert params["y"].default is None and "batch_size" in params
