"""Random access to frames with PyAV: the default decoder, exact on every file the frame index can address.

Where a random 16-frame clip of 320x240 h264 spends its time and what this reader does about it (measured with
``tools/bench_video_decoding.py``):

* **Open**: ``avformat_find_stream_info`` decodes frames to learn what an mp4/mov header already says (~2 of
  ~3 ms); ``fast_probe`` caps the analysis at 0.1 s with its decoders decoding nothing (~0.7 ms), reopening with the
  full probe when a fact is missing. Facts are cached per path by the reader (:class:`VideoFacts`).
* **Pre-roll**: the backward seek lands on the last key frame at or before the clip (no extra frames); outside
  the clip ``skip_nonref`` has the h264 decoder skip non-reference frames (nothing refers to them, so the clip is
  bit-identical to a full decode; h264 only, its ``nal_ref_idc`` is exact).
* **Decoder delay**: a B-frame stream outputs a frame only after later packets; once the clip's packets are sent
  the decoder is drained instead of fed more.
* **Colour**: ``frame.to_ndarray`` builds a threaded swscale context per frame (~0.25 ms); one single-threaded
  context per video takes ~0.03-0.08 ms, and each frame is written straight into the clip array.
* **Scaling** (``short_side``): converted and scaled by one swscale call (bilinear, filter widened when
  shrinking, written as planar RGB: ~0.12 ms a frame against ~0.15 ms for RGB + torch resize at 320x240 ->
  128x170; swscale's packed-RGB scaled output costs ~0.25 ms). Not bit-identical to the torch resize: on RGB
  sources within 2 levels on smooth content, mean 0.22 (max 15) on random noise; on yuv420p h264 mean ~1.6 levels,
  up to ~66 at saturated colour edges, because the exact conversion repeats each chroma sample over 2x2 pixels
  while swscale interpolates chroma.

Frames are addressed through the file's :class:`FrameIndex`: in PTS mode by seeking to a time and picking frames
by pts (the path above), in DECODE_ORDER mode by seeking to the key frame before the clip and counting the frames
the decoder emits from that key frame's picture on.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from datamodules.video.decoding.frame_index import FrameIndex, IndexMode, Keyframe, open_container
from datamodules.video.decoding.settings import VideoFacts, short_side_size

__all__ = ["PyAVVideo"]

_FAST_PROBE_SUFFIXES = (".mp4", ".m4v", ".mov")  # containers whose header holds rate, count and the full index
_FAST_PROBE_OPTIONS = {"analyzeduration": "100000"}  # microseconds of stream analysis (FFmpeg default: 5 s)
_FAST_PROBE_STREAM_OPTIONS = [{"skip_frame": "all"}] * 8  # the probe's decoders decode nothing


class PyAVVideo:
    """Random access with PyAV: seek to the key frame before the first index, decode forward, pick the frames.

    ``fast_probe`` and ``skip_nonref`` as in :class:`DecodeSettings`; ``facts`` (from an earlier open of ``path``)
    decide the probe and are not recomputed. ``short_side``: frames come out converted and scaled to it by swscale
    (see ``DecodeSettings.scale_in_decoder``); None: native size, the exact frames. ``frame_index``: how display
    indices map to frames (see ``frame_index.py``); None: by pts from the header's start time, as in PTS mode.
    """

    def __init__(
        self,
        path: str,
        num_threads: int,
        *,
        fast_probe: bool = True,
        skip_nonref: bool = True,
        facts: VideoFacts | None = None,
        short_side: int | None = None,
        frame_index: FrameIndex | None = None,
    ) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        self._path = path
        fast = fast_probe and path.lower().endswith(_FAST_PROBE_SUFFIXES) and (facts is None or facts.fast_probe)
        if fast:
            try:
                self._container = open_container(
                    path,
                    container_options=_FAST_PROBE_OPTIONS,
                    stream_options=_FAST_PROBE_STREAM_OPTIONS,
                )
            except (av.error.FFmpegError, ValueError):  # not what the suffix says: the full probe decides below
                fast = False
        if fast and facts is None and not self._header_complete():
            self._container.close()
            fast = False
        if not fast:
            self._container = open_container(path)
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"no video stream in {path}")
        stream = self._container.streams.video[0]
        stream.thread_count = num_threads
        self._stream = stream
        self._time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1)
        self._seconds_per_tick = float(self._time_base)
        self._skip_nonref = skip_nonref and stream.codec_context.name == "h264"
        if facts is None:
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise ValueError(f"no frame rate in the header of {path}")
            fps = float(rate)
            start = stream.start_time if stream.start_time is not None else 0
            frames = stream.frames
            if not frames and stream.duration is not None:
                frames = int(round(float(stream.duration * self._time_base) * fps))
            facts = VideoFacts(int(frames), fps, float(start * self._time_base), fast)
        self.facts = facts
        self.num_frames, self.fps, self.start_time = facts.num_frames, facts.fps, facts.start_time
        self.frame_index = frame_index
        if frame_index is not None:
            self.num_frames, self.fps, self.start_time = frame_index.num_frames, frame_index.fps, frame_index.origin
        # One swscale context for all frames of this video, single-threaded: frame.to_ndarray builds one per frame
        # with a slice-thread pool (~0.2 ms a frame), and a pool held across a DataLoader fork hangs when freed.
        self._reformatter = VideoReformatter()
        self._short_side = short_side
        self.decoded_frames = 0  # frames the decoder output so far (skipped frames are not output)
        self.sent_packets = 0  # packets sent to the decoder so far
        self.decode_errors = 0  # packets the decoder rejected so far
        self._invalid_data = av.error.InvalidDataError

    def _header_complete(self) -> bool:
        """Whether the cheap open found size, rate and frame count (or duration) of the first video stream."""
        streams = self._container.streams.video
        rate, length = streams and (streams[0].average_rate or streams[0].guessed_rate), streams and streams[0].frames
        return bool(streams and streams[0].codec_context.width and rate and (length or streams[0].duration))

    def _index(self, pts: int) -> int:
        return int(round((pts * self._seconds_per_tick - self.start_time) * self.fps))

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Frames (T, H, W, 3) uint8 RGB at display ``indices`` and their start timestamps (T,) in seconds."""
        if self.frame_index is not None and self.frame_index.mode is IndexMode.DECODE_ORDER:
            frames, stamps, missing = self._decode_in_order(indices)
            if missing or frames is None:
                raise ValueError(
                    f"PyAV: frames {sorted(missing)[:5]} of {self._path} did not decode "
                    f"(decoder output ended first; index: {self.frame_index.reason})"
                )
            return frames, stamps
        frames, stamps, missing = self._decode(indices, economical=True)
        if missing:  # never seen on x264 streams; a plain decode is the reference behaviour
            frames, stamps, missing = self._decode(indices, economical=False)
        if missing:  # an open GOP whose seek by time landed on the key frame after the clip's references
            frames, stamps, missing = self._decode(indices, economical=False, from_start=True)
        if missing or frames is None:
            raise ValueError(f"PyAV: frames {sorted(missing)[:5]} of {self._path} did not decode (stream ended first)")
        return frames, stamps

    def _decode(
        self, indices: Sequence[int], economical: bool, from_start: bool = False
    ) -> tuple[np.ndarray | None, np.ndarray, set[int]]:
        """Frames (T, H, W, 3) and start seconds (T,) of ``indices``, and the indices that did not decode.

        Each wanted frame is converted straight into its row of the clip array (rows of a repeated index are
        copied). ``economical``: skip non-reference frames outside ``indices`` (h264) and drain the decoder once
        every packet of ``indices`` is sent instead of decoding later packets to push the last frames out.
        The seek goes to the last key frame whose picture is at or before the first index when the index knows
        the key frames (decoded files), else to the first index's time; ``from_start``: to the file's start.
        """
        rows: dict[int, list[int]] = {}  # frame index -> rows of the clip holding it
        for row, wanted in enumerate(indices):
            rows.setdefault(wanted, []).append(row)
        first, last = min(rows), max(rows)
        keyframes = self.frame_index.keyframes if self.frame_index is not None else ()
        before = [k for k in keyframes if k.index <= first and k.dts is not None]
        if from_start:
            self._container.seek(0, stream=self._stream, backward=True)
        elif before:  # AVI seeks by decode time: the key frame whose picture precedes the clip, not the next one
            self._container.seek(before[-1].dts, stream=self._stream, backward=True)  # type: ignore[arg-type]
        else:
            seek_seconds = self.start_time + first / self.fps
            self._container.seek(int(Fraction(seek_seconds) / self._time_base), stream=self._stream, backward=True)
        codec = self._stream.codec_context
        skip = economical and self._skip_nonref
        mode: Literal["DEFAULT", "NONREF"] = "DEFAULT"
        codec.skip_frame = mode
        unsent = set(rows)  # indices whose packet is not yet sent to the decoder
        missing = set(rows)  # indices not yet decoded
        clip: np.ndarray | None = None  # (T, H, W, 3), allocated at the first wanted frame (its size decides)
        stamps = np.zeros(len(indices), np.float64)  # (T,) start seconds
        for packet in self._container.demux(self._stream):
            index = self._index(packet.pts) if packet.pts is not None else None
            if skip:
                wanted_mode: Literal["DEFAULT", "NONREF"] = "DEFAULT" if index is None or index in rows else "NONREF"
                if wanted_mode != mode:
                    codec.skip_frame = mode = wanted_mode  # applies to the packets sent from now on
            frames = self._decode_packet(packet)
            self.sent_packets += 1
            self.decoded_frames += len(frames)
            unsent.discard(index)  # type: ignore[arg-type]
            drained = economical and not unsent and packet.size > 0
            if drained:
                held = codec.decode(None)  # end of input: the decoder hands over the frames it holds
                self.decoded_frames += len(held)
                frames = [*frames, *held]
            for frame in frames:
                if frame.pts is None:
                    continue
                frame_index = self._index(frame.pts)
                if frame_index in missing:
                    at = rows[frame_index]
                    clip = self._store(frame, clip, len(indices), at)
                    stamps[at] = frame.pts * self._seconds_per_tick
                    missing.discard(frame_index)
                if frame_index >= last:
                    return clip, stamps, missing
            if drained:
                return clip, stamps, missing
        return clip, stamps, missing

    def _decode_packet(self, packet: Any) -> list[Any]:
        """Frames the decoder emits for ``packet``; a packet it rejects (damage) is counted and skipped: its frames
        are missing from the clip (the read then fails or is repeated inside the frames that decode)."""
        try:
            return list(self._stream.codec_context.decode(packet))
        except self._invalid_data:
            self.decode_errors += 1
            return []

    def _decode_in_order(self, indices: Sequence[int]) -> tuple[np.ndarray | None, np.ndarray, set[int]]:
        """DECODE_ORDER mode: frames (T, H, W, 3), start seconds (T,) and the indices that did not decode.

        Seeks to the last key frame at or before the first index, sends packets from the first key packet the
        demuxer returns (identified by its byte position), drops what the decoder emits before that key frame's
        picture (leading B-frames of an open GOP, broken without their reference) and counts from there.
        """
        assert self.frame_index is not None
        keyframes = self.frame_index.keyframes
        rows: dict[int, list[int]] = {}  # display index -> rows of the clip holding it
        for row, wanted in enumerate(indices):
            rows.setdefault(wanted, []).append(row)
        first, last = min(rows), max(rows)
        by_pos = {k.pos: k for k in keyframes if k.pos is not None}
        start = max((k for k in keyframes if k.index <= first), key=lambda k: k.index, default=keyframes[0])
        codec = self._stream.codec_context
        codec.skip_frame = "DEFAULT"
        missing = set(rows)
        clip: np.ndarray | None = None
        stamps = np.zeros(len(indices), np.float64)  # (T,) start seconds
        for attempt in range(2):  # the second attempt decodes from the first packet of the file
            from_start = attempt == 1 or start.dts is None or start.index == 0
            self._container.seek(0 if from_start else start.dts, stream=self._stream, backward=True)
            anchor: Keyframe | None = None  # the key frame whose picture is counted as anchor.index
            counter: int | None = None  # display index of the frame the decoder emitted last
            for packet in self._container.demux(self._stream):
                if anchor is None:
                    if not (packet.is_keyframe and packet.size > 0):
                        continue  # before the first key packet: nothing decodable to count from
                    anchor = keyframes[0] if from_start else by_pos.get(packet.pos)
                    if anchor is None or anchor.index > first:
                        break  # landed on an unknown key frame or after the clip: decode from the start
                frames = self._decode_packet(packet)
                self.sent_packets += 1
                self.decoded_frames += len(frames)
                for frame in frames:
                    if counter is None:
                        if not frame.key_frame:
                            continue
                        counter = anchor.index
                    else:
                        counter += 1
                    if counter in missing:
                        at = rows[counter]
                        clip = self._store(frame, clip, len(indices), at)
                        stamped = frame.pts * self._seconds_per_tick if frame.pts is not None else None
                        stamps[at] = stamped if stamped is not None else self.start_time + counter / self.fps
                        missing.discard(counter)
                    if counter >= last:
                        return clip, stamps, missing
            else:
                return clip, stamps, missing  # the stream ended (and the decoder was drained) before `last`
            codec.flush_buffers()
        return clip, stamps, missing

    def _store(self, frame: Any, clip: np.ndarray | None, length: int, at: list[int]) -> np.ndarray:
        """Write ``frame`` into rows ``at`` of the clip, allocating the ``(length, H, W, 3)`` clip at its first frame
        (its size is the first decoded frame's, short side resized). A frame requested twice is converted once."""
        if clip is None:
            height, width = frame.height, frame.width
            if self._short_side is not None:
                height, width = short_side_size(height, width, self._short_side)
            clip = np.empty((length, height, width, 3), np.uint8)
        self._convert(frame, clip[at[0]])
        for row in at[1:]:
            clip[row] = clip[at[0]]
        return clip

    def _convert(self, frame: Any, out: np.ndarray) -> None:
        """Write ``frame`` as RGB at the size of ``out`` (H, W, 3): plain conversion at native size, else scaled."""
        height, width = out.shape[:2]
        if (height, width) == (frame.height, frame.width):
            out[...] = self._reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()  # (H, W, 3)
            return
        # Scaled packed-RGB output is swscale's slow path (~0.25 ms a frame here); planar RGB is ~0.1 ms.
        planar = self._reformatter.reformat(
            frame, width=width, height=height, format="gbrp", interpolation="BILINEAR", threads=1
        )
        for channel, plane in zip((1, 2, 0), planar.planes):  # gbrp stores the planes G, B, R
            padded = np.frombuffer(memoryview(plane), np.uint8).reshape(height, plane.line_size)  # (h, line_size)
            out[:, :, channel] = padded[:, :width]

    def __del__(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
