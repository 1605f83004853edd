"""Model families behind one small protocol, the way k-diffusion wraps model types behind one
`forward` and diffusers gives each family its own pipeline file.

A family knows, for its pipeline class:
- `conditioning(prompt, negative)`: a keyframe as named [1, ...] float32 tensors; `constant`
  names those that do not move between keyframes (all others follow the walk's --interp);
- `latent_shape(width, height)`: one frame's initial noise, [C, h, w];
- the sampler's space and its model call: `begin(steps, shape)` (the scheduler set for a latent
  shape), `start(noise)` and `finish(latents)` (into and out of the sampler's space: Flux packs),
  `predict(latents, t, cond, guidance)` (one guided call, each row at its own timestep t[i]),
  and `scales_input`; the loop over steps is common.Rows, shared by every family, and
  `denoise(latents, cond, steps, guidance, step_noise)` runs a batch from noise through it;
- `decode(latents)`: uint8 frames [B, H, W, 3], and back: `encode_image(image)` (the VAE's
  latents of a picture) and `invert(latents, cond, steps, guidance)`, the initial noise the
  sampler draws those latents from (image keyframes, pictures.py): DDIM inversion for the UNet
  families, the flow ODE run backwards for SD 3 and Flux;
- `default_size`, `size_factor` and `sampler_kind` ("noise" or "flow", see schedulers.py).

The render loop (render.py) talks to backend.Backend, which loads the pipeline, picks the
family with `family_of` and handles devices, samplers and speed switches; it never names a
family, and neither do the schedule, placement, resume or manifests.
"""

from __future__ import annotations

from latentwalk.errors import BadInput
from latentwalk.families.flux import Flux
from latentwalk.families.sd import StableDiffusion
from latentwalk.families.sd3 import StableDiffusion3
from latentwalk.families.sdxl import StableDiffusionXL

# Most specific first.
FAMILIES = (StableDiffusionXL, Flux, StableDiffusion3, StableDiffusion)


def family_of(pipe, model: str):
    for family in FAMILIES:
        if family.handles(pipe):
            return family
    names = ", ".join(f.title for f in FAMILIES)
    raise BadInput(f"--model {model!r} is a {type(pipe).__name__}; latentwalk walks {names} so far")
