"""Atomic file output: a reader never sees a half-written file, and nothing is overwritten silently."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tfdefakeq.core.errors import UserError


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raises UserError if `path` exists and `overwrite` is False, or its folder cannot be created."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists (pass --overwrite to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path.parent}: cannot create output folder ({e.strerror or e})") from e
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Writes `data` to a temp file beside `path`, fsyncs it, then renames it over `path`.

    Raises UserError when the folder is not writable or the disk is full; no partial file is left.
    """
    path = check_writable(path, overwrite=overwrite)
    fd = None
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            fd = None
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from e
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    return write_atomic(path, text.encode("utf-8"), overwrite=overwrite)


def write_json_atomic(path: str | os.PathLike, obj, overwrite: bool = True) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", overwrite=overwrite)


def read_json(path: str | os.PathLike):
    """Reads a JSON file; a missing or malformed file is a UserError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise UserError(f"{path}: no such file") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not readable JSON ({e})") from e


def stage_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to a new temp file beside `path` (same folder, so a rename publishes it), fsynced;
    returns the temp file's path. Raises UserError when the folder is not writable or the disk is full."""
    path = check_writable(path, overwrite=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            fd = None
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if fd is not None:
            os.close(fd)
        os.unlink(tmp)
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from e
    return Path(tmp)


def json_bytes(obj) -> bytes:
    """The bytes `write_json_atomic` writes for `obj`."""
    return (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8")


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)  # the renames so far reach the disk before the next one
    finally:
        os.close(fd)


def publish_together(primary: tuple[Path, Path], *companions: tuple[Path, Path]) -> None:
    """Renames staged temp files (`stage_bytes`) over their targets, each a (temp, target) pair, so
    that a reader sees the new files all together or none of them.

    The primary is the file a reader opens first and reads its companions through (a model, then its
    manifest); a reader that finds no primary reads nothing. So: (1) an old primary is removed,
    (2) the companions are renamed into place, (3) the primary last. Interrupted between any two
    steps, the folder holds no primary: neither file, for that reader (a stray new companion is
    inert and replaced by the next run); never a new model beside an old or missing manifest. An
    error during the steps removes the companions it published and every temp file, then raises
    UserError. Callers check for existing targets (overwrite) before staging.
    """
    primary_tmp, primary_path = map(Path, primary)
    published: list[Path] = []
    try:
        if primary_path.exists():
            os.unlink(primary_path)
        for tmp, target in companions:
            os.replace(tmp, target)
            published.append(Path(target))
        _sync_folder(primary_path.parent)
        os.replace(primary_tmp, primary_path)
        _sync_folder(primary_path.parent)
    except OSError as e:
        for target in published:
            if target.exists():
                os.unlink(target)
        raise UserError(f"{primary_path}: cannot write ({e.strerror or e}); neither it nor "
                        f"{', '.join(Path(t).name for _, t in companions)} was written") from e
    finally:
        for tmp in [primary_tmp] + [Path(t) for t, _ in companions]:
            if tmp.exists():
                os.unlink(tmp)
