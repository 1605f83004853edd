"""`builtin:tiny`: a small randomly initialised Stable Diffusion pipeline built in code, and
tiny pipelines of the other families for the tests (SDXL; an LCM UNet).

Real diffusers and transformers classes at toy sizes, so the whole tool runs offline in seconds
on a CPU. It draws noise, not pictures; its weights depend only on the seed and torch's RNG.
"""

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TINY_SIZE = 64  # default image side in pixels: 8x8 latents


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def byte_level_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer with no merges: every byte is a token, with or without end-of-word."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    # transformers 5 ignores vocab_file=; it needs the objects and the 77-token limit spelled out.
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def clip_config(tokenizer: CLIPTokenizer, hidden: int = 32, projection: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=projection,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip


def build_tiny_sdxl_pipeline(seed: int = 0, time_cond_proj_dim: int | None = None):
    """An SDXL pipeline at toy sizes (diffusers' own SDXL tests' components, with our offline
    tokenizer): two text encoders, pooled embeddings and added time ids, like the real one.
    `time_cond_proj_dim` makes an LCM-style UNet that embeds the guidance. The two encoders
    differ in width as the real ones do (768 and 1280): diffusers tells them apart by it when
    it converts a single-file checkpoint."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer = byte_level_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, time_cond_proj_dim=time_cond_proj_dim,
            sample_size=TINY_SIZE // 8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=32 + 48, norm_num_groups=8,
        )  # fmt: skip
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=TINY_SIZE,
        )  # fmt: skip
        text_encoder = CLIPTextModel(clip_config(tokenizer))
        text_encoder_2 = CLIPTextModelWithProjection(clip_config(tokenizer, hidden=48))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading")
    for module in (text_encoder, text_encoder_2, unet, vae):
        module.eval()
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer, tokenizer_2=byte_level_tokenizer(),
        unet=unet, scheduler=scheduler,
    )  # fmt: skip


def t5_tokenizer():
    """A T5 tokenizer built in code: single characters (and word starts) as its unigram vocabulary."""
    from transformers import T5Tokenizer

    chars = [chr(c) for c in range(32, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)] + [(c, -1.0) for c in chars] + [("\u2581" + c, -1.0) for c in chars[1:]]
    # transformers 5: no extra_ids, or it adds 100 sentinel tokens the tiny encoder has no rows for.
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def tiny_t5(tokenizer, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))  # fmt: skip


def tiny_flow_vae() -> AutoencoderKL:
    """SD 3's and Flux's kind of VAE: no quant convs, latents scaled and shifted."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=TINY_SIZE,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )  # fmt: skip


def build_tiny_sd3_pipeline(seed: int = 0):
    """An SD 3 pipeline at toy sizes (diffusers' SD 3 tests' components, offline tokenizers)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer, t5 = byte_level_tokenizer(), t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=TINY_SIZE // 8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
            caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
        )  # fmt: skip
        text_encoder = CLIPTextModelWithProjection(clip_config(tokenizer))
        text_encoder_2 = CLIPTextModelWithProjection(clip_config(tokenizer))
        text_encoder_3 = tiny_t5(t5)
        vae = tiny_flow_vae()
    for module in (text_encoder, text_encoder_2, text_encoder_3, transformer, vae):
        module.eval()
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=text_encoder, text_encoder_2=text_encoder_2, text_encoder_3=text_encoder_3,
        tokenizer=tokenizer, tokenizer_2=byte_level_tokenizer(), tokenizer_3=t5,
    )  # fmt: skip


def build_tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = False):
    """A Flux pipeline at toy sizes (diffusers' Flux tests' components, offline tokenizers):
    schnell-like, or dev-like with `guidance_embeds`. Flux's pipeline assumes 1024 px unless
    told: pass the size."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer, t5 = byte_level_tokenizer(), t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=guidance_embeds,
        )  # fmt: skip
        text_encoder = CLIPTextModel(clip_config(tokenizer))
        text_encoder_2 = tiny_t5(t5)
        vae = tiny_flow_vae()
    for module in (text_encoder, text_encoder_2, transformer, vae):
        module.eval()
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    return FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=t5,
    )  # fmt: skip


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    tokenizer = byte_level_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=77,
                projection_dim=32,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=TINY_SIZE // 8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=TINY_SIZE,
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    for module in (text_encoder, unet, vae):
        module.eval()
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
