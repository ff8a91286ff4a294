"""Selective PGD (and the machinery orthogonal PGD shares) against contract detectors."""

import numpy as np
import pytest
import tensorflow as tf

from keras_advguard.attacks import bpda, orthogonal_pgd, pgd, selective_pgd
from keras_advguard.metrics import success_rate_at_fpr, threshold_at_fpr


class MarginDetector:
    """Hand-made contract detector: flags inputs the classifier is *too* sure of.

    Score = top logit minus the runner-up (the margin), threshold fixed.
    """

    score_tensor_kind = "exact"

    def __init__(self, logits_fn, threshold):
        self.logits_fn = logits_fn
        self.threshold_ = threshold

    def score_tensor(self, x):
        top2 = tf.math.top_k(self.logits_fn(x), k=2).values
        return top2[:, 0] - top2[:, 1]

    def score(self, x):
        return self.score_tensor(tf.constant(x)).numpy()


class Constant:
    """A defence whose score is piecewise constant (rounded): zero gradient."""

    score_tensor_kind = "exact"
    threshold_ = 0.5

    def __init__(self, blocked=False):
        self.blocked = blocked

    def score_tensor(self, x):
        s = tf.reduce_mean(tf.reshape(x, (tf.shape(x)[0], -1)), axis=1)
        return tf.stop_gradient(s) if self.blocked else tf.round(s)


def _max_softmax(model, x_val):
    """The contract's MaxSoftmaxDetector, calibrated at 5% FPR (a stand-in if absent)."""
    try:
        from keras_advguard.detectors import MaxSoftmaxDetector
    except ImportError:  # pragma: no cover - until contract-core's detector lands

        class MaxSoftmaxDetector:
            score_tensor_kind = "exact"

            def __init__(self, model):
                self.model = model

            def score_tensor(self, x):
                return 1.0 - tf.reduce_max(self.model(x), axis=1)

            def score(self, x):
                return self.score_tensor(tf.constant(x)).numpy()

            def calibrate(self, x, fpr=0.05):
                self.threshold_ = threshold_at_fpr(self.score(x), fpr)
                return self

    return MaxSoftmaxDetector(model).calibrate(x_val, fpr=0.05)


@pytest.fixture(scope="module")
def spread():
    """40 images of the linear model's 4x4 inputs, 0.35 away from the clip bounds."""
    return np.random.default_rng(3).uniform(0.35, 0.65, size=(40, 4, 4, 1)).astype("float32")


@pytest.fixture(scope="module")
def digits_split(digits_model):
    """Clean validation digits (first half of the test split) and 40 sources from the rest."""
    from keras_advguard.datasets import load_dataset

    model, _ = digits_model
    _, (x_test, y_test) = load_dataset("digits")
    half = len(x_test) // 2
    x_val, x_rest, y_rest = x_test[:half], x_test[half:], y_test[half:]
    pred = np.argmax(model.predict(x_rest, verbose=0), axis=1)
    keep = np.flatnonzero(pred == y_rest)[:40]
    return model, x_val, x_rest[keep], y_rest[keep]


@pytest.mark.parametrize("norm, eps", [(2, 0.25), (np.inf, 0.07)])
def test_linear_classifier_margin_detector_matches_the_closed_form(linear, spread, norm, eps):
    """Fooled-and-undetected exactly where the decision boundary is within reach."""
    labels = np.argmax(linear.logits(spread), axis=1)
    distance = linear.boundary_distance(spread, labels, norm=norm)
    logits = lambda v: tf.reshape(v, (-1, 16)) @ linear.w + linear.b  # noqa: E731
    detector = MarginDetector(logits, threshold=0.3)
    assert np.all(detector.score(spread) > 0.3)  # every clean input is flagged
    result = selective_pgd(linear.model, spread, detector, eps=eps, nb_iter=60, norm=norm, seed=0)
    evaded = result.success & (detector.score(result.x_adv) <= 0.3)
    reachable, out_of_reach = distance < 0.85 * eps, distance > eps
    assert reachable.sum() >= 10 and out_of_reach.sum() >= 5
    assert evaded[reachable].all()
    assert not result.success[out_of_reach].any()


def _linear_logits(linear):
    return lambda v: tf.reshape(v, (-1, 16)) @ linear.w + linear.b


class LinearScore:
    """A detector whose score is `v . x`: its gradient is `v`."""

    score_tensor_kind = "exact"
    threshold_ = 100.0

    def __init__(self, v):
        self.v = v

    def score_tensor(self, x):
        return tf.linalg.matvec(tf.reshape(x, (-1, 16)), self.v)


def _unit(g):
    flat = g.reshape(len(g), -1)
    return (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(g.shape)


def _orth(g, other):
    gf, of = g.reshape(len(g), -1), other.reshape(len(other), -1)
    coef = np.sum(gf * of, 1, keepdims=True) / np.sum(of * of, 1, keepdims=True)
    return (gf - coef * of).reshape(g.shape)


def test_one_step_directions_match_numpy(linear, x_mid):
    """Classifier steps (not yet fooled) and detector steps (fooled), L2, no random start."""
    v = np.random.default_rng(5).normal(size=16).astype("float32")
    detector = LinearScore(v)
    labels = np.argmax(linear.logits(x_mid), axis=1)
    g_ce = linear.ce_grad(x_mid, labels)
    g_s = np.broadcast_to(v.reshape(1, 4, 4, 1), x_mid.shape)
    kw = dict(eps=0.5, eps_iter=0.01, nb_iter=1, norm=2, rand_init=False)

    # Not fooled: selective follows the cross-entropy, orthogonal its part orthogonal to v.
    sel = selective_pgd(linear.model, x_mid, detector, **kw)
    np.testing.assert_allclose(sel.x_adv, x_mid + 0.01 * _unit(g_ce), atol=1e-6)
    ort = orthogonal_pgd(linear.model, x_mid, detector, **kw)
    np.testing.assert_allclose(ort.x_adv, x_mid + 0.01 * _unit(_orth(g_ce, g_s)), atol=1e-6)

    # Already fooled (y is another class): a step down the score, orthogonal to the
    # gradient of the cross-entropy of y.
    other = (labels + 1) % 3
    g_other = linear.ce_grad(x_mid, other)
    sel = selective_pgd(linear.model, x_mid, detector, y=other, **kw)
    np.testing.assert_allclose(sel.x_adv, x_mid - 0.01 * _unit(g_s), atol=1e-6)
    ort = orthogonal_pgd(linear.model, x_mid, detector, y=other, **kw)
    np.testing.assert_allclose(ort.x_adv, x_mid + 0.01 * _unit(_orth(-g_s, g_other)), atol=1e-6)


def test_zero_gradient_defence_raises(linear, x_mid):
    for blocked in (False, True):
        with pytest.raises(ValueError, match=r"no gradient with respect to the input") as info:
            selective_pgd(linear.model, x_mid, Constant(blocked), eps=0.1, nb_iter=2)
        assert "bpda" in str(info.value) and "score_tensor_kind" in str(info.value)
        assert "detectors[0] (Constant" in str(info.value)
    # A classifier behind a quantiser has no gradient either; BPDA restores it.
    logits = _linear_logits(linear)
    quantised = lambda v: logits(tf.round(v * 4) / 4)  # noqa: E731
    with pytest.raises(ValueError, match=r"classifier's loss has no gradient"):
        orthogonal_pgd(quantised, x_mid, [], eps=0.1, nb_iter=2)
    through = lambda v: logits(bpda(lambda u: tf.round(u * 4) / 4)(v))  # noqa: E731
    assert len(orthogonal_pgd(through, x_mid, [], eps=0.1, nb_iter=2)) == len(x_mid)


@pytest.mark.parametrize("attack", [selective_pgd, orthogonal_pgd])
def test_sr5_against_max_softmax_on_digits(digits_split, attack):
    model, x_val, x, y = digits_split
    detector = _max_softmax(model, x_val)
    oblivious = pgd(model, x, y=y, eps=0.3, nb_iter=20)
    result = attack(model, x, detector, y=y, eps=0.3, nb_iter=60, seed=0)
    scores_val = detector.score(x_val)
    report = success_rate_at_fpr(scores_val, detector.score(result.x_adv), result.success)
    assert report["at_fpr"][0.05]["sr"] >= 0.9
    # ... the detector's own threshold is the one at 5% FPR on the same data.
    assert report["at_fpr"][0.05]["threshold"] == pytest.approx(detector.threshold_)
    # The adaptive attack evades the detector at least as often as oblivious PGD.
    obl = success_rate_at_fpr(scores_val, detector.score(oblivious.x_adv), oblivious.success)
    assert report["at_fpr"][0.05]["sr"] >= obl["at_fpr"][0.05]["sr"]
    assert result.linf.max() <= 0.3 + 1e-6


def test_several_detectors_must_all_be_evaded(digits_split):
    """Max-softmax plus a detector of bright images: the result stays below both."""
    model, x_val, x, y = digits_split
    first = _max_softmax(model, x_val)

    class Brightness:
        score_tensor_kind = "exact"
        threshold_ = float(np.quantile(x_val.reshape(len(x_val), -1).mean(1), 0.95))

        def score_tensor(self, v):
            return tf.reduce_mean(tf.reshape(v, (tf.shape(v)[0], -1)), axis=1)

    second = Brightness()
    result = selective_pgd(model, x, [first, second], y=y, eps=0.3, nb_iter=60, seed=0)
    below_first = first.score(result.x_adv) <= first.threshold_
    below_second = second.score_tensor(tf.constant(result.x_adv)).numpy() <= second.threshold_
    assert np.mean(result.success & below_first & below_second) >= 0.9
    assert result.params["detectors"][1] == "Brightness"


def test_targeted_reaches_the_target(digits_split):
    model, x_val, x, y = digits_split
    detector = _max_softmax(model, x_val)
    target = (y + 1) % 10
    result = selective_pgd(model, x, detector, y=target, targeted=True, eps=0.3, nb_iter=60, seed=0)
    np.testing.assert_array_equal(result.success, result.y_pred_after == target)
    assert result.success.mean() >= 0.8 and result.targeted


@pytest.mark.parametrize(
    "attack, norm, eps", [(selective_pgd, np.inf, 0.2), (orthogonal_pgd, 2, 1.0)]
)
def test_ball_clip_and_eps_zero(digits_split, attack, norm, eps):
    model, x_val, x, y = digits_split
    detector = _max_softmax(model, x_val)
    result = attack(model, x, detector, y=y, eps=eps, nb_iter=4, norm=norm, restarts=2, seed=1)
    size = result.linf if norm == np.inf else result.l2
    assert size.max() <= eps * (1 + 1e-5)
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0
    same = attack(model, x, detector, y=y, eps=0.0, nb_iter=3, norm=norm, seed=1)
    np.testing.assert_array_equal(same.x_adv, x)
    assert not same.success.any()


def test_seeded_restarts_are_repeatable_and_never_worse(digits_split):
    model, x_val, x, y = digits_split
    detector = _max_softmax(model, x_val)
    run = lambda restarts, seed: selective_pgd(  # noqa: E731
        model, x, detector, y=y, eps=0.15, nb_iter=8, restarts=restarts, seed=seed
    )
    a, b = run(1, 0), run(1, 0)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    more = run(3, 0)  # the first restart draws the same start as `a`
    evade = lambda r: r.success & (detector.score(r.x_adv) <= detector.threshold_)  # noqa: E731
    assert np.all(evade(more)[evade(a)])


def test_bad_inputs(linear, x_mid):
    detector = MarginDetector(_linear_logits(linear), threshold=0.3)
    bad = x_mid.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"`x` must hold finite values"):
        selective_pgd(linear.model, bad, detector, eps=0.1)
    with pytest.raises(TypeError, match=r"detectors\[1\] of type str"):
        selective_pgd(linear.model, x_mid, [detector, "knn"], eps=0.1)
    uncalibrated = MarginDetector(_linear_logits(linear), threshold=None)
    with pytest.raises(ValueError, match=r"has no `threshold_`. Call `calibrate"):
        orthogonal_pgd(linear.model, x_mid, uncalibrated, eps=0.1)
    with pytest.raises(ValueError, match=r"`restarts`"):
        selective_pgd(linear.model, x_mid, detector, eps=0.1, restarts=0)
    with pytest.raises(TypeError, match=r"`project_classifier`"):
        orthogonal_pgd(linear.model, x_mid, detector, eps=0.1, project_classifier=1)
    with pytest.raises(ValueError, match=r"`eps_iter`"):
        selective_pgd(linear.model, x_mid, detector, eps=0.1, eps_iter=0.2)


class SumOfLastTwo:
    """A detector whose score is `x[:, 2] + x[:, 3]`; its threshold is never reached."""

    score_tensor_kind = "exact"
    threshold_ = -100.0

    def score_tensor(self, x):
        return tf.reduce_sum(x[:, 2:], axis=1)


@pytest.mark.parametrize("attack", [selective_pgd, orthogonal_pgd])
def test_step_decay_takes_the_geometric_steps_worked_by_hand(attack):
    """Fooled from the start, so every step goes down the detector's score.

    The classifier reads coordinates 0 and 1 only and always predicts class 0
    (label 1: fooled past the switching margin), the score coordinates 2 and
    3 only (orthogonal to the classifier's gradient, so orthogonal PGD takes
    the same steps). L-infinity, no random start: coordinates 2 and 3 drop by
    the sum of the steps 0.08, 0.04, 0.02, 0.01, 0.005 (step_decay 1/16) =
    0.155; with a constant step by 0.4, cut to the ball's 0.3.
    """

    def logits(v):
        return tf.stack([10.0 + 0.1 * v[:, 0], 0.1 * v[:, 1], 0.0 * v[:, 0]], axis=1)

    x = np.full((3, 4), 0.5, "float32")
    kw = dict(eps=0.3, eps_iter=0.08, nb_iter=5, rand_init=False, y=np.ones(3, "int64"))
    decayed = attack(logits, x, SumOfLastTwo(), step_decay=1 / 16, **kw)
    np.testing.assert_allclose(decayed.x_adv[:, :2], 0.5, atol=1e-6)
    np.testing.assert_allclose(decayed.x_adv[:, 2:], 0.5 - 0.155, atol=1e-6)
    assert decayed.params["step_decay"] == 1 / 16
    constant = attack(logits, x, SumOfLastTwo(), **kw)
    np.testing.assert_allclose(constant.x_adv[:, 2:], 0.2, atol=1e-6)
    with pytest.raises(ValueError, match=r"`step_decay`"):
        attack(logits, x, SumOfLastTwo(), step_decay=0.0, **kw)
