"""`latentwalk doctor` and `latentwalk models`: what this machine and its caches offer.

doctor checks what a render needs (torch, diffusers, the bundled ffmpeg and its encoders) and
reports what it may use (GPUs and their memory, float16/bfloat16 support, the extras, the
caches); a broken necessity is a non-zero exit. models lists the diffusion models in the
Hugging Face cache with their family (from model_index.json) and size.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from latentwalk import __version__

# Encoders latentwalk's outputs need: the video codecs and the sound of --audio.
ENCODERS = {"libx264": ".mp4 video", "libvpx-vp9": ".webm video", "aac": ".mp4 sound", "libopus": ".webm sound"}
EXTRAS = {"audio": "librosa", "lora": "peft", "ray": "ray", "ui": "fastapi"}
FAMILIES = {
    "StableDiffusionPipeline": "SD 1.x/2.x",
    "LatentConsistencyModelPipeline": "SD 1.x/2.x (LCM)",
    "StableDiffusionXLPipeline": "SDXL",
    "StableDiffusion3Pipeline": "SD 3",
    "FluxPipeline": "Flux",
}


def doctor() -> dict:
    """Every check as {"name", "ok", "detail", "needed"}; needed checks that fail break renders."""
    checks: list[dict] = []

    def add(name: str, ok: bool, detail: str, needed: bool = False) -> None:
        checks.append({"name": name, "ok": bool(ok), "detail": detail, "needed": needed})

    add("latentwalk", True, f"{__version__} on Python {platform.python_version()} ({platform.machine()})")
    try:
        import torch

        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else f"ROCm {torch.version.hip}" if getattr(torch.version, "hip", None) else "CPU only"
        add("torch", True, f"{torch.__version__} ({build})", needed=True)
        devices(torch, add)
    except Exception as e:  # noqa: BLE001 - a broken install is what this command is for
        add("torch", False, f"cannot import: {e}", needed=True)
    for name in ("diffusers", "transformers"):
        try:
            __import__(name)
            add(name, True, metadata.version(name), needed=True)
        except Exception as e:  # noqa: BLE001
            add(name, False, f"cannot import: {str(e).splitlines()[0] if str(e) else type(e).__name__}", needed=True)
    ffmpeg(add)
    for extra, package in EXTRAS.items():
        try:
            version = metadata.version(package)
            add(f"extra {extra}", True, f"{package} {version}")
        except metadata.PackageNotFoundError:
            add(f"extra {extra}", False, f"{package} not installed: pip install 'latentwalk[{extra}]'")
    caches(add)
    return {"ok": all(c["ok"] for c in checks if c["needed"]), "checks": checks}


def devices(torch, add) -> None:
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            add(f"cuda:{i}", True, f"{torch.cuda.get_device_name(i)}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
            for dtype in (torch.float16, torch.bfloat16):
                add(f"cuda:{i} {str(dtype).removeprefix('torch.')}", works(torch, f"cuda:{i}", dtype), "matmul")
    else:
        add("cuda", False, "no CUDA or ROCm GPU visible to this torch build (renders run on the CPU)")
    if torch.backends.mps.is_available():
        add("mps", True, "Apple GPU")
    add("cpu bfloat16", works(torch, "cpu", torch.bfloat16), "matmul (Flux presets use bfloat16)")


def works(torch, device: str, dtype) -> bool:
    try:
        x = torch.ones(8, 8, device=device, dtype=dtype)
        return bool(torch.isfinite((x @ x).float()).all())
    except Exception:  # noqa: BLE001
        return False


def ffmpeg(add) -> None:
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        version = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
        listed = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30).stdout
    except Exception as e:  # noqa: BLE001
        add("ffmpeg", False, f"the bundled ffmpeg does not run: {e}", needed=True)
        return
    add("ffmpeg", True, f"{version.removeprefix('ffmpeg version ').split(' ')[0]} at {exe}", needed=True)
    names = {line.split()[1] for line in listed.splitlines() if len(line.split()) > 1}
    for encoder, use in ENCODERS.items():
        add(f"encoder {encoder}", encoder in names, use, needed=encoder == "libx264")


def caches(add) -> None:
    from latentwalk.workdir import cache_root

    root = cache_root()
    add("latentwalk cache", True, f"{root} ({folder_bytes(root) / 1e6:.1f} MB)")
    hub = hub_cache()
    repos = [r for r in scan_models()] if hub.is_dir() else []
    add("model cache", True, f"{hub}: {len(repos)} model(s), {sum(r['bytes'] for r in repos) / 1e9:.2f} GB (latentwalk models)")


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def scan_models() -> list[dict]:
    """The models in the Hugging Face cache: id, family (for diffusers pipelines), size, revisions."""
    from huggingface_hub import scan_cache_dir

    from latentwalk.catalog import _read

    try:
        info = scan_cache_dir(hub_cache())
    except Exception:  # noqa: BLE001 - no cache yet, or not readable: nothing to list
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        family = "-"
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            index = revision.snapshot_path / "model_index.json"
            read = _read(index, None) if index.is_file() else None
            if read is not None:
                family = FAMILIES.get(read[0], read[0])
                break
        found.append({"model": repo.repo_id, "family": family, "bytes": repo.size_on_disk, "revisions": len(repo.revisions),
                      "path": str(repo.repo_path)})
    return found


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
