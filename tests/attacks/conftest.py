"""Shared fixtures of the attack tests: the trained digits model and a linear model."""

import keras
import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits(digits_model):
    """`(model, x, y)`: 40 test digits the reference model classifies correctly."""
    from keras_advguard.datasets import load_dataset

    model, _ = digits_model
    _, (x_test, y_test) = load_dataset("digits")
    pred = np.argmax(model.predict(x_test, verbose=0), axis=1)
    keep = np.flatnonzero(pred == y_test)[:40]
    return model, x_test[keep], y_test[keep]


class Linear:
    """A softmax-linear classifier on 4x4 images, its geometry known in closed form."""

    def __init__(self, num_classes=3, seed=0):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(16, num_classes)).astype("float32")
        self.b = rng.normal(size=num_classes).astype("float32") * 0.1
        dense = keras.layers.Dense(num_classes, activation="softmax")
        self.model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), dense])
        dense.set_weights([self.w, self.b])

    def logits(self, x):
        return x.reshape(len(x), -1) @ self.w + self.b

    def ce_grad(self, x, labels):
        """Gradient of the cross-entropy w.r.t. `x` (numpy, closed form)."""
        z = self.logits(x)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(x)), labels] -= 1.0
        return (p @ self.w.T).reshape(x.shape)

    def boundary_distance(self, x, labels, norm=2):
        """Distance to the closest decision hyperplane (dual norm of w_k - w_l)."""
        z = self.logits(x)
        rows = np.arange(len(x))
        out = np.full(len(x), np.inf)
        for k in range(self.w.shape[1]):
            w = self.w[:, k][None] - self.w[:, labels].T  # (N, 16)
            f = z[:, k] - z[rows, labels]
            dual = np.linalg.norm(w, axis=1) if norm == 2 else np.abs(w).sum(1)
            dual[labels == k] = np.nan  # w_l - w_l = 0: no boundary with itself
            out = np.where(labels == k, out, np.minimum(out, np.abs(f) / dual))
        return out


@pytest.fixture
def linear():
    return Linear()


@pytest.fixture
def x_mid():
    """Images near the middle of [0, 1], so that small steps are never clipped."""
    return np.random.default_rng(1).uniform(0.4, 0.6, size=(6, 4, 4, 1)).astype("float32")
