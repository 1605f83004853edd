"""Shared trajectories: where an in-between render starts. Pure: no torch, no images.

latentblending's insight (`blending_engine.py`): a render between two rendered neighbours is,
at sampling step k, close to the spherical mix of their latents at step k, so it can start
there and pay for steps - k model calls instead of all of them. The closer the neighbours'
pictures, the later it can start; far apart (a long stretch of the walk, or a discontinuity of
the model, where the mix would be a double exposure of both sides), it starts from its own noise.

The render loop asks `start_step` for each in-between render as placement names it; the
decision depends only on the two neighbours' measured change and on what they kept, so a
resumed or sharded render makes the same decisions. Keyframes always start from noise (they
are `generate`'s pictures), and so does the first look along a segment (render.py: where the
placement finds the model's jumps, a mix across one would hide it).
"""

from __future__ import annotations

import math

# The change between the neighbours' pictures, in frames' worth (a frame's share of its
# segment's change, as placement aims it): at FAR frames or more a render starts from its own
# noise, at NEAR or less it starts latest, and between them the start moves with the log of the
# change. In frames, not pixel levels, so that a busy picture and a calm one share alike. The
# latest start is a share of the steps: the last quarter of sampling always runs, so the
# picture is the model's own, not a mix. Calibrated on builtin:shapes (scripts/bench_share.py).
FAR = 24.0
NEAR = 2.0
LATEST = 0.75
# Starts are multiples of a stride of about a twentieth of the steps: each render keeps its
# latents at these steps (about 15 of them at most: 15 at 20 steps, 11 at 30, 18 at 50), for the
# renders that will start from it. (Flux at 1024 px: about 0.5 MB a step.)
STARTS = 20
# A gap that changes FAST times faster than its segment does on average and carries at least
# BIG frames' worth is where the model may jump (a shape teleports) before the placement has
# narrowed it down: a mix across it comes out as a double exposure (measured in
# scripts/bench_share.py's worst walk: a render started in a gap 3.5x as fast as its segment and
# 10 frames' worth wide was a ghost, hid the jump from the placement, and five renders shared from
# it were ghosts too), so a render there starts from its own noise, which also shows the
# placement the jump. (BIG 8 against 4: fewer renders from noise at 96 frames a segment, and
# evener there; alike at 24.)
FAST = 3.0
BIG = 8.0


def stride(steps: int) -> int:
    return max(1, round(steps / STARTS))


def starts(steps: int, latest: float = LATEST) -> list[int]:
    """The steps a render may start at (0: from its own noise), so the steps whose latents a
    render keeps for later ones."""
    last = math.floor(latest * steps)
    return list(range(0, last + 1, stride(steps)))


def start_step(change: float, steps: int, jump: bool = False, speed: float = 1.0, far: float = FAR, near: float = NEAR, latest: float = LATEST) -> int:
    """The step an in-between render starts at, from the change between its two neighbours'
    pictures in frames' worth: 0 (its own noise) at `far` or more, where the neighbours
    straddle a discontinuity (`jump`), or where the gap changes `speed` times faster than its
    segment on average, at least FAST, and carries at least BIG frames' worth; the latest start
    at `near` or less; log-linear between, rounded down to a start the neighbours kept."""
    if jump or steps < 4 or not math.isfinite(change) or change >= far or (speed >= FAST and change >= BIG):
        return 0
    share = 1.0 if change <= near else math.log(far / change) / math.log(far / near)
    wanted = math.floor(share * latest * steps)
    return max(s for s in starts(steps, latest) if s <= wanted)
