"""Neighbourhood operations shared by the sanitizer and squeezer layers.

Private module: symmetric padding, window anchoring, shifted views of a map,
box sums, exact median filters (min/max selection networks for windows of up
to 81 values, a `top_k` selection beyond) and the non-local means filter.
The median sanitizer and the median smoothing squeezer both call
`compiled_median_filter(x, size, num_spatial)`, the XLA-compiled form of
`median_filter(x, size, num_spatial)` (images `(B, H, W, C)`: `num_spatial=2`,
equal to `scipy.ndimage.median_filter(x, size=(1, k, k, 1), mode="reflect")`);
nothing else in the library re-implements it.

Layout: every function takes a channels-last tensor with the batch first,
`(B, S_1, ..., S_d, C)`, and works on the `d` spatial axes `1..d` (`d = 1` for
vectors reshaped to `(B, N, 1)`, `d = 2` for feature maps `(B, H, W, C)`).
Each sample and each channel is filtered independently. Only static Python
integers are used for offsets, so the batch and spatial sizes may be dynamic.

Border and anchoring conventions follow `scipy.ndimage` (`mode="reflect"`,
origin 0): a window of size `k` covers the offsets `-(k // 2) .. (k - 1) // 2`,
and the map is extended by symmetric reflection with the edge value repeated
(`numpy.pad(mode="symmetric")`, TF `SYMMETRIC`), periodically when the window
is larger than the map. The layers refuse windows and patches wider than
`2 n + 1` (`check_window_size`: one reflection per border); the non-local
means filter clips its search window to the offsets that reach the map.
"""

import functools
import itertools

import keras
import numpy as np
from keras import ops


def check_map_rank(layer_name, input_shape):
    """Return the number of spatial axes of a `(B, N)` or `(B, H, W, C)` input.

    Args:
        layer_name: name used in the error message.
        input_shape: the input shape (tuple or `TensorShape`).

    Returns:
        `1` for a rank-2 input (vectors), `2` for a rank-4 input (feature maps).

    Raises:
        ValueError: for any other rank.
    """
    rank = len(input_shape)
    if rank not in (2, 4):
        raise ValueError(
            f"`{layer_name}` expects a rank-2 input (batch, features) or a rank-4 "
            "input (batch, height, width, channels). "
            f"Received: input_shape={tuple(input_shape)}"
        )
    return 1 if rank == 2 else 2


def check_window_size(layer_name, arg_name, size, shape):
    """Refuse a window that reaches past the symmetric reflection of the map.

    A window of `size` reads `size // 2` positions beyond each border. Up to
    the map's own size that is one mirror image of the map (`numpy.pad(mode=
    "symmetric")`); a wider window wraps around into reflections of the
    reflection, so its values repeat and it measures nothing a window of
    `2 n + 1` does not, while its cost grows with `size ** d` (a 40 x 40
    median on a 4 x 4 map: 1600 views of the map, minutes and gigabytes). So
    `size <= 2 n + 1` on every spatial axis whose size `n` is static; axes of
    unknown size are not checked.

    Args:
        layer_name: the layer's class name, for the message.
        arg_name: the argument's name (`"window"`, `"patch"`).
        size: the window size.
        shape: the input shape, `(B, N)` or `(B, H, W, C)` (or the
            channels-last `(B, S_1, ..., S_d, C)` layout).

    Raises:
        ValueError: the window is larger than `2 n + 1` on some axis.
    """
    spatial = tuple(shape)[1:2] if len(shape) == 2 else tuple(shape)[1:-1]
    known = [int(n) for n in spatial if n is not None]
    if not known:
        return
    limit = 2 * min(known) + 1
    if size > limit:
        raise ValueError(
            f"Argument `{arg_name}` of {layer_name} is larger than the map reflected "
            f"at its borders: a map of spatial shape {spatial} allows at most "
            f"2 * {min(known)} + 1 = {limit} (a wider window only repeats values "
            f"of the reflection, at a cost growing with {arg_name}**{len(spatial)}). "
            f"Received: {arg_name}={size}"
        )


def to_channels_last(x):
    """View a `(B, N)` input as `(B, N, 1)`; leave `(B, H, W, C)` unchanged.

    Returns:
        `(y, num_spatial, restore)`: the tensor to filter, its number of
        spatial axes, and a function mapping a filtered `y` back to the
        layout of `x`.
    """
    if len(x.shape) == 2:
        return ops.expand_dims(x, -1), 1, lambda y: ops.squeeze(y, -1)
    return x, 2, lambda y: y


def window_bounds(size):
    """Offsets `(before, after)` covered by a window of `size`, scipy anchoring."""
    return size // 2, (size - 1) // 2


def window_offsets(size):
    """The offsets `-(size // 2) .. (size - 1) // 2` of a window of `size`."""
    before, after = window_bounds(size)
    return range(-before, after + 1)


def _take_slice(x, axis, start, stop):
    # `x[start:stop]` along `axis` (`start >= 0`, `stop` negative or None),
    # written with `ops.slice` (TF `Slice`) rather than indexing (TF
    # `StridedSlice`): on CPU the gradient of `StridedSlice` is 10 to 20
    # times slower than that of `Slice` (a `Pad`), which made the median's
    # gradient about 20 times its forward pass.
    shape = ops.shape(x)
    stop = shape[axis] if stop is None else shape[axis] + stop
    starts = [0] * len(x.shape)
    starts[axis] = start
    sizes = list(shape)
    sizes[axis] = stop - start
    return ops.slice(x, starts, sizes)


def _symmetric_indices(n, before, after):
    # Periodic symmetric extension: padded position t reads u = t - before,
    # m = u mod 2n, index m if m < n else 2n - 1 - m (equal to numpy.pad
    # "symmetric" for any pad width, also wider than the map).
    u = ops.arange(n + before + after, dtype="int32") - before
    m = ops.mod(u, 2 * n)
    return ops.where(m < n, m, 2 * n - 1 - m)


def symmetric_pad(x, pads):
    """Pad the spatial axes of `x` by symmetric reflection (edge repeated).

    Args:
        x: tensor `(B, S_1, ..., S_d, C)`.
        pads: one `(before, after)` pair of Python ints per spatial axis.

    Returns:
        The padded tensor, equal to `numpy.pad(x, ..., mode="symmetric")`.
    """
    for i, (before, after) in enumerate(pads):
        if before == 0 and after == 0:
            continue
        axis = i + 1
        size = x.shape[axis]
        if size is not None and max(before, after) <= size:
            width = [(0, 0)] * len(x.shape)
            width[axis] = (before, after)
            x = ops.pad(x, width, mode="symmetric")
        else:
            n = ops.shape(x)[axis]
            x = ops.take(x, _symmetric_indices(n, before, after), axis=axis)
    return x


def zero_pad(x, pads):
    """Pad the spatial axes of `x` with zeros; `pads` as in `symmetric_pad`."""
    width = [(0, 0)] + [tuple(p) for p in pads] + [(0, 0)]
    return ops.pad(x, width, mode="constant")


def shift(padded, starts, extras):
    """Slice a spatial window out of a padded tensor with static offsets.

    Along spatial axis `i` the result starts at `starts[i]` and drops the
    last `extras[i] - starts[i]` positions, where `extras[i]` is the total
    padding added on that axis: with a symmetric padding of `(b, a)`,
    `shift(padded, [b + o], [b + a])` is the map shifted by offset `o`
    (`result[i] = map[i + o]`), with the original size.
    """
    # One `Slice` op for every axis (one pass over the result, not one per axis).
    shape = ops.shape(padded)
    begin = [0] * len(padded.shape)
    sizes = list(shape)
    for i, (start, extra) in enumerate(zip(starts, extras, strict=True)):
        begin[i + 1] = start
        sizes[i + 1] = shape[i + 1] - extra
    return ops.slice(padded, begin, sizes)


def shifted_views(x, size, num_spatial):
    """All the shifted copies of `x` a window of `size` covers.

    Args:
        x: tensor `(B, S_1, ..., S_d, C)`.
        size: window size along every spatial axis.
        num_spatial: `d`.

    Returns:
        A list of `size ** d` tensors shaped like `x`, in row-major order of
        the offsets: view `(o_1, ..., o_d)` holds `x[i + o]` at `i`, read
        from the symmetrically padded map.
    """
    before, after = window_bounds(size)
    padded = symmetric_pad(x, [(before, after)] * num_spatial)
    offsets = itertools.product(range(size), repeat=num_spatial)
    return [shift(padded, o, [size - 1] * num_spatial) for o in offsets]


def box_sum(x, size, num_spatial):
    """Sum over every `size`-window that fits inside `x` (a 'valid' box filter).

    Separable: `size - 1` additions of shifted slices per spatial axis, so the
    sum is exact up to float addition and works in every float dtype.
    Spatial axis `i` shrinks from `S_i` to `S_i - size + 1`.
    """
    for i in range(num_spatial):
        axis = i + 1
        total = None
        for start in range(size):
            stop = start - (size - 1)
            part = _take_slice(x, axis, start, stop if stop < 0 else None)
            total = part if total is None else total + part
        x = total
    return x


# ---------------------------------------------------------------------------
# Median


def _sort2(a, b):
    return ops.minimum(a, b), ops.maximum(a, b)


def _median3(a, b, c):
    # max(min(a, b), min(max(a, b), c)): 4 min/max, exact.
    low, high = _sort2(a, b)
    return ops.maximum(low, ops.minimum(high, c))


def _sort3(a, b, c):
    low, high = _sort2(a, b)
    low, mid_a = _sort2(low, c)
    mid, high = _sort2(high, mid_a)
    return low, mid, high


def _median_3x3(x):
    # Paeth's median of 9 (Graphics Gems, 1990; Devillard's opt_med9): with
    # each column of the 3 x 3 window sorted, the median of the 9 values is
    # median3(max of the column minima, median of the column middles,
    # min of the column maxima). The column sorts are shared by the three
    # windows that contain a column, so each output costs 6 min/max for the
    # sorts (once per column) plus 12 for the rest: 18 elementwise ops on
    # the map, an exact order statistic, with a gradient routed through
    # minimum/maximum to the selected input.
    return _median_3x3_of_padded(symmetric_pad(x, [(1, 1), (1, 1)]))


def _median_3x3_of_padded(padded):
    # The network of `_median_3x3` on a map already padded by one position
    # on each side of both spatial axes: the 'valid' 3 x 3 medians, two
    # positions fewer per axis. Only slices of `padded` at static offsets,
    # so XLA compiles it to one vectorised loop.
    rows = [_take_slice(padded, 1, start, start - 2 or None) for start in range(3)]
    low, mid, high = _sort3(*rows)

    def columns(t):
        return [_take_slice(t, 2, start, start - 2 or None) for start in range(3)]

    low0, low1, low2 = columns(low)
    mid0, mid1, mid2 = columns(mid)
    high0, high1, high2 = columns(high)
    max_low = ops.maximum(ops.maximum(low0, low1), low2)
    min_high = ops.minimum(ops.minimum(high0, high1), high2)
    return _median3(max_low, _median3(mid0, mid1, mid2), min_high)


def _median_2x2(x):
    # Rank 2 (0-based, ascending) of 4, as scipy returns for even windows:
    # the second largest. Sorted columns (l, h) shared as in the 3 x 3 case;
    # second largest of {l1, h1, l2, h2} = max(min(h1, h2), max(l1, l2)).
    padded = symmetric_pad(x, [(1, 0), (1, 0)])
    low, high = _sort2(_take_slice(padded, 1, 0, -1), _take_slice(padded, 1, 1, None))
    return ops.maximum(
        ops.minimum(_take_slice(high, 2, 0, -1), _take_slice(high, 2, 1, None)),
        ops.maximum(_take_slice(low, 2, 0, -1), _take_slice(low, 2, 1, None)),
    )


@functools.cache
def _selection_network(n, rank):
    """Comparators of Batcher's odd-even merge sort of `n` values, pruned to
    the ones the output of ascending `rank` depends on.

    Returns a tuple of `(i, j, keep_min, keep_max)`, `i < j`: compare wires
    `i` and `j`, put the minimum on `i` (if `keep_min`) and the maximum on `j`
    (if `keep_max`); wires are never read again when not kept. Batcher's
    network sorts any `n` (wires past `n` act as `+inf`, so the comparators
    touching them are dropped).
    """
    comparators = []
    block = 1
    while block < n:
        step = block
        while step >= 1:
            for j in range(step % block, n - step, 2 * step):
                for i in range(min(step, n - j - step)):
                    if (i + j) // (2 * block) == (i + j + step) // (2 * block):
                        comparators.append((i + j, i + j + step))
            step //= 2
        block *= 2
    needed = {rank}
    kept = []
    for i, j in reversed(comparators):
        keep_min, keep_max = i in needed, j in needed
        if keep_min or keep_max:
            kept.append((i, j, keep_min, keep_max))
            needed.update((i, j))
    return tuple(reversed(kept))


def _median_network(views):
    # Exact order statistic of ascending rank n // 2 with min/max only.
    wires = list(views)
    rank = len(wires) // 2
    for i, j, keep_min, keep_max in _selection_network(len(wires), rank):
        low = ops.minimum(wires[i], wires[j]) if keep_min else None
        high = ops.maximum(wires[i], wires[j]) if keep_max else None
        wires[i], wires[j] = low, high
    return wires[rank]


def _median_top_k(views):
    # Exact order statistic by selection: stack the views on a new last axis
    # and take the element of ascending rank n // 2 with top_k, from
    # whichever end needs the fewer elements.
    stacked = ops.stack(views, axis=-1)
    n = len(views)
    rank = n // 2
    largest = n - rank
    if largest <= rank + 1:
        values, _ = ops.top_k(stacked, largest, sorted=True)
        return values[..., -1]
    values, _ = ops.top_k(-stacked, rank + 1, sorted=True)
    return -values[..., -1]


# Above this many values per window the pruned network (about n log^2 n
# elementwise ops) makes graphs too large; top_k takes over.
_MAX_NETWORK_VALUES = 81


def median_filter(x, size, num_spatial):
    """Exact median filter of every map of `x`, as `scipy.ndimage.median_filter`.

    Equal, element for element, to
    `scipy.ndimage.median_filter(map, size=size, mode="reflect")` on each
    sample and channel: the window covers offsets `-(size // 2) ..
    (size - 1) // 2` on each spatial axis, borders are symmetric reflections,
    and for an even number `n` of values the result is the order statistic of
    ascending rank `n // 2` (0-based; the upper of the two middle values, not
    their mean).

    Every window up to 9 x 9 values is an exact min/max selection network:
    hand-made ones sharing work between neighbouring windows for 3 x 3 and
    2 x 2 maps and for vectors with windows 3 and 2, a pruned Batcher
    network over the shifted views otherwise. Larger windows stack the
    views and select with `top_k` (far slower on CPU).

    Args:
        x: float tensor `(B, S_1, ..., S_d, C)`.
        size: window size (positive int), the same on every spatial axis.
        num_spatial: `d`, 1 or 2.

    Returns:
        A tensor shaped like `x`.
    """
    if size == 1:
        return x
    if num_spatial == 2 and size == 3:
        return _median_3x3(x)
    if num_spatial == 2 and size == 2:
        return _median_2x2(x)
    if num_spatial == 1 and size == 3:
        return _median3(*shifted_views(x, 3, 1))
    if num_spatial == 1 and size == 2:
        # Rank 1 of 2: the larger value.
        return ops.maximum(*shifted_views(x, 2, 1))
    views = shifted_views(x, size, num_spatial)
    if len(views) <= _MAX_NETWORK_VALUES:
        return _median_network(views)
    return _median_top_k(views)


def compiled_median_filter(x, size, num_spatial):
    """`median_filter` as one XLA kernel forward and one backward (TF backend).

    The selection network is a few dozen elementwise min/max passes over the
    map; run op by op (eager or plain graph mode, Keras' default on a CPU)
    each pass reads and writes the whole map. Here the forward pass is an
    XLA-compiled function and the gradient another one (recomputing the
    network and routing the output gradient back), joined by
    `tf.custom_gradient`: same values as `median_filter` (a selection, so
    exact), the gradient equal up to float rounding. Inside a model compiled
    with `jit_compile=True` the two functions are inlined into the outer
    compilation. XLA compiles once per input shape and dtype.

    Falls back to `median_filter` on other backends and for windows with a
    single value.
    """
    if keras.backend.backend() != "tensorflow" or size == 1:
        return median_filter(x, size, num_spatial)
    if num_spatial == 2 and size == 3:
        # The symmetric pad and the network on the padded map as two
        # compiled functions, not one: in one XLA module the two fused
        # loops cost up to 2.5 times their sum when compiled apart (a
        # (250, 26, 26, 32) map: ~50 ms against ~20 ms of CPU time on the
        # 2-core machine; no change on other shapes). Same operations, same
        # values; inside an outer `jit_compile=True` function both are
        # inlined there as before.
        return _compiled_median_3x3_of_padded()(_compiled_median_pad()(x))
    return _compiled_median(size, num_spatial)(x)


@functools.cache
def _compiled_median(size, num_spatial):
    return compile_with_gradient(lambda x: median_filter(x, size, num_spatial))


@functools.cache
def _compiled_median_3x3_of_padded():
    return compile_with_gradient(_median_3x3_of_padded)


@functools.cache
def _compiled_median_pad():
    return compile_with_gradient(lambda x: symmetric_pad(x, [(1, 1), (1, 1)]))


def compile_with_gradient(fn):
    """`fn` as one XLA-compiled function forward and one backward (TF backend).

    For elementwise-heavy layers (selection networks, masks) run in eager or
    plain graph mode, where every op is a pass over the whole tensor. The
    forward pass is `fn` compiled with XLA; the gradient is another compiled
    function that recomputes `fn` under a tape and returns the
    vector-Jacobian product; `tf.custom_gradient` joins them. Inside an outer
    `jit_compile=True` function both are inlined. XLA compiles once per
    input shape and dtype (`reduce_retracing` keeps the traces few), so a
    caller should build one per input rank.

    Args:
        fn: a function of one tensor, differentiable with `tf.GradientTape`.

    Returns:
        A function of one tensor with the values and gradient of `fn`.
    """
    import tensorflow as tf

    forward = tf.function(fn, jit_compile=True, reduce_retracing=True, autograph=False)

    @tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
    def backward(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return tape.gradient(y, x, output_gradients=dy)

    @tf.custom_gradient
    def compiled(x):
        def grad(dy):
            return backward(x, dy)

        return forward(x), grad

    return compiled


# ---------------------------------------------------------------------------
# Non-local means


def nl_means_filter(x, patch, search, inv_h2, joint_channels=False, pair_offsets=True):
    """Non-local means of every map of `x`, without an `(HW)^2` weight matrix.

    Computes `s(i) = sum_j w(i, j) a(j) / sum_j w(i, j)` with
    `w(i, j) = exp(-||P(i) - P(j)||^2 * inv_h2)`, `P(i)` the `patch`-window
    around `i` read from the map padded symmetrically, `j` over the
    `search`-window around `i` clipped to the map (scipy anchoring for both
    windows). One Python iteration per search offset (unrolled at trace
    time) accumulates the weights and the weighted sum; patch distances are
    box sums of squared shifted differences, so memory stays a few maps.
    Since `w(i, i - o) = w(i - o, i)`, the weights of offset `-o` are those
    of `o` read at `i - o`: only half the offsets need distances and
    exponentials.

    The sum is written as `a(i) + sum_j w(i, j) (a(j) - a(i)) / Z(i)`, equal
    in exact arithmetic and exact for constant maps. `j = i` always has
    weight 1, so `Z(i) >= 1`.

    With `joint_channels=True` the patch distance is summed over the `C`
    channels as well, `||P(i) - P(j)||^2 = sum_c ||P_c(i) - P_c(j)||^2`, and
    every channel of a position gets the same weights (colour images
    filtered as vectors, as OpenCV's `fastNlMeansDenoising` does for a
    multi-channel image); by default each channel has its own weights.

    Args:
        x: float tensor `(B, S_1, ..., S_d, C)`.
        patch: patch size (positive int).
        search: search window size (positive int).
        inv_h2: `1 / h^2`, a tensor broadcastable to `x` (e.g. `(B, 1, 1, C)`).
        joint_channels: whether one patch distance covers all the channels.
            Defaults to `False`.
        pair_offsets: compute the distances and weights of offsets `o` and
            `-o` once (they are mirror images of each other). `False`
            computes every offset on its own (same result up to float
            rounding; kept for the overhead benchmark's side-by-side
            comparison). Defaults to `True`.

    Returns:
        A tensor shaped like `x`.
    """
    num_spatial = len(x.shape) - 2
    p_before, p_after = window_bounds(patch)
    # The search window, per axis, clipped to the offsets that can reach
    # inside the map (|o| <= n - 1 where the size n is static): the others
    # only ever meet masked-out candidates, so dropping them changes nothing
    # but the cost of a window far larger than the map.
    bounds = []
    for n in x.shape[1 : num_spatial + 1]:
        before, after = window_bounds(search)
        if n is not None:
            before, after = min(before, n - 1), min(after, n - 1)
        bounds.append((before, after))
    far = bounds
    extras = [before + after for before, after in bounds]
    patches = symmetric_pad(x, [(p_before, p_after)] * num_spatial)
    # Candidates outside the map are read from zeros and masked out.
    patches_far = zero_pad(patches, far)
    values_far = zero_pad(x, far)
    spatial = x.shape[1 : num_spatial + 1]
    if all(n is not None for n in spatial):
        # A constant (folded by the graph optimiser): no pass per offset.
        inside_far = np.pad(
            np.ones((1, *spatial, 1), keras.backend.standardize_dtype(x.dtype)),
            [(0, 0), *far, (0, 0)],
        )
    else:
        inside_far = zero_pad(ops.ones_like(x[:1, ..., :1]), far)
    neg_inv_h2 = -ops.convert_to_tensor(inv_h2, x.dtype)
    box = _box_filter(patch, num_spatial, x.shape[-1], x.dtype)

    def at(padded, offset):
        starts = [before + o for (before, _), o in zip(bounds, offset, strict=True)]
        return shift(padded, starts, extras)

    # The offset 0 contributes w(i, i) = 1 and a(i) - a(i) = 0.
    weight_sum = ops.ones_like(x)
    weighted = ops.zeros_like(x)
    for offset, mirrored in _offset_pairs(bounds, pair_offsets):
        squared = ops.square(patches - at(patches_far, offset))
        distance = box(squared) if box is not None else box_sum(squared, patch, num_spatial)
        if joint_channels:
            distance = ops.sum(distance, axis=-1, keepdims=True)
        weight = ops.exp(distance * neg_inv_h2) * at(inside_far, offset)
        weight_sum = weight_sum + weight
        weighted = weighted + weight * (at(values_far, offset) - x)
        if mirrored:
            # Patch distances are symmetric: w(i, i - o) = w(i - o, i), the
            # weight just computed read at i - o (zero where i - o is
            # outside the map). Half the distances and exponentials.
            minus = tuple(-o for o in offset)
            weight = at(zero_pad(weight, far), minus)
            weight_sum = weight_sum + weight
            weighted = weighted + weight * (at(values_far, minus) - x)
    return x + weighted / weight_sum


def _box_filter(size, num_spatial, channels, dtype):
    """A 'valid' box sum of `size` as one depthwise convolution (TF backend), or `None`.

    The same sums as `box_sum` (each output adds the `size^d` values of its
    window, multiplied by exactly 1) in one kernel instead of `2 (size - 1) d`
    slices and additions; only the order of the additions differs. `None` (use
    `box_sum`) for other backends, an unknown channel count or `size == 1`.
    """
    if keras.backend.backend() != "tensorflow" or channels is None or size == 1:
        return None
    import tensorflow as tf

    if num_spatial == 2:
        kernel = tf.ones((size, size, channels, 1), dtype)
        return lambda t: tf.nn.depthwise_conv2d(t, kernel, [1, 1, 1, 1], "VALID")
    kernel = tf.ones((1, size, channels, 1), dtype)

    def box_1d(t):
        out = tf.nn.depthwise_conv2d(tf.expand_dims(t, 1), kernel, [1, 1, 1, 1], "VALID")
        return tf.squeeze(out, 1)

    return box_1d


def blocked_nl_means_filter(x, patch, search, inv_h2):
    """`nl_means_filter` run one sample at a time (TF backend; cache blocking).

    The filter is some 30 elementwise passes per search offset over the
    map. On a whole batch every pass streams the batch's maps through main
    memory (a `(250, 26, 26, 32)` map is 22 MB); one sample's map (86 KB)
    stays in the core's cache for all of them, which made the sanitizer
    about 3 times faster on a 2-core CPU (`benchmarks/sanitizer_overhead.py`).
    Each sample is filtered on its own anyway, so the values are those of
    `nl_means_filter` (the same operations on the same numbers). The loop is
    a `tf.map_fn` (a `while` loop, differentiable, dynamic batch size);
    other backends, and batches of static size 1, call `nl_means_filter`.

    Args:
        x: float tensor `(B, S_1, ..., S_d, C)`.
        patch: patch size (positive int).
        search: search window size (positive int).
        inv_h2: `1 / h^2`, a tensor of shape `(B, 1, ..., 1, C)` or a scalar.

    Returns:
        A tensor shaped like `x`.
    """
    if keras.backend.backend() != "tensorflow" or x.shape[0] == 1:
        return nl_means_filter(x, patch, search, inv_h2)
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    inv_h2 = tf.convert_to_tensor(inv_h2, x.dtype)
    if inv_h2.shape.rank != 0:
        inv_h2 = tf.broadcast_to(inv_h2, tf.concat([tf.shape(x)[:1], tf.shape(inv_h2)[1:]], 0))
    # A `tf.function` (one per patch, search, map shape and dtype; any batch
    # size): run eagerly, `map_fn` would be a Python loop issuing every op of
    # every sample one by one.
    inv_shape = None if inv_h2.shape.rank == 0 else tuple(inv_h2.shape[1:])
    fn = _blocked_function(patch, search, tuple(x.shape[1:]), inv_shape, x.dtype.name)
    return fn(x, inv_h2)


@functools.cache
def _blocked_function(patch, search, map_shape, inv_shape, dtype):
    import tensorflow as tf

    def blocked(x, inv_h2):
        if inv_h2.shape.rank == 0:
            return tf.map_fn(
                lambda sample: nl_means_filter(sample[None], patch, search, inv_h2)[0],
                x,
                fn_output_signature=x.dtype,
            )
        return tf.map_fn(
            lambda args: nl_means_filter(args[0][None], patch, search, args[1][None])[0],
            (x, inv_h2),
            fn_output_signature=x.dtype,
        )

    signature = [
        tf.TensorSpec((None, *map_shape), dtype),
        tf.TensorSpec(() if inv_shape is None else (None, *inv_shape), dtype),
    ]
    return tf.function(blocked, input_signature=signature, autograph=False)


def _offset_pairs(bounds, pair=True):
    """The non-zero search offsets, each `-o` folded into `o` when both are in the window.

    `bounds` holds one `(before, after)` pair per spatial axis: the offsets
    `-before .. after` along it. Yields `(offset, mirrored)`: with
    `mirrored`, the caller also handles `-offset`. Windows of even size are
    not symmetric (scipy anchoring), so some offsets there have no mirror
    and come alone.
    """
    ranges = [range(-before, after + 1) for before, after in bounds]
    offsets = [o for o in itertools.product(*ranges) if any(v != 0 for v in o)]
    present = set(offsets)
    for o in offsets:
        minus = tuple(-v for v in o)
        if not pair or minus not in present:
            yield o, False
        elif o > minus:
            yield o, True


def smallest_normal(dtype):
    """The smallest positive normal number of a float dtype (a safe floor)."""
    return {
        "float16": 6.103515625e-05,
        "bfloat16": 1.1754943508222875e-38,
        "float32": 1.1754943508222875e-38,
        "float64": 2.2250738585072014e-308,
    }[keras.backend.standardize_dtype(dtype)]
