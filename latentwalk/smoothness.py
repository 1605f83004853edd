"""How evenly a frame sequence moves: statistics of the change between consecutive frames.

The change between two frames is their mean absolute pixel difference, in 0-255 units over all
pixels and channels. It is cheap, runs offline and needs no weights (LPIPS, the perceptual
distance papers use, needs network weights we cannot ship), and it suits interpolation videos: a
pixel crossfade lies exactly on the L1 segment between its ends, so evenly spaced crossfade frames
give exactly even changes.

The statistics, over the N-1 changes d of N frames:
- mean: mean(d), how far the video moves per frame.
- cv: population std(d) / mean(d); 0 when every step is the same size.
- max_over_mean: max(d) / mean(d); the worst jump, in average steps (1 when even).
- istd: population std of the per-pair RMS difference on a 0-1 scale (Smooth Diffusion's ISTD).
- pdv: variance of d / mean(d), a scale-free perceptual-distance variance (equal to cv squared).
- smoothness_aid: 1 - Gini(d), AID's smoothness; 1 when perfectly even, towards 0 when all the
  change happens in one step. Gini = sum_i sum_j |d_i - d_j| / (2 n^2 mean(d)).

With fewer than 2 frames, or no change at all, the ratios are 0.0 rather than NaN (so cv is 0 and
smoothness_aid is 1: nothing uneven was measured). Every value is a finite Python number.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class Motion:
    """Accumulates the change between consecutive frames, one frame at a time.

    Only the previous frame is kept, so memory stays flat however long the video is."""

    def __init__(self) -> None:
        self.changes: list[float] = []  # per consecutive pair: mean |a - b|, 0-255 units
        self.l2: list[float] = []  # per pair: sqrt(mean(((a - b) / 255) ** 2))
        self.frames = 0
        self._previous: np.ndarray | None = None

    def add(self, image: np.ndarray) -> None:
        """Add the next HxWx3 uint8 frame."""
        # int32: the difference of two uint8 needs a sign, and its square (up to 65025) overflows int16.
        frame = np.asarray(image, dtype=np.int32)
        if self._previous is not None:
            if frame.shape != self._previous.shape:
                raise ValueError(f"frame {self.frames} has shape {frame.shape}, the one before {self._previous.shape}")
            diff = frame - self._previous
            self.changes.append(float(np.abs(diff).mean()))
            self.l2.append(float(np.sqrt(np.square(diff).mean())) / 255.0)
        self._previous = frame
        self.frames += 1

    def summary(self) -> dict:
        return {**stats(self.changes, self.l2), "frames": self.frames}


def stats(changes: Sequence[float], l2: Sequence[float] | None = None) -> dict:
    """The statistics of the module docstring. Without l2, istd is 0.0. `frames` is taken to be
    len(changes) + 1 (0 when there are no changes); Motion.summary gives the true count."""
    d = np.asarray(changes, dtype=np.float64)
    n = d.size
    mean = float(d.mean()) if n else 0.0
    cv = max_over_mean = pdv = gini = 0.0
    if n and mean > 0:
        cv = float(d.std()) / mean
        max_over_mean = float(d.max()) / mean
        pdv = float((d / mean).var())
        # Sum over all pairs |d_i - d_j| in O(n log n): sorted ascending, the i-th value (0-based)
        # is larger than i others and smaller than n - 1 - i, so it adds (2i - n + 1) * d_i, twice.
        ranks = 2 * np.arange(n) - n + 1
        pair_sum = 2 * float(np.dot(ranks, np.sort(d)))
        gini = pair_sum / (2 * n * n * mean)
    istd = float(np.std(l2)) if l2 is not None and len(l2) else 0.0
    return {
        "frames": n + 1 if n else 0,
        "mean": round(mean, 4),
        "cv": round(cv, 4),
        "max_over_mean": round(max_over_mean, 4),
        "istd": round(istd, 4),
        "pdv": round(pdv, 4),
        "smoothness_aid": round(1.0 - gini, 4),
    }
