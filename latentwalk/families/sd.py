"""Stable Diffusion 1.x and 2.x (epsilon or v-prediction, which the scheduler's config says),
SD-Turbo, and LCM (an LCM UNet embeds the guidance instead of doubling the batch): one CLIP
text encoder, a UNet, a VAE. The base of the UNet families: SDXL adds to it."""

from __future__ import annotations

import copy
from typing import Callable

import torch
from diffusers import LatentConsistencyModelPipeline, StableDiffusionPipeline

from latentwalk.errors import BadInput
from latentwalk.families.common import Rows, StepNoise, guide


class StableDiffusion:
    title = "Stable Diffusion 1.x/2.x"
    pipelines: tuple[type, ...] = (StableDiffusionPipeline, LatentConsistencyModelPipeline)
    sampler_kind = "noise"
    constant: frozenset[str] = frozenset()  # every conditioning tensor moves with the walk
    # --long-prompts: CLIP reads a prompt in windows of 75 tokens, each encoded as a prompt of
    # its own and their token embeddings joined (A1111's and compel's way). Every keyframe of a
    # job gets as many windows as its longest text needs (`prepare`), so their tensors still mix.
    long_prompts = False
    windows = 1

    def __init__(self, pipe, device: torch.device, dtype: torch.dtype, warn: Callable[[str], None]):
        self.pipe, self.device, self.dtype, self.warn = pipe, device, dtype, warn
        self._text_cache: dict[str, dict[str, torch.Tensor]] = {}

    @classmethod
    def handles(cls, pipe) -> bool:
        return isinstance(pipe, cls.pipelines)

    # ---- Shapes ----------------------------------------------------------------------------------

    @property
    def size_factor(self) -> int:
        return self.pipe.vae_scale_factor

    @property
    def default_size(self) -> tuple[int, int]:
        side = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        return side, side

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        factor = self.pipe.vae_scale_factor
        return (self.pipe.unet.config.in_channels, height // factor, width // factor)

    # ---- Conditioning ----------------------------------------------------------------------------

    def conditioning(self, prompt: str, negative: str) -> dict[str, torch.Tensor]:
        """The prompt's tensors, and the negative prompt's under the same names prefixed
        `negative_`: interpolated together between keyframes."""
        cond = dict(self.encode(prompt))
        cond.update({f"negative_{name}": value for name, value in self.encode(negative, negative=True).items()})
        return cond

    def prepare(self, texts: list[str]) -> None:
        """Before a job's keyframes are encoded: every text it will encode."""
        if self.long_prompts:
            tokenizer = self.pipe.tokenizer or self.pipe.tokenizer_2
            size = tokenizer.model_max_length - 2
            self.windows = max(1, *(-(-len(tokenizer(t, add_special_tokens=False).input_ids) // size) for t in texts))

    def encode(self, text: str, negative: bool = False) -> dict[str, torch.Tensor]:
        """Encoded once per distinct text per run, however many keyframes share it."""
        key = f"{negative}:{self.windows}:{text}"
        if key not in self._text_cache:
            self._warn_if_truncated(text)
            with torch.inference_mode():  # no autograd graph kept per text (and per window)
                self._text_cache[key] = {name: value.float() for name, value in self._encode(text, negative).items()}
        return self._text_cache[key]

    def _encode(self, text: str, negative: bool) -> dict[str, torch.Tensor]:
        if self.long_prompts:
            return {"prompt_embeds": torch.cat(self.clip_windows(self.pipe.tokenizer, self.pipe.text_encoder, text, lambda out: out[0]), dim=1)}
        embeds, _ = self.pipe.encode_prompt(text, self.device, 1, False)
        return {"prompt_embeds": embeds}

    def clip_windows(self, tokenizer, encoder, text: str, pick: Callable) -> list:
        """`pick` of the encoder's output for each window of the text's tokens: start token, 75
        tokens, end token and padding, as the pipeline encodes a short prompt (the first window
        of a short prompt is exactly its encoding); windows past the text's end are empty."""
        ids = tokenizer(text, add_special_tokens=False).input_ids
        length = tokenizer.model_max_length
        picked = []
        for i in range(self.windows):
            window = [tokenizer.bos_token_id, *ids[i * (length - 2) : (i + 1) * (length - 2)], tokenizer.eos_token_id]
            mask = [1] * len(window) + [0] * (length - len(window))
            window += [tokenizer.pad_token_id] * (length - len(window))
            use_mask = getattr(encoder.config, "use_attention_mask", False)
            output = encoder(torch.tensor([window], device=self.device), attention_mask=torch.tensor([mask], device=self.device) if use_mask else None,
                             output_hidden_states=True)  # fmt: skip
            picked.append(pick(output))
        return picked

    def clip_tokens(self, tokenizer) -> int:
        """How many tokens CLIP reads: 77, or the windows' with --long-prompts."""
        length = tokenizer.model_max_length
        return self.windows * (length - 2) + 2 if self.long_prompts else length

    def tokenizers(self) -> list[tuple[str, object, int]]:
        """(encoder name, tokenizer, tokens it reads) for the truncation warning."""
        return [("CLIP", self.pipe.tokenizer, self.clip_tokens(self.pipe.tokenizer))]

    chunked_clip = True  # whether --long-prompts reads past CLIP's 77 tokens in this family

    def _warn_if_truncated(self, text: str) -> None:
        """One warning per encoder that drops words, naming them (CLIP reads 77 tokens, T5 in
        SD 3 256 and in Flux 512)."""
        for name, tokenizer, limit in self.tokenizers():
            if tokenizer is None:
                continue
            ids = tokenizer(text, truncation=False).input_ids
            if len(ids) > limit:
                dropped = tokenizer.decode(ids[limit - 1 : -1]).strip()
                hint = "; --long-prompts reads it all" if name == "CLIP" and self.chunked_clip and not self.long_prompts else ""
                self.warn(f"prompt is longer than the {name} text encoder's {limit} tokens; dropped: {dropped!r}{hint}")

    # ---- Sampling --------------------------------------------------------------------------------

    # The loop itself is common.Rows (one per render: rows at their own steps); a family gives
    # the sampler's space and the model call. `denoise` runs a batch from noise to the end.
    scales_input = True  # the UNet's schedulers scale the model input per step (Euler's sigmas)

    def denoise(self, noise: torch.Tensor, cond: dict[str, torch.Tensor], steps: int, guidance: float,
                step_noise: StepNoise | None = None) -> torch.Tensor:  # fmt: skip
        """Denoise a batch of initial latents [B, ...] under per-row conditioning, as the
        pipeline's __call__ does for prompt embeddings and a CPU generator."""
        rows = Rows(self, steps, guidance, tuple(noise.shape[1:]))
        return rows.run(rows.from_noise(noise, cond, step_noise))

    def begin(self, steps: int, shape: tuple[int, ...]):
        """The scheduler, set for `steps` at this latent shape [C, h, w]."""
        self.pipe.scheduler.set_timesteps(steps, device=self.device)
        return self.pipe.scheduler

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        """Initial noise [B, C, h, w] in the sampler's space (diffusers' prepare_latents)."""
        return noise.to(self.device, self.dtype) * self.pipe.scheduler.init_noise_sigma

    def finish(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def predict(self, latents: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], guidance: float) -> torch.Tensor:
        """One model call: rows [B, ...] at their own timesteps t [B], guided. Classifier-free
        guidance doubles the batch, the unconditional half first, unless the UNet embeds the
        guidance itself (LCM)."""
        pipe = self.pipe
        embedded = getattr(pipe.unet.config, "time_cond_proj_dim", None) is not None
        guided = guidance > 1.0 and not embedded
        kwargs = self.unet_inputs(cond, guided, latents)
        if embedded:
            w = torch.full((latents.shape[0],), guidance - 1.0)
            kwargs["timestep_cond"] = pipe.get_guidance_scale_embedding(w, embedding_dim=pipe.unet.config.time_cond_proj_dim).to(self.device, self.dtype)
        model_input = torch.cat([latents] * 2) if guided else latents
        noise_pred = pipe.unet(model_input, torch.cat([t] * 2) if guided else t, **kwargs, return_dict=False)[0]
        return guide(noise_pred, guidance) if guided else noise_pred

    def unet_inputs(self, cond: dict[str, torch.Tensor], guided: bool, latents: torch.Tensor) -> dict:
        """The UNet's conditioning inputs besides the latents and the timestep."""
        text = cond["prompt_embeds"]
        if guided:
            text = torch.cat([cond["negative_prompt_embeds"], text])
        return {"encoder_hidden_states": text.to(self.device, self.dtype)}

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to 8-bit RGB frames [B, H, W, 3], still on the device. (SD 3's and Flux's
        VAEs also shift their latents.)"""
        vae = self.pipe.vae
        latents = latents.to(vae.dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            latents = latents + vae.config.shift_factor
        images = vae.decode(latents, return_dict=False)[0]
        images = (images.float() / 2 + 0.5).clamp(0, 1)
        return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)

    # ---- Pictures as keyframes (pictures.py) -----------------------------------------------------

    @torch.inference_mode()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """A picture, uint8 [1, H, W, 3], as the latents the sampler ends on [1, C, h, w]: the
        VAE's mean (not a sample: an inversion is reproducible), scaled and shifted as `decode`
        undoes it."""
        vae = self.pipe.vae
        pixels = image.permute(0, 3, 1, 2).to(self.device, vae.dtype) / 127.5 - 1
        latents = vae.encode(pixels).latent_dist.mode().float()
        return (latents - (getattr(vae.config, "shift_factor", None) or 0.0)) * vae.config.scaling_factor

    inversion = "DDIM inversion"

    @torch.inference_mode()
    def invert(self, latents: torch.Tensor, cond: dict[str, torch.Tensor], steps: int, guidance: float) -> torch.Tensor:
        """The initial noise [1, C, h, w] from which the walk's sampler draws `latents` back under
        `guidance`: DDIM inversion along the sampler's own timesteps, from the picture up to the
        first step's noise level. Each step reuses the noise the model predicts where the step
        starts, at the timestep it goes to (as null-text inversion's DDIM pass does). Returned in
        the units of seed noise (`start` scales it into the sampler's space), so it mixes with
        seeds."""
        scheduler = copy.deepcopy(self.begin(steps, tuple(latents.shape[1:])))
        keep = distinct(scheduler.timesteps)
        timesteps, levels = scheduler.timesteps[keep], alpha_bars(scheduler, keep)
        kind = scheduler.config.get("prediction_type", "epsilon")
        x, level = latents.to(self.device, torch.float32), 1.0  # the picture itself: no noise
        for t, target in zip(reversed(timesteps), reversed(levels)):
            out = self.predict(x.to(self.dtype), t.reshape(1), cond, guidance).float()
            eps = epsilon(out, x, target, kind)
            x0 = (x - (1 - level) ** 0.5 * eps) / level**0.5
            x, level = target**0.5 * x0 + (1 - target) ** 0.5 * eps, target
        # x is what the model sees at the first timestep (diffusion's variance-preserving form);
        # Euler-like samplers keep it scaled up by sqrt(sigma^2 + 1), which scale_model_input undoes.
        unit = torch.ones(1, device=self.device)
        scale = float(scheduler.scale_model_input(unit, timesteps[0])[0]) * float(scheduler.init_noise_sigma)
        return x / scale

    # ---- Speed switches --------------------------------------------------------------------------

    denoiser_name = "unet"  # the pipeline's component that --compile and --channels-last change

    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_name)

    def set_denoiser(self, module) -> None:
        setattr(self.pipe, self.denoiser_name, module)


def distinct(timesteps: torch.Tensor) -> list[int]:
    """The indices of a sampler's distinct timesteps, in order (Heun's come in pairs)."""
    return [0] + [i for i in range(1, len(timesteps)) if timesteps[i] != timesteps[i - 1]]


def alpha_bars(scheduler, keep: list[int]) -> list[float]:
    """How much picture is left at each of the sampler's timesteps `keep` (alphas_cumprod): from
    its own sigmas where it has one per step (Euler, DPM++, UniPC; Karras spacing included),
    else interpolated in sigma between the trained steps, as Euler does."""
    import numpy as np

    own = getattr(scheduler, "sigmas", None)
    if own is not None and len(own) == len(scheduler.timesteps) + 1:
        return [float(1 / (1 + float(own[i]) ** 2)) for i in keep]
    trained = getattr(scheduler, "alphas_cumprod", None)
    if trained is None:
        raise BadInput(f"image= keyframes: the {type(scheduler).__name__} sampler has no noise schedule to invert along; use --scheduler ddim")
    trained = trained.double().cpu().numpy()
    sigmas = np.sqrt((1 - trained) / trained)
    at = np.interp(scheduler.timesteps[keep].double().cpu().numpy(), np.arange(len(sigmas)), sigmas)
    return [float(1 / (1 + s * s)) for s in at]


def epsilon(out: torch.Tensor, x: torch.Tensor, level: float, kind: str) -> torch.Tensor:
    """The noise in `x` that the model's output says, whatever it predicts."""
    if kind == "v_prediction":
        return level**0.5 * out + (1 - level) ** 0.5 * x
    if kind == "sample":
        return (x - level**0.5 * out) / (1 - level) ** 0.5
    return out
