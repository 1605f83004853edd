"""Stable Diffusion 3 and 3.5: flow matching, a joint-attention transformer (MMDiT), three
text encoders (two CLIP, whose pooled embeddings are joined, and T5, whose tokens follow CLIP's).
Noise moves to the picture along straight lines; the sampler is flow-euler (or flow-heun)."""

from __future__ import annotations


import torch
from diffusers import StableDiffusion3Pipeline

from latentwalk.families.common import guide
from latentwalk.families.sd import StableDiffusion, distinct


class StableDiffusion3(StableDiffusion):
    title = "SD 3"
    pipelines = (StableDiffusion3Pipeline,)
    sampler_kind = "flow"
    denoiser_name = "transformer"

    @property
    def default_size(self) -> tuple[int, int]:
        side = self.pipe.default_sample_size * self.pipe.vae_scale_factor
        return side, side

    @property
    def size_factor(self) -> int:
        return self.pipe.vae_scale_factor * self.pipe.patch_size

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        factor = self.pipe.vae_scale_factor
        return (self.pipe.transformer.config.in_channels, height // factor, width // factor)

    # CLIP's 77 tokens join T5's in one sequence, so CLIP is not read in windows here; instead
    # --long-prompts lets T5 read 512 tokens instead of the pipeline's default 256 (two
    # "windows"), where a text of the job needs more: a job of short prompts is unchanged.
    chunked_clip = False

    def prepare(self, texts: list[str]) -> None:
        tokenizer = self.t5_tokenizer()
        if self.long_prompts and tokenizer is not None:
            self.windows = 2 if any(len(tokenizer(t).input_ids) > 256 for t in texts) else 1

    @property
    def t5_tokens(self) -> int:
        return 256 * self.windows

    def tokenizers(self) -> list[tuple[str, object, int]]:
        return [("CLIP", self.pipe.tokenizer, self.pipe.tokenizer.model_max_length), ("T5", self.t5_tokenizer(), self.t5_tokens)]

    def t5_tokenizer(self):
        return self.pipe.tokenizer_3 if self.pipe.text_encoder_3 is not None else None

    def _encode(self, text: str, negative: bool) -> dict[str, torch.Tensor]:
        embeds, _, pooled, _ = self.pipe.encode_prompt(text, None, None, device=self.device, num_images_per_prompt=1,
                                                       do_classifier_free_guidance=False, max_sequence_length=self.t5_tokens)  # fmt: skip
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    scales_input = False  # flow-matching schedulers take the latents as they are

    def begin(self, steps: int, shape: tuple[int, ...]):
        """As the pipeline sets its timesteps: shifted by the image's size where the scheduler
        says so (SD 3.5)."""
        scheduler, options = self.pipe.scheduler, {}
        if scheduler.config.get("use_dynamic_shifting", False):
            from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

            patch = self.pipe.transformer.config.patch_size
            config = scheduler.config
            options["mu"] = calculate_shift((shape[-2] // patch) * (shape[-1] // patch), config.get("base_image_seq_len", 256),
                                            config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5), config.get("max_shift", 1.16))  # fmt: skip
        scheduler.set_timesteps(steps, device=self.device, **options)
        return scheduler

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        return noise.to(self.device, self.dtype)

    def predict(self, latents: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], guidance: float) -> torch.Tensor:
        """As StableDiffusion3Pipeline.__call__'s model call, each row at its own timestep."""
        guided = guidance > 1.0
        text, pooled = cond["prompt_embeds"], cond["pooled_prompt_embeds"]
        if guided:
            text = torch.cat([cond["negative_prompt_embeds"], text])
            pooled = torch.cat([cond["negative_pooled_prompt_embeds"], pooled])
        text, pooled = text.to(self.device, self.dtype), pooled.to(self.device, self.dtype)
        model_input = torch.cat([latents] * 2) if guided else latents
        velocity = self.pipe.transformer(hidden_states=model_input, timestep=torch.cat([t] * 2) if guided else t,
                                         encoder_hidden_states=text, pooled_projections=pooled, return_dict=False)[0]  # fmt: skip
        return guide(velocity, guidance) if guided else velocity

    inversion = "the flow ODE run backwards"

    @torch.inference_mode()
    def invert(self, latents: torch.Tensor, cond: dict[str, torch.Tensor], steps: int, guidance: float) -> torch.Tensor:
        """The initial noise [1, C, h, w] from which the walk's sampler draws `latents` back under
        `guidance`: the flow's ODE run from the picture (sigma 0) up to the first sigma by Euler
        steps along the sampler's own sigmas, each step's velocity taken where the step starts,
        at the timestep it goes to (the forward step's own timestep). Noise is the sampler's
        space at sigma 1, so it mixes with seeds as it is."""
        scheduler = self.begin(steps, tuple(latents.shape[1:]))
        timesteps = scheduler.timesteps[distinct(scheduler.timesteps)]
        sigmas = [float(t) / scheduler.config.num_train_timesteps for t in timesteps] + [0.0]
        x = self.start(latents.float()).float()
        for i in reversed(range(len(timesteps))):
            velocity = self.predict(x.to(self.dtype), timesteps[i].reshape(1), cond, guidance).float()
            x = x + (sigmas[i] - sigmas[i + 1]) * velocity
        return self.finish(x)
