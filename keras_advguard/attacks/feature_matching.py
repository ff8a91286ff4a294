"""Feature matching: pull a layer's activations towards those of a target input."""

import dataclasses

import numpy as np

from keras_advguard.attacks import _adaptive, _common


def feature_matching(
    model,
    x,
    x_target,
    *,
    layer,
    eps,
    eps_iter=None,
    nb_iter=100,
    norm=np.inf,
    rand_init=True,
    y=None,
    clip_min=0.0,
    clip_max=1.0,
    batch_size=128,
    verbose=0,
    seed=None,
):
    """Move the activations of one layer towards those of a target input, in the ball.

    Minimises `||a_l(x') - a_l(x_target)||_2^2` over `x'` in the `eps` ball
    around `x` (PGD, `pgd_with_loss`), with `a_l` the full output of layer
    `layer` (a `DetectorModel` tap, not pooled). An input whose internal
    representation is that of another class's input fools the classifier
    *and* detectors that model the clean activations of the predicted class
    (kNN, medoids, per-class statistics), the attack Tramer et al. (2020)
    use against such detectors.

    Args:
        model: a Keras model, or a `DetectorModel` (its base model is tapped).
        x: source inputs `(N, ...)` in `[clip_min, clip_max]`, finite.
        x_target: the inputs whose activations to match: `(N, ...)` (one per
            source) or `(1, ...)` (one for all).
        layer: the layer to match: a name or path (`"fc4"`,
            `"backbone/conv2"`) or any single-layer selector of
            `DetectorModel`.
        eps: radius of the ball in `norm`, >= 0.
        eps_iter: step size, in `[0, eps]`. Defaults to
            `min(eps, 2.5 * eps / nb_iter)`.
        nb_iter: number of steps, >= 1. Defaults to `100`.
        norm: `np.inf` or `2`. Defaults to `np.inf`.
        rand_init: start at a uniformly random point of the ball (drawn with
            `seed`). Defaults to `True`.
        y: the classes `success` is measured against, `(N,)`. Defaults to the
            model's predictions on `x_target`.
        clip_min: smallest valid input value. Defaults to `0.0`.
        clip_max: largest valid input value. Defaults to `1.0`.
        batch_size: samples per batch. Defaults to `128`.
        verbose: `0` silent, `1`/`2` a progress bar per batch. Defaults to `0`.
        seed: seed of the random start. Defaults to `None`.

    Returns:
        A targeted `AttackResult`: `labels` are the target classes and
        `success` means `x_adv` is classified as its target's class.

    Raises:
        ValueError: bad `eps`, `eps_iter`, `norm`; non-finite `x` or
            `x_target`; `x` outside the clip range; `x_target` of the wrong
            length or shape; an unknown layer or a selector matching several.
        TypeError: `model` not a Keras model, or arguments of the wrong type.

    Example:

        >>> import keras, numpy as np
        >>> inputs = keras.Input((4,))
        >>> hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
        >>> x = np.full((2, 4), 0.3, dtype="float32")
        >>> target = np.full((1, 4), 0.6, dtype="float32")
        >>> result = feature_matching(model, x, target, layer="hidden", eps=0.3, nb_iter=20)
        >>> bool(np.all(result.linf <= 0.3 + 1e-6))
        True

    Reference:
        S. Sabour, Y. Cao, F. Faghri and D. J. Fleet, "Adversarial
        Manipulation of Deep Representations", ICLR 2016; F. Tramer, N.
        Carlini, W. Brendel and A. Madry, "On Adaptive Attacks to Adversarial
        Example Defenses", NeurIPS 2020.
    """
    import keras

    from keras_advguard import _validation
    from keras_advguard._fingerprint import unwrap_model
    from keras_advguard.attacks.pgd_with_loss import pgd_with_loss
    from keras_advguard.detector_model import DetectorModel

    model = unwrap_model(model)
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model or a DetectorModel (feature "
            f"matching taps one of its layers). Received: model of type {type(model).__name__}"
        )
    x = _adaptive.check_x(x, clip_min, clip_max)
    x_target = _validation.check_array("x_target", x_target, min_ndim=2, dtype_kind="fiu")
    _validation.check_finite("x_target", x_target)
    x_target = x_target.astype("float32", copy=False)
    if x_target.shape[1:] != x.shape[1:] or len(x_target) not in (1, len(x)):
        raise ValueError(
            "Argument `x_target` must hold one input per sample of `x`, or one for "
            f"all, of the shape of `x`'s inputs. Received: x_target with shape="
            f"{x_target.shape} for x with shape={x.shape}"
        )
    tap = DetectorModel(model, layers=layer, pooling=None)
    if len(tap.tap_names) != 1:
        raise ValueError(
            "Argument `layer` must select exactly one layer. Received: "
            f"layer={layer!r}, which selects {list(tap.tap_names)}"
        )
    name = tap.tap_names[0]
    targets = tap.predict(x_target, batch_size=batch_size, verbose=0)
    wanted = targets["activations"][name].astype("float32")
    target_class = np.argmax(targets["logits"], axis=1).astype("int64")
    if len(x_target) == 1:
        wanted = np.repeat(wanted, len(x), axis=0)
        target_class = np.repeat(target_class, len(x))
    if y is not None:
        target_class = _common.check_labels(y, len(x))
        _common.check_label_range(target_class, int(targets["logits"].shape[-1]))

    def distance(outputs, wanted_batch):
        diff = keras.ops.reshape(
            outputs["activations"][name] - wanted_batch, (keras.ops.shape(wanted_batch)[0], -1)
        )
        return -keras.ops.sum(diff * diff, axis=1)

    result = pgd_with_loss(
        tap,
        x,
        distance,
        y=wanted,
        eps=eps,
        eps_iter=eps_iter,
        nb_iter=nb_iter,
        norm=norm,
        rand_init=rand_init,
        clip_min=clip_min,
        clip_max=clip_max,
        batch_size=batch_size,
        verbose=verbose,
        seed=seed,
    )
    params = dict(result.params, layer=name)
    params.pop("loss_fn", None)
    return dataclasses.replace(
        result,
        success=result.y_pred_after == target_class,
        labels=target_class,
        attack="feature_matching",
        targeted=True,
        params=params,
    )
