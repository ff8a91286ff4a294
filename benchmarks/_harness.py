"""The one speed harness of the benchmarks (private helper, not part of the library).

Every speed benchmark (`taps.py`, `sanitizer_overhead.py`, `fitting.py`,
`gpu.sh` through them) measures with these functions, so their figures mean
the same thing:

- `interleaved(candidates, repeats)`: each repeat runs every candidate once on
  the same inputs, the order rotated from one repeat to the next (a drift in
  the machine's load hits all candidates alike); wall time
  (`time.perf_counter`) and process CPU time (`time.process_time`, all
  threads of this process) per run.
- `Timing`: the runs of one candidate; medians, spread (the quartiles) and
  per-repeat ratios against another candidate. On a shared machine the CPU
  time ratio is the steadier measure of the work; the wall time is what a
  user waits. Both are printed.
- `Load`: the 1-minute load average before and after a measurement, printed
  in every table (the machine these figures come from has 2 cores shared by
  several users; a load above the core count inflates wall times and, through
  cache and hyper-thread sharing, CPU times too).
- `matmul_peak()`: the machine's float32 matrix-multiply throughput
  (GFLOP/s, TF and numpy, best of a few runs, wall and CPU), the
  physical-limit row next to every figure: `flops / peak` is the time the
  arithmetic alone would take.
- `stream_bandwidth(nbytes)`: the memory streaming rate (one read and one
  write per float), the floor of elementwise passes over data that does not
  stay in the cache: `bytes / rate` is the time moving them alone takes.
- `table(header, rows)` and `write_result(name, lines)`: markdown, written
  atomically through `keras_advguard._files.write_atomic`.
"""

import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def log(message):
    """Print `message` with the time of day, flushed (progress of long runs)."""
    print(time.strftime("%H:%M:%S"), message, flush=True)


def load_average():
    """The machine's 1-minute load average (`nan` where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - Windows
        return float("nan")


@dataclasses.dataclass
class Load:
    """Load average around a measurement: `with Load() as load: ...; load.text()`."""

    before: float = float("nan")
    after: float = float("nan")

    def __enter__(self):
        self.before = load_average()
        return self

    def __exit__(self, *exc):
        self.after = load_average()
        return False

    def text(self):
        return (
            f"load average {self.before:.1f} before, {self.after:.1f} after "
            f"({os.cpu_count()} cores)"
        )


def _quantile(values, q):
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclasses.dataclass
class Timing:
    """Wall and CPU seconds of the runs of one candidate, in repeat order."""

    wall: list
    cpu: list

    @property
    def median_wall(self):
        return statistics.median(self.wall)

    @property
    def median_cpu(self):
        return statistics.median(self.cpu)

    def spread(self, kind="cpu"):
        """`(first quartile, third quartile)` of the runs' seconds."""
        values = self.cpu if kind == "cpu" else self.wall
        return _quantile(values, 0.25), _quantile(values, 0.75)

    def ratio(self, other, kind="cpu"):
        """Median of this candidate's seconds / median of `other`'s."""
        if kind == "cpu":
            return self.median_cpu / other.median_cpu
        return self.median_wall / other.median_wall

    def ratio_range(self, other, kind="cpu"):
        """`(min, max)` of the per-repeat ratios to `other` (same repeat, same inputs)."""
        mine = self.cpu if kind == "cpu" else self.wall
        theirs = other.cpu if kind == "cpu" else other.wall
        ratios = [a / b for a, b in zip(mine, theirs) if b > 0]
        return min(ratios), max(ratios)

    def cell(self, kind="cpu"):
        """`median [q1-q3]` in seconds, for a table."""
        low, high = self.spread(kind)
        median = self.median_cpu if kind == "cpu" else self.median_wall
        return f"{median:.3f} [{low:.3f}-{high:.3f}]"


def measure(fn):
    """`(wall seconds, CPU seconds)` of one call of `fn()`."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(candidates, repeats, warmup=1, progress=None):
    """Time every candidate `repeats` times, interleaved, after `warmup` untimed calls.

    Args:
        candidates: dict `name -> fn()`; each `fn` does one complete pass over
            the same inputs and blocks until its results exist (convert
            tensors to numpy inside it).
        repeats: timed runs per candidate.
        warmup: untimed runs per candidate first (tracing, compilation).
        progress: optional label; logs one line per repeat when given.

    Returns:
        dict `name -> Timing`.
    """
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for r in range(repeats):
        # Rotate the order: candidate k runs first in repeat k.
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            w, c = measure(candidates[name])
            wall[name].append(w)
            cpu[name].append(c)
        if progress:
            log(f"{progress}: repeat {r + 1}/{repeats}")
    return {name: Timing(wall[name], cpu[name]) for name in names}


@dataclasses.dataclass
class Peak:
    """Float32 matmul throughput of this machine, GFLOP/s (best run, wall and CPU)."""

    tf_wall: float
    tf_cpu: float
    numpy_wall: float
    size: int

    def seconds(self, flops, kind="cpu"):
        """Time `flops` floating-point operations take at the TF matmul peak."""
        rate = self.tf_cpu if kind == "cpu" else self.tf_wall
        return flops / (rate * 1e9)

    def text(self):
        return (
            f"float32 matmul {self.size}x{self.size}: TF {self.tf_wall:.0f} GFLOP/s wall "
            f"({self.tf_cpu:.0f} GFLOP per CPU-second), numpy {self.numpy_wall:.0f} GFLOP/s "
            "wall, best of 5"
        )


def matmul_peak(size=1024, repeats=5):
    """Measure the machine's float32 matmul throughput (TF and numpy), best of `repeats`.

    The best run, not the median: a peak is what the hardware can do when
    the other users leave it a moment; the CPU rate (FLOP per CPU-second of
    this process) is the one to compare CPU-time figures with.
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    ta, tb = tf.constant(a), tf.constant(b)
    matmul = tf.function(tf.linalg.matmul)
    matmul(ta, tb).numpy()
    flops = 2.0 * size**3
    runs = [measure(lambda: matmul(ta, tb).numpy()) for _ in range(repeats)]
    best_wall = min(w for w, _ in runs)
    best_cpu = min(c for _, c in runs if c > 0) if any(c > 0 for _, c in runs) else best_wall
    a @ b
    numpy_wall = min(measure(lambda: a @ b)[0] for _ in range(repeats))
    return Peak(
        tf_wall=flops / best_wall / 1e9,
        tf_cpu=flops / best_cpu / 1e9,
        numpy_wall=flops / numpy_wall / 1e9,
        size=size,
    )


@dataclasses.dataclass
class Bandwidth:
    """Memory streaming rate of this machine: bytes read plus written per second (best run)."""

    gb_per_s: float
    nbytes: int

    def seconds(self, nbytes):
        """Time moving `nbytes` (reads and writes counted alike) takes at this rate."""
        return nbytes / (self.gb_per_s * 1e9)

    def text(self):
        return (
            f"memory streaming {self.gb_per_s:.1f} GB/s (one read and one write per float32, "
            f"numpy `multiply(a, 1, out=b)` over {self.nbytes / 2**20:.0f} MiB, no allocation, "
            "best of 5)"
        )


def stream_bandwidth(nbytes, repeats=5):
    """Measure the streaming rate over arrays of `nbytes` (best of `repeats`): `Bandwidth`.

    The floor of an elementwise pass that cannot stay in the cache: a
    sanitizer that reads a map and writes another cannot take less than the
    two transfers at this rate. Preallocated output, so no page faults are
    counted; a TF op that allocates its output is slower.
    """
    import numpy as np

    n = max(1, nbytes // 4)
    a = np.random.default_rng(0).random(n, dtype=np.float32)
    b = np.empty_like(a)
    np.multiply(a, 1.0, out=b)
    best = min(measure(lambda: np.multiply(a, 1.0, out=b))[0] for _ in range(repeats))
    return Bandwidth(gb_per_s=2 * a.nbytes / best / 1e9, nbytes=int(a.nbytes))


def device_name():
    """`"cpu"` or the first GPU's name, lower case with dashes (for result file names)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu"
    details = tf.config.experimental.get_device_details(gpus[0])
    name = details.get("device_name", "gpu")
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def environment(command):
    """One line naming the command, machine, versions and date."""
    import keras
    import tensorflow as tf

    return (
        f"Run by `{command}` on {platform.machine()}, {os.cpu_count()} CPU cores "
        f"(shared), device {device_name()}, TF {tf.__version__}, Keras {keras.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
    )


def table(header, rows):
    """Markdown table lines from a header tuple and row tuples."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return lines


def write_result(name, lines):
    """Write `lines` to `benchmarks/results/name` atomically; returns the path."""
    from keras_advguard._files import write_atomic

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    text = "\n".join(lines).rstrip("\n") + "\n"

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_atomic(path, write)
    log(f"wrote {path}")
    return path


def mnist_path():
    """The MNIST file as a string, or `None` (then `load_dataset` decides).

    `$ADVGUARD_MNIST` when set (`benchmarks/gpu.sh` stages a copy), else the
    shared `../shared/data/mnist.npz`.
    """
    staged = os.environ.get("ADVGUARD_MNIST")
    if staged and Path(staged).exists():
        return staged
    path = SHARED_DATA / "mnist.npz"
    return str(path) if path.exists() else None
