"""What every family's sampling loop shares: a scheduler step whose fresh noise is ours."""

from __future__ import annotations

import copy
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


# ---- Rows at their own steps ---------------------------------------------------------------------
# A family gives the model call (`predict`, one row per frame, each at its own timestep) and the
# sampler's space (`begin`, `start`, `finish`); the loop is here, shared by every family. Each
# row is a trajectory with its own scheduler state, so rows at different steps share one model
# call: a render that starts late from its neighbours' latents (sharing.py) fills the call that
# a keyframe's early steps leave free. A row's result depends only on its own inputs, the
# call's row count and its place in the call, never on its batch-mates, which is what keeps
# resumes and shards exact.


class Trajectory:
    """One frame's sampling: its latents in the sampler's space at `step` (an index into the
    scheduler's timesteps), its conditioning rows, its fresh noise, and the latents it keeps
    (at the steps in `keep`) for renders that will start from it."""

    def __init__(self, key, latents: torch.Tensor, step: int, scheduler, cond: dict[str, torch.Tensor],
                 step_noise: StepNoise | None, keep=()):  # fmt: skip
        self.key, self.latents, self.step, self.scheduler = key, latents, step, scheduler
        self.cond, self.step_noise, self.keep = cond, step_noise, set(keep)
        self.kept: dict[int, torch.Tensor] = {}
        self.options = step_options(scheduler, step_noise)

    @property
    def done(self) -> bool:
        return self.step >= len(self.scheduler.timesteps)


def shares_steps(scheduler) -> bool:
    """Whether a render can start this scheduler part-way: one model call per step (not Heun's
    two), and a step that starts cleanly from any index (a begin index, or no state at all)."""
    stateless = type(scheduler).__name__ in ("DDIMScheduler", "DDPMScheduler")
    return getattr(scheduler, "order", 1) == 1 and (hasattr(scheduler, "set_begin_index") or stateless)


def per_row(batch_noise: StepNoise, rows: int) -> Callable[[int], StepNoise]:
    """Row i's share of a batch's step noise, drawn once per step for all `rows` rows."""
    drawn: dict[int, torch.Tensor] = {}

    def row(i: int) -> StepNoise:
        def noise(step: int, shape: tuple[int, ...]) -> torch.Tensor:
            if step not in drawn:
                drawn.clear()
                drawn[step] = batch_noise(step, (rows, *shape[1:]))
            return drawn[step][i : i + 1]

        return noise

    return row


class Rows:
    """The sampling loop over trajectories: `call(rows, size)` advances each row one step in
    one model call of `size` rows (topped up with copies of the last)."""

    def __init__(self, family, steps: int, guidance: float, shape: tuple[int, ...]):
        self.family, self.guidance = family, guidance
        self.scheduler = family.begin(steps, shape)
        self.calls = 0  # model calls made
        self.row_steps = 0  # rows advanced (each row's model call; guidance's doubled batch counts once)

    def trajectory(self, key, cond: dict[str, torch.Tensor], step_noise: StepNoise | None, noise: torch.Tensor | None = None,
                   latents: torch.Tensor | None = None, step: int = 0, keep=()) -> Trajectory:  # fmt: skip
        """A row from its initial noise (step 0), or from latents at `step` (a shared start)."""
        scheduler = copy.deepcopy(self.scheduler)
        if step == 0:
            latents = self.family.start(noise)
        elif hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(step)
        return Trajectory(key, latents, step, scheduler, cond, step_noise, keep)

    def from_noise(self, noise: torch.Tensor, cond: dict[str, torch.Tensor], step_noise: StepNoise | None,
                   count: int | None = None, keep=()) -> list[Trajectory]:  # fmt: skip
        """Rows for the first `count` of a batch's initial noise [B, ...] and conditioning (all
        B by default); the step noise is drawn for the whole batch once a step and shared out."""
        count = noise.shape[0] if count is None else count
        row_noise = None if step_noise is None else per_row(step_noise, noise.shape[0])
        return [self.trajectory(i, {k: v[i : i + 1] for k, v in cond.items()}, None if row_noise is None else row_noise(i),
                                noise=noise[i : i + 1], keep=keep) for i in range(count)]  # fmt: skip

    @torch.inference_mode()
    def call(self, rows: list[Trajectory], size: int | None = None, at: list[int] | None = None) -> None:
        """Advance each row one step in one model call of `size` rows: the rows at their places
        `at` (in order by default), the other places holding copies of the last row. A row's last
        float bits can depend on the call's size and on its place in it, never on what the other
        places hold (measured), so a row made again later is made at the place it had."""
        size = max(size or len(rows), len(rows))
        at = list(range(len(rows))) if at is None else at
        slot = [len(rows) - 1] * size  # the row each place holds
        for j, place in enumerate(at):
            slot[place] = j
        for row in rows:
            if row.step in row.keep:
                row.kept[row.step] = row.latents.clone()
        timesteps = [row.scheduler.timesteps[row.step] for row in rows]
        inputs = [row.scheduler.scale_model_input(row.latents, t) if self.family.scales_input else row.latents for row, t in zip(rows, timesteps)]
        latents = torch.cat([inputs[j] for j in slot])
        t = torch.stack([timesteps[j] for j in slot])
        cond = {name: torch.cat([rows[j].cond[name] for j in slot]) for name in rows[0].cond}
        out = self.family.predict(latents, t, cond, self.guidance)
        for place, row, step_t in zip(at, rows, timesteps):
            with noise_from(row.scheduler, row.step_noise, row.step):
                row.latents = row.scheduler.step(out[place : place + 1], step_t, row.latents, **row.options, return_dict=False)[0]
            row.step += 1
        self.calls += 1
        self.row_steps += len(rows)

    def run(self, rows: list[Trajectory], size: int | None = None) -> torch.Tensor:
        """Rows that all start at one step, to the end together: the finished latents, in
        the family's space for decoding."""
        while not rows[0].done:
            self.call(rows, size)
        return self.family.finish(torch.cat([row.latents for row in rows]))
