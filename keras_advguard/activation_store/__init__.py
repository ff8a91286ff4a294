"""An on-disk, class-indexed store of a classifier's tapped activations (floor 3).

The distance-space detector (Caldelli et al.) needs, for its class medoids,
every training activation of a class at every tapped layer: on ImageNet about
1,300 x 2,048 floats per class and layer, ~51 GB for the 1,000 classes and
the 11 pooled mixed blocks of InceptionV3, more than one pass in memory holds. An
`ActivationStore` writes them to disk as they stream out of
`DetectorModel.iter_activations`, in shards, and reads back one class of one
layer at a time.

Format (`format_version` 1) of a store folder:

    index.json                       the index (below), rewritten atomically
    shards/{id}.sample_index.npy     int64 (K,): position of each row in the input
    shards/{id}.labels.npy           int64 (K,): class ids (absent without labels)
    shards/{id}.predicted_class.npy  int64 (K,): the classifier's argmax
    shards/{id}.layer{j:03d}.npy     (K, *shape_j): layer j's activations

Every `.npy` file is written through `keras_advguard._files.write_atomic`
(temporary name, `fsync`, `os.replace`), and a shard enters `index.json` only
once all its files are in place. `index.json` holds `format`,
`format_version`, `layers` (`[{"name", "shape", "dtype"}]` in tap order),
`has_labels`, `num_outputs` (the classifier's number of classes), `model`
(`{"name", "weights_sha256"}`), `writer` (`{"shard_size", "batch_size"}`),
`complete` (bool) and `shards` (`[{"id", "rows", "batches"}]`, in input
order). A killed extraction therefore leaves complete shards, listed, and
perhaps files of one unlisted shard that the next run overwrites;
`ActivationStore.extract` on the same folder resumes after the last listed
shard. Shards written in parallel (the Beam pipelines) carry arbitrary
`sample_index` values; readers order rows by `sample_index`, so a class's
rows come back in input order however the shards were produced.
"""

from keras_advguard.activation_store.medoids import (
    MEDOIDS_FORMAT,
    class_subset,
    load_medoids,
    medoid_position,
    save_medoids,
)
from keras_advguard.activation_store.store import FORMAT, FORMAT_VERSION, ActivationStore

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MEDOIDS_FORMAT",
    "ActivationStore",
    "class_subset",
    "load_medoids",
    "medoid_position",
    "save_medoids",
]
