"""Samplers by friendly name. Pure data, no diffusers import: names are checked before any
model is loaded or downloaded; backend.py turns a name into a diffusers scheduler.

Names follow what people call them in AUTOMATIC1111 and ComfyUI. `kind` says which models a
sampler fits: "noise" (epsilon- and v-prediction UNets: SD 1/2, SDXL, Turbo, LCM) or "flow"
(flow matching: SD 3, Flux). `stochastic` samplers add fresh noise at every step; latentwalk
draws it from each frame's own seeds and place in the walk (see Backend.denoise), so a walk
with one stays continuous and does not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from latentwalk.errors import BadInput


@dataclass(frozen=True)
class Sampler:
    cls: str  # the diffusers class
    kind: str  # "noise" or "flow"
    options: dict = field(default_factory=dict)  # overrides of the model's scheduler config
    stochastic: bool = False


SAMPLERS: dict[str, Sampler] = {
    "ddim": Sampler("DDIMScheduler", "noise"),
    "euler": Sampler("EulerDiscreteScheduler", "noise"),
    "euler-a": Sampler("EulerAncestralDiscreteScheduler", "noise", stochastic=True),
    "heun": Sampler("HeunDiscreteScheduler", "noise"),
    "dpm++-2m": Sampler("DPMSolverMultistepScheduler", "noise", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpm++-2m-karras": Sampler("DPMSolverMultistepScheduler", "noise", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "dpm++-2m-sde": Sampler("DPMSolverMultistepScheduler", "noise", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}, stochastic=True),
    # A1111's "DPM++ SDE Karras" is diffusers' DPMSolverSDEScheduler, which needs torchsde and
    # draws its own Brownian noise (unseeded per frame); the multistep SDE solver draws ours.
    "dpm++-sde": Sampler("DPMSolverMultistepScheduler", "noise", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}, stochastic=True),
    "unipc": Sampler("UniPCMultistepScheduler", "noise"),
    "pndm": Sampler("PNDMScheduler", "noise"),
    "ddpm": Sampler("DDPMScheduler", "noise", stochastic=True),
    "lcm": Sampler("LCMScheduler", "noise", stochastic=True),
    "flow-euler": Sampler("FlowMatchEulerDiscreteScheduler", "flow"),
    "flow-heun": Sampler("FlowMatchHeunDiscreteScheduler", "flow"),
}
# Names earlier versions wrote into presets and manifests.
ALIASES = {"dpm++": "dpm++-2m"}


def canonical(name: str) -> str:
    """The sampler's name, checked: one line listing the names otherwise."""
    name = ALIASES.get(name, name)
    if name not in SAMPLERS:
        raise BadInput(f"--scheduler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    return name


def names_for(kind: str) -> list[str]:
    return [name for name, sampler in SAMPLERS.items() if sampler.kind == kind]


def adds_noise(scheduler) -> bool:
    """Whether a loaded scheduler adds fresh noise at every step (one of ours that is
    `stochastic`, or a model's own such as Euler ancestral or an SDE solver)."""
    name, config = type(scheduler).__name__, scheduler.config
    if "sde" in str(config.get("algorithm_type", "")) or name in ("DPMSolverSDEScheduler", "KDPM2AncestralDiscreteScheduler"):
        return True
    return any(s.stochastic and s.cls == name and not s.options for s in SAMPLERS.values())
