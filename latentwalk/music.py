"""Timing from music: where the keyframes fall and how much each frame should change. Pure:
numpy only, no audio decoding (audio.py measures; this decides), tested on synthetic envelopes.

Times are seconds from the start of the video (the start of the audio section). Frame j is
shown from j/fps, so the change from frame j to frame j+1 (frame interval j) appears at
(j+1)/fps: interval j answers to the audio around that moment.

stable-diffusion-videos (`get_timesteps_arr`) maps the percussive energy of the audio to the
walk parameter t (a normalised cumulative sum, blended towards linear). Equal steps of t do not
give equal change on screen, so its beats land loosely. Here the audio gives a *target profile*
of change per frame, which the even-motion placement (placement.py) meets by measuring the
pictures; with --no-smooth the profile falls back to moving t as the peer does.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from latentwalk.errors import BadInput

# After a hit the motion settles over about this long (seconds): a hit is one large change
# followed by a few smaller ones, rather than a single jolt between two still frames.
RELEASE = 0.1
# With --audio-react 1, a frame in a quiet passage still carries this share of an even frame's
# change: nearly still, never frozen (every frame is its own render, in order).
FLOOR = 0.05
DEFAULT_REACT = 0.8


def frame_envelope(envelope: Sequence[float], rate: float, fps: float, intervals: int, release: float = RELEASE) -> list[float]:
    """The audio's strength per frame interval, 0 to 1: interval j takes the strongest envelope
    value within half a frame of (j+1)/fps (the moment its change appears), then decays no
    faster than `release` seconds allow (attack at once, release smoothed). `envelope[i]` is
    the onset strength at time i / rate."""
    env = np.asarray(envelope, dtype=np.float64)
    out = np.zeros(intervals)
    if env.size == 0 or intervals <= 0:
        return out.tolist()
    for j in range(intervals):
        centre = (j + 1) / fps
        lo = max(0, math.ceil((centre - 0.5 / fps) * rate))
        hi = min(env.size, math.ceil((centre + 0.5 / fps) * rate))
        if lo < hi:
            out[j] = env[lo:hi].max()
    keep = math.exp(-1.0 / (fps * release)) if release > 0 else 0.0
    for j in range(1, intervals):
        out[j] = max(out[j], out[j - 1] * keep)
    top = out.max()
    if top > 0:
        out /= top
    return [round(float(v), 4) for v in out]


def motion_profile(envelope: Sequence[float], lengths: Sequence[int], react: float) -> list[float]:
    """Each frame interval's share of its segment's change: even (1/n) blended with the audio's
    share (its envelope over the segment's total) by `react`, floored so that nothing freezes.
    A segment with no sound in it moves evenly."""
    if len(envelope) != sum(lengths):
        raise ValueError(f"{len(envelope)} envelope values for {sum(lengths)} frame intervals")
    profile: list[float] = []
    start = 0
    for n in lengths:
        part = np.asarray(envelope[start : start + n], dtype=np.float64)
        start += n
        total = part.sum()
        audio = part / total if total > 0 else np.full(n, 1.0 / n)
        weights = np.maximum((1 - react) / n + react * audio, FLOOR / n)
        profile += (weights / weights.sum()).tolist()
    return profile


def walk_profile(audio: dict | None, lengths: Sequence[int]) -> list[float] | None:
    """A job's target profile (its `audio` section, see job.py): None moves evenly."""
    if audio is None or audio["react"] <= 0:
        return None
    return motion_profile(audio["envelope"], lengths, audio["react"])


def correlation(changes: Sequence[float], envelope: Sequence[float]) -> float | None:
    """Pearson's r between the change per frame and the audio envelope per frame interval (the
    shorter sets the length); None when either is constant."""
    n = min(len(changes), len(envelope))
    if n < 2:
        return None
    x, y = np.asarray(changes[:n], dtype=np.float64), np.asarray(envelope[:n], dtype=np.float64)
    if x.std() == 0 or y.std() == 0:
        return None
    return round(float(np.corrcoef(x, y)[0, 1]), 4)


def keyframe_lengths(
    n_keyframes: int,
    loop: bool,
    fps: float,
    pins: Sequence[float | None],
    end: float | None,
    frames: int,
    beats: Sequence[float] | None = None,
    every: int | None = None,
    lines: Sequence[int | None] | None = None,
) -> list[int]:
    """Frames per segment from keyframe times.

    Anchor k (k = 0 .. segments) is where segment k starts: keyframe k, or for the last anchor
    the last keyframe (or the loop's return to the first). Its frame is round(time * fps).
    - anchor 0 is the video's start;
    - a keyframe's `at=` (pins[k], seconds) fixes its anchor;
    - with `every` (--on-beats N), the others sit on beat k * N (beats[0], the first beat of the
      section, counts as beat 0) and the video ends on the last anchor's beat;
    - without, anchors between two fixed ones are spread evenly between them; the last anchor
      is at `end` (the section's or --duration's end) when there is one, else anchors after the
      last fixed one are `frames` apart.
    """
    segments = n_keyframes if loop else n_keyframes - 1

    def where(k: int) -> str:
        if k == n_keyframes:
            return "the loop's return to the first keyframe: "
        return f"line {lines[k]}: " if lines and lines[k] is not None else f"keyframe {k + 1}: "

    times: list[float | None] = [None] * (segments + 1)
    for k, at in enumerate(pins[: segments + 1]):
        if at is not None:
            times[k] = float(at)
    if times[0] not in (None, 0.0):
        raise BadInput(f"{where(0)}the first keyframe starts the video: its at= must be 0, got {times[0]:g}")
    times[0] = 0.0
    if every is not None:
        needed = segments * every
        if beats is None or len(beats) <= needed:
            found = 0 if beats is None else len(beats)
            which = "the loop's return to the first keyframe" if loop else "the last keyframe"
            counted = f" (beats 0-{found - 1})" if found > 1 else ""
            raise BadInput(
                f"--on-beats {every} puts {which} on beat {needed}, but the audio section has "
                f"{found} beat{'s' if found != 1 else ''}{counted}; use a smaller --on-beats, fewer keyframes or a longer section"
            )
        for k in range(1, segments + 1):
            if times[k] is None:
                times[k] = float(beats[k * every])
    # An open walk's last keyframe is its last frame, shown for the video's last 1/fps.
    end_anchor = None if end is None else round(end * fps) - (0 if loop else 1)
    if every is None and end_anchor is not None and times[segments] is None:
        times[segments] = end_anchor / fps
    fixed = [k for k, t in enumerate(times) if t is not None]
    for left, right in zip(fixed, fixed[1:]):
        for k in range(left + 1, right):
            times[k] = times[left] + (times[right] - times[left]) * (k - left) / (right - left)
    last = fixed[-1]
    for k in range(last + 1, segments + 1):  # no end known: --frames per segment
        times[k] = times[last] + (k - last) * frames / fps
    anchors = [round(t * fps) for t in times]
    if end_anchor is not None and every is None:
        for k in range(segments + 1):
            if anchors[k] > end_anchor:
                raise BadInput(f"{where(k)}at={times[k]:g} is past the end of the video ({end:g} s)")
    for k in range(1, segments + 1):
        if anchors[k] <= anchors[k - 1]:
            raise BadInput(
                f"{where(k)}the keyframe at {times[k]:g} s is not at least a frame after the one before it "
                f"(at {times[k - 1]:g} s); keyframe times must increase"
            )
    return [b - a for a, b in zip(anchors, anchors[1:])]
