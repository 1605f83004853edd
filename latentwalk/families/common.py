"""What every family's sampling loop shares: a scheduler step whose fresh noise is ours."""

from __future__ import annotations

import inspect
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

# step_noise(step, shape) -> a [B, ...] standard normal tensor for that sampling step: each row
# drawn from its frame's own seeds and place in the walk (render.Renderer builds it).
StepNoise = Callable[[int, tuple[int, ...]], torch.Tensor]


def guide(prediction: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance on a doubled batch (the unconditional half first)."""
    uncond, conditioned = prediction.chunk(2)
    return uncond + guidance * (conditioned - uncond)


def step_options(scheduler, step_noise: StepNoise | None) -> dict:
    """A generator seeded 0 for whatever noise does not come from `step_noise`: a direct call
    (not a render), or a scheduler that draws noise its own way (torchsde's Brownian tree in
    DPMSolverSDEScheduler): reproducible and resumable, though not moving with the walk."""
    if "generator" in inspect.signature(scheduler.step).parameters:
        return {"generator": torch.Generator("cpu").manual_seed(0)}
    return {}


@contextmanager
def noise_from(scheduler, step_noise: StepNoise | None, step: int) -> Iterator[None]:
    """While a scheduler steps, its fresh noise (ancestral samplers, LCM, SDE solvers, DDPM)
    comes from `step_noise` instead of a generator.

    diffusers' schedulers draw it with `randn_tensor(shape, generator=...)`, one generator for
    the batch (or one per row): either way the noise would depend on a frame's row in its batch,
    and between keyframes it would jump instead of moving with the walk. So the scheduler's
    module-level `randn_tensor` is swapped for the step's call (deterministic schedulers never
    call it). One render runs at a time, in one thread."""
    module = sys.modules[type(scheduler).__module__]
    original = getattr(module, "randn_tensor", None)
    if step_noise is None or original is None:
        yield
        return

    def ours(shape, generator=None, device=None, dtype=None, layout=None):
        noise = step_noise(step, tuple(shape))
        return noise.to(device=device or noise.device, dtype=dtype or noise.dtype)

    module.randn_tensor = ours
    try:
        yield
    finally:
        module.randn_tensor = original
