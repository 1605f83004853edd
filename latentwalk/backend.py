"""The model backend: load a pipeline, encode prompts, render a batch of latents into frames.

Conditioning is a dict of named tensors (one row per keyframe or frame). The render loop below
takes whatever names the pipeline family needs, so a family with more tensors (SDXL's second
encoder and pooled embeddings) adds names without changing how frames are interpolated.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Callable

# Library chatter (torchvision fallbacks, loading bars) is not for our users; errors still raise.
# Download bars stay on a terminal, where a first multi-GB download should show its progress.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
if not sys.stderr.isatty():
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
from diffusers import DiffusionPipeline, PNDMScheduler  # noqa: E402

from diffusers.utils import logging as diffusers_logging  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from latentwalk import models  # noqa: E402
from latentwalk.catalog import HUB_ID  # noqa: E402
from latentwalk.errors import BadInput, LatentwalkError  # noqa: E402
from latentwalk.families import family_of  # noqa: E402
from latentwalk.families.common import StepNoise  # noqa: E402
from latentwalk.interp import seed_noise  # noqa: E402
from latentwalk.schedulers import SAMPLERS, canonical, names_for  # noqa: E402

# Loading bars are noise in a render's output (and in its logs); ours shows the render.
diffusers_logging.disable_progress_bar()
transformers_logging.disable_progress_bar()

BUILTIN_MODELS = ("builtin:tiny", *models.FOLDERS)
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA (ROCm builds of torch appear as CUDA), then MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match:
        if not torch.cuda.is_available():
            raise BadInput(f"--device {name}: this torch build sees no CUDA or ROCm GPU")
        if match[1] is not None and int(match[1]) >= torch.cuda.device_count():
            raise BadInput(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
        return torch.device(name)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise BadInput("--device mps: this machine or torch build has no MPS")
        return torch.device("mps")
    raise BadInput(f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str | None, device: torch.device, model: str | None = None, family: str | None = None,
                  config: str | None = None) -> torch.dtype:  # fmt: skip
    """float16 on GPUs (bfloat16 for Flux, which overflows in float16), float32 on the CPU
    (where float16 is slow or unsupported)."""
    if name is None:
        if device.type == "cpu":
            return torch.float32
        from latentwalk.catalog import pipeline_info

        info = pipeline_info(model, None, family, config) if model else None
        return torch.bfloat16 if info is not None and info[0] == "FluxPipeline" else torch.float16
    if name not in DTYPES:
        raise BadInput(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def load_pipeline(model: str, dtype: torch.dtype, revision: str | None = None, allow_pickle: bool = False,
                  family: str | None = None, config: str | None = None) -> DiffusionPipeline:  # fmt: skip
    """A pipeline from a builtin name, a local diffusers folder, a .safetensors file or a hub id.
    A single file takes its configs and tokenizers from `config` or its family's base model
    (catalog.config_source).

    Weights load from safetensors only: a pickle (.ckpt, .bin, .pt) can run any code while it is
    unpickled, so it needs `allow_pickle`. Remote code is never run."""
    if model == "builtin:tiny":
        from latentwalk.tiny import build_tiny_pipeline

        return build_tiny_pipeline().to(dtype=dtype)
    if model.startswith("builtin:") and model not in models.FOLDERS:
        raise BadInput(f"unknown builtin model {model!r} (builtins: {', '.join(BUILTIN_MODELS)})")
    path = models.folder(model) if model in models.FOLDERS else Path(model).expanduser()
    # No safety checker: it blacks out whole frames of a video.
    options = dict(dtype=dtype, safety_checker=None, requires_safety_checker=False)
    # use_safetensors=None lets diffusers fall back to pickled .bin weights.
    folder_options = dict(options, use_safetensors=None if allow_pickle else True, trust_remote_code=False)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise BadInput(f"--model {model!r} is a folder but not a diffusers model (no model_index.json)")
        pickled = [] if allow_pickle else pickle_only_weights(path)
        if pickled:
            raise BadInput(
                f"--model {model!r} has pickle-only weights ({pickled[0]}), which can run arbitrary code "
                "when loaded; convert them to .safetensors, or pass --allow-pickle if you trust the source"
            )
        return _load(model, DiffusionPipeline.from_pretrained, str(path), **folder_options)
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise BadInput(
                f"--model {model!r} is a pickle checkpoint, which can run arbitrary code when "
                "loaded; convert it to .safetensors, or pass --allow-pickle if you trust the source"
            )
        if path.suffix != ".safetensors" and path.suffix not in PICKLE_SUFFIXES:
            raise BadInput(f"--model {model!r}: expected a diffusers folder or a .safetensors file")
        return load_single_file(model, path, options, family, config)
    if HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return _load(model, DiffusionPipeline.from_pretrained, model, revision=revision, **folder_options)
    raise BadInput(f"--model {model!r}: no such file or folder, and not a hub id like org/name")


def apply_vae(pipe: DiffusionPipeline, vae: str | None, dtype: torch.dtype, allow_pickle: bool = False, model: str = "",
              family: str | None = None, config: str | None = None) -> None:  # fmt: skip
    """Swap the model's VAE for another (a fine-tuned decoder, as many SDXL fine-tunes ship).
    A single file takes its layout from the model's own VAE config (a single-file model's from
    its config source), so no hub access is needed."""
    if vae is None:
        return
    from diffusers import AutoencoderKL

    path = Path(vae)
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise BadInput(f"--vae {vae!r} is a pickle file, which can run arbitrary code when loaded; pass --allow-pickle if you trust it")
    try:
        if path.is_dir():
            loaded = AutoencoderKL.from_pretrained(vae, torch_dtype=dtype, use_safetensors=None if allow_pickle else True)
        else:
            from latentwalk.catalog import config_source

            source = models.folder(model) if model in models.FOLDERS else model
            if Path(model).is_file():
                source = config_source(Path(model), family, config)
            from latentwalk.catalog import config_at_hand

            cached = config_at_hand(str(source))
            loaded = AutoencoderKL.from_single_file(vae, config=str(source), subfolder="vae", torch_dtype=dtype, local_files_only=cached)
    except Exception as e:  # noqa: BLE001 - a file that is not this kind of VAE: one line
        raise BadInput(f"--vae {vae!r} cannot be loaded as this model's VAE ({first_line(e)})") from e
    channels = (loaded.config.latent_channels, pipe.vae.config.latent_channels)
    if channels[0] != channels[1]:
        raise BadInput(f"--vae {vae!r} has {channels[0]} latent channels; this model's VAE has {channels[1]}")
    pipe.vae = loaded


def apply_loras(pipe: DiffusionPipeline, loras: list, allow_pickle: bool = False) -> None:
    """Load each LoRA as an adapter at its scale, then fuse them into the weights (no cost per
    step). Needs peft, the extra latentwalk[lora]."""
    if not loras:
        return
    try:
        import peft  # noqa: F401
    except ImportError:
        raise BadInput("--lora needs peft, which is not installed: pip install 'latentwalk[lora]'") from None
    if not hasattr(pipe, "load_lora_weights"):
        raise BadInput(f"--lora: a {type(pipe).__name__} takes no LoRA")
    names = []
    for i, (path, scale) in enumerate(loras):
        if Path(path).suffix in PICKLE_SUFFIXES and not allow_pickle:
            raise BadInput(f"--lora {path!r} is a pickle file, which can run arbitrary code when loaded; pass --allow-pickle if you trust it")
        name = f"lora{i}"
        try:
            pipe.load_lora_weights(path, adapter_name=name)
        except Exception as e:  # noqa: BLE001 - wrong family, wrong file: one line
            raise BadInput(f"--lora {path!r} does not fit this model ({first_line(e)})") from e
        # A LoRA of another family loads without error and without a single layer.
        if not any(name in adapters for adapters in pipe.get_list_adapters().values()):
            raise BadInput(f"--lora {path!r} does not fit this model (none of its layers are in it)")
        names.append(name)
    try:
        pipe.set_adapters(names, adapter_weights=[scale for _, scale in loras])
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        pipe.unload_lora_weights()  # the fused weights stay; the adapters' copies go
    except Exception as e:  # noqa: BLE001
        raise BadInput(f"--lora: cannot apply {', '.join(p for p, _ in loras)} ({first_line(e)})") from e


def load_single_file(model: str, path: Path, options: dict, family: str | None, config: str | None) -> DiffusionPipeline:
    """A .safetensors (or trusted pickle) checkpoint in the original layout, converted by
    diffusers with the configs of its config source: --model-config, else the base model
    diffusers itself infers from the keys and shapes (Playground v2.5, SD 3.5, an SD 2 768-v
    model: more precise than the family's default), read from the hub cache when it is there
    (no network), else downloaded (configs and tokenizers only)."""
    from latentwalk.catalog import config_at_hand, config_source, pipeline_info

    source = config_source(path, family, config)
    if config is None:
        source = inferred_source(path, family) or source
    name, _ = pipeline_info(model, None, family, config)
    pipeline_class = getattr(diffusers, name, None)
    if pipeline_class is None or not hasattr(pipeline_class, "from_single_file"):
        raise BadInput(f"--model {model!r}: a {name} cannot be loaded from a single file")
    cached = config_at_hand(source)
    try:
        return pipeline_class.from_single_file(str(path), config=source, local_files_only=cached, **options)
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one line for the user
        where = "" if Path(source).is_dir() else (
            f"; its configs come from {source!r}{'' if cached else ', which is not in the hub cache'}: run once online, or pass "
            "--model-config with a diffusers folder of the same architecture (a transformer-only SD 3 or Flux file does "
            "not load yet: use the model's diffusers folder or hub id)"
        )  # fmt: skip
        raise LatentwalkError(f"cannot load model {model!r}: {first_line(e)}{where}") from e


def inferred_source(path: Path, family: str | None) -> str | None:
    """The base model diffusers would pick for this checkpoint, if it is of the family we found
    (a toy or unusual checkpoint can fool diffusers' key-and-shape rules; ours then stand)."""
    from latentwalk.catalog import single_file_family

    if path.suffix != ".safetensors":
        return None
    try:
        from diffusers.loaders.single_file_utils import fetch_diffusers_config, infer_diffusers_model_type
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:  # shapes only: meta tensors, no weights read
            meta = {key: torch.empty(f.get_slice(key).get_shape(), device="meta") for key in f.keys()}
        kind, repo = infer_diffusers_model_type(meta), fetch_diffusers_config(meta)["pretrained_model_name_or_path"]
    except Exception:  # noqa: BLE001 - diffusers' rules index keys a toy model lacks
        return None
    families = (("xl", "sdxl"), ("playground", "sdxl"), ("sd3", "sd3"), ("sd35", "sd3"), ("flux", "flux"), ("v2", "sd2"), ("inpainting_v2", "sd2"), ("v1", "sd1"))
    inferred = next((name for prefix, name in families if kind.startswith(prefix)), None)
    return repo if inferred == single_file_family(path, family) else None


def pickle_only_weights(folder: Path) -> list[str]:
    """Weight files of the components (unet/, vae/, ...) that have no safetensors beside them."""
    found = []
    for component in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = [p for p in component.iterdir() if p.is_file()]
        if not any(p.suffix == ".safetensors" for p in files):
            found += [str(p.relative_to(folder)) for p in files if p.suffix in PICKLE_SUFFIXES]
    return found


def first_line(error: BaseException, limit: int = 300) -> str:
    """A library's error as one short line: loaders and compilers raise pages."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line[:limit] + "..." if len(line) > limit else line


def _load(model: str, loader: Callable, *args, **kwargs) -> DiffusionPipeline:
    try:
        return loader(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one line for the user
        raise LatentwalkError(f"cannot load model {model!r}: {first_line(e)}") from e


class Backend:
    """One loaded pipeline on one device, through its family (families/): encode prompts, make
    noise, denoise batches of latents, decode them into frames."""

    def __init__(
        self,
        pipe: DiffusionPipeline,
        model: str,
        device: torch.device,
        dtype: torch.dtype,
        scheduler: str | None = None,
        warn: Callable[[str], None] = lambda message: None,
        long_prompts: bool = False,
    ):
        family = family_of(pipe, model)
        if scheduler is not None:
            name = canonical(scheduler)
            if SAMPLERS[name].kind != family.sampler_kind:
                raise BadInput(f"--scheduler {scheduler} does not fit {family.title} models; use one of {', '.join(names_for(family.sampler_kind))}")
            sampler = SAMPLERS[name]
            config = {**pipe.scheduler.config, **sampler.options}
            pipe.scheduler = getattr(diffusers, sampler.cls).from_config(config)
        self.pipe = pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.family = family(self.pipe, device, dtype, warn)
        self.family.long_prompts = long_prompts
        self.model = model
        self.device = device
        self.dtype = dtype
        self.warn = warn
        self.compiled = False

    @property
    def scheduler_name(self) -> str:
        return type(self.pipe.scheduler).__name__

    @property
    def default_size(self) -> tuple[int, int]:
        return self.family.default_size

    @property
    def constant(self) -> frozenset[str]:
        """Conditioning tensors that do not move between keyframes."""
        return self.family.constant

    def check_size(self, width: int, height: int) -> None:
        factor = self.family.size_factor
        if width % factor or height % factor:
            raise BadInput(f"--size must be a multiple of {factor} for this model, got {width}x{height}")

    def check_steps(self, steps: int) -> None:
        # PNDM warms up with 4 Runge-Kutta steps and fails with a shape error below that.
        if isinstance(self.pipe.scheduler, PNDMScheduler) and steps < 4:
            raise BadInput(f"--steps must be at least 4 with the PNDM scheduler, got {steps}; or pick --scheduler ddim")
        # LCM picks its steps among the distillation's (50 by default).
        most = self.pipe.scheduler.config.get("original_inference_steps") if self.scheduler_name == "LCMScheduler" else None
        if most is not None and steps > most:
            raise BadInput(f"--steps must be at most {most} with the LCM scheduler, got {steps}")

    def noise(self, seed: int, width: int, height: int) -> torch.Tensor:
        """[1, C, h, w] float32 initial latents for a seed, on the model's device."""
        return seed_noise(seed, (1, *self.family.latent_shape(width, height))).to(self.device)

    def conditioning(self, prompt: str, negative: str) -> dict[str, torch.Tensor]:
        """Named [1, ...] tensors that steer one keyframe; interpolated together between keyframes."""
        return self.family.conditioning(prompt, negative)

    def keyframe_conditioning(self, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """Every keyframe's (prompt, negative) tensors, stacked [K, ...] under their names: the
        family first sees all the texts, so that their shapes agree (--long-prompts)."""
        self.family.prepare([text for pair in pairs for text in pair])
        per_keyframe = [self.conditioning(prompt, negative) for prompt, negative in pairs]
        return {name: torch.cat([c[name] for c in per_keyframe]) for name in per_keyframe[0]}

    def optimize(
        self,
        compile: bool = False,
        channels_last: bool = False,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
    ) -> None:
        """Opt-in speed and memory switches. Attention already runs through PyTorch's
        scaled_dot_product_attention (diffusers' default processor on torch 2)."""
        pipe, family = self.pipe, self.family
        if channels_last:
            family.denoiser().to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        if vae_slicing:
            pipe.vae.enable_slicing()
        if vae_tiling:
            pipe.vae.enable_tiling()
        if compile:
            family.set_denoiser(torch.compile(family.denoiser()))
            pipe.vae.decoder = torch.compile(pipe.vae.decoder)
        self.compiled = compile

    def warm_up(self, width: int, height: int, batch_size: int, guidance: float, texts: list[str] = ()) -> None:
        """Compile now, at the render's shapes (guidance doubles the UNet's batch; `texts`, the
        job's prompts, set the conditioning's length), so a failure comes before any output is
        started and the render itself does not recompile."""
        if not self.compiled:
            return
        self.family.prepare(list(texts) or [""])
        cond = {name: value.repeat(batch_size, *([1] * (value.dim() - 1))) for name, value in self.conditioning("", "").items()}
        noise = self.noise(0, width, height).repeat(batch_size, 1, 1, 1)
        try:
            self.decode(self.denoise(noise, cond, steps=1, guidance=guidance)).cpu()
        except Exception as e:  # noqa: BLE001 - the compiler's errors run to pages
            raise LatentwalkError(f"--compile failed on this machine ({type(e).__name__}: {first_line(e)}); run without --compile") from e

    def sync(self) -> None:
        """Wait for the device, so a phase's time is its own (no-op on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def denoise(self, noise: torch.Tensor, cond: dict[str, torch.Tensor], steps: int, guidance: float,
                step_noise: StepNoise | None = None) -> torch.Tensor:  # fmt: skip
        """Denoise a batch of initial latents [B, ...] under per-row conditioning; a stochastic
        sampler's fresh noise at step k is step_noise(k, shape) (see families/common.py)."""
        return self.family.denoise(noise, cond, steps, guidance, step_noise)

    def rows(self, steps: int, guidance: float, shape: tuple[int, ...]):
        """The sampling loop over rows at their own steps (families/common.py), for latents of
        `shape` [C, h, w]."""
        from latentwalk.families.common import Rows

        return Rows(self.family, steps, guidance, shape)

    def shares_steps(self) -> bool:
        """Whether renders can start part-way with this sampler (sharing.py)."""
        from latentwalk.families.common import shares_steps

        return shares_steps(self.pipe.scheduler)

    def invert(self, picture: np.ndarray, cond: dict[str, torch.Tensor], steps: int, guidance: float) -> torch.Tensor:
        """The initial noise [1, C, h, w] (float32) from which this sampler draws `picture`
        (uint8 [H, W, 3] at the render's size) back under `cond` and `guidance`: the family's
        inversion (DDIM for the UNet families, the flow ODE backwards for SD 3 and Flux)."""
        latents = self.family.encode_image(torch.from_numpy(picture)[None])
        return self.family.invert(latents, cond, steps, guidance).float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to 8-bit RGB frames [B, H, W, 3], still on the device."""
        return self.family.decode(latents)

    def render(self, noise: torch.Tensor, cond: dict[str, torch.Tensor], steps: int, guidance: float,
               step_noise: StepNoise | None = None) -> np.ndarray:  # fmt: skip
        """Denoise and decode: uint8 frames [B, H, W, 3] on the CPU."""
        return self.decode(self.denoise(noise, cond, steps, guidance, step_noise)).cpu().numpy()


def auto_batch_size(device: torch.device, width: int, height: int, dtype: torch.dtype) -> int:
    """Frames per denoising call when none is given: 1 on the CPU (no gain, more memory), and on a
    GPU as many as fit in half its free memory at a rough 1.5 GB per 512px float16 frame
    (SD 1.5 with guidance), up to 8."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_frame = 1.5e9 * (width * height) / (512 * 512) * (2 if dtype == torch.float32 else 1)
    return max(1, min(8, int(free * 0.5 // per_frame)))
