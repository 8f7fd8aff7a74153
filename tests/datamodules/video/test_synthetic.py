"""The synthetic action renderer: time-reversal class pairs and a luminance-contrast shape on a coloured background."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.video.synthetic import SYNTHETIC_CLASSES, SyntheticSettings, render_action


def test_growing_and_shrinking_circles_are_time_reversals() -> None:
    growing = render_action("CircleGrowing", np.random.default_rng(5), frames=10, size=32, noise=0.0)
    shrinking = render_action("CircleShrinking", np.random.default_rng(5), frames=10, size=32, noise=0.0)
    np.testing.assert_array_equal(growing, shrinking[::-1])
    assert not np.array_equal(growing[0], growing[-1])  # the class is in the motion, not in one frame


@pytest.mark.parametrize("name", SYNTHETIC_CLASSES)
def test_shape_differs_from_background_by_one_brightness_offset(name: str) -> None:
    video = render_action(name, np.random.default_rng(2), frames=6, size=32, noise=0.0)  # (T, S, S, 3)
    assert video.shape == (6, 32, 32, 3) and video.dtype == np.uint8
    frame = video[0].reshape(-1, 3).astype(np.int16)
    colours, counts = np.unique(frame, axis=0, return_counts=True)
    assert 2 <= len(colours) <= 3  # background, shape, and the distractor unless the shape covers it
    background = colours[counts.argmax()]
    shape_like = []
    for colour in colours:
        offset = colour - background
        free = (colour > 0) & (colour < 255)  # channels not clipped
        if offset.any() and np.all(np.sign(offset) == np.sign(offset[0])) and len(set(offset[free].tolist())) <= 1:
            shape_like.append(offset)
    # the shape's colour: one offset of >= 40 grey levels in the same direction on every (unclipped) channel
    assert any(np.abs(o).min() >= 40 for o in shape_like), f"{name}: no shape colour in {colours} on {background}"


def test_default_set_size() -> None:
    settings = SyntheticSettings()
    assert (settings.num_classes, settings.videos_per_class, settings.frames, settings.size) == (8, 100, 32, 64)
