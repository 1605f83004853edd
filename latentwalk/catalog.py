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
from pathlib import Path

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


def defaults(model: str, revision: str | None = None) -> tuple[int, float]:
    """(steps, guidance) for this model's family."""
    info = pipeline_info(model, revision)
    if info is None:
        return FALLBACK
    name, transformer = info
    if name == "FluxPipeline" and transformer.get("guidance_embeds"):
        return FLUX_DEV
    return DEFAULTS.get(name, FALLBACK)


def pipeline_info(model: str, revision: str | None) -> tuple[str, dict] | None:
    """(pipeline class name, transformer config or {}) from the model's small files."""
    if model.startswith("builtin:"):
        return ("StableDiffusionPipeline", {})
    path = Path(model).expanduser()
    if path.is_file():
        return (single_file_pipeline(path), {})
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


def single_file_pipeline(path: Path) -> str:
    """SDXL or SD 1/2, from a checkpoint's keys: only SDXL has a second text encoder
    (conditioner.embedders.1) in the original layout."""
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), "np") as f:
                if any(key.startswith("conditioner.embedders.1.") for key in f.keys()):
                    return "StableDiffusionXLPipeline"
        except Exception:  # noqa: BLE001 - not readable as safetensors: the loader says why
            pass
    return "StableDiffusionPipeline"


def _read(index: Path, transformer: Path | None) -> tuple[str, dict] | None:
    try:
        name = json.loads(Path(index).read_text())["_class_name"]
        config = json.loads(Path(transformer).read_text()) if transformer is not None and Path(transformer).is_file() else {}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (name, config) if isinstance(name, str) and isinstance(config, dict) else None


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
