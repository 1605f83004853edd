"""A diffusers folder written back as one checkpoint in the original (LDM / Stability) layout,
the way community fine-tunes ship: for tests of single-file loading, on tiny models built here.

The inverse of diffusers' single_file_utils converters (convert_ldm_unet_checkpoint,
convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint, convert_open_clip_checkpoint), after
diffusers' scripts/convert_diffusers_to_original_sdxl.py, but with the block counts read from
the configs instead of SDXL's hard-coded ones, so toy sizes convert too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
          ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))  # fmt: skip


def to_single_file(folder: Path, path: Path) -> Path:
    """Write `folder` (an SD 1 or SDXL diffusers folder) as one .safetensors checkpoint."""
    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    out = {f"model.diffusion_model.{k}": v for k, v in unet(_weights(folder / "unet"), unet_config).items()}
    out.update({f"first_stage_model.{k}": v for k, v in vae(_weights(folder / "vae"), vae_config).items()})
    if index["_class_name"] == "StableDiffusionXLPipeline":
        out.update({f"conditioner.embedders.0.transformer.{k}": v for k, v in clip(_weights(folder / "text_encoder")).items()})
        out.update({f"conditioner.embedders.1.model.{k}": v for k, v in open_clip(_weights(folder / "text_encoder_2")).items()})
    else:
        out.update({f"cond_stage_model.transformer.{k}": v for k, v in clip(_weights(folder / "text_encoder")).items()})
    save_file({k: v.contiguous() for k, v in out.items()}, str(path))
    return path


def _weights(component: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(component.glob("*.safetensors"))))


def _rename(state: dict, pairs: list[tuple[str, str]]) -> dict:
    """Each key's first matching diffusers prefix replaced by its original one."""
    out = {}
    for key, value in state.items():
        for new, old in pairs:
            if key.startswith(new):
                key = old + key[len(new) :]
                break
        out[key] = value
    return out


def unet(state: dict, config: dict) -> dict:
    """input_blocks / middle_block / output_blocks: each down level has `layers` resnets (with
    their attentions at .1) and then a downsampler in a block of its own; each up level one more
    resnet, its upsampler after the attention (or at .1 without one)."""
    layers, levels = config["layers_per_block"], len(config["block_out_channels"])
    pairs = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
             ("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2."),
             ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2.")]  # fmt: skip
    for i in range(levels):
        for j in range(layers):
            block = 1 + i * (layers + 1) + j
            pairs += [(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{block}.0."), (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{block}.1.")]
        if i < levels - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (layers + 1)}.0.op."))
        attention = config["up_block_types"][i].startswith("CrossAttn")
        for j in range(layers + 1):
            block = i * (layers + 1) + j
            pairs += [(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{block}.0."), (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{block}.1.")]
        if i < levels - 1:
            pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * (layers + 1) + layers}.{2 if attention else 1}."))
    pairs += [("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1."), ("mid_block.resnets.1.", "middle_block.2.")]
    out = {}
    for key, value in _rename(state, pairs).items():
        if _in_resnet(key):
            for new, old in RESNET:
                key = key.replace(f".{new}.", f".{old}.")
        out[key] = value
    return out


def _in_resnet(key: str) -> bool:
    parts = key.split(".")
    if parts[0] in ("input_blocks", "output_blocks"):
        return parts[2] == "0" and "op" not in parts
    return parts[0] == "middle_block" and parts[1] in ("0", "2")


def vae(state: dict, config: dict) -> dict:
    """encoder.down.{i}.block.{j}, decoder.up numbered from the bottom, mid.block_1/attn_1/block_2,
    and the mid attention's linear layers as 1x1 convolutions."""
    levels = len(config["block_out_channels"])
    pairs = [("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for part in ("encoder", "decoder"):
        pairs += [(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1."), (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."),
                  (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.")]  # fmt: skip
    for i in range(levels):
        for j in range(config["layers_per_block"] + 1):
            pairs += [(f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}."),
                      (f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{levels - 1 - i}.block.{j}.")]  # fmt: skip
        pairs += [(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
                  (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample.")]  # fmt: skip
    out = {}
    for key, value in _rename(state, pairs).items():
        key = key.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in key:
            for new, old in (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")):
                key = key.replace(f".attn_1.{new}", f".attn_1.{old}")
            if key.endswith("weight") and value.ndim == 2:
                value = value[:, :, None, None]
        out[key] = value
    return out


def clip(state: dict) -> dict:
    """OpenAI CLIP keeps transformers' names under `transformer.text_model.` (transformers 5.6
    and later save CLIPTextModel without the `text_model.` level)."""
    return {key if key.startswith("text_model.") else f"text_model.{key}": value for key, value in state.items()}


def open_clip(state: dict) -> dict:
    """OpenCLIP: resblocks with one in_proj for q, k and v, and the projection transposed."""
    state = clip({k: v for k, v in state.items() if k != "text_projection.weight"}) | {"text_projection": state["text_projection.weight"].T}
    out, qkv = {}, {}
    names = (("text_model.encoder.layers.", "transformer.resblocks."), ("text_model.final_layer_norm.", "ln_final."),
             ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
             ("text_model.embeddings.position_embedding.weight", "positional_embedding"))  # fmt: skip
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        for new, old in names:
            key = key.replace(new, old)
        for new, old in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), (".mlp.fc1.", ".mlp.c_fc."), (".mlp.fc2.", ".mlp.c_proj."),
                         (".self_attn.out_proj.", ".attn.out_proj.")):  # fmt: skip
            key = key.replace(new, old)
        for part, slot in (("q_proj", 0), ("k_proj", 1), ("v_proj", 2)):
            if f".self_attn.{part}." in key:
                prefix, kind = key.split(f".self_attn.{part}.")
                qkv.setdefault((prefix, kind), [None] * 3)[slot] = value
                break
        else:
            out[key] = value
    for (prefix, kind), parts in qkv.items():
        out[f"{prefix}.attn.in_proj_{kind}"] = torch.cat(parts)
    return out
