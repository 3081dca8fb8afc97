"""What ``posecli predict`` reads: image files, video files and live sources (cameras, stream URLs).

inputs -> images, videos (files with an end) and streams (camera indices, /dev/video*, URLs) [expand_inputs]
a video or stream -> an opened ``cv2.VideoCapture`` with its frame rate and size, or why not [open_video]
"""

from __future__ import annotations

import glob
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from posecli.errors import option

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm", ".pnm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")  # rtsp://, rtmp://, http(s)://, udp://, ...
STREAM_TIMEOUT_MS = 10_000  # a stream that sends nothing this long is taken to have ended
DEFAULT_FPS = 25.0


@dataclass
class Inputs:
    images: list[Path]
    videos: list[Path]
    problems: list[str]  # inputs that gave nothing: missing files, empty folders, globs that match nothing
    streams: list[str | int] = None  # camera indices (int), /dev/video* and URLs, as given

    def __post_init__(self):
        self.streams = [] if self.streams is None else self.streams


def is_stream(spec: str) -> bool:
    """A camera index (``0``), a camera device (``/dev/video0``) or a URL: read live, not as a file with an end."""
    return spec.isdigit() or spec.startswith("/dev/video") or bool(URL.match(spec))


def expand_inputs(specs: list[str], recursive: bool = False) -> Inputs:
    """Files, folders (their images and videos; with ``recursive`` their subfolders' too), glob patterns and
    live sources -> images, videos and streams, in order, without repeats."""
    images, videos, streams, problems, seen = [], [], [], [], set()
    kinds = IMAGE_EXTS | VIDEO_EXTS
    for spec in specs:
        path = Path(spec)
        if is_stream(spec) and not path.is_file():
            if spec not in streams:
                streams.append(int(spec) if spec.isdigit() else spec)
            continue
        if path.is_file():
            found = [path]  # named explicitly: tried whatever its extension
        elif path.is_dir():
            walk = path.rglob("*") if recursive else path.iterdir()
            found = sorted(p for p in walk if p.is_file() and p.suffix.lower() in kinds)
            if not found:
                problems.append(f"{spec}: no images or videos in this folder" + ("" if recursive else f" (subfolders: {option('recursive')})"))
        elif glob.has_magic(spec):
            found = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
            found = [p for p in found if p.is_file() and p.suffix.lower() in kinds]
            if not found:
                problems.append(f"{spec}: the pattern matches no images or videos")
        else:
            found = []
            problems.append(f"{spec}: no such file or folder")
        for p in found:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                (videos if p.suffix.lower() in VIDEO_EXTS else images).append(p)
    return Inputs(images, videos, problems, streams)


def describe(source: Path | str | int) -> str:
    return f"camera {source}" if isinstance(source, int) else str(source)


@contextmanager
def _quiet_opencv():
    """OpenCV and FFmpeg print warnings of their own to the terminal while probing a source; posecli says why itself."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when OpenCV first starts FFmpeg
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    old = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(old)


@dataclass
class Video:
    capture: cv2.VideoCapture
    first: np.ndarray  # (H, W, 3) uint8 BGR, the first frame (already read)
    fps: float
    fps_known: bool
    frames: int  # the header's frame count; 0 when unknown (live sources)


def open_video(source: Path | str | int) -> tuple[Video | None, str]:
    """Open a video file, camera or stream and read its first frame -> (Video, "") or (None, why not)."""
    with _quiet_opencv():
        if isinstance(source, int) or str(source).startswith("/dev/video"):
            capture = cv2.VideoCapture(source)
        elif isinstance(source, str):  # a URL: give up on a silent server instead of waiting for ever
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
        else:
            capture = cv2.VideoCapture(str(source))
        ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok or frame is None:
        capture.release()
        if isinstance(source, int) or str(source).startswith("/dev/video"):
            return None, f"{describe(source)}: OpenCV cannot open this camera (none here with that index or device, or it is busy)"
        if isinstance(source, str):
            return None, f"{source}: OpenCV cannot open this stream or it sent no frame (unreachable, wrong address, or a format FFmpeg does not read)"
        return None, f"{source}: not a readable video (cannot be opened or has no frames)"
    fps = capture.get(cv2.CAP_PROP_FPS)
    known = bool(np.isfinite(fps) and 0 < fps < 1000)  # some cameras and streams report 0 or nonsense
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if isinstance(source, Path) else 0
    return Video(capture, frame, fps if known else DEFAULT_FPS, known, max(frames, 0)), ""


def frame_count(path: Path) -> int:
    """The frame count in a video file's header (an estimate; 0 if it cannot be opened)."""
    capture = cv2.VideoCapture(str(path))
    n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return max(n, 0)
