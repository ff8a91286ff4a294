"""Writing files so that an interrupted run never leaves a half-written one (floor 1).

Every file the library writes (cached models, detector JSON, arrays and
classifiers saved beside it) goes through `write_atomic`: written under a
temporary name in the same folder, then moved into place with `os.replace`.
"""

import json
import os
import uuid


def write_atomic(file, write, suffix=""):
    """Call `write(tmp)` on a temporary file beside `file`, then move it there.

    The temporary name is unique (pid + random) but not pre-created, so the
    final file gets the usual permissions (umask), not `mkstemp`'s 0600. It
    ends in `suffix`, for writers that insist on an extension (`.keras` for
    `Model.save`, `.npz` for `numpy.savez`, which would otherwise append it).
    """
    directory, name = os.path.split(os.fspath(file))
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(file, document, **kwargs):
    """Write `document` as indented JSON plus a final newline, atomically.

    `kwargs` go to `json.dump` (e.g. `sort_keys=True`, `allow_nan=False`).
    """

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2, **kwargs)
            f.write("\n")

    write_atomic(file, write, ".json")
