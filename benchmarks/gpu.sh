#!/usr/bin/env bash
# The speed benchmarks on a GPU, in one time-boxed run (issue 16).
#
# Usage (from the repository root):
#   bash benchmarks/gpu.sh --stage          # here: copy MNIST + the cached model into
#                                           # benchmarks/.cache/gpu (git-ignored, ~15 MB)
#   bash benchmarks/gpu.sh [--quick] [--no-install] [--dry-run] [--out DIR]
#
# On the GPU machine, carry `benchmarks/.cache/gpu` with the working tree. The script
#   1. installs the package with its `gpu` extra (`pip install -e ".[gpu]"`, TF with
#      CUDA, pinned to the TF version already installed when there is one), unless
#      --no-install; a failed install is reported and the run goes on;
#   2. prints `nvidia-smi` and the devices TensorFlow sees (none: the CPU fallback);
#   3. runs, each under `timeout`, the taps, sanitizer, PGD and fitting benchmarks,
#      which name their result files after the device (`taps_nvidia-h200.md`, ...;
#      plain names on the CPU), writing to benchmarks/results/ and copying them and
#      the log to --out (default $OUT when set).
# Whole run: under ten minutes (the per-step limits below add up to 555 s).
# --quick runs every benchmark in its quick mode (the CPU fallback check);
# --dry-run prints the commands without running them.
#
# Known limit (seen 2026-12): the lent H200 machine has no TensorFlow (its python3
# holds PyTorch and JAX) and no network; a TF wheel (>500 MB) is over the 64 MiB a
# call may carry. There the install step fails and the benchmarks stop at the import
# check below; the run then needs a machine with network or with TF installed.
set -uo pipefail
cd "$(dirname "$0")/.."

QUICK=""
INSTALL=1
DRY=0
STAGE=0
OUTDIR="${OUT:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK="--quick" ;;
    --no-install) INSTALL=0 ;;
    --dry-run) DRY=1 ;;
    --stage) STAGE=1 ;;
    --out) OUTDIR="$2"; shift ;;
    *) echo "unknown argument: $1 (expected --quick, --no-install, --dry-run, --stage, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done

CACHE=benchmarks/.cache/gpu
if [ "$STAGE" = 1 ]; then
  mkdir -p "$CACHE/data" "$CACHE/home/models"
  cp ../shared/data/mnist.npz "$CACHE/data/" || exit 1
  cp ~/.keras_advguard/models/mnist_cnn-mnist-e5-b128-s0-* "$CACHE/home/models/" || exit 1
  du -sh "$CACHE"
  exit 0
fi

export TF_CPP_MIN_LOG_LEVEL=3 MPLBACKEND=Agg PYTHONUNBUFFERED=1
if [ -f "$CACHE/data/mnist.npz" ]; then
  export ADVGUARD_MNIST="$PWD/$CACHE/data/mnist.npz"
fi
if [ -d "$CACHE/home/models" ]; then
  export KERAS_ADVGUARD_HOME="$PWD/$CACHE/home"
fi
PY="${PYTHON:-python}"
command -v "$PY" >/dev/null || PY=python3
START=$(date +%s)
LOG=benchmarks/results/gpu_run.log
[ "$DRY" = 1 ] && LOG=/dev/null
mkdir -p benchmarks/results
: > "$LOG"

step() {  # step LIMIT_SECONDS COMMAND...
  local limit=$1
  shift
  echo "== [$(( $(date +%s) - START )) s] $* (limit ${limit} s)" | tee -a "$LOG"
  if [ "$DRY" = 1 ]; then
    return 0
  fi
  timeout --kill-after=10 "$limit" "$@" 2>&1 | grep -v -E "cuda_|absl::|computation_placer|WARNING: All log" | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || echo "!! exit $rc (124: over its time limit): $*" | tee -a "$LOG"
  return 0
}

if [ "$INSTALL" = 1 ]; then
  TFV=$("$PY" -c "import tensorflow as tf; print(tf.__version__)" 2>/dev/null)
  if [ -n "$TFV" ]; then
    step 150 "$PY" -m pip install -q -e ".[gpu]" "tensorflow[and-cuda]==$TFV"
  else
    step 150 "$PY" -m pip install -q -e ".[gpu]"
  fi
fi
step 15 nvidia-smi
step 60 "$PY" -c "import tensorflow as tf, keras_advguard; print('TF', tf.__version__, tf.config.list_physical_devices())"
if [ "$DRY" = 0 ] && ! "$PY" -c "import tensorflow, keras_advguard" 2>/dev/null; then
  echo "!! TensorFlow or keras_advguard cannot be imported here: nothing to benchmark" | tee -a "$LOG"
  exit 1
fi

step 90 "$PY" benchmarks/taps.py $QUICK --no-memory
if [ -n "$QUICK" ]; then
  step 150 "$PY" benchmarks/sanitizer_overhead.py --quick --images 100 --repeats 1 --models mnist
else
  step 180 "$PY" benchmarks/sanitizer_overhead.py --images 2000 --repeats 5
fi
step 60 "$PY" - $QUICK <<'EOF'
"""PGD step time vs one forward + backward pass of the same model (same batches)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path("benchmarks").resolve()))
import _harness  # noqa: E402
import numpy as np
import tensorflow as tf

from keras_advguard.attacks import pgd
from keras_advguard.datasets import load_dataset
from keras_advguard.models import load_or_train

quick = "--quick" in sys.argv
path = _harness.mnist_path()
model, _ = load_or_train("mnist_cnn", "mnist", epochs=5, path=path)
_, (x, y) = load_dataset("mnist", path=path)
n, steps = (256, 5) if quick else (2048, 40)
x, y = x[:n], np.asarray(y[:n])
xt, yt = tf.constant(x), tf.constant(y)


@tf.function
def forward_backward(v, labels):
    with tf.GradientTape() as tape:
        tape.watch(v)
        loss = tf.keras.losses.sparse_categorical_crossentropy(labels, model(v, training=False))
    return tape.gradient(loss, v)


with _harness.Load() as load:
    t = _harness.interleaved(
        {
            "pgd": lambda: pgd(model, x, y=y, eps=0.3, eps_iter=0.01, nb_iter=steps, batch_size=128),
            "fb": lambda: [forward_backward(xt[i : i + 128], yt[i : i + 128]).numpy()
                           for i in range(0, n, 128)],
        },
        repeats=1 if quick else 3,
    )
per_step = t["pgd"].median_wall / steps
lines = [
    "# PGD step time vs one forward + backward pass",
    "",
    _harness.environment("bash benchmarks/gpu.sh" + (" --quick" if quick else "")),
    "",
    f"`mnist_cnn`, {n} MNIST test images, batch 128, {steps} steps; {load.text()}.",
    "",
]
lines += _harness.table(
    ("what", "wall s", "CPU s", "per step / forward+backward (wall)"),
    [
        ("PGD, whole attack", f"{t['pgd'].median_wall:.3f}", f"{t['pgd'].median_cpu:.3f}", "-"),
        ("one forward + backward", f"{t['fb'].median_wall:.3f}", f"{t['fb'].median_cpu:.3f}", "1.00"),
        ("PGD per step", f"{per_step:.4f}", "-", f"**{per_step / t['fb'].median_wall:.2f}**"),
    ],
)
device = _harness.device_name()
_harness.write_result(f"pgd_step{'_quick' if quick else ''}_{device}.md", lines)
EOF
if [ -n "$QUICK" ]; then
  step 150 "$PY" benchmarks/fitting.py --quick --images 5000
else
  step 200 "$PY" benchmarks/fitting.py --repeats 1
fi

echo "== done in $(( $(date +%s) - START )) s" | tee -a "$LOG"
if [ -n "$OUTDIR" ] && [ "$DRY" = 0 ]; then
  mkdir -p "$OUTDIR"
  cp "$LOG" "$OUTDIR/" 2>/dev/null
  for f in benchmarks/results/*_nvidia* benchmarks/results/pgd_step*; do
    [ -f "$f" ] && cp "$f" "$OUTDIR/"
  done
fi
exit 0
