"""Flux (schnell and dev): flow matching, a transformer over packed latents (2x2 patches of
the VAE's latents in one token), CLIP's pooled embedding and T5's tokens. Guidance is distilled:
dev embeds it in the transformer, schnell has none; neither doubles the batch, so there is no
negative prompt. The initial noise is drawn unpacked, as the pipeline draws it, so a seed
means the same picture here and in diffusers."""

from __future__ import annotations

import inspect

import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from latentwalk.families.sd3 import StableDiffusion3


class Flux(StableDiffusion3):
    title = "Flux"
    pipelines = (FluxPipeline,)
    # default_size as SD 3's, though Flux's default_sample_size is the pipeline's constant, not
    # the model's config: 1024 px unless --size says otherwise.

    @property
    def size_factor(self) -> int:
        return self.pipe.vae_scale_factor * 2  # packing takes 2x2 latents

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        factor = self.pipe.vae_scale_factor
        return (self.pipe.transformer.config.in_channels // 4, 2 * (height // (factor * 2)), 2 * (width // (factor * 2)))

    t5_tokens = 512  # the most Flux reads, with or without --long-prompts

    def t5_tokenizer(self):
        return self.pipe.tokenizer_2

    def conditioning(self, prompt: str, negative: str) -> dict[str, torch.Tensor]:
        if negative and not getattr(self, "_told", False):
            self.warn("Flux has no classifier-free guidance: the negative prompt is not used")
            self._told = True
        return dict(self.encode(prompt))

    def _encode(self, text: str, negative: bool) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = self.pipe.encode_prompt(text, None, device=self.device, num_images_per_prompt=1)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def begin(self, steps: int, shape: tuple[int, ...]):
        """As FluxPipeline.__call__ sets its timesteps: linear sigmas, shifted by the image's
        size where the scheduler says so. Latents are packed ([B, tokens, C*4]) while sampling
        and come back unpacked, [B, C, h, w], for SD 3's decode."""
        pipe, scheduler = self.pipe, self.pipe.scheduler
        _, h, w = shape
        self.unpacked = (h, w)
        self.image_ids = pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)
        sigmas = np.linspace(1.0, 1 / steps, steps)
        config = scheduler.config
        mu = calculate_shift((h // 2) * (w // 2), config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                             config.get("base_shift", 0.5), config.get("max_shift", 1.15))  # fmt: skip
        accepts = inspect.signature(scheduler.set_timesteps).parameters
        options = {"sigmas": sigmas} if "sigmas" in accepts else {"num_inference_steps": steps}  # flow-heun: its own
        if "mu" in accepts and config.get("use_dynamic_shifting", False):
            options["mu"] = mu
        scheduler.set_timesteps(device=self.device, **options)
        scheduler.set_begin_index(0)
        return scheduler

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        batch, channels, h, w = noise.shape
        return self.pipe._pack_latents(noise.to(self.device, self.dtype), batch, channels, h, w)

    def finish(self, latents: torch.Tensor) -> torch.Tensor:
        h, w = self.unpacked
        factor = self.pipe.vae_scale_factor
        return self.pipe._unpack_latents(latents, h * factor, w * factor, factor)

    def predict(self, latents: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], guidance: float) -> torch.Tensor:
        """As FluxPipeline.__call__'s model call, each row at its own timestep; dev embeds the
        guidance, a second pass is never made."""
        pipe = self.pipe
        text = cond["prompt_embeds"].to(self.device, self.dtype)
        pooled = cond["pooled_prompt_embeds"].to(self.device, self.dtype)
        text_ids = torch.zeros(text.shape[1], 3, device=self.device, dtype=self.dtype)  # the same for every frame
        embedded = None
        if pipe.transformer.config.guidance_embeds:
            embedded = torch.full([latents.shape[0]], guidance, device=self.device, dtype=torch.float32)
        return pipe.transformer(hidden_states=latents, timestep=t.to(latents.dtype) / 1000, guidance=embedded, pooled_projections=pooled,
                                encoder_hidden_states=text, txt_ids=text_ids, img_ids=self.image_ids, return_dict=False)[0]  # fmt: skip

