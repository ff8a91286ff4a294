"""keras_advguard.plots.entropy: FeatureResponseDisplay, EntropyHistogramDisplay."""

import keras
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_advguard.detectors.entropy_detector import EntropyDetector  # noqa: E402
from keras_advguard.plots.entropy import (  # noqa: E402
    EntropyHistogramDisplay,
    FeatureResponseDisplay,
)


@pytest.fixture(scope="module")
def detector():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((10, 10, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    return EntropyDetector(model)


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 10, 10, 1)).astype("float32")


def test_feature_response_display_from_detector(detector):
    x_clean, x_adv = images(2), images(2, seed=1)
    display = FeatureResponseDisplay.from_detector(detector, x_clean, x_adv)
    assert display.axes_.shape == (3, 4)
    # Columns alternate clean / adversarial; the last row shows the entropy maps.
    maps = detector.entropy_maps(np.stack([x_clean[0], x_adv[0], x_clean[1], x_adv[1]]))
    for j in range(4):
        np.testing.assert_allclose(display.images_[2, j].get_array(), maps[j])
    assert [ax.get_title() for ax in display.axes_[0]] == ["Original", "Adversarial"] * 2
    assert display.axes_[1, 0].get_ylabel() == "Feature response"
    plt.close(display.figure_)


def test_feature_response_display_checks_shapes():
    with pytest.raises(ValueError, match="same length"):
        FeatureResponseDisplay(np.zeros((2, 4, 4)), np.zeros((3, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="height and width"):
        FeatureResponseDisplay(np.zeros((2, 4, 4)), np.zeros((2, 5, 4)), np.zeros((2, 4, 4)))


def test_histogram_display(detector):
    clean, adv = np.array([1.0, 1.1, 1.2, 1.25]), np.array([1.9, 2.0])
    display = EntropyHistogramDisplay(clean, adv, threshold=1.5).plot(bins=4, density=False)
    assert sum(p.get_height() for p in display.bars_clean_) == 4
    assert sum(p.get_height() for p in display.bars_adv_) == 2
    assert display.threshold_line_.get_xdata()[0] == 1.5
    plt.close(display.figure_)

    fitted = EntropyDetector(detector.model).fit(images(20))
    display = EntropyHistogramDisplay.from_detector(fitted, images(5), images(5, seed=2))
    assert display.threshold_line_.get_xdata()[0] == pytest.approx(fitted.threshold_)
    plt.close(display.figure_)
