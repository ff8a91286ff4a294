"""Test configuration: quiet TensorFlow, deterministic seeds, headless plots."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    """Never write trained models into the user's home during tests."""
    import os

    if "KERAS_ADVGUARD_HOME" not in os.environ:
        os.environ["KERAS_ADVGUARD_HOME"] = str(tmp_path_factory.mktemp("advguard_home"))
    yield


@pytest.fixture(scope="session")
def digits_model(_model_cache):
    """The cached digits reference model (trained once per session) and its info."""
    from keras_advguard.models import load_or_train

    return load_or_train("digits_cnn", "digits", epochs=30)
