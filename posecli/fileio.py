"""Atomic writes: a file is either absent, the old one, or complete; never half-written.

Every output is written to a temporary file beside it, ``.NAME.posecli-PID-HOST-XXXXXXXX.partial.EXT``,
and renamed onto it only when complete. A write that fails (a full disk, a read-only folder)
raises a ``UserError`` that names the output, not the temporary file, and leaves the old output.
A killed process leaves its temporary file; the name says whose it was, so the next posecli
process that writes into the folder removes those of processes that are gone (never a live one's).
"""

from __future__ import annotations

import contextvars
import errno
import json
import os
import re
import secrets
import socket
import stat
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from posecli.errors import UserError

HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"
# .NAME.posecli-PID-HOST-TOKEN.partial.EXT (EXT kept last: writers such as OpenCV's pick the format by it)
TEMP = re.compile(r"^\..*\.posecli-(?P<pid>\d+)-(?P<host>[A-Za-z0-9]*)-[0-9a-f]{8}\.partial(\.[^.]*)?$")
OLD_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.partial(\.[^.]*)?$")  # mkstemp's, before the owner was in the name
OLD_TEMP_AGE = 3600.0  # seconds unmodified after which an ownerless temporary file is taken as abandoned
_swept: set[str] = set()  # folders already swept by this process
_unit: contextvars.ContextVar[list | None] = contextvars.ContextVar("posecli_fileio_unit", default=None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed posecli processes left in ``folder``; -> those removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = TEMP.match(entry.name)
        if m:
            # Only this machine's processes can be checked: a temporary file from another host stays.
            stale = m["host"] == HOST and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"]))
        else:
            try:
                stale = bool(OLD_TEMP.match(entry.name)) and now - entry.stat().st_mtime > OLD_TEMP_AGE
            except OSError:
                continue
        if stale:
            with suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def _temp_name(path: Path) -> Path:
    stem = path.stem[:120]  # the whole name must stay under the usual 255-byte limit
    return path.with_name(f".{stem}.posecli-{os.getpid()}-{HOST}-{secrets.token_hex(4)}.partial{path.suffix}")


def _reason(err: OSError) -> str:
    """The OS's own words, in lower case: 'no space left on device', 'permission denied', ..."""
    text = err.strerror or str(err)
    text = text[:1].lower() + text[1:]
    if err.errno == errno.ENOSPC:
        return f"{text} (free some space, or write somewhere else)"
    return text


def _os_error(e: BaseException, temps: list[Path]) -> OSError | None:
    """The OSError of a failed write behind ``e``: itself, or one a library wrapped (torch.save raises a
    RuntimeError for it). None for anything else, or an OSError about another file than the temporary ones."""
    for _ in range(4):
        if isinstance(e, UserError):
            return None
        if isinstance(e, OSError):
            names = {str(n) for n in (e.filename, e.filename2) if n is not None}
            return e if not names or names & set(map(str, temps)) else None
        e = e.__cause__ if e.__cause__ is not None or e.__suppress_context__ else e.__context__
        if e is None:
            return None
    return None


def _prepare(path: Path) -> None:
    """Create ``path``'s folder; UserError naming ``path`` if there can be no such file."""
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot write {path}: {_file_above(path.parent)} is a file, not a folder") from None
    except OSError as e:
        raise UserError(f"cannot write {path}: cannot create the folder {path.parent} ({_reason(e)})") from None


def _file_above(folder: Path) -> Path:
    """The first of ``folder`` and its parents that exists (a file, where creating the folder failed)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


@contextmanager
def atomic_paths(paths: list[str | os.PathLike]):
    """Yield a temporary path beside each of ``paths``; rename them onto ``paths``, in order, if the block succeeds.

    Nothing is renamed unless every file was written, so a failure leaves all the old files.
    A new file gets the permissions a plain ``open`` would give (the temporary file is created
    with mode 0666 and the kernel applies the umask: no one reads or sets the process's umask,
    which would race with other threads creating files); a replaced file keeps its own bits.
    """
    targets = [Path(p) for p in paths]
    targets = [t.resolve() if t.is_symlink() else t for t in targets]  # write through a link, keep the link
    temps: list[Path] = []
    try:
        for target in targets:
            _prepare(target)
            if str(target.parent) not in _swept:
                _swept.add(str(target.parent))
                sweep(target.parent)
            tmp = _temp_name(target)
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            except OSError as e:
                raise UserError(f"cannot write {target}: {_reason(e)}") from None
            temps.append(tmp)
        try:
            yield temps
            unit = _unit.get()
            if unit is None:
                _rename(zip(temps, targets))
            else:  # renamed with the rest of the unit, at its end
                unit.extend(zip(temps, targets))
                temps = []
        except Exception as e:
            err = _os_error(e, temps)
            if err is None:
                raise
            which = [t for t, tmp in zip(targets, temps) if str(tmp) in (str(err.filename), str(err.filename2))] or targets
            old = [t for t in which if t.exists()]
            kept = (f"the previous {' and '.join(t.name for t in old)} {'is' if len(old) == 1 else 'are'} unchanged"
                    if old else "nothing was written")  # fmt: skip
            raise UserError(f"cannot write {' and '.join(map(str, which))}: {_reason(err)}; {kept}") from None
    finally:
        for tmp in temps:
            with suppress(OSError):
                os.unlink(tmp)  # still there only if the block failed


def _rename(pairs) -> None:
    for tmp, target in pairs:
        with suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)


@contextmanager
def one_unit():
    """Files written with atomic_path(s) inside the block are renamed into place only when the whole block
    succeeds: a job that fails half-way (a full disk at its 100th drawn image) leaves none of its new
    files and every previous one. Nested units join the outer one."""
    if _unit.get() is not None:
        yield
        return
    pending: list[tuple[Path, Path]] = []
    token = _unit.set(pending)
    try:
        yield
        _unit.reset(token)
        token = None
        try:
            _rename(pending)
        except OSError as e:
            raise UserError(f"cannot write {e.filename2 or e.filename}: {_reason(e)}") from None
    finally:
        if token is not None:
            _unit.reset(token)
        for tmp, _ in pending:
            with suppress(OSError):
                os.unlink(tmp)  # still there only if the unit failed


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds (see atomic_paths)."""
    with atomic_paths([path]) as (tmp,):
        yield tmp


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    write_text(path, json.dumps(obj, indent=indent))  # one call: json.dump writes in many small pieces


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append to a log file (not atomic: a line cut short by a kill is skipped by its readers)."""
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as e:
        raise UserError(f"cannot write {path}: {_reason(e)}") from None


def check_folder(folder: str | os.PathLike) -> None:
    """Fail now, before any work, unless files can be written in ``folder`` (created later if missing)."""
    folder = Path(folder)
    existing = _file_above(folder)
    if not existing.is_dir():
        if existing == folder:
            raise UserError(f"{folder} is a file, not a folder; give a folder for the output")
        raise UserError(f"cannot create the folder {folder}: {existing} is a file, not a folder")
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"cannot create the folder {folder}: {existing} is not writable")
        return
    probe = _temp_name(folder / "write-check")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as e:
        raise UserError(f"cannot write in {folder}: {_reason(e)}") from None
    with suppress(OSError):
        os.unlink(probe)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output(path: str | os.PathLike, inputs=()) -> None:
    """Fail now, before anything is read, if ``path`` is a folder, cannot be written, or is one of ``inputs``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give the file to write")
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise UserError(f"{path} is also an input: writing it would replace what is being read; "
                            "give another output file")  # fmt: skip
    check_folder(path.parent)


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
