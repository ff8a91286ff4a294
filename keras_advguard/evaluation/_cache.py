"""Attack results on disk, keyed by a content hash (model weights + inputs + config).

A rerun of `evaluate` (or a run with another list of defences) on the same
model, images and attack configuration loads the adversarial images instead
of recomputing them. The key is a SHA-256 over

- the model's weights (bytes, shapes and dtypes, in order) and its
  architecture (each layer's class and configuration, names left out),
- the attacked images and labels (bytes, shape, dtype),
- the attack's name, parameters, seed and clip range,
- a format version (bumped when the stored fields change).

So any change to one of them misses the cache; nothing else is compared.
Each entry is one `.npz` file written atomically (`_files.write_atomic`); a
file that cannot be read is treated as absent and rewritten.
"""

import hashlib
import json
import os

import numpy as np

from keras_advguard import _files

_FORMAT = "keras_advguard-attack-cache-v1"
_FIELDS = ("x_adv", "success", "y_pred_before", "y_pred_after", "labels", "l2", "linf")


def default_cache_dir():
    """`$KERAS_ADVGUARD_HOME/attacks`, else `~/.keras_advguard/attacks`."""
    home = os.environ.get("KERAS_ADVGUARD_HOME") or os.path.join("~", ".keras_advguard")
    return os.path.join(os.path.expanduser(home), "attacks")


def _update_array(digest, array):
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())


def model_fingerprint(model):
    """SHA-256 (hex) over a model's weights and, when available, its architecture."""
    digest = hashlib.sha256(_FORMAT.encode())
    for weight in model.weights:
        _update_array(digest, np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight))
    digest.update(json.dumps(_architecture(model), sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def _architecture(model):
    """Each layer's class and configuration, names left out (auto-names vary)."""
    out = [type(model).__qualname__]
    for layer in getattr(model, "layers", []):
        try:
            config = {k: v for k, v in layer.get_config().items() if k != "name"}
        except Exception:  # a layer without a config: its class only
            config = {}
        if hasattr(layer, "layers"):
            config = {"layers": _architecture(layer)}
        out.append([type(layer).__qualname__, config])
    return out


def attack_key(model_hash, x, labels, name, params, seed, clip):
    """The cache key (hex SHA-256) of one attack run."""
    digest = hashlib.sha256(_FORMAT.encode())
    digest.update(model_hash.encode())
    _update_array(digest, x)
    _update_array(digest, np.asarray(labels, dtype=np.int64))
    config = {"name": name, "params": params, "seed": seed, "clip": [float(c) for c in clip]}
    digest.update(json.dumps(config, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


class AttackCache:
    """A folder of attack results; `None` as the folder disables caching."""

    def __init__(self, directory):
        self.directory = None if directory is None else os.fspath(directory)
        self.hits = 0
        self.misses = 0

    def _file(self, key):
        return os.path.join(self.directory, f"{key}.npz")

    def load(self, key):
        """The stored `AttackResult`, or `None` (absent, unreadable, or no cache)."""
        from keras_advguard.attacks import AttackResult

        if self.directory is None or not os.path.isfile(self._file(key)):
            self.misses += self.directory is not None
            return None
        try:
            with np.load(self._file(key), allow_pickle=False) as data:
                fields = {name: data[name] for name in _FIELDS}
                meta = json.loads(str(data["meta"]))
        except Exception:  # truncated or foreign file: recompute and rewrite
            self.misses += 1
            return None
        self.hits += 1
        return AttackResult(
            **fields,
            seconds=float(meta["seconds"]),
            attack=meta["attack"],
            targeted=bool(meta["targeted"]),
            params=meta["params"],
        )

    def store(self, key, result):
        """Write `result` under `key` (atomically); a no-op without a folder."""
        if self.directory is None:
            return
        os.makedirs(self.directory, exist_ok=True)
        meta = {
            "seconds": float(result.seconds),
            "attack": result.attack,
            "targeted": bool(result.targeted),
            "params": jsonable(result.params),
        }
        arrays = {name: np.asarray(getattr(result, name)) for name in _FIELDS}

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)), **arrays)

        _files.write_atomic(self._file(key), write, ".npz")


def jsonable(value):
    """`value` with numpy scalars and infinities made JSON-safe (`repr` otherwise)."""
    return json.loads(json.dumps(value, default=_default))


def _default(value):
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)
