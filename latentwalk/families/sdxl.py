"""Stable Diffusion XL and SDXL-Turbo: two CLIP text encoders (their token embeddings
concatenated), the second's pooled embedding, and "added time ids" (original size, crop and
target size) as extra UNet inputs. latentblending walks SDXL only; this is its conditioning."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionXLPipeline

from latentwalk.families.sd import StableDiffusion


class StableDiffusionXL(StableDiffusion):
    title = "SDXL"
    pipelines = (StableDiffusionXLPipeline,)

    @property
    def default_size(self) -> tuple[int, int]:
        side = self.pipe.default_sample_size * self.pipe.vae_scale_factor
        return side, side

    def tokenizers(self) -> list[tuple[str, object, int]]:
        # Both CLIP encoders read the same 77 tokens: one warning says it.
        tokenizer = self.pipe.tokenizer or self.pipe.tokenizer_2
        return [("CLIP", tokenizer, self.clip_tokens(tokenizer))]

    def _encode(self, text: str, negative: bool) -> dict[str, torch.Tensor]:
        """Token embeddings and pooled embedding; both move with the walk (the pooled one is
        what SDXL's global look follows). An empty negative prompt is zeros where the model's
        config asks for it, as the pipeline does."""
        if negative and text == "" and self.pipe.config.get("force_zeros_for_empty_prompt", True):
            embeds, pooled = self._encode("x", False).values()
            return {"prompt_embeds": torch.zeros_like(embeds), "pooled_prompt_embeds": torch.zeros_like(pooled)}
        if self.long_prompts and self.pipe.text_encoder is not None:
            # As encode_prompt: both encoders' next-to-last hidden states side by side, the
            # second's projected pooled output (of the first window, where the prompt starts).
            pipe, second = self.pipe, lambda out: (out.hidden_states[-2], out.text_embeds)
            first = self.clip_windows(pipe.tokenizer, pipe.text_encoder, text, lambda out: out.hidden_states[-2])
            both = self.clip_windows(pipe.tokenizer_2, pipe.text_encoder_2, text, second)
            embeds = torch.cat([torch.cat([a, b], dim=-1) for a, (b, _) in zip(first, both)], dim=1)
            return {"prompt_embeds": embeds, "pooled_prompt_embeds": both[0][1]}
        embeds, _, pooled, _ = self.pipe.encode_prompt(text, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def unet_inputs(self, cond: dict[str, torch.Tensor], guided: bool, latents: torch.Tensor) -> dict:
        inputs = super().unet_inputs(cond, guided, latents)
        pooled = cond["pooled_prompt_embeds"]
        if guided:
            pooled = torch.cat([cond["negative_pooled_prompt_embeds"], pooled])
        height, width = (side * self.pipe.vae_scale_factor for side in latents.shape[-2:])
        encoder = self.pipe.text_encoder_2
        projection = encoder.config.projection_dim if encoder is not None else int(pooled.shape[-1])
        # The same for every frame: the size the model is told it is drawing.
        time_ids = self.pipe._get_add_time_ids((height, width), (0, 0), (height, width), dtype=self.dtype, text_encoder_projection_dim=projection)
        time_ids = time_ids.to(self.device).repeat(pooled.shape[0], 1)
        inputs["added_cond_kwargs"] = {"text_embeds": pooled.to(self.device, self.dtype), "time_ids": time_ids}
        return inputs

    def _vae(self):
        """The VAE as the SDXL pipeline uses it: in float32 where it overflows in float16
        (force_upcast), with the mean and std some models (Playground) normalise latents by."""
        vae = self.pipe.vae
        if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae.to(torch.float32)
        return vae, getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)

    @staticmethod
    def _per_channel(values, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values).view(1, like.shape[1], 1, 1).to(like.device, like.dtype)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae, mean, std = self._vae()
        if mean is None or std is None:
            return super().decode(latents)
        latents = latents.to(vae.dtype)
        mean, std = self._per_channel(mean, latents), self._per_channel(std, latents)
        images = vae.decode(latents * std / vae.config.scaling_factor + mean, return_dict=False)[0]
        images = (images.float() / 2 + 0.5).clamp(0, 1)
        return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)

    @torch.inference_mode()
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """decode's inverse."""
        vae, mean, std = self._vae()
        if mean is None or std is None:
            return super().encode_image(image)
        pixels = image.permute(0, 3, 1, 2).to(self.device, vae.dtype) / 127.5 - 1
        latents = vae.encode(pixels).latent_dist.mode().float()
        return (latents - self._per_channel(mean, latents)) * vae.config.scaling_factor / self._per_channel(std, latents)
