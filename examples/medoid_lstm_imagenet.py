"""
Title: The distance-space LSTM detector on InceptionV3 / ImageNet
Author: keras_advguard developers
Date created: 2026/11/21
Last modified: 2026/12/01
Description: The setting of Caldelli et al. (ICIP 2019): InceptionV3, its 11
`mixed*` blocks tapped, a medoid per class and block, an LSTM reading the
11 x C distance sequence; the paper's NIPS 2017 attack groups.
"""

"""
## What you need

Nothing downloads. Bring:

- `--weights`: InceptionV3's ImageNet weights as a file, for example
  `inception_v3_weights_tf_dim_ordering_tf_kernels.h5` from the Keras
  applications releases (the file `keras.applications.InceptionV3(weights=
  "imagenet")` caches in `~/.keras/models/`), or a `.weights.h5` saved with
  `model.save_weights` from that model.
- `--train-dir`: images the class medoids are computed from (the paper: the
  ImageNet training set), one subfolder per class;
- `--test-dir`: the images to attack (the paper: the NIPS 2017 development
  set), same layout.

A class folder is named by its ImageNet class index (`0` ... `999`), or by
its WordNet id (`n01440764`, ...) together with `--class-index`, Keras's
`imagenet_class_index.json` (also cached in `~/.keras/models/` once
`keras.applications.imagenet_utils.decode_predictions` has run). The classes
in `--train-dir` are the classes the detector measures distances to: all
1,000 for the paper's setting, or a subset (every class there needs at least
one image).

```
python examples/medoid_lstm_imagenet.py \\
    --weights ~/.keras/models/inception_v3_weights_tf_dim_ordering_tf_kernels.h5 \\
    --train-dir imagenet/train --test-dir nips2017_dev \\
    --class-index ~/.keras/models/imagenet_class_index.json
```

InceptionV3 is ~5.7 G multiply-adds per 299 x 299 image forward; the three attacks
below cost ~22 forward-backward passes per source, so a few hundred sources
take minutes on a GPU and hours on a laptop CPU. `--max-per-class` caps the
images per class used for the medoids (a random subset: an approximate
medoid), the main knob on the medoid cost, which is quadratic in the class
size.

`--dataset` (`digits`, `mnist`, `fashion_mnist`, `cifar10`) replaces the
two folders by a dataset of `keras_advguard.datasets.load_dataset`, read
offline (the Keras cache, or the file or folder given with `--data-path`):
its training split gives the medoids, one per class of the dataset, the
first `--sources` images of its test split are attacked, and every image is
resized to `--image-size` (grayscale repeated to RGB). Its classes are not
ImageNet's, so the attacks change InceptionV3's own prediction (the test
labels are the model's predictions, as with `--random-weights`) and the kNN
baseline is fitted on the predicted classes of the training images. With
`--max-per-class`, only that many training images per class (a random
subset) are read at all.

```
python examples/medoid_lstm_imagenet.py --dataset cifar10 \\
    --weights ~/.keras/models/inception_v3_weights_tf_dim_ordering_tf_kernels.h5 \\
    --max-per-class 100 --sources 200 --image-size 139
```

`--random-weights` replaces the weights file by random weights and the
test images' labels by the model's own predictions (random weights get
nothing right), keeping every attacked image: a check of the pipeline on
your folders whose numbers mean nothing. `--image-size` (default 299,
InceptionV3's training size; at least 75) trades resolution for speed.
`--quick` = random weights, 75 x 75 pixels, a few epochs, a few images per
class; without folders or `--dataset`, random images written as three
WordNet-id class folders (and their class index) in a temporary folder:
what CI runs.

At the paper's size (1.28 million training images, 11 blocks, ~51 GB of
pooled activations) the training activations do not fit in memory:
`--store DIR` streams them to an on-disk activation store (shards written
atomically; a killed run resumes where it stopped when started again with
the same arguments) and fits the medoids one class of one block at a time.
`--beam` (with `--store`; `pip install "keras-advguard[beam]"`) runs the
extraction and the medoids as an Apache Beam pipeline instead: the images
are decoded on the workers, `RunInference` taps InceptionV3, the medoids
are computed per (block, class) in parallel; `--beam-options` passes the
runner's flags (e.g. `"--runner=DataflowRunner --project=... --region=...
--temp_location=gs://..."`; the default is the local DirectRunner, which
checks the pipeline rather than scaling it). See the "At scale" docs page.
"""

import argparse
import json
import os
import shlex
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_advguard import DetectorModel, attacks, metrics  # noqa: E402
from keras_advguard.activation_store import ActivationStore, load_medoids  # noqa: E402
from keras_advguard.datasets import DATASET_NAMES, load_dataset  # noqa: E402
from keras_advguard.detectors import (  # noqa: E402
    ClassMedoids,
    KNNDetector,
    MedoidLSTMDetector,
)
from keras_advguard.layers import MedoidDistance  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--weights", help="InceptionV3 ImageNet weights file (.h5).")
parser.add_argument("--train-dir", help="Images for the class medoids, a folder per class.")
parser.add_argument("--test-dir", help="Images to attack, a folder per class.")
parser.add_argument("--class-index", help="imagenet_class_index.json, for WordNet-id folders.")
parser.add_argument(
    "--dataset",
    default=None,
    choices=DATASET_NAMES,
    help="A named dataset instead of --train-dir/--test-dir (read from the Keras cache "
    "or --data-path, never downloaded; resized to --image-size).",
)
parser.add_argument("--data-path", default=None, help="The --dataset's file or folder.")
parser.add_argument("--max-per-class", type=int, default=None, help="Medoid subset per class.")
parser.add_argument("--sources", type=int, default=500, help="Test images to attack.")
parser.add_argument("--epochs", type=int, default=100, help="LSTM epochs (the paper: 100).")
parser.add_argument("--batch-size", type=int, default=32, help="Batch size of model passes.")
parser.add_argument("--output", default="medoid_lstm_imagenet.advguard", help="Detector file.")
parser.add_argument("--image-size", type=int, default=299, help="Input side, >= 75.")
parser.add_argument("--random-weights", action="store_true", help="Pipeline check only.")
parser.add_argument("--quick", action="store_true", help="Random weights and images, 75x75.")
parser.add_argument("--store", help="Activation store folder (streamed, resumable).")
parser.add_argument("--beam", action="store_true", help="Extraction + medoids on Apache Beam.")
parser.add_argument("--beam-options", default="", help="Beam pipeline flags (with --beam).")
args = parser.parse_args()
if args.beam and not args.store:
    parser.error("--beam needs --store DIR (the pipeline writes the activations there).")
if args.dataset and (args.train_dir or args.test_dir):
    parser.error("--dataset and --train-dir/--test-dir exclude each other.")
if args.data_path and not args.dataset:
    parser.error("--data-path needs --dataset.")
random_folders = args.quick and not (args.dataset or args.train_dir or args.test_dir)
if args.quick:
    args.random_weights, args.image_size, args.epochs = True, 75, min(args.epochs, 3)
    args.sources, args.max_per_class = min(args.sources, 24), args.max_per_class or 6
if args.image_size < 75:
    parser.error(f"--image-size must be at least 75 (InceptionV3). Received: {args.image_size}")
if args.random_weights and args.weights:
    parser.error("--weights and --random-weights exclude each other.")
required = [("--weights", args.weights or args.random_weights)]
if not (args.dataset or random_folders):
    required += [("--train-dir", args.train_dir), ("--test-dir", args.test_dir)]
missing = [flag for flag, value in required if not value]
if missing:
    parser.error(
        f"{', '.join(missing)} required (nothing downloads; see the top of this "
        "file for the files to bring), or run with --quick for random weights "
        "and random images."
    )
for flag, value in (
    ("--weights", args.weights),
    ("--train-dir", args.train_dir),
    ("--test-dir", args.test_dir),
    ("--class-index", args.class_index),
):
    if value and not Path(value).expanduser().exists():
        parser.error(f"{flag}: no such file or folder: {value}")
if args.dataset:
    try:  # before InceptionV3 is built: a missing file stops here
        (x_train, y_train), (x_test, y_test) = load_dataset(args.dataset, path=args.data_path)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"--dataset {args.dataset}: {error}")
keras.utils.set_random_seed(0)

"""
## The classifier

The attacks work on pixels in `[0, 1]`; a `Rescaling` layer maps them to the
`[-1, 1]` InceptionV3 expects, so the backbone sits *inside* a functional
model (the nested case: its blocks are reached as `inception_v3/mixed5`).
`keras.applications.InceptionV3` ends with `Dense(1000, softmax)`; the
library attacks and taps it on the logits behind that softmax.
"""

size = args.image_size
backbone = keras.applications.InceptionV3(
    weights=None if args.random_weights else str(Path(args.weights).expanduser()),
    input_shape=(size, size, 3),
)
inputs = keras.Input((size, size, 3), name="pixels")
scaled = keras.layers.Rescaling(2.0, offset=-1.0, name="to_inception_range")(inputs)
model = keras.Model(inputs, backbone(scaled), name="inception_v3_on_pixels")

"""
## Images and labels

`image_dataset_from_directory` reads a folder per class. The class medoids
use the folder order (`0 .. C-1`); attacks and the kNN baseline need the
ImageNet index of every folder.
"""


def imagenet_indices(class_names):
    """ImageNet index (0-999) of each class folder name."""
    if all(name.isdigit() for name in class_names):
        indices = [int(name) for name in class_names]
    else:
        if not args.class_index:
            raise SystemExit(
                "Class folders are not ImageNet indices (e.g. "
                f"{class_names[0]!r}); pass --class-index imagenet_class_index.json "
                "to map WordNet ids to indices."
            )
        table = json.loads(Path(args.class_index).expanduser().read_text())
        by_wnid = {wnid: int(i) for i, (wnid, _) in table.items()}
        unknown = [name for name in class_names if name not in by_wnid]
        if unknown:
            raise SystemExit(f"Folders not in {args.class_index}: {unknown[:5]}")
        indices = [by_wnid[name] for name in class_names]
    bad = [i for i in indices if not 0 <= i < 1000]
    if bad:
        raise SystemExit(f"ImageNet indices must be in [0, 1000); got {bad[:5]}")
    return np.array(indices)


def image_folder(directory):
    """A batched dataset of (pixels in [0, 1], folder label) and the folder names."""
    dataset = keras.utils.image_dataset_from_directory(
        Path(directory).expanduser(),
        image_size=(size, size),
        batch_size=args.batch_size,
        shuffle=False,
        crop_to_aspect_ratio=True,
        verbose=False,
    )
    names = dataset.class_names
    return dataset.map(lambda x, y: (x / 255.0, y)), names


def write_random_folders(root):
    """--quick: random PNGs in WordNet-id class folders, and their class index."""
    rng = np.random.default_rng(0)
    wnids = {"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}
    wnids["2"] = ["n01484850", "great_white_shark"]
    for split, per_class in (("train", 6), ("test", 8)):
        for wnid, _ in wnids.values():
            folder = Path(root, split, wnid)
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(80, 90, 3), dtype=np.uint8)
                (folder / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    Path(root, "index.json").write_text(json.dumps(wnids))
    return str(Path(root, "train")), str(Path(root, "test")), str(Path(root, "index.json"))


def dataset_pixels(x, y):
    """A batched dataset of `(x, y)` arrays resized to the InceptionV3 input, RGB."""

    def to_pixels(images, labels):
        images = tf.image.resize(images, (size, size))  # bilinear: stays in [0, 1]
        if images.shape[-1] == 1:
            images = tf.image.grayscale_to_rgb(images)
        return images, labels

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).map(to_pixels)


if random_folders:  # removed at exit
    scratch = tempfile.TemporaryDirectory(prefix="medoid_lstm_imagenet-")
    args.train_dir, args.test_dir, args.class_index = write_random_folders(scratch.name)
if args.dataset:
    if args.max_per_class:  # a random subset of every class, before any pass
        rng = np.random.default_rng(0)
        keep = np.sort(
            np.concatenate(
                [
                    rng.permutation(np.flatnonzero(y_train == c))[: args.max_per_class]
                    for c in np.unique(y_train)
                ]
            )
        )
        x_train, y_train = x_train[keep], y_train[keep]
    train = dataset_pixels(x_train, y_train)
    class_ids = np.unique(y_train)  # the medoids' classes: the dataset's own
    pool = dataset_pixels(x_test[: args.sources], y_test[: args.sources])
    x_pool = np.concatenate([x for x, _ in pool.as_numpy_iterator()])
    y_pool = None  # not ImageNet classes: the model's own predictions below
else:
    train, train_names = image_folder(args.train_dir)
    class_ids = imagenet_indices(train_names)
    test, test_names = image_folder(args.test_dir)
    test_ids = imagenet_indices(test_names)
    batches = list(test.as_numpy_iterator())  # read and decode the images once
    x_pool = np.concatenate([x for x, _ in batches])
    y_pool = test_ids[np.concatenate([y for _, y in batches])]
if args.random_weights or args.dataset:
    # Random weights get nothing right, and a named dataset's classes are not
    # ImageNet's: attack the model's own labels instead.
    y_pool = np.argmax(model.predict(x_pool, batch_size=args.batch_size, verbose=0), axis=1)
print(f"{len(class_ids)} classes for the medoids, {len(x_pool)} test images")

"""
## Taps and class medoids

The `inception_mixed` preset taps the 11 `mixed*` blocks, each reduced by
global average pooling (the paper's choice). One pass over the training
images gives the activations; `ClassMedoids` computes the exact L2 medoid
of every class at every block.
"""

taps = DetectorModel(model, layers="inception_mixed", pooling="avg")
print("tapped blocks:", [name.rsplit("/", 1)[-1] for name in taps.tap_names])


def image_files(directory):
    """(path, folder label) of every image, in `image_dataset_from_directory` order."""
    names = sorted(p.name for p in Path(directory).expanduser().iterdir() if p.is_dir())
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
    return [
        (str(path), label)
        for label, name in enumerate(names)
        for path in sorted((Path(directory).expanduser() / name).iterdir())
        if path.suffix.lower() in suffixes
    ]


def decode_image(element):
    """(index, (path, label)) -> (index, (pixels in [0, 1], label)), on a Beam worker."""
    index, (path, label) = element
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = keras.preprocessing.image.smart_resize(image, (size, size))  # crop + resize
    return index, (np.asarray(image, dtype=np.float32) / 255.0, label)


def beam_medoids():
    """Extraction, activation store and medoids as one Apache Beam pipeline."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from keras_advguard.pipelines import beam as pipelines

    os.makedirs(args.store, exist_ok=True)
    taps_path = os.path.join(args.store, "taps.keras")
    medoids_path = os.path.join(args.store, "medoids.npz")
    taps.save(taps_path)
    with beam.Pipeline(options=PipelineOptions(shlex.split(args.beam_options))) as pipeline:
        if not args.dataset:
            files = list(enumerate(image_files(args.train_dir)))
            examples = (
                pipeline
                | "Files" >> beam.Create(files)
                | beam.Reshuffle()
                | "Decode" >> beam.Map(decode_image)
            )
        else:
            pairs = [
                (i, (x, int(y))) for i, (x, y) in enumerate(train.unbatch().as_numpy_iterator())
            ]
            examples = pipeline | "Examples" >> beam.Create(pairs)
        records = examples | pipelines.ExtractActivations(taps_path, batch_size=args.batch_size)
        _ = records | pipelines.WriteActivationStore(args.store, tap_names=taps.tap_names)
        _ = (
            records
            | pipelines.ComputeClassMedoids(max_samples_per_class=args.max_per_class)
            | pipelines.WriteMedoids(
                medoids_path, tap_names=taps.tap_names, num_classes=len(class_ids)
            )
        )
    return ActivationStore(args.store), load_medoids(medoids_path)


if args.store:
    # Streamed to disk; memory: one shard while extracting, one class of one
    # block while fitting.
    if args.beam:
        store, medoids = beam_medoids()
    else:
        store = ActivationStore.extract(
            args.store, taps, train, batch_size=args.batch_size, verbose=0 if args.quick else 1
        )
        medoids = store.fit_medoids(
            num_classes=len(class_ids),
            max_samples_per_class=args.max_per_class,
            verbose=0 if args.quick else 1,
        )
    print(f"activation store: {store.num_samples} samples in {len(store.shards)} shards")
    in_order = np.argsort(store.sample_index)
    train_labels, train_predicted = store.labels[in_order], store.predicted_class[in_order]
else:
    activations, train_labels, train_predicted = {name: [] for name in taps.tap_names}, [], []
    for outputs, labels in taps.iter_activations(train, verbose=0 if args.quick else 1):
        for name in taps.tap_names:
            activations[name].append(outputs["activations"][name])
        train_labels.append(labels)
        train_predicted.append(np.argmax(outputs["prediction"], axis=1))
    activations = {name: np.concatenate(chunks) for name, chunks in activations.items()}
    train_labels, train_predicted = np.concatenate(train_labels), np.concatenate(train_predicted)
    medoids = ClassMedoids(
        num_classes=len(class_ids),
        max_samples_per_class=args.max_per_class,
        verbose=0 if args.quick else 1,
    ).fit(activations, train_labels)

"""
## The detector

Image -> taps -> distances `(11, C)` -> `LSTM(100)` -> `Dense(1, sigmoid)`;
the classifier inside is frozen. The distances are standardized per block
with statistics of the training activations computed above
(`MedoidLSTMDetector.from_medoids(..., standardization_data=...)` would run
InceptionV3 over the training images a second time).
"""

distance = MedoidDistance.from_medoids(medoids, standardize=True)
if args.store:
    store.adapt(distance)  # streaming, from the store
else:
    distance.adapt(activations)
detector = MedoidLSTMDetector(taps, distance)
print("distance sequence:", detector.features(x_pool[:1]).shape[1:], "(blocks, classes)")

"""
## Sources and the paper's attacks

Sources: test images InceptionV3 classifies correctly. The NIPS 2017
development toolkit's groups: FGSM eps 16/255, FGSM eps 16/255 toward a
random class, iterative FGSM toward the same class (20 steps of 1/255).
Only the successful adversarial images count (uniform noise, the toolkit's
fourth group, changes almost no label: it is a control, not an attack).
"""

correct = np.argmax(model.predict(x_pool, batch_size=args.batch_size, verbose=0), 1) == y_pool
x_src, y_src = x_pool[correct][: args.sources], y_pool[correct][: args.sources]
print(f"sources: {len(x_src)} correctly classified test images")
if len(x_src) < 10:
    raise SystemExit("Fewer than 10 correctly classified test images: give more test images.")
rng = np.random.default_rng(0)
target = (y_src + rng.integers(1, 1000, size=len(y_src))) % 1000
eps = 16 / 255
steps = 3 if args.quick else 20
results = {
    "FGSM": attacks.fgsm(model, x_src, eps=eps, y=y_src, batch_size=args.batch_size),
    "FGSM targeted": attacks.fgsm(
        model, x_src, eps=eps, y=target, targeted=True, batch_size=args.batch_size
    ),
    "I-FGSM targeted": attacks.bim(
        model,
        x_src,
        eps=eps,
        eps_iter=1 / 255,
        nb_iter=steps,
        y=target,
        targeted=True,
        batch_size=args.batch_size,
    ),
}
x_parts, is_adv, source = [x_src], [np.zeros(len(x_src))], [np.arange(len(x_src))]
for name, result in results.items():
    # Random weights: success means nothing, every image is kept.
    keep = np.ones(len(x_src), bool) if args.random_weights else result.success
    print(f"{name}: success {result.success.mean():.3f}")
    x_parts.append(result.x_adv[keep])
    is_adv.append(np.ones(keep.sum()))
    source.append(np.flatnonzero(keep))
x, is_adv, source = np.concatenate(x_parts), np.concatenate(is_adv), np.concatenate(source)

"""
## Training and evaluation

80/10/10 split by source image (an image's clean and adversarial versions
stay together), an ordinary `fit`, the threshold from clean validation
images at 5% false positives.
"""

train_idx, val_idx, test_idx = metrics.train_val_test_split_by_group(
    source, (0.8, 0.1, 0.1), seed=0
)
detector.compile()
detector.fit(
    x[train_idx],
    is_adv[train_idx],
    epochs=args.epochs,
    validation_data=(x[val_idx], is_adv[val_idx]),
    callbacks=[keras.callbacks.EarlyStopping("val_loss", patience=20, restore_best_weights=True)],
    verbose=0,
)


def evaluate(name, scores):
    clean, adv = test_idx[is_adv[test_idx] == 0], test_idx[is_adv[test_idx] == 1]
    report = metrics.detection_report(
        scores[clean],
        scores[adv],
        fprs=[0.05],
        scores_clean_validation=scores[val_idx[is_adv[val_idx] == 0]],
    )
    at = report["at_fpr"][0.05]
    print(f"{name:>24}: AUC {report['auc']:.3f}, TPR {at['tpr']:.3f} at FPR {at['fpr']:.3f}")


scores = detector.score(x, batch_size=args.batch_size)
evaluate("medoid LSTM", scores)
detector.calibrate(x[val_idx[is_adv[val_idx] == 0]], fpr=0.05, batch_size=args.batch_size)
flags = detector.predict(x[test_idx], batch_size=args.batch_size)
print(
    f"{'':>24}  flagged at threshold {detector.threshold_:.3f}: clean "
    f"{flags[is_adv[test_idx] == 0].mean():.3f}, "
    f"adversarial {flags[is_adv[test_idx] == 1].mean():.3f}"
)

"""
## The paper's baseline: kNN on the last block (Carrara et al.)

On `mixed10` pooled (InceptionV3's `pool3` features), with the training
activations already computed; k chosen on the validation images. Its labels
are the ImageNet classes of the training folders (with `--dataset`, whose
classes are not ImageNet's: InceptionV3's predicted class of each training
image).
"""

last = taps.tap_names[-1]
last_activations = store.read_layer(last) if args.store else activations[last]
knn_labels = train_predicted if args.dataset else class_ids[train_labels]
knn = KNNDetector(model, last, batch_size=args.batch_size).fit_activations(
    last_activations, knn_labels
)
k_candidates = [k for k in (1, 2, 5, 10, 20, 50) if k <= len(train_labels)]
knn.select_k(x[val_idx], is_adv[val_idx], k_candidates=k_candidates)
evaluate(f"kNN ({last.rsplit('/', 1)[-1]}, k={knn.n_neighbors_})", knn.score(x))

"""
## Save and load

One file, written atomically: InceptionV3, the medoids, the statistics, the
LSTM and the threshold; it loads in Keras's safe mode with the same scores
(`include_model=False`: InceptionV3 is already inside the detector, once is
enough). `MedoidLSTMDetector.load(path, model)` refuses a classifier whose
weights differ from the one the detector was built on. A path ending in
`.keras` writes a plain Keras file instead (`keras.models.load_model`).
"""

detector.save(args.output, include_model=False)
reloaded = MedoidLSTMDetector.load(args.output, model)
np.testing.assert_allclose(reloaded.score(x[:8], batch_size=args.batch_size), scores[:8], atol=1e-6)
print(f"saved and reloaded {args.output}")
