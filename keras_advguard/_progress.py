"""Progress bars for long loops (Keras's own `Progbar`, no extra dependency)."""

import sys


def progress_bar(total, *, verbose=1, unit_name="step"):
    """Return a progress bar object with `.update(current)` and `.add(n)`.

    Args:
        total: number of steps, or `None` when unknown.
        verbose: `0` silent, `1` an animated bar (only on a terminal; a
            one-line summary otherwise, like `keras.Model.predict`).
        unit_name: label shown next to the counter.
    """
    if not verbose:
        return _Silent()
    import keras

    interactive = 1 if sys.stdout.isatty() else 2
    return keras.utils.Progbar(total, verbose=interactive, unit_name=unit_name)


class _Silent:
    def update(self, current, values=None, finalize=None):
        pass

    def add(self, n, values=None):
        pass
