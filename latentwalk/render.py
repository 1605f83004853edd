"""Plan -> batches -> backend -> frames: the one loop every command runs.

Conditioning and noise are computed once per keyframe; each batch only interpolates between
them (on the model's device, in float32) and hands the result to the backend.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from latentwalk.backend import Backend
from latentwalk.interp import INTERPOLATIONS
from latentwalk.schedule import Frame, Keyframe, batched


@dataclass
class RenderSpec:
    keyframes: list[Keyframe]
    plan: list[Frame]
    width: int
    height: int
    steps: int
    guidance: float
    batch_size: int = 1
    noise_interp: str = "slerp"
    cond_interp: str = "lerp"
    # Seconds spent per phase, filled in while rendering.
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def render_frames(backend: Backend, spec: RenderSpec) -> Iterator[tuple[Frame, np.ndarray]]:
    """Yield (frame, HxWx3 uint8 image) in plan order, one batch at a time."""
    started = time.perf_counter()
    per_keyframe = [backend.conditioning(k.prompt, k.negative) for k in spec.keyframes]
    conds = {name: torch.cat([c[name] for c in per_keyframe]) for name in per_keyframe[0]}
    noises = torch.cat([backend.noise(k.seed, spec.width, spec.height) for k in spec.keyframes])
    spec.timings["encode"] += time.perf_counter() - started

    mix_noise = INTERPOLATIONS[spec.noise_interp]
    mix_cond = INTERPOLATIONS[spec.cond_interp]
    for batch in batched(spec.plan, spec.batch_size):
        started = time.perf_counter()
        a = torch.tensor([f.a for f in batch], device=noises.device)
        b = torch.tensor([f.b for f in batch], device=noises.device)
        t = torch.tensor([f.t for f in batch], dtype=torch.float32, device=noises.device)
        noise = mix_noise(noises[a], noises[b], t)
        cond = {name: mix_cond(value[a], value[b], t) for name, value in conds.items()}
        images = backend.render(noise, cond, spec.steps, spec.guidance)
        spec.timings["render"] += time.perf_counter() - started
        yield from zip(batch, images)
