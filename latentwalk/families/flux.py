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

from latentwalk.families.common import StepNoise, noise_from, step_options
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

    @torch.inference_mode()
    def denoise(self, noise: torch.Tensor, cond: dict[str, torch.Tensor], steps: int, guidance: float,
                step_noise: StepNoise | None = None) -> torch.Tensor:  # fmt: skip
        """As FluxPipeline.__call__ does for prompt embeddings and latents given; the latents
        come back unpacked, [B, C, h, w], for SD 3's decode."""
        pipe, scheduler = self.pipe, self.pipe.scheduler
        batch, channels, h, w = noise.shape
        latents = pipe._pack_latents(noise.to(self.device, self.dtype), batch, channels, h, w)
        image_ids = pipe._prepare_latent_image_ids(batch, h // 2, w // 2, self.device, self.dtype)
        # Timesteps: linear sigmas, shifted by the image's size where the scheduler says so.
        sigmas = np.linspace(1.0, 1 / steps, steps)
        config = scheduler.config
        mu = calculate_shift(latents.shape[1], config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                             config.get("base_shift", 0.5), config.get("max_shift", 1.15))  # fmt: skip
        accepts = inspect.signature(scheduler.set_timesteps).parameters
        options = {"sigmas": sigmas} if "sigmas" in accepts else {"num_inference_steps": steps}  # flow-heun: its own
        if "mu" in accepts and config.get("use_dynamic_shifting", False):
            options["mu"] = mu
        scheduler.set_timesteps(device=self.device, **options)
        scheduler.set_begin_index(0)
        text = cond["prompt_embeds"].to(self.device, self.dtype)
        pooled = cond["pooled_prompt_embeds"].to(self.device, self.dtype)
        text_ids = torch.zeros(text.shape[1], 3, device=self.device, dtype=self.dtype)  # the same for every frame
        embedded = None
        if pipe.transformer.config.guidance_embeds:  # dev: guidance is an input, not a second pass
            embedded = torch.full([batch], guidance, device=self.device, dtype=torch.float32)
        options = step_options(scheduler, step_noise)
        for step, t in enumerate(scheduler.timesteps):
            timestep = t.expand(batch).to(latents.dtype)
            velocity = pipe.transformer(hidden_states=latents, timestep=timestep / 1000, guidance=embedded, pooled_projections=pooled,
                                        encoder_hidden_states=text, txt_ids=text_ids, img_ids=image_ids, return_dict=False)[0]  # fmt: skip
            with noise_from(scheduler, step_noise, step):
                latents = scheduler.step(velocity, t, latents, **options, return_dict=False)[0]
        factor = pipe.vae_scale_factor
        return pipe._unpack_latents(latents, h * factor, w * factor, factor)
