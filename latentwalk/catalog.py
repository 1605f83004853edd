"""What kind of model a --model names, from its small files alone: no torch, no weights.

Used before anything is loaded, to give a model its family's defaults (steps, guidance) when
neither a flag nor a preset sets them. A folder's or the hub cache's `model_index.json` names
the pipeline class; Flux's transformer config says whether guidance is distilled into it (dev)
or absent (schnell). Nothing is fetched: for a hub model not in the cache yet, or anything
unreadable, the defaults are Stable Diffusion's (the presets set their own), and the sampler's
fit is checked once the model is loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from latentwalk.errors import BadInput

# What a hub id looks like (org/name), as opposed to a path.
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

# Pipeline class -> (steps, guidance): what the model's authors recommend.
DEFAULTS = {
    "StableDiffusionPipeline": (25, 7.5),
    "LatentConsistencyModelPipeline": (4, 8.0),
    "StableDiffusionXLPipeline": (30, 5.0),
    "StableDiffusion3Pipeline": (28, 7.0),
    "FluxPipeline": (4, 0.0),  # schnell; dev (guidance embedded) below
}
FLUX_DEV = (28, 3.5)
FALLBACK = DEFAULTS["StableDiffusionPipeline"]

# Single-file checkpoints (community fine-tunes ship them) hold weights only. Per family: the
# pipeline, and the hub model whose configs and tokenizers describe its architecture, which
# diffusers reads from the hub cache (or --model-config names a folder of the same architecture).
SINGLE_FILE = {
    "sd1": ("StableDiffusionPipeline", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    "sd2": ("StableDiffusionPipeline", "stabilityai/stable-diffusion-2-1"),
    "sdxl": ("StableDiffusionXLPipeline", "stabilityai/stable-diffusion-xl-base-1.0"),
    "sd3": ("StableDiffusion3Pipeline", "stabilityai/stable-diffusion-3-medium-diffusers"),
    "flux": ("FluxPipeline", "black-forest-labs/FLUX.1-dev"),
}
FLUX_SCHNELL_REPO = "black-forest-labs/FLUX.1-schnell"
# A key part only that family's original layout has, most specific first (SDXL's second text
# encoder, SD 3's joint blocks, Flux's double blocks, SD 2's OpenCLIP, SD 1's CLIP).
FAMILY_KEYS = (
    ("sdxl", "conditioner.embedders.1."),
    ("sd3", "joint_blocks."),
    ("flux", "double_blocks."),
    ("sd2", "cond_stage_model.model."),
    ("sd1", "cond_stage_model.transformer."),
)


def defaults(model: str, revision: str | None = None, family: str | None = None, config: str | None = None) -> tuple[int, float]:
    """(steps, guidance) for this model's family."""
    info = pipeline_info(model, revision, family, config)
    if info is None:
        return FALLBACK
    name, transformer = info
    if name == "FluxPipeline" and transformer.get("guidance_embeds"):
        return FLUX_DEV
    return DEFAULTS.get(name, FALLBACK)


def pipeline_info(model: str, revision: str | None, family: str | None = None, config: str | None = None) -> tuple[str, dict] | None:
    """(pipeline class name, transformer config or {}) from the model's small files; a single
    file's from its config source."""
    if model.startswith("builtin:"):
        return ("StableDiffusionPipeline", {})
    path = Path(model).expanduser()
    if path.is_file():
        source = config_source(path, family, config)
        info = pipeline_info(source, None)
        # Not cached yet: the family's pipeline, and Flux dev's guidance by its base model.
        return info if info is not None else (SINGLE_FILE[single_file_family(path, family)][0], {"guidance_embeds": source != FLUX_SCHNELL_REPO})
    if path.is_dir():
        return _read(path / "model_index.json", path / "transformer" / "config.json")
    index = _hub_file(model, "model_index.json", revision)
    if index is None:
        return None
    info = _read(index, None)
    if info is not None and info[0] == "FluxPipeline":
        transformer = _hub_file(model, "transformer/config.json", revision)
        if transformer is not None:
            info = _read(index, transformer)
    return info


def single_file_family(path: Path, family: str | None = None) -> str:
    """sd1, sd2, sdxl, sd3 or flux: `family` if given, else from the checkpoint's keys. A pickle
    cannot be read without running it, so it is taken for SD 1 (most .ckpt files are)."""
    if family is not None:
        if family not in SINGLE_FILE:
            raise BadInput(f"--family must be one of {', '.join(SINGLE_FILE)}, got {family!r}")
        return family
    if path.suffix != ".safetensors":
        return "sd1"
    keys = checkpoint_keys(path)
    for name, part in FAMILY_KEYS:
        if any(part in key for key in keys):
            return name
    raise BadInput(f"--model {str(path)!r}: its keys name no family latentwalk knows; pass --family ({', '.join(SINGLE_FILE)})")


def config_source(path: Path, family: str | None, config: str | None) -> str:
    """Where a single file's configs and tokenizers come from: --model-config, else the family's
    base model (Flux schnell where the checkpoint has no guidance embedding)."""
    if config is not None:
        return config
    name = single_file_family(path, family)
    if name == "flux" and path.suffix == ".safetensors" and not any("guidance_in." in key for key in checkpoint_keys(path)):
        return FLUX_SCHNELL_REPO
    return SINGLE_FILE[name][1]


def checkpoint_keys(path: Path) -> list[str]:
    """The tensor names of a .safetensors file, from its header (no weights are read)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            return list(f.keys())
    except Exception as e:  # noqa: BLE001 - safetensors' errors for a damaged file are pages long
        raise BadInput(f"--model {str(path)!r} is not a readable .safetensors file ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None


def _read(index: Path, transformer: Path | None) -> tuple[str, dict] | None:
    try:
        name = json.loads(Path(index).read_text())["_class_name"]
        config = json.loads(Path(transformer).read_text()) if transformer is not None and Path(transformer).is_file() else {}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (name, config) if isinstance(name, str) and isinstance(config, dict) else None


def config_at_hand(source: str) -> bool:
    """Whether a config source needs no network: a local folder, or a hub model in the cache."""
    return Path(source).is_dir() or _hub_file(source, "model_index.json", None) is not None


def _hub_file(model: str, filename: str, revision: str | None) -> Path | None:
    """From the hub cache only: a check before the load must not wait on the network (offline,
    a lookup stalls for seconds). A hub model not downloaded yet has SD's defaults on its first
    run unless a flag or preset sets them (the presets do)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, filename, revision=revision)
    except Exception:  # noqa: BLE001 - defaults are a convenience: the load reports real problems
        return None
    return Path(cached) if isinstance(cached, str) else None
