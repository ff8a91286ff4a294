"""Benchmark: exact class medoids (`ClassMedoids`) on ImageNet-shaped activations.

Synthetic ReLU/GAP-like activations, `--classes` classes of `--per-class`
samples of width `--dim` (ImageNet: 1,000 classes x ~1,300 images; InceptionV3's
last mixed blocks have 2,048 channels). Reports, in one run on this machine:

1. the throughput of the pairwise-distance part (`_medoid_index` on one
   class, the data already gathered) as a fraction of the measured throughput
   of a plain float32 matmul of the same block shape (`block x dim` @
   `dim x block`, distinct operands, same BLAS threads);
2. the whole `ClassMedoids.fit` time and its linear extrapolation to 1,000
   classes (classes are independent: time is linear in C at fixed K_c), per
   2,048-wide layer and for the 11 `mixed*` blocks of InceptionV3;
3. the peak of traced memory (`tracemalloc`, which sees numpy's buffers)
   during `fit`, as the number of classes grows at fixed K_c (it must stay
   flat) and as K_c grows (one class's block).

Usage:

    python benchmarks/medoids.py            # 10 x 1,300 x 2,048 (a few minutes)
    python benchmarks/medoids.py --blas-threads 1   # steadier on a shared machine
    python benchmarks/medoids.py --quick    # small sizes, seconds
"""

import argparse
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np

from keras_advguard.detectors import ClassMedoids
from keras_advguard.detectors.class_medoids import _medoid_index

# Channel widths of InceptionV3's mixed0 .. mixed10 blocks (GAP'd).
INCEPTION_MIXED_WIDTHS = [256, 288, 288, 768, 768, 768, 768, 768, 1280, 2048, 2048]


def synthetic_class(rng, per_class, dim):
    """ReLU of a class-specific non-negative mean plus noise, float32."""
    mean = np.abs(rng.normal(size=dim)).astype(np.float32)
    noise = rng.normal(scale=0.5, size=(per_class, dim)).astype(np.float32)
    return np.maximum(mean + noise, 0.0)


def balanced(k, block):
    return -(-k // -(-k // block))


def matmul_rate(rng, block, dim, min_time=0.5):
    """Best float32 GFLOP/s of `(block, dim) @ (dim, block)` (distinct operands)."""
    a = rng.normal(size=(block, dim)).astype(np.float32)
    b = rng.normal(size=(block, dim)).astype(np.float32)
    out = np.empty((block, block), np.float32)
    np.matmul(a, b.T, out=out)
    best = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < min_time:
        t = time.perf_counter()
        np.matmul(a, b.T, out=out)
        best = min(best, time.perf_counter() - t)
    return 2.0 * block * block * dim / best / 1e9


def issued_flops(k, dim, block):
    """Float32 GEMM flops the blocked upper-triangle loop actually issues.

    Off-diagonal blocks are full products; the diagonal blocks `Y_i Y_i^T`
    go to a symmetric rank-k update in numpy (half the flops).
    """
    block = -(-k // -(-k // block))  # balanced blocks, as in `_medoid_index`
    sizes = [min(block, k - s) for s in range(0, k, block)]
    total = 0.0
    for i, bi in enumerate(sizes):
        total += bi * bi * dim  # diagonal block, half of 2 * bi * bi * dim
        for bj in sizes[i + 1 :]:
            total += 2.0 * bi * bj * dim
    return total


def blas_threads():
    try:
        from threadpoolctl import threadpool_info

        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        return ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in info)
    except ImportError:  # pragma: no cover
        return "unknown"


def gemm_replay(points, block_size):
    """Only the float32 GEMMs `_medoid_index` issues on one class, same buffers."""
    k = len(points)
    b = balanced(k, block_size)
    y = points - points.mean(axis=0, dtype=np.float32)
    buf = np.empty(b * b, np.float32)
    t = time.perf_counter()
    for i0 in range(0, k, b):
        for j0 in range(i0, k, b):
            rows, cols = min(b, k - i0), min(b, k - j0)
            out = buf[: rows * cols].reshape(rows, cols)
            np.matmul(y[i0 : i0 + b], y[j0 : j0 + b].T, out=out)
    return time.perf_counter() - t


def time_pairwise(rng, args, dim, classes):
    """Per-class seconds of the pairwise part, interleaved with matmul probes.

    Also returns, per class, the time of replaying only its GEMMs measured just
    before it (a paired measurement, less sensitive to other jobs' load).
    """
    data = [synthetic_class(rng, args.per_class, dim) for _ in range(classes)]
    per_class, rates, replays = [], [], []
    for _ in range(args.repeats):
        rates.append(matmul_rate(rng, balanced(args.per_class, args.block_size), dim))
        for points in data:
            replays.append(gemm_replay(points, args.block_size))
            t = time.perf_counter()
            _medoid_index(points, args.block_size)
            per_class.append(time.perf_counter() - t)
        rates.append(matmul_rate(rng, balanced(args.per_class, args.block_size), dim))
    return per_class, rates, replays


def peak_fit_memory(rng, classes, per_class, dim, block_size):
    """Peak traced bytes during `fit`, beyond the inputs already allocated."""
    acts = {"layer": np.concatenate([synthetic_class(rng, per_class, dim) for _ in range(classes)])}
    labels = np.repeat(np.arange(classes), per_class)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    ClassMedoids(block_size=block_size).fit(acts, labels)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, acts["layer"].nbytes


def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=1300)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--blas-threads", type=int, default=None, help="limit BLAS threads")
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds")
    args = parser.parse_args(argv)
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads, user_api="blas")
    if args.quick:
        args.classes, args.per_class, args.dim, args.repeats = 3, 300, 256, 1
    rng = np.random.default_rng(0)
    mib = 2.0**20
    k, dim, b = args.per_class, args.dim, args.block_size
    bb = balanced(k, b)
    print(
        f"# ClassMedoids benchmark ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"BLAS: {blas_threads()}, numpy {np.__version__}, "
        f"load average before: {os.getloadavg()[0]:.1f})\n"
    )

    # === 1. Pairwise part vs a plain matmul of the same block shape ===
    per_class, rates, replays = time_pairwise(rng, args, dim, args.classes)
    paired = [r / t for r, t in zip(replays, per_class, strict=True)]
    rate = max(rates)
    best, median = min(per_class), statistics.median(per_class)
    dense = 2.0 * k * k * dim
    issued = issued_flops(k, dim, b)
    print(
        f"## Pairwise part: K_c={k}, N={dim}, block_size={b} (balanced: {bb}), "
        f"{args.classes} classes x {args.repeats} repeats\n"
    )
    table(
        ["quantity", "best", "median"],
        [
            [
                f"float32 matmul {bb}x{dim} @ {dim}x{bb}, GFLOP/s",
                f"{rate:.1f}",
                f"{statistics.median(rates):.1f}",
            ],
            ["medoid of one class, ms", f"{best * 1e3:.1f}", f"{median * 1e3:.1f}"],
            [
                "dense-equivalent 2 K^2 N / time, GFLOP/s",
                f"{dense / best / 1e9:.1f}",
                f"{dense / median / 1e9:.1f}",
            ],
            [
                "**dense-equivalent / best matmul**",
                f"**{dense / best / 1e9 / rate:.2f}**",
                f"{dense / median / 1e9 / rate:.2f}",
            ],
            [
                f"issued GEMM flops ({issued / dense:.2f} x dense) / time / matmul",
                f"{issued / best / 1e9 / rate:.2f}",
                f"{issued / median / 1e9 / rate:.2f}",
            ],
            [
                "paired: its own GEMMs alone / whole pairwise part, per class",
                f"{max(paired):.2f}",
                f"{statistics.median(paired):.2f}",
            ],
        ],
    )

    # === 2. Whole fit, other widths, extrapolation to 1,000 classes ===
    acts = {"layer": np.concatenate([synthetic_class(rng, k, dim) for _ in range(args.classes)])}
    labels = np.repeat(np.arange(args.classes), k)
    t = time.perf_counter()
    ClassMedoids(block_size=b).fit(acts, labels)
    fit_time = time.perf_counter() - t
    t = time.perf_counter()
    for c in range(args.classes):  # what fit adds per class: gather + finiteness check
        np.isfinite(acts["layer"][np.flatnonzero(labels == c)].sum(dtype=np.float64))
    gather = (time.perf_counter() - t) / args.classes
    del acts
    print(
        f"Whole `fit` ({args.classes} classes x {k} x {dim}): {fit_time:.2f} s, "
        f"{fit_time / args.classes * 1e3:.0f} ms per class; gather + check "
        f"{gather * 1e3:.1f} ms per class.\n"
    )
    widths = {dim: (best, median, rate)}
    if not args.quick:
        one = argparse.Namespace(**{**vars(args), "repeats": max(2, args.repeats)})
        for w in sorted(set(INCEPTION_MIXED_WIDTHS) - {dim}):
            times, w_rates, _ = time_pairwise(rng, one, w, 3)
            widths[w] = (min(times), statistics.median(times), max(w_rates))
        rows = []
        for w, (w_best, w_median, w_rate) in sorted(widths.items()):
            w_dense = 2.0 * k * k * w
            rows.append(
                [
                    w,
                    f"{w_best * 1e3:.1f} / {w_median * 1e3:.1f}",
                    f"{w_rate:.1f}",
                    f"{w_dense / w_best / 1e9 / w_rate:.2f}",
                    f"{issued_flops(k, w, b) / w_best / 1e9 / w_rate:.2f}",
                ]
            )
        table(
            [
                "layer width N_l",
                "pairwise ms per class, best / median",
                "matmul GFLOP/s (same width)",
                "dense-equivalent / matmul (best)",
                "per issued flop (best)",
            ],
            rows,
        )
    print("Extrapolation to 1,000 classes of K_c samples (classes are independent):\n")
    for label, i in (("best", 0), ("median", 1)):
        one_layer = 1000 * (widths[dim][i] + gather)
        line = f"- {label}: one {dim}-wide layer {one_layer / 60:.1f} min"
        if not args.quick:
            mixed = sum(widths[w][i] + gather * w / dim for w in INCEPTION_MIXED_WIDTHS)
            line += f"; the 11 InceptionV3 mixed blocks {1000 * mixed / 60:.1f} min"
        print(line)
    print()

    # === 3. Peak memory ===
    print("## Peak traced memory during `fit`, beyond the input arrays\n")
    rows = []
    for classes, kc in [(2, k), (8, k), (16, k), (4, k // 4), (4, k // 2)]:
        peak, nbytes = peak_fit_memory(rng, classes, kc, dim, b)
        bk = balanced(kc, b)
        expected = (kc * dim * 8 + 8 * bk**2 + 8 * bk * dim) / mib
        rows.append(
            [
                classes,
                kc,
                dim,
                f"{nbytes / mib:.0f}",
                f"{peak / mib:.1f}",
                f"{expected:.1f}",
            ]
        )
    table(
        [
            "classes",
            "K_c",
            "N",
            "input MiB",
            "peak MiB",
            "model 8 K_c N + 8 b^2 + 8 b N bytes, MiB",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
