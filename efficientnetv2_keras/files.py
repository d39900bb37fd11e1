"""Atomic writes: a crash or an error never leaves a half-written file (or directory) at the target.

Everything is written to a temporary sibling (same directory, hence same filesystem), flushed to disk
(`os.fsync`) and then renamed onto the target (`os.replace`): readers see the old content or the new
one, never a part. Checkpoints, the run's records, recipes and exports all go through here.

    atomic_write_text("runs/x/results.json", text)
    atomic_write("runs/x/last.keras", model.save)        # any function that writes a path
    with atomic_output("exports/b0", overwrite=True) as temporary:
        archive.write_out(temporary)                       # a directory works too
"""

import contextlib
import os
import shutil
import uuid


def _fsync_path(path):
    """Flushes a written file, or every file under a written directory, to disk."""
    paths = [path] if not os.path.isdir(path) else [
        os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names
    ]
    for name in paths:
        if os.path.isfile(name) and not os.path.islink(name):
            descriptor = os.open(name, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


def _fsync_directory(directory):
    """Makes a rename inside `directory` durable (not possible on every platform: then skipped)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove_path(path):
    """Deletes a file, a link or a directory tree; nothing there is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _replace(temporary, path, token):
    """Moves the finished temporary onto `path`.

    A file replaces a file in one `os.replace`. A directory cannot be renamed over a non-empty one
    (nor a file over a directory), so the old one is first renamed aside, then deleted once the new
    one is in place.
    """
    if os.path.lexists(path) and (os.path.isdir(path) or os.path.isdir(temporary)):
        parent, name = os.path.split(path)
        aside = os.path.join(parent, f".old-{token}-{name}")
        os.replace(path, aside)
        os.replace(temporary, path)
        remove_path(aside)
    else:
        os.replace(temporary, path)


@contextlib.contextmanager
def atomic_output(path, overwrite=True):
    """Yields a temporary sibling path to write to; on success it replaces `path`, else it is deleted.

    The temporary name ends with the target's name (`.tmp-<token>-last.keras`), so writers that check
    the extension (Keras' `save`, `save_weights`) accept it. The parent directory is created.
    overwrite: False refuses to replace an existing `path` (FileExistsError, also when it appeared
      while the temporary was being written).
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    temporary = os.path.join(parent, f".tmp-{token}-{name}")
    try:
        yield temporary
        if not os.path.lexists(temporary):
            raise RuntimeError(f"Nothing was written to the temporary path {temporary}.")
        if os.path.lexists(path) and not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it, or choose another path.")
        _fsync_path(temporary)
        _replace(temporary, path, token)
        _fsync_directory(parent)
    finally:
        remove_path(temporary)


def atomic_write(path, write, overwrite=True):
    """`write(temporary_path)`, then the result replaces `path` (see `atomic_output`)."""
    with atomic_output(path, overwrite) as temporary:
        write(temporary)
    return os.fspath(path)


def atomic_write_text(path, text, overwrite=True):
    """Writes `text` (UTF-8) to `path` atomically."""

    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)

    return atomic_write(path, write, overwrite)
