"""Writing files so that an interrupted run never leaves a half-written one (floor 1).

Every file the library writes (cached models, detector archives, Keras
models saved through `keras_advguard.save_model` or `DetectorModel.save`)
goes through `write_atomic`: written under a temporary name in the same
folder, flushed to disk, then moved into place with `os.replace`. The
target is at every moment either the old complete file or the new complete
file, whatever happens to the writing process (an exception, a full disk,
SIGKILL, a power cut after `os.replace` returned).

A process killed in the middle of a write cannot delete its temporary file.
Temporary names carry the writer's process id
(`.{name}.{pid}.{random}.tmp{suffix}`), so the next write or load of the
same target removes the ones whose writer no longer runs
(`remove_stale_temporaries`).
"""

import errno
import json
import os
import re
import uuid

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{32}\.tmp.*")


def temporary_name(file, suffix=""):
    """A fresh temporary path beside `file`: `.{name}.{pid}.{random}.tmp{suffix}`."""
    directory, name = os.path.split(os.fspath(file))
    return os.path.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp{suffix}")


def write_atomic(file, write, suffix=""):
    """Call `write(tmp)` on a temporary file beside `file`, then move it there.

    The temporary name is unique (pid + random) but not pre-created, so the
    final file gets the usual permissions (umask), not `mkstemp`'s 0600. It
    ends in `suffix`, for writers that insist on an extension (`.keras` for
    `Model.save`, `.npz` for `numpy.savez`, which would otherwise append it).

    The temporary file is flushed to disk (`fsync`) before `os.replace`, and
    the folder after it, so the new file survives a power cut once this
    returns. When `write` raises (a full disk: `OSError(ENOSPC)`; a value it
    cannot serialize), the temporary file is removed and the error
    propagates: `file` is untouched. Stale temporaries of `file` left by
    killed writers are removed first.

    Args:
        file: the target path.
        write: `write(tmp_path)` writes the complete new content at `tmp_path`.
        suffix: the extension of the temporary name. Defaults to `""`.
    """
    file = os.fspath(file)
    remove_stale_temporaries(file)
    tmp = temporary_name(file, suffix)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, file)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)
    _fsync(os.path.dirname(file) or ".", directory=True)


def write_json(file, document, **kwargs):
    """Write `document` as indented JSON plus a final newline, atomically.

    `kwargs` go to `json.dump` (e.g. `sort_keys=True`, `allow_nan=False`).
    """

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2, **kwargs)
            f.write("\n")

    write_atomic(file, write, ".json")


def remove_stale_temporaries(file):
    """Remove the temporary files of `file` whose writing process has ended.

    A temporary of `file` is a name `.{basename}.{pid}.{32 hex}.tmp*` in its
    folder (what `write_atomic` creates). It is removed when no process
    `pid` runs on this machine; a live writer's temporary is left alone
    (a concurrent save). Errors (a read-only folder, a file removed
    meanwhile) are ignored: this is housekeeping.

    Returns:
        The list of paths removed.
    """
    directory, name = os.path.split(os.fspath(file))
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return []
    removed = []
    prefix = f".{name}."
    for entry in entries:
        if not entry.startswith(prefix):  # cheap: folders may hold many files
            continue
        match = _TEMPORARY.fullmatch(entry)
        if match is None or match["name"] != name or _is_running(int(match["pid"])):
            continue
        path = os.path.join(directory, entry)
        if _remove(path):
            removed.append(path)
    return removed


def _is_running(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process (or unknowable): keep its file
    return True


def _remove(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            import shutil

            shutil.rmtree(path)
        else:
            os.remove(path)
    except FileNotFoundError:
        return False
    except OSError:
        return False
    return True


def _fsync(path, directory=False):
    """Flush `path` to disk; best effort for folders (not every OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as error:
        if not directory and error.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
