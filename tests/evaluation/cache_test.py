"""The attack cache: content-hash keys, round trips, and a rerun that recomputes nothing."""

import keras
import numpy as np
import pytest

from keras_advguard import attacks
from keras_advguard.evaluation import _cache


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def test_key_changes_with_each_part_of_the_content():
    model = _model()
    x = np.full((2, 4), 0.5, dtype="float32")
    y = np.array([0, 1])
    h = _cache.model_fingerprint(model)
    base = _cache.attack_key(h, x, y, "fgsm", {"eps": 0.1}, 0, (0.0, 1.0))
    assert base == _cache.attack_key(h, x.copy(), y.copy(), "fgsm", {"eps": 0.1}, 0, (0, 1))
    other_weights = _model(seed=1)
    variants = [
        _cache.attack_key(
            _cache.model_fingerprint(other_weights), x, y, "fgsm", {"eps": 0.1}, 0, (0.0, 1.0)
        ),
        _cache.attack_key(h, x + np.float32(1e-3), y, "fgsm", {"eps": 0.1}, 0, (0.0, 1.0)),
        _cache.attack_key(h, x, y[::-1], "fgsm", {"eps": 0.1}, 0, (0.0, 1.0)),
        _cache.attack_key(h, x, y, "pgd", {"eps": 0.1}, 0, (0.0, 1.0)),
        _cache.attack_key(h, x, y, "fgsm", {"eps": 0.2}, 0, (0.0, 1.0)),
        _cache.attack_key(h, x, y, "fgsm", {"eps": 0.1}, 1, (0.0, 1.0)),
        _cache.attack_key(h, x, y, "fgsm", {"eps": 0.1}, 0, (-1.0, 1.0)),
    ]
    assert len(set(variants + [base])) == len(variants) + 1


def test_fingerprint_follows_the_weights_not_the_object():
    a, b = _model(0), _model(0)
    assert _cache.model_fingerprint(a) == _cache.model_fingerprint(b)
    b.layers[0].kernel.assign(b.layers[0].kernel + 1.0)
    assert _cache.model_fingerprint(a) != _cache.model_fingerprint(b)


def test_store_then_load_round_trips_every_field(tmp_path):
    model = _model()
    x = np.random.default_rng(0).random((5, 4)).astype("float32")
    result = attacks.fgsm(model, x, eps=0.1, y=np.array([0, 1, 2, 0, 1]))
    cache = _cache.AttackCache(tmp_path)
    assert cache.load("k") is None and cache.misses == 1
    cache.store("k", result)
    loaded = cache.load("k")
    assert cache.hits == 1
    for field in ("x_adv", "success", "y_pred_before", "y_pred_after", "labels", "l2", "linf"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(result, field))
    assert loaded.params["eps"] == 0.1 and loaded.params["norm"] == float("inf")
    assert loaded.attack == "fgsm" and loaded.seconds == pytest.approx(result.seconds)
    assert [p.name for p in tmp_path.iterdir()] == ["k.npz"]  # no temporary left


def test_a_corrupt_entry_is_recomputed_not_trusted(tmp_path):
    (tmp_path / "k.npz").write_bytes(b"PK\x03\x04 truncated")
    cache = _cache.AttackCache(tmp_path)
    assert cache.load("k") is None


def test_no_folder_disables_the_cache():
    cache = _cache.AttackCache(None)
    cache.store("k", object())  # not even looked at
    assert cache.load("k") is None and (cache.hits, cache.misses) == (0, 0)
