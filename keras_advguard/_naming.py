"""Names of the layers keras_advguard inserts into a user's model (floor 1).

`sanitize` names the sanitizer it inserts after layer `path` with
`sanitizer_name(path)`; the plots find that sanitizer again by the same
name. Keeping the convention here lets both use it without `plots` (floor 2)
importing `sanitize` (floor 3).
"""

import re

from keras_advguard import _validation

SANITIZER_SUFFIX = "_sanitizer"
"""Inserted sanitizers are named `<layer path, "/" as "_"> + SANITIZER_SUFFIX`."""


def sanitizer_name(path):
    """The name `sanitize` gives the sanitizer inserted after layer `path`.

    `"conv1"` gives `"conv1_sanitizer"`, `"backbone/conv1"` gives
    `"backbone_conv1_sanitizer"`. When that name is already taken in the
    model (e.g. a model sanitized twice), `sanitize` appends `_1`, `_2`, ...

    Args:
        path: a layer path, as `resolve_layers` returns it.

    Returns:
        The name, a string.

    Raises:
        TypeError: `path` is not a string.

    Example:

        >>> from keras_advguard import sanitizer_name
        >>> sanitizer_name("backbone/conv1")
        'backbone_conv1_sanitizer'
    """
    _validation.check_type("path", path, str)
    return re.sub(r"[^0-9A-Za-z_.\-]", "_", path) + SANITIZER_SUFFIX
