"""How the frames of one file are addressed: by presentation timestamp, or by the order the decoder emits them.

The display index of a frame is its position in a full sequential decode (the decoder's output order is the true
display order). Most files also stamp frame ``i`` with ``t0 + i / fps``, and then a clip can be found by seeking
to a timestamp and picking frames by their pts (:attr:`IndexMode.PTS`, the fast path). Real collections break that
assumption in ways that silently scramble clips when trusted:

* AVI files with MPEG-4 Part 2 B-frames (DivX/XviD, e.g. HMDB51). AVI stores no presentation times; FFmpeg derives
  them from the decode order, so the first frame is stamped one period late. In "packed bitstream" files (a P-VOP
  and the following B-VOP in one AVI chunk, then an empty N-VOP chunk) the decoder's frames carry the pts of the
  wrong packet: neighbours come out with swapped stamps, so picking frames by pts returns pairs in the wrong
  order or misses some.
* Variable-frame-rate files with duplicated timestamps, or headers whose frame count is the duration times a
  nominal rate (444 claimed, 68 present).

:func:`build_frame_index` decides per file, once (the reader caches the result per path): it reads every packet's
timestamps (demuxing only, ~3 ms for 250 frames of 320x240 h264) and, for MPEG-4 Part 2 streams, or when the packet
timestamps are not one frame period apart, decodes the whole file once without colour conversion. Timestamps
strictly increasing in output order, one period apart and as many as the frames give :attr:`IndexMode.PTS` (frame 0
is the first pts, not the header's start time); anything else gives :attr:`IndexMode.DECODE_ORDER`: frames are
counted as the decoder emits them, starting from the key frame before the clip (:class:`Keyframe`). The
:class:`FrameIndex` records the mode and the reason, and the real frame count.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

__all__ = ["IndexMode", "Keyframe", "FrameIndex", "build_frame_index", "open_container"]

_DECODE_CHECKED_CODECS = ("mpeg4",)  # MPEG-4 Part 2: packed B-frames give frames the timestamps of other packets
_GRID_TOLERANCE = 0.25  # frame periods a timestamp may sit off its slot


class IndexMode(enum.Enum):
    """How display indices map to frames of a file.

    PTS: frame ``i`` is the frame stamped ``origin + i / fps`` (seek by time, pick by pts).
    DECODE_ORDER: frame ``i`` is the ``i``-th frame the decoder emits (seek to a key frame, count from it).
    """

    PTS = "pts"
    DECODE_ORDER = "decode_order"


@dataclass(frozen=True)
class Keyframe:
    """A key frame packet a decode can start from.

    Attributes:
        dts: decode timestamp of the packet (stream time base); the seek target.
        pos: byte position of the packet in the file; identifies it after a seek (None when the demuxer omits it).
        index: display index of the key frame's own picture.
    """

    dts: int | None
    pos: int | None
    index: int


@dataclass(frozen=True)
class FrameIndex:
    """Frame addressing of one file.

    Attributes:
        mode: PTS or DECODE_ORDER.
        reason: why that mode (which fact of the file decided it), for logs and ``check-videos``.
        num_frames: frames the file holds (packets in PTS mode, decoder outputs when the file was decoded).
        fps: frames per second: the header's average rate, or frames over the timestamp span in DECODE_ORDER
            mode (a variable-rate file whose header rate is nominal).
        origin: seconds of display index 0 (the first frame's pts; the header's start time may differ).
        header_frames: frame count the header claims.
        header_exact: True when ``header_frames`` is a count the container stores (AVI, mp4); False when it is the
            duration times the nominal rate (Matroska, WebM), which variable-rate files overstate.
        packets: non-empty packets of the stream.
        decoded: True when the whole file was decoded to decide (then the two counts below are real).
        decode_errors: packets the decoder rejected.
        corrupt_frames: frames the decoder emitted flagged corrupt (concealed errors).
        keyframes: key frames in display order, at least frame 0's, when the file was decoded (empty otherwise).
        timestamps: DECODE_ORDER: seconds of each frame relative to ``origin`` as stamped (None when unstamped).
    """

    mode: IndexMode
    reason: str
    num_frames: int
    fps: float
    origin: float
    header_frames: int
    header_exact: bool = True
    packets: int = 0
    decoded: bool = False
    decode_errors: int = 0
    corrupt_frames: int = 0
    keyframes: tuple[Keyframe, ...] = ()
    timestamps: tuple[float | None, ...] = field(default=(), repr=False)


def open_container(path: str | Path, **options: Any) -> Any:
    """``av.open`` for reading with metadata that is not UTF-8 accepted (old AVI writers store Latin-1 titles)."""
    import av

    return av.open(str(path), metadata_errors="ignore", **options)


def _grid_fault(ticks: list[int], seconds_per_tick: float, fps: float, *, sort: bool) -> str | None:
    """Why ``ticks`` are not one frame period apart from the first (None when they are)."""
    if not ticks:
        return "no timestamps"
    if sort:
        ticks = sorted(ticks)
    for i in range(1, len(ticks)):
        if ticks[i] == ticks[i - 1]:
            return f"frame {i} repeats the timestamp of frame {i - 1} ({ticks[i] * seconds_per_tick:.4f} s)"
        if ticks[i] < ticks[i - 1]:
            return f"timestamps out of order at frame {i} ({ticks[i - 1]} then {ticks[i]} ticks)"
    for i, tick in enumerate(ticks):
        slot = (tick - ticks[0]) * seconds_per_tick * fps
        if abs(slot - i) > _GRID_TOLERANCE:
            return f"frame {i} is stamped {slot:.2f} frame periods after frame 0 (variable frame rate or gaps)"
    return None


def build_frame_index(
    path: str | Path, *, decode: bool | None = None, num_threads: int = 1, strict: bool = False
) -> FrameIndex:
    """Decide how the frames of ``path`` are addressed (see the module docstring).

    Args:
        path: video file.
        decode: True: always decode the whole file (``check-videos --full``); False: never (timestamps of the
            packets only); None: decode MPEG-4 Part 2 streams and files whose packet timestamps are off the grid.
        num_threads: decoder threads for the decode.
        strict: have the decoder reject packets with bitstream errors it would otherwise conceal
            (``err_detect``, for ``check-videos --full``).

    Raises:
        ValueError: no video stream, or no frame rate in the header. Whatever PyAV raises for unreadable files.
    """
    import av

    with open_container(path) as container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        stream = container.streams.video[0]
        time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1)
        seconds_per_tick = float(time_base)
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise ValueError(f"no frame rate in the header of {path}")
        header_fps = float(rate)
        header_frames = int(stream.frames or 0)
        header_exact = header_frames > 0
        if not header_frames and stream.duration is not None:
            header_frames = int(round(float(stream.duration * time_base) * header_fps))
        if not header_frames and container.duration:  # Matroska: no stream duration, the file's in microseconds
            header_frames = int(round(container.duration / 1_000_000 * header_fps))
        codec = stream.codec_context.name
        packets: list[tuple[int | None, int | None, int | None, bool]] = []  # (pts, dts, pos, key) in decode order
        for packet in container.demux(stream):
            if packet.size > 0:
                packets.append((packet.pts, packet.dts, packet.pos, bool(packet.is_keyframe)))
    common: dict[str, Any] = {"header_frames": header_frames, "header_exact": header_exact, "packets": len(packets)}
    packet_ticks = [pts for pts, _, _, _ in packets if pts is not None]
    fault = "packets without timestamps" if len(packet_ticks) < len(packets) else None
    fault = fault or _grid_fault(packet_ticks, seconds_per_tick, header_fps, sort=True)
    if decode is None:
        decode = fault is not None or codec in _DECODE_CHECKED_CODECS
    if not decode:
        if fault is None:
            return FrameIndex(
                IndexMode.PTS,
                "packet timestamps one frame period apart",
                num_frames=len(packets),
                fps=header_fps,
                origin=min(packet_ticks) * seconds_per_tick,
                **common,
            )
        return FrameIndex(  # not decoded: frames counted as packets, addressed in decode order from frame 0
            IndexMode.DECODE_ORDER,
            f"packet {fault}",
            num_frames=len(packets),
            fps=header_fps,
            origin=min(packet_ticks, default=0) * seconds_per_tick,
            **common,
            keyframes=(Keyframe(None, None, 0),),
        )

    output_ticks: list[int | None] = []
    output_keys: list[int] = []  # display indices of key frames, in output order
    errors = corrupt = 0
    with open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = num_threads
        codec_context = stream.codec_context
        if strict:
            codec_context.options = {"err_detect": "crccheck+bitstream+buffer+explode"}
        for packet in container.demux(stream):
            try:
                frames = codec_context.decode(packet)
            except av.error.FFmpegError:
                errors += 1
                continue
            for frame in frames:
                corrupt += bool(frame.is_corrupt)
                if frame.key_frame:
                    output_keys.append(len(output_ticks))
                output_ticks.append(frame.pts)
    stamped = [t for t in output_ticks if t is not None]
    origin_tick = stamped[0] if stamped else 0
    decode_fault = "frames without timestamps" if len(stamped) < len(output_ticks) else None
    decode_fault = decode_fault or _grid_fault(stamped, seconds_per_tick, header_fps, sort=False)
    key_packets = [(dts, pos) for _, dts, pos, key in packets if key]
    if output_keys and len(key_packets) == len(output_keys) and output_keys[0] == 0:
        keyframes = tuple(Keyframe(dts, pos, index) for (dts, pos), index in zip(key_packets, output_keys))
    else:  # key packets and key pictures do not pair up: every read decodes from the start
        keyframes = (Keyframe(None, None, 0),)
    if decode_fault is None:
        return FrameIndex(
            IndexMode.PTS,
            "decoded timestamps strictly increasing, one frame period apart",
            num_frames=len(output_ticks),
            fps=header_fps,
            origin=origin_tick * seconds_per_tick,
            **common,
            decoded=True,
            decode_errors=errors,
            corrupt_frames=corrupt,
            keyframes=keyframes,
        )
    span = (max(stamped) - min(stamped)) * seconds_per_tick if stamped else 0.0
    fps = (len(output_ticks) - 1) / span if span > 0 and len(output_ticks) > 1 else header_fps
    return FrameIndex(
        IndexMode.DECODE_ORDER,
        f"decoded {decode_fault}",
        num_frames=len(output_ticks),
        fps=fps,
        origin=origin_tick * seconds_per_tick,
        **common,
        decoded=True,
        decode_errors=errors,
        corrupt_frames=corrupt,
        keyframes=keyframes,
        timestamps=tuple(None if t is None else (t - origin_tick) * seconds_per_tick for t in output_ticks),
    )
