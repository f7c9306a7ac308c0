"""Video frames for `predict`, decoded with PyAV (FFmpeg's libraries in a wheel; no OpenCV).

PyAV is optional (`pip install tfdefakeq[video]`, i.e. `pip install av`) and imported only when a
video is read. Frames are sampled either every N-th frame (`every=N`) or K frames spread evenly
over the video (`count=K`, the default 16); RGB uint8 arrays come out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from tfdefakeq.core.errors import UserError

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"}
DEFAULT_FRAMES = 16


def _av():
    try:
        import av
    except ImportError as e:
        raise UserError("reading video needs PyAV: pip install 'tfdefakeq[video]' (or pip install av)") from e
    return av


def count_frames(path) -> int:
    """Frames of the first video stream: the container's count, else counted by demuxing packets."""
    av = _av()
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"{path}: no video stream")
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except UserError:
        raise
    except Exception as e:  # av.error.* (invalid data, unknown format) and OSError
        raise UserError(f"{path}: not a readable video ({e.__class__.__name__}: {' '.join(str(e).split())})") from e


def sample_indices(total: int, every: int | None = None, count: int | None = None) -> list[int]:
    """Frame indices to score: every `every`-th frame from 0, or `count` spread evenly (first and last included)."""
    if total <= 0:
        return []
    if every is not None:
        if every < 1:
            raise UserError(f"--every must be >= 1, got {every}")
        return list(range(0, total, every))
    count = DEFAULT_FRAMES if count is None else count
    if count < 1:
        raise UserError(f"--frames must be >= 1, got {count}")
    if count >= total:
        return list(range(total))
    return sorted(set(np.linspace(0, total - 1, count).round().astype(int).tolist()))


def read_frames(path, every: int | None = None, count: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (frame index, uint8 RGB (H, W, 3)) of the sampled frames of `path`, in order.

    Raises UserError naming the file when it cannot be decoded or has no video stream.
    """
    av = _av()
    path = Path(path)
    wanted = set(sample_indices(count_frames(path), every=every, count=count))
    if not wanted:
        raise UserError(f"{path}: the video has no frames")
    last = max(wanted)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    yield index, frame.to_ndarray(format="rgb24")
                if index >= last:
                    break
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: not a readable video ({e.__class__.__name__}: {' '.join(str(e).split())})") from e


def write_video(path, frames, fps: int = 25, codec: str = "mpeg4") -> Path:
    """Writes uint8 RGB frames (N, H, W, 3) to `path` (tests and examples; even H and W)."""
    av = _av()
    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
