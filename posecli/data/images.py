"""Image files: one check of whether a file is a usable image, cheap enough to run on every file first.

    image_problem(path)   what is wrong with an image file, or None; reads the header and the last bytes only
    check_images(paths)   the same for many files, in threads -> the bad ones and their problems
    decode_image(path)    the same check on the bytes read, then OpenCV's decode -> (image or None, problem)
    image_size(path)      (width, height) from the header (JPEG, PNG), else by decoding

Training, eval and predict all go through these, so they agree on which files are bad. A
complete JPEG ends with its end-of-image marker FF D9 and a PNG with its IEND chunk;
libjpeg decodes a truncated JPEG without an error (the missing part comes out grey), so
the end marker is the only cheap sign of a cut file.
"""

from __future__ import annotations

import io
import os
import struct
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of a complete PNG
_JPEG_END = b"\xff\xd9"
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM stand alone
TAIL = 4096  # bytes searched for the end marker; beyond them (data appended by some cameras) the file is scanned
SHOWN = 3  # bad files named in a message


def _jpeg_frame(f) -> tuple[tuple[int, int] | None, int | None]:
    """Walk the JPEG segments -> ((width, height) from the first start-of-frame, offset of the first scan).

    None for either if the stream ends or breaks before it.
    """
    f.seek(2)
    size = None
    while True:
        if f.read(1) != b"\xff":
            return size, None
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker or marker[0] == 0xD9:
            return size, None
        if marker[0] in _JPEG_NO_LENGTH:
            continue
        length = f.read(2)
        if len(length) < 2:
            return size, None
        if marker[0] == 0xDA:  # start of scan: the compressed data follows
            return size, f.tell()
        if marker[0] in _JPEG_SOF and size is None:
            frame = f.read(5)
            if len(frame) < 5:
                return None, None
            _precision, height, width = struct.unpack(">BHH", frame)
            size = (width, height)
            f.seek(-5, 1)
        f.seek(struct.unpack(">H", length)[0] - 2, 1)


def _ends_with(f, length: int, start: int, marker: bytes) -> bool:
    """Whether ``marker`` occurs after ``start``: in the last TAIL bytes, else anywhere after ``start``."""
    begin = max(start, length - TAIL)
    f.seek(begin)
    if marker in f.read():
        return True
    if begin == start:
        return False
    f.seek(start)  # data appended after the end marker: rare, so a full read is affordable
    return marker in f.read()


def _stream_problem(f, length: int) -> tuple[str | None, tuple[int, int] | None, bool]:
    """(problem or None, (width, height) if the header gave it, whether the format was recognised)."""
    if length == 0:
        return "empty file (0 bytes)", None, False
    head = f.read(24)
    if head[:8] == _PNG_SIGNATURE:
        if len(head) < 24 or head[12:16] != b"IHDR":
            return "truncated or broken: the PNG header is incomplete", None, True
        size = struct.unpack(">II", head[16:24])
        if 0 in size:
            return f"no image size ({size[0]}x{size[1]}) in the PNG header", None, True
        if not _ends_with(f, length, 8, _PNG_END):
            return "truncated: no IEND chunk at the end of the PNG", size, True
        return None, size, True
    if head[:2] == b"\xff\xd8":
        size, scan = _jpeg_frame(f)
        if size is None or scan is None:
            return "truncated or broken: the JPEG header ends before the image data", size, True
        if 0 in size:
            return f"no image size ({size[0]}x{size[1]}) in the JPEG header", None, True
        if not _ends_with(f, length, scan, _JPEG_END):
            return "truncated: no end-of-image marker (FF D9) at the end of the JPEG", size, True
        return None, size, True
    return None, None, False


def image_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with an image file (missing, empty, truncated, not an image), or None; no decoding.

    JPEG and PNG are checked from their header and their last bytes; other formats only for
    whether OpenCV has a decoder for them.
    """
    try:
        with open(path, "rb") as f:
            problem, _, known = _stream_problem(f, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        return "does not exist"
    except IsADirectoryError:
        return "is a folder, not an image"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if problem or known:
        return problem
    if not cv2.haveImageReader(str(path)):
        return "cannot be read as an image (not a JPEG, PNG or other format OpenCV decodes)"
    return None


def check_images(paths: list, threads: int = 16) -> dict[str, str]:
    """``image_problem`` of each path, in threads (the checks wait on the disk) -> {path: problem} of the bad ones, in order."""
    paths = [os.fsdecode(p) for p in paths]
    if len(paths) < 64:
        problems = [image_problem(p) for p in paths]
    else:
        with ThreadPoolExecutor(threads) as pool:
            problems = list(pool.map(image_problem, paths, chunksize=64))
    return {p: problem for p, problem in zip(paths, problems) if problem}


def decode_image(path: str | os.PathLike) -> tuple[np.ndarray | None, str | None]:
    """(H, W, 3) uint8 BGR decoded as MMPose does (cv2.imdecode of the file's bytes, colour), or (None, problem).

    The bytes first pass the same check as ``image_problem``, so a truncated file is refused
    here as it is up front.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, "does not exist"
    except IsADirectoryError:
        return None, "is a folder, not an image"
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"
    problem, _, _ = _stream_problem(io.BytesIO(data), len(data))
    if problem:
        return None, problem
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None, "cannot be decoded as an image"
    return image, None


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header, else by decoding with OpenCV; None if unusable."""
    try:
        with open(path, "rb") as f:
            problem, size, known = _stream_problem(f, os.fstat(f.fileno()).st_size)
    except OSError:
        return None
    if known:
        return None if problem else size
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # another format: decode once
    return None if image is None else (image.shape[1], image.shape[0])


def describe_bad(bad: dict[str, str], total: int, what: str) -> str:
    """'2 of 118 <what> cannot be used: a.jpg: does not exist; b.jpg: truncated: ...' (the first few)."""
    shown = "; ".join(f"{path}: {problem}" for path, problem in list(bad.items())[:SHOWN])
    more = f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    return f"{len(bad)} of {total} {what} cannot be used: {shown}{more}"

