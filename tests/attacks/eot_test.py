"""EOT: the averaged gradient is the mean of the draws' gradients (hand-worked cases)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.attacks import eot, selective_pgd


class Cycle:
    """A 'randomized' defence whose draws are known: call k multiplies by c[k % len(c)]."""

    def __init__(self, factors):
        self.factors = factors
        self.calls = 0

    def __call__(self, x):
        c = self.factors[self.calls % len(self.factors)]
        self.calls += 1
        return {"logits": c * x, "extra": x}


def test_gradient_is_the_mean_of_the_draws_gradients():
    fn = Cycle([1.0, 2.0, 4.0, -3.0])
    x = tf.constant([[0.5, -1.0, 2.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = eot(fn, n_draws=4)(x)
        total = tf.reduce_sum(out["logits"] * tf.constant([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(tape.gradient(total, x).numpy(), [[1.0, 2.0, 3.0]])  # mean c = 1
    np.testing.assert_allclose(out["logits"].numpy(), x.numpy())  # averaged entry by entry
    np.testing.assert_allclose(out["extra"].numpy(), x.numpy())
    assert fn.calls == 4


class NoisyScore:
    """A randomized detector: the score is `mean(x) + noise`, threshold fixed."""

    score_tensor_kind = "exact"
    threshold_ = 0.45

    def __init__(self):
        self.calls = 0

    def score_tensor(self, x):
        self.calls += 1
        flat = tf.reshape(x, (tf.shape(x)[0], -1))
        return tf.reduce_mean(flat, axis=1) + tf.random.normal(tf.shape(flat)[:1], stddev=0.05)

    def score(self, x):
        return self.score_tensor(tf.constant(x)).numpy()


def test_a_detector_keeps_its_contract_and_attacks_through_it(linear, x_mid):
    detector = NoisyScore()
    wrapped = eot(detector, n_draws=8)
    assert wrapped.threshold_ == 0.45 and wrapped.score_tensor_kind == "exact"
    assert wrapped.score.__self__ is detector  # judged as deployed: one draw
    x = tf.constant(x_mid)
    with tf.GradientTape() as tape:
        tape.watch(x)
        s = tf.reduce_sum(wrapped.score_tensor(x))
    np.testing.assert_allclose(tape.gradient(s, x).numpy(), np.full(x_mid.shape, 1 / 16), rtol=1e-5)
    assert detector.calls == 8
    result = selective_pgd(linear.model, x_mid, wrapped, eps=0.2, nb_iter=30, seed=0)
    assert result.params["detectors"] == ["_EOTDetector"]
    assert len(result) == len(x_mid)


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"`fn` must be a callable or a detector"):
        eot("noise")
    with pytest.raises(ValueError, match=r"`n_draws`"):
        eot(tf.identity, n_draws=0)
