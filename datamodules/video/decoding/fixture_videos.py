"""Small video files with the properties that break frame addressing, written with PyAV (for tests and benchmarks).

* :func:`write_mpeg4_avi`: MPEG-4 Part 2 (DivX/XviD style) in AVI with B-frames, optionally as a "packed
  bitstream" (how DivX 5 and XviD stored B-frames for Video for Windows, and how HMDB51's clips are stored): each
  reference VOP shares its AVI chunk with the first B-VOP that follows it in decode order, and an empty N-VOP chunk
  (``vop_coded = 0``) stands in for the reference's own slot, so every chunk yields one picture at once. A DivX
  user-data string ending in ``p`` tells FFmpeg's decoder to unpack it, as it does for real DivX files.
* :func:`write_vfr_mkv`: h264 in Matroska with the timestamps given (duplicates and gaps allowed), nominal 25 fps.
* :func:`set_latin1_title`: rewrite a written title in place so the file's metadata is not UTF-8.
* :func:`corrupted_copies`: the damage real collections hold (truncation, zero bytes, random bytes in the middle,
  a missing index, a text file renamed), each applied to a copy of a good file.
* :func:`decode_every_frame`: the reference every reader is checked against (a plain sequential decode).
* :func:`index_code_frames` / :func:`read_index_code`: frames that carry their own index as 8 black or white
  8x8 blocks (robust to lossy coding), over a panning texture that makes encoders use motion and B-frames.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "decode_every_frame",
    "index_code_frames",
    "read_index_code",
    "write_mpeg4_avi",
    "write_vfr_mkv",
    "set_latin1_title",
    "without_index",
    "corrupted_copies",
]

_CODE_BITS, _BLOCK = 8, 8  # index code: 8 blocks of 8 x 8 pixels along the top rows (frames up to 255)
_VOP_START = b"\x00\x00\x01\xb6"
_GOV_START = b"\x00\x00\x01\xb3"
_USER_DATA_START = b"\x00\x00\x01\xb2"
_B_VOP = 2  # vop_coding_type of a B-VOP (0 I, 1 P, 2 B, 3 S)


def decode_every_frame(path: str | Path) -> np.ndarray:
    """Every frame (T, H, W, 3) uint8 RGB of a plain sequential PyAV decode, in decoder output (display) order.

    Packets the decoder rejects (damaged files) are skipped, as the readers skip them.
    """
    frames = []
    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                frames += [frame.to_ndarray(format="rgb24") for frame in stream.codec_context.decode(packet)]
            except av.error.InvalidDataError:
                continue
    return np.stack(frames)


def index_code_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """uint8 RGB frames (T, H, W, 3): a texture panning 2 px a frame, frame ``t`` carrying ``t`` in its code blocks."""
    if not 0 < num_frames <= 1 << _CODE_BITS or width < _CODE_BITS * _BLOCK or height < 2 * _BLOCK:
        raise ValueError(f"index codes need 1-256 frames of at least 64 x 16, got {num_frames} x {height} x {width}")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        for c in range(3):
            frames[t, :, :, c] = np.clip(128 + 80 * np.sin((xx + 2 * t) / (5 + c)) * np.cos(yy / (7 + c)), 0, 255)
        for bit in range(_CODE_BITS):
            frames[t, :_BLOCK, bit * _BLOCK : (bit + 1) * _BLOCK] = 255 if (t >> bit) & 1 else 0
    return frames


def read_index_code(frames: np.ndarray) -> np.ndarray:
    """The index each frame (T, H, W, 3) carries, (T,) int: block centres thresholded at mid-grey."""
    centres = frames[:, _BLOCK // 2, _BLOCK // 2 :: _BLOCK][:, :_CODE_BITS].astype(np.int32).mean(axis=-1)  # (T, 8)
    return ((centres > 127).astype(np.int64) << np.arange(_CODE_BITS)).sum(axis=1)


def _encode_mpeg4(frames: np.ndarray, fps: int, b_frames: int, gop: int) -> list[tuple[bytes, bool]]:
    """(payload, key frame) of every packet of FFmpeg's MPEG-4 Part 2 encoder, in decode order."""
    encoder = av.CodecContext.create("mpeg4", "w")
    encoder.width, encoder.height, encoder.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, fps), Fraction(fps)
    encoder.max_b_frames, encoder.gop_size = b_frames, gop
    encoder.options = {"qscale": "2", "flags": "+bitexact"}  # bitexact: no encoder user data of its own
    encoder.open()
    packets: list[tuple[bytes, bool]] = []
    for t, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = t
        packets += [(bytes(p), bool(p.is_keyframe)) for p in encoder.encode(frame)]
    packets += [(bytes(p), bool(p.is_keyframe)) for p in encoder.encode(None)]
    return packets


def _vop_type(payload: bytes) -> int:
    return payload[payload.rfind(_VOP_START) + 4] >> 6


def _not_coded_vop(reference: bytes, time_increment_bits: int) -> bytes:
    """An N-VOP (P type, ``vop_coded = 0``) carrying the time fields of the last VOP of ``reference``."""
    start = reference.rfind(_VOP_START) + 4
    bits = "".join(f"{byte:08b}" for byte in reference[start : start + 16])
    out, at = "01", 2  # vop_coding_type P
    while bits[at] == "1":  # modulo_time_base: ones, then a zero
        at += 1
    at += 1 + 1 + time_increment_bits + 1  # the zero, marker, vop_time_increment, marker
    out += bits[2:at] + "0"  # copied time fields, then vop_coded = 0
    out += "0" + "1" * (-(len(out) + 1) % 8)  # stuffing to the byte boundary: a zero, then ones
    return _VOP_START + int(out, 2).to_bytes(len(out) // 8, "big")


def _pack(packets: list[tuple[bytes, bool]], time_increment_bits: int) -> list[tuple[bytes, bool]]:
    """DivX packed bitstream: reference + first following B-VOP in one chunk, later B-VOPs alone, then an N-VOP."""
    chunks: list[tuple[bytes, bool]] = []
    i = 0
    while i < len(packets):
        payload, key = packets[i]
        j = i + 1
        while j < len(packets) and _vop_type(packets[j][0]) == _B_VOP:
            j += 1
        b_vops = [p for p, _ in packets[i + 1 : j]]
        if b_vops:
            chunks.append((payload + b_vops[0], key))
            chunks += [(p, False) for p in b_vops[1:]]
            chunks.append((_not_coded_vop(payload, time_increment_bits), False))
        else:
            chunks.append((payload, key))
        i = j
    return chunks


def write_mpeg4_avi(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 25,
    b_frames: int = 2,
    gop: int = 12,
    packed: bool = True,
    title: str | None = None,
) -> Path:
    """Write uint8 RGB frames (T, H, W, 3) as MPEG-4 Part 2 with B-frames in an AVI, as DivX/XviD files are.

    Args:
        path: output file (parents are created).
        frames: uint8 (T, H, W, 3), H and W even.
        fps: frame rate.
        b_frames: consecutive B-frames between reference frames (0: none).
        gop: key-frame interval.
        packed: store B-frames as a DivX packed bitstream (see the module docstring); else one VOP per chunk.
        title: ``INAM`` metadata of the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    packets = _encode_mpeg4(np.asarray(frames), fps, b_frames, gop)
    first, key = packets[0]
    at = first.find(_VOP_START)
    gov = first.find(_GOV_START)
    insert = gov if 0 <= gov < at else at  # user data goes after the VOL header, before the GOV / first VOP
    divx = b"DivX503b1393" + (b"p" if packed else b"")
    packets[0] = (first[:insert] + _USER_DATA_START + divx + first[insert:], key)
    time_increment_bits = max((fps - 1).bit_length(), 1)  # as FFmpeg's encoder sizes vop_time_increment
    chunks = _pack(packets, time_increment_bits) if packed and b_frames else packets
    with av.open(str(path), "w", format="avi") as container:
        if title is not None:
            container.metadata["title"] = title
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for t, (payload, is_key) in enumerate(chunks):
            packet = av.Packet(payload)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, t, t, Fraction(1, fps)
            packet.is_keyframe = is_key
            container.mux(packet)
    return path


def write_vfr_mkv(path: str | Path, frames: np.ndarray, stamps_ms: list[int], gop: int = 6) -> Path:
    """Write frames (T, H, W, 3) as h264 (no B-frames) in Matroska stamped ``stamps_ms``; the header says 25 fps."""
    if len(stamps_ms) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(stamps_ms)} timestamps")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"bf": "0", "g": str(gop), "crf": "18", "preset": "veryfast"}
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for image, stamp in zip(frames, stamps_ms):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = stamp, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def set_latin1_title(path: str | Path, title: str) -> Path:
    """Re-encode the UTF-8 ``title`` stored in ``path`` as Latin-1 in place (padded with spaces to its length)."""
    path = Path(path)
    data = path.read_bytes()
    utf8, latin1 = title.encode("utf-8"), title.encode("latin-1")
    if data.count(utf8) != 1 or latin1 == utf8:
        raise ValueError(f"{path}: the title {title!r} must occur once and contain a non-ASCII Latin-1 character")
    path.write_bytes(data.replace(utf8, latin1.ljust(len(utf8), b" ")))
    return path


def without_index(data: bytes, suffix: str) -> bytes:
    """The file without its index: the ``moov`` box of an mp4/mov, the ``idx1`` chunk of an AVI."""
    if suffix.lower() in (".mp4", ".m4v", ".mov"):
        out, at = b"", 0
        while at + 8 <= len(data):
            size, kind = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
            size = size or len(data) - at
            if kind != b"moov":
                out += data[at : at + size]
            at += size
        return out
    if suffix.lower() == ".avi":
        at = data.rfind(b"idx1")
        if at < 0:
            raise ValueError("no idx1 chunk in the AVI")
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        out = data[:at] + data[at + 8 + size :]
        return out[:4] + (len(out) - 8).to_bytes(4, "little") + out[8:]  # RIFF size
    raise ValueError(f"no index to remove from a {suffix} file")


def corrupted_copies(source: str | Path, folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """Damaged copies of ``source`` in ``folder``, by kind of damage (the names are the keys, suffix kept).

    Kinds: ``truncated_50`` / ``truncated_5`` (the last 50 % / 5 % of the bytes cut), ``zero_byte``,
    ``random_4k`` (4 KB of random bytes written over the middle), ``no_index`` (see :func:`without_index`),
    ``text_renamed`` (a text file with the video's name).
    """
    source, folder = Path(source), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    noisy = bytearray(data)
    middle = len(data) // 2 - 2048
    noisy[middle : middle + 4096] = np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    contents = {
        "truncated_50": data[: len(data) // 2],
        "truncated_5": data[: len(data) * 95 // 100],
        "zero_byte": b"",
        "random_4k": bytes(noisy),
        "no_index": without_index(data, source.suffix),
        "text_renamed": b"this is a text file, not a video\n" * 40,
    }
    copies = {}
    for kind, content in contents.items():
        copies[kind] = folder / f"{source.stem}_{kind}{source.suffix}"
        copies[kind].write_bytes(content)
    return copies
