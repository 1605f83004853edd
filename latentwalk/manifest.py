"""Sidecar manifests: what made a file, precisely enough to make it again.

`walk.mp4` gets `walk.mp4.json`: the job (every parameter and the expanded keyframe schedule),
the model's identity (hub revision, or local path with a content hash), the resolved scheduler,
size, dtype and device, the library versions and the timings. `latentwalk render walk.mp4.json`
re-renders it; on the same device and versions the frames are identical.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from latentwalk import __version__, models
from latentwalk.errors import BadInput
from latentwalk.job import Job
from latentwalk.workdir import atomic_write, cache_root

FORMAT = "latentwalk-manifest/1"
LIBRARIES = ("torch", "diffusers", "transformers", "numpy", "pillow", "imageio-ffmpeg")


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def versions() -> dict[str, str]:
    found = {"latentwalk": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def model_kind(model: str) -> str:
    if model.startswith("builtin:"):
        return "builtin"
    path = Path(model).expanduser()
    if path.is_dir():
        return "folder"
    return "file" if path.is_file() else "hub"


def model_files(model: str) -> list[Path]:
    path = Path(model).expanduser()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [path] if path.is_file() else []


def model_fingerprint(model: str, revision: str | None) -> dict[str, Any]:
    """Cheap identity for the job key: names, sizes and modification times of a local model's
    files (a changed file changes the key), or the hub id and requested revision."""
    kind = model_kind(model)
    if model in models.FOLDERS:
        # A retrained builtin must not reuse frames or pass for the model a manifest names.
        return {"model": model, "sha256": content_hash(str(models.folder(model)))}
    if kind in ("builtin", "hub"):
        return {"model": model, "revision": revision}
    root = Path(model).expanduser().resolve()
    files = [[str(p.relative_to(root)) if p != root else p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in model_files(str(root))]
    return {"model": str(root), "files": files}


def content_hash(model: str) -> str | None:
    """sha256 over a local model's files (names and bytes). Hashing gigabytes takes seconds, so
    the result is cached by path, size and modification time."""
    root = Path(model).expanduser().resolve()
    files = model_files(str(root))
    if not files:
        return None
    stamp = json.dumps(model_fingerprint(model, None), sort_keys=True)
    cache_file = cache_root() / "hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if cache.get(str(root), {}).get("stamp") == stamp:
        return cache[str(root)]["sha256"]
    digest = hashlib.sha256()
    for p in files:
        # Names relative to the folder (files may be links into a hub cache's blobs).
        digest.update(str(p.relative_to(root) if root.is_dir() else p.name).encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    value = digest.hexdigest()
    cache[str(root)] = {"stamp": stamp, "sha256": value}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_file, json.dumps(cache).encode())
    except OSError:
        pass  # a cache we cannot write only costs time
    return value


def model_identity(model: str, revision: str | None) -> dict[str, Any]:
    """For the manifest: kind, id or resolved path, hub commit, content hash of local files."""
    kind = model_kind(model)
    identity: dict[str, Any] = {"id": model, "kind": kind}
    if kind in ("folder", "file"):
        identity["path"] = str(Path(model).expanduser().resolve())
        identity["sha256"] = content_hash(model)
    elif model in models.FOLDERS:
        identity["sha256"] = content_hash(str(models.folder(model)))
    elif kind == "hub":
        identity["revision"] = hub_commit(model, revision) or revision
    return identity


def hub_commit(model: str, revision: str | None) -> str | None:
    """The commit a hub model was loaded from, read from the local hub cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "model_index.json", revision=revision)
    except Exception:  # noqa: BLE001 - the commit is informative; a failure must not stop a render
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def build(job: Job, resolved: dict[str, Any], output: Path, timings: dict[str, float], index: int | None = None, facts: dict | None = None) -> dict:
    manifest = {
        "format": FORMAT,
        "output": output.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "job": job.to_dict(),
        "resolved": resolved,
        "model": model_identity(job.settings.model, job.settings.revision),
        # LoRAs and a replacement VAE, by content: a re-render checks they are the same files.
        "weights": {
            "lora": [{"path": path, "scale": scale, "sha256": content_hash(path)} for path, scale in job.settings.lora],
            "vae": None if job.settings.vae is None else {"path": job.settings.vae, "sha256": content_hash(job.settings.vae)},
        },
        "versions": versions(),
        "timings": {phase: round(seconds, 3) for phase, seconds in timings.items()},
        # A walk's placement and smoothness: keyframe_frames, renders, smoothness, discontinuities.
        **(facts or {}),
    }
    if index is not None:
        manifest["index"] = index  # generate: which of the job's images this file is
    return manifest


def write(manifest: dict, path: Path, overwrite: bool) -> None:
    from latentwalk.video import write_new

    text = json.dumps(manifest, indent=1, ensure_ascii=False)
    # One line per list of numbers (a schedule entry, a size), or a long walk runs to pages.
    text = re.sub(r"\[[\d\s,.eE+-]*\]", lambda m: re.sub(r"\s+", "", m[0]).replace(",", ", "), text)
    write_new(path, lambda f: f.write((text + "\n").encode()), overwrite)


def read(path: Path) -> dict:
    """A manifest from disk, with one-line errors for anything that is not one."""
    if not path.exists():
        raise BadInput(f"manifest {str(path)!r} does not exist")
    if path.is_dir():
        raise BadInput(f"manifest {str(path)!r} is a directory")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"manifest {str(path)!r} is not UTF-8 text") from None
    except ValueError as e:
        raise BadInput(f"manifest {str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BadInput(f"{str(path)!r} is not a latentwalk manifest (no \"format\": \"{FORMAT}\")")
    for key in ("job", "resolved", "model", "versions"):
        if not isinstance(manifest.get(key), dict):
            raise BadInput(f"manifest {str(path)!r} lacks its {key!r} section")
    return manifest


def to_job(manifest: dict, path: Path, device: str | None = None) -> Job:
    """The manifest's job, with what its run resolved pinned (size, batch size, dtype, device;
    the hub commit), after checking that a local model is still the one it names."""
    job = Job.from_dict(manifest["job"])
    find_pictures(job, path)
    resolved, model = manifest["resolved"], manifest["model"]
    try:
        job.settings.size = (int(resolved["width"]), int(resolved["height"]))
        job.settings.batch_size = int(resolved["batch_size"])
        job.settings.dtype = str(resolved["dtype"])
        job.settings.device = device or str(resolved["device"])
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput(f"manifest {str(path)!r}: bad 'resolved' section ({e})") from None
    index = manifest.get("index")
    if job.plan is None:
        raise BadInput(f"manifest {str(path)!r}: its job has no frame positions")
    if job.chunks is None and job.command != "generate":
        # Written before renders were recorded: its frames were rendered in plan order, a
        # batch at a time. The same batches make them again exactly.
        job.chunks = legacy_chunks(job)
    if index is not None and (not isinstance(index, int) or not 0 <= index < len(job.plan)):
        raise BadInput(f"manifest {str(path)!r}: image index {index!r} is not in its job")
    name = job.settings.model
    if model.get("kind") == "hub" and model.get("revision"):
        job.settings.revision = model["revision"]
    if name in models.FOLDERS and model.get("sha256") not in (None, content_hash(str(models.folder(name)))):
        raise BadInput(f"{name} has changed since the manifest was written (its weights' sha256 differs; latentwalk {manifest['versions'].get('latentwalk')} made it)")
    weights = manifest.get("weights") or {}
    for entry in [*(weights.get("lora") or []), *filter(None, [weights.get("vae")])]:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not Path(path).exists():
            raise BadInput(f"the manifest's weights {path!r} are not here")
        if content_hash(path) != entry.get("sha256"):
            raise BadInput(f"weights {path!r} have changed since the manifest was written (their sha256 differs)")
    if model.get("kind") in ("folder", "file"):
        if model_kind(name) not in ("folder", "file"):
            raise BadInput(f"the manifest's model {name!r} is not here")
        if content_hash(name) != model.get("sha256"):
            raise BadInput(f"model {name!r} has changed since the manifest was written (its sha256 differs)")
    return job


def find_audio(audio: dict, manifest_file: Path, given: Path | None) -> Path:
    """The manifest's audio file: the one given, else where it was, else beside the manifest
    by name; it must be the same bytes (sha256), or the sound would not fit the placement."""
    from latentwalk.audio import check_audio_file, file_sha256

    name = audio["name"]
    if given is not None:
        check_audio_file(given, "--audio")
        if file_sha256(given) != audio["sha256"]:
            raise BadInput(f"audio {str(given)!r} is not the file the manifest was rendered with (its sha256 differs)")
        return given
    found = where_now(audio["file"], name, audio["sha256"], manifest_file)
    if found is not None:
        return found
    raise BadInput(f"the manifest needs its audio {name!r} (sha256 {audio['sha256'][:12]}...), which is not at {audio['file']!r} "
                   f"nor beside the manifest (or has changed); give it with --audio")  # fmt: skip


def where_now(recorded: str, name: str, sha256: str, manifest_file: Path) -> Path | None:
    """A file a manifest names (its audio, its pictures): where it was, else beside the manifest
    by `name`; only the same bytes (sha256) count."""
    from latentwalk.audio import file_sha256

    for path in (Path(recorded), manifest_file.parent / name):
        if path.is_file() and file_sha256(path) == sha256:
            return path
    return None


def find_pictures(job: Job, manifest_file: Path) -> None:
    """Each image keyframe's picture, by where_now; the same bytes, or the walk would not start
    from the same noise."""
    from dataclasses import replace

    for i, keyframe in enumerate(job.keyframes):
        if keyframe.image is None:
            continue
        name = Path(keyframe.image).name
        found = where_now(keyframe.image, name, keyframe.image_sha256, manifest_file)
        if found is None:
            raise BadInput(f"the manifest needs the picture {name!r} of keyframe {i} (sha256 {keyframe.image_sha256[:12]}...), which is not at "
                           f"{keyframe.image!r} nor beside the manifest (or has changed); put it back or beside the manifest")  # fmt: skip
        job.keyframes[i] = replace(keyframe, image=str(found.resolve()))


def legacy_chunks(job: Job) -> list[list[tuple[int, int, float]]]:
    from latentwalk.schedule import batched, position

    size = job.settings.batch_size or 1
    return [[position(f.a, f.b, f.t) for f in chunk] for chunk in batched(job.plan, size)]


def version_changes(manifest: dict) -> list[str]:
    """A line for each library whose version differs from the manifest's."""
    lines = []
    for name, version in versions().items():
        then = manifest["versions"].get(name, version)
        if name != "python" and then != version:
            lines.append(f"the manifest was rendered with {name} {then}, this is {version}: frames may differ slightly")
    return lines
