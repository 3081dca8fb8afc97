"""Atomic writes: a file is either absent, the old one, or complete; never half-written."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from posecli.errors import UserError


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps ``path``'s suffix (writers such as OpenCV's pick the format by it),
    and the file gets the permissions a plain ``open`` would give, not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    text = json.dumps(obj, indent=indent)  # one call: json.dump's many small writes are ~4x slower
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def read_json(path: str | os.PathLike, what: str, hint: str = ""):
    """Parse a JSON file, or raise a UserError that names the file and says what it should have been.

    ``what`` names the expected file ("COCO detection file"); ``hint`` says what to do if it is missing.
    """
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}" + (f"; {hint}" if hint else "")) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); expected a {what}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror}); expected a {what}") from None
