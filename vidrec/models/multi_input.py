"""Named multi-input models: one window classifier per named input, joined by a fusion rule.

A two-stream ConvNet (Simonyan & Zisserman, 2014) reads RGB frames and optical-flow fields; a skeleton/RGB ensemble
reads joints and frames. Each input is a sequence with its own rate and window, and each member classifies the
window of its own input::

    {"rgb":  (B, 3, T_rgb, H, W)  ─► member "rgb"  ─► (B, K) ─┐
     "flow": (B, 2, T_flow, H, W) ─► member "flow" ─► (B, K) ─┴─► fuse (FusionRule) ─► (B, K)}

:class:`NamedInputClassifiers` is a ``ParallelClassifiers`` (``vidrec.models._base``) whose members each read their
own entry of a dict of inputs, so the fusion rules (mean or product of probabilities, weighted logits) are the same
code. It has no single-input streaming step: ``vidrec.streaming.multi.MultiInputStreaming`` runs one streaming
runtime per input, each at its own rate and hop, and fuses the members' logits where their windows end together.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from vidrec.models._base import ParallelClassifiers

__all__ = ["NamedInputClassifiers"]


class NamedInputClassifiers(ParallelClassifiers):
    """Window classifiers over named inputs, joined by a fusion rule: ``{name: (B, C, T_name, ...)} -> (B, K)``.

    Args:
        members: Input name -> streamable window classifier of that input (the member is stored under the name).
        rule: The fusion rule.
        weights: One weight per member for the mean of probabilities and the weighted logits (default: equal).
    """

    @property
    def input_names(self) -> list[str]:
        """The inputs, in fusion order."""
        return list(self.member_names)

    def forward_members(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each member's logits on its own input, ``{name: (B, K)}``."""
        missing = [n for n in self.member_names if n not in inputs]
        if missing:
            raise KeyError(f"{type(self).__name__}: inputs lack {missing} (got {sorted(inputs)})")
        return {n: m(inputs[n]) for n, m in zip(self.member_names, self.members())}

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:  # type: ignore[override]
        outputs = self.forward_members(inputs)
        return self.fuse([outputs[n] for n in self.member_names])

    def configure_stream(self, window: int, hop: int) -> None:
        raise TypeError(
            f"{type(self).__name__} has one input per member, each with its own window and rate: stream it with "
            "vidrec.streaming.multi.MultiInputStreaming, not a single-input runtime"
        )
