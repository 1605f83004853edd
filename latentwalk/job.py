"""A job: everything that decides the pixels of a render, as plain data. No torch.

The CLI builds a Job from flags, `latentwalk render` builds one from a manifest, and the runner
renders it. Its key (a hash of every field that can change a pixel, plus the resolved device,
dtype and model identity) names the work directory where finished renders wait for the video,
so an interrupted job resumes and a changed one never mixes with old frames.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from latentwalk.errors import BadInput
from latentwalk.presets import load_preset
from latentwalk.schedule import EASINGS, Frame, Keyframe, check_positive, parse_size
from latentwalk.schedulers import canonical

# Built-in defaults; a preset overrides them and explicit flags override the preset.
DEFAULTS = dict(
    model="builtin:tiny",
    revision=None,  # hub models: branch, tag or commit
    steps=None,  # the model family's (catalog.py)
    guidance=None,
    size=None,  # the model's native size
    scheduler=None,  # the model's own
    negative="",
    fps=24.0,
    frames=24,
    crf=None,
    batch_size=None,  # automatic
    ease="linear",
    device="auto",
    dtype=None,
    lora=(),  # [(absolute path, scale)]: LoRA weights fused into the model, in order
    vae=None,  # a VAE replacing the model's: a diffusers folder or a .safetensors file
    family=None,  # a single-file model's family (catalog.SINGLE_FILE), when its keys do not tell
    model_config=None,  # a single-file model's configs and tokenizers: a diffusers folder or hub id
    long_prompts=False,  # encode prompts past CLIP's 77 tokens in chunks
    fit="crop",  # how an image keyframe's picture takes the frame's shape (pictures.py)
    invert_guidance=None,  # the guidance a picture is inverted under; None: the walk's
)


@dataclass
class Settings:
    model: str
    revision: str | None
    steps: int
    guidance: float
    size: tuple[int, int] | None
    scheduler: str | None
    negative: str
    fps: float
    frames: int
    crf: int | None
    batch_size: int | None
    ease: str
    device: str
    dtype: str | None
    lora: list = field(default_factory=list)
    vae: str | None = None
    family: str | None = None
    model_config: str | None = None
    long_prompts: bool = False
    fit: str = "crop"
    invert_guidance: float | None = None


def resolve_settings(preset: str | None, **flags) -> Settings:
    """Defaults, then the preset, then the flags given; steps and guidance that none of them
    sets come from the model's family. Every value checked."""
    values = dict(DEFAULTS)
    if preset is not None:
        values.update(load_preset(preset))
    values.update({key: value for key, value in flags.items() if value is not None})
    check_single_file(values)
    if values["steps"] is None or values["guidance"] is None:
        from latentwalk.catalog import defaults

        steps, guidance = defaults(values["model"], values["revision"], values["family"], values["model_config"])
        values["steps"] = steps if values["steps"] is None else values["steps"]
        values["guidance"] = guidance if values["guidance"] is None else values["guidance"]
    check_positive("--steps", values["steps"], limit=1000)
    check_positive("--fps", values["fps"], limit=240)
    check_positive("--frames", values["frames"])
    check_positive("--batch-size", values["batch_size"], limit=1024)
    if not -100 <= values["guidance"] <= 100:
        raise BadInput(f"--guidance must be between -100 and 100, got {values['guidance']}")
    if values["crf"] is not None and not 0 <= values["crf"] <= 63:
        raise BadInput(f"--crf must be from 0 to 63, got {values['crf']}")
    if values["ease"] not in EASINGS:
        raise BadInput(f"--ease must be one of {', '.join(EASINGS)}, got {values['ease']!r}")
    if values["size"] is not None:
        values["size"] = parse_size(str(values["size"]))
    if values["fit"] != "crop":
        from latentwalk.pictures import check_fit

        check_fit(values["fit"])
    if values["invert_guidance"] is not None and not 0 <= values["invert_guidance"] <= 100:
        raise BadInput(f"--invert-guidance must be from 0 to 100, got {values['invert_guidance']}")
    if values["scheduler"] is not None:
        check_sampler(values["scheduler"], values)  # milliseconds, not a model load
    values["lora"] = [parse_lora(item) if isinstance(item, str) else [str(item[0]), float(item[1])] for item in values["lora"]]
    if values["vae"] is not None:
        values["vae"] = check_weights(str(values["vae"]), "--vae", folder=True)
    return Settings(**values)


def check_single_file(values: dict) -> None:
    """--family and --model-config describe a single-file model, and only that."""
    from latentwalk.catalog import HUB_ID, SINGLE_FILE, single_file_family

    model = Path(values["model"]).expanduser()
    given = [f"--{name.replace('_', '-')}" for name in ("family", "model_config") if values[name] is not None]
    if given and not model.is_file():
        raise BadInput(f"{' and '.join(given)} {'are' if len(given) > 1 else 'is'} for a single-file --model; {values['model']!r} names its own pipeline")
    if values["family"] is not None and values["family"] not in SINGLE_FILE:
        raise BadInput(f"--family must be one of {', '.join(SINGLE_FILE)}, got {values['family']!r}")
    config = values["model_config"]
    if config is not None:
        where = Path(str(config)).expanduser()
        if where.is_dir():
            if not (where / "model_index.json").is_file():
                raise BadInput(f"--model-config {config!r} is a folder but not a diffusers model (no model_index.json)")
            values["model_config"] = str(where.resolve())
        elif where.exists() or not HUB_ID.match(str(config)):
            raise BadInput(f"--model-config {config!r}: not a diffusers folder, nor a hub id like org/name")
    if model.is_file():
        single_file_family(model, values["family"])  # a checkpoint whose keys name no family: one line now


def check_sampler(name: str, values: dict) -> None:
    """The name, and where the model's small files tell its family, that the two fit."""
    from latentwalk.catalog import pipeline_info
    from latentwalk.schedulers import SAMPLERS, names_for

    sampler = SAMPLERS[canonical(name)]
    model = values["model"]
    info = pipeline_info(model, values["revision"], values["family"], values["model_config"])
    if info is not None:
        kind = "flow" if info[0] in ("StableDiffusion3Pipeline", "FluxPipeline") else "noise"
        if sampler.kind != kind:
            raise BadInput(f"--scheduler {name} does not fit {model!r} ({info[0]}); use one of {', '.join(names_for(kind))}")


def parse_lora(text: str) -> list:
    """--lora PATH[:SCALE] (scale 1 by default): [absolute path, scale], the file checked."""
    path, scale = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
            path = head
        except ValueError:
            pass  # a colon in the path itself
    if not math.isfinite(scale) or not -10 <= scale <= 10:
        raise BadInput(f"--lora {text!r}: the scale must be a number from -10 to 10")
    return [check_weights(path, "--lora"), scale]


def check_weights(path: str, option: str, folder: bool = False) -> str:
    """A local weights file (or a diffusers folder, where allowed), as an absolute path."""
    where = Path(path).expanduser()
    if folder and where.is_dir():
        try:
            kind = json.loads((where / "config.json").read_text()).get("_class_name", "")
        except (OSError, ValueError, AttributeError):
            raise BadInput(f"{option} {path!r} is a folder but not a diffusers model (no readable config.json)") from None
        if not str(kind).startswith("AutoencoderKL"):
            raise BadInput(f"{option} {path!r} is a {kind or 'model'}, not a VAE (AutoencoderKL)")
        return str(where.resolve())
    if not where.is_file():
        raise BadInput(f"{option} {path!r} does not exist" if not where.exists() else f"{option} {path!r} is not a file")
    if where.suffix not in (".safetensors", ".bin", ".pt", ".ckpt", ".pth"):
        raise BadInput(f"{option} {path!r}: expected a .safetensors file" + (" or a diffusers folder" if folder else ""))
    return str(where.resolve())


@dataclass
class Engine:
    """How to run the model. Still part of the key: tiling, slicing and compilation can move a
    pixel by a level, and resumed frames must equal an uninterrupted run's."""

    compile: bool = False
    channels_last: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False


@dataclass
class Job:
    command: str  # generate, seed-walk or prompt-walk
    settings: Settings
    engine: Engine
    keyframes: list[Keyframe]
    # Every frame's position: known beforehand for stills and uniform walks; for a smooth walk
    # decided while rendering (None until then) and recorded in the manifest, which then
    # renders it again without deciding.
    plan: list[Frame] | None
    loop: bool = False
    noise_interp: str = "slerp"
    cond_interp: str = "lerp"
    lengths: list[int] | None = None  # frames per segment of a walk
    smooth: bool = False  # place frames where the picture changes evenly (placement.py)
    crossfade: bool = False  # spread a discontinuity over a few blended frames
    # The batches the renders were made in, [[a, b, t], ...] each: a re-render makes them in
    # the same batches, so its frames are bit-identical. Filled in by the render.
    chunks: list[list[tuple[int, int, float]]] | None = None
    # The model's jumps the placement found (see placement.py), kept for re-renders' manifests.
    discontinuities: list[dict] | None = None
    # The music (see music.py): file (absolute path), name, sha256, start and duration of the
    # section, react, on_beats, and its envelope per frame interval, which with react sets how
    # much each frame changes. Muxed into the video; it moves renders but changes no pixel.
    audio: dict | None = None
    # One part of a walk split across machines (schedule.Shard as a dict: k, n, first, end, lo,
    # hi): it renders the frames [first, end) of the whole video, and its plan holds just those.
    shard: dict | None = None
    # Shared trajectories (sharing.py): in-between renders of a smooth walk start part-way from
    # their neighbours' latents. `starts` are what the render did, [a, b, t, step, lo, hi] per
    # render of the pool, so a manifest's re-render starts each one the same way.
    share: bool = False
    starts: list[list] | None = None

    @property
    def frame_count(self) -> int:
        if self.shard is not None:
            return self.shard["end"] - self.shard["first"]
        if self.plan is not None:
            return len(self.plan)
        return sum(self.lengths) + (0 if self.loop else 1)

    @property
    def first_frame(self) -> int:
        """The index in the whole video of this output's first frame (a shard's offset)."""
        return 0 if self.shard is None else self.shard["first"]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # A keyframe's picture only where it has one: older manifests and keys stay as they were.
        data["keyframes"] = [{k: v for k, v in asdict(k).items() if k != "line" and not (k in PICTURE and v is None)} for k in self.keyframes]
        # Compact: a long walk has thousands of frames. A crossfade frame adds t2 and alpha.
        data["plan"] = None if self.plan is None else [
            [f.index, f.a, f.b, f.t] + ([f.t2, f.alpha] if f.t2 is not None else []) for f in self.plan
        ]  # fmt: skip
        data["chunks"] = None if self.chunks is None else [[list(p) for p in chunk] for chunk in self.chunks]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Job":
        """The inverse of to_dict, for manifests: checked, since a manifest is user input."""
        try:
            settings = dict(data["settings"])
            if settings.get("size") is not None:
                settings["size"] = tuple(settings["size"])
            plan = None
            if data["plan"] is not None:
                plan = [_frame(*entry) for entry in data["plan"]]
            chunks = data.get("chunks")
            if chunks is not None:
                chunks = [[(int(a), int(b), float(t)) for a, b, t in chunk] for chunk in chunks]
            job = cls(
                command=data["command"],
                settings=Settings(**settings),
                engine=Engine(**data["engine"]),
                keyframes=[Keyframe(**k) for k in data["keyframes"]],
                plan=plan,
                loop=bool(data["loop"]),
                noise_interp=data["noise_interp"],
                cond_interp=data["cond_interp"],
                lengths=[int(n) for n in data["lengths"]] if data.get("lengths") is not None else None,
                smooth=bool(data.get("smooth", False)),
                crossfade=bool(data.get("crossfade", False)),
                chunks=chunks,
                discontinuities=data.get("discontinuities"),
                audio=data.get("audio"),
                shard=data.get("shard"),
                share=bool(data.get("share", False)),
                starts=[[int(a), int(b), float(t), int(k), float(lo), float(hi)] for a, b, t, k, lo, hi in data["starts"]] if data.get("starts") else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BadInput(f"not a latentwalk job ({type(e).__name__}: {e})") from None
        job.check()
        return job

    def check(self) -> None:
        """What a hand-edited manifest could get wrong; the CLI's parsers already ensure it."""
        n = len(self.keyframes)
        for k in self.keyframes:
            if (k.image is None) != (k.image_sha256 is None) or not (k.image is None or (
                    isinstance(k.image, str) and isinstance(k.image_sha256, str) and re.fullmatch(r"[0-9a-f]{64}", k.image_sha256))):
                raise BadInput("a keyframe's picture needs both its file (image) and its sha256 (image_sha256)")  # fmt: skip
        for a, b, t, step, lo, hi in self.starts or []:
            if not (0 <= a < n and 0 <= b < n and 0 <= lo < t < hi <= 1 and step >= 0):
                raise BadInput(f"the manifest's start of the render at ({a}, {b}, t={t}) is not one a walk makes")
        if self.command not in ("generate", "seed-walk", "prompt-walk"):
            raise BadInput(f"unknown command {self.command!r}")
        if not n or (self.plan is None and not self.lengths) or self.plan == []:
            raise BadInput("no frames or no keyframes")
        if self.shard is not None:
            check_shard(self.shard, self.lengths, self.loop)
        if self.plan is not None and self.lengths is not None and len(self.plan) != self.frame_count:
            raise BadInput(f"the walk has {self.frame_count} frames but its schedule {len(self.plan)}")
        for position, f in enumerate(self.plan or []):
            ok = f.index == self.first_frame + position and 0 <= f.a < n and 0 <= f.b < n and 0.0 <= f.t <= 1.0
            if f.t2 is not None:
                ok = ok and f.t <= f.t2 <= 1.0 and 0.0 < f.alpha < 1.0
            if not ok:
                raise BadInput(f"schedule entry {position} is out of range: {f}")
        if self.lengths is not None and not all(isinstance(k, int) and 0 < k <= 1_000_000 for k in self.lengths):
            raise BadInput("segment lengths must be whole numbers from 1 to 1000000")
        if self.discontinuities is not None and not (
            isinstance(self.discontinuities, list) and all(isinstance(d, dict) for d in self.discontinuities)
        ):
            raise BadInput("discontinuities must be a list of objects")
        if self.audio is not None:
            check_audio(self.audio, self.lengths)
        for chunk in self.chunks or []:
            for a, b, t in chunk:
                if not (0 <= a < n and 0 <= b < n and 0.0 <= t <= 1.0):
                    raise BadInput(f"render position {[a, b, t]} is out of range")
        for name in ("noise_interp", "cond_interp"):
            if getattr(self, name) not in ("slerp", "lerp"):
                raise BadInput(f"{name} must be slerp or lerp")
        s = self.settings
        if not (isinstance(s.model, str) and isinstance(s.steps, int) and isinstance(s.guidance, (int, float))
                and isinstance(s.negative, str) and all(isinstance(k.prompt, str) and isinstance(k.seed, int) for k in self.keyframes)):
            raise BadInput("a setting or keyframe has the wrong type")  # fmt: skip
        check_positive("steps", self.settings.steps, limit=1000)
        if self.settings.fit != "crop":
            from latentwalk.pictures import check_fit

            check_fit(self.settings.fit)
        if not (s.invert_guidance is None or (isinstance(s.invert_guidance, (int, float)) and 0 <= s.invert_guidance <= 100)):
            raise BadInput("invert_guidance must be a number from 0 to 100, or null")
        check_positive("batch_size", self.settings.batch_size, limit=1024)


def check_shard(shard, lengths: list[int] | None, loop: bool) -> None:
    """A manifest's shard is the one its walk's shape gives (a hand-edited one is refused)."""
    from latentwalk.schedule import shard_of

    try:
        k, n, by_segments = int(shard["k"]), int(shard["n"]), shard.get("lo") is not None
        ok = lengths is not None and asdict(shard_of(k, n, lengths, loop, by_segments)) == shard
    except (KeyError, TypeError, ValueError, BadInput):
        ok = False
    if not ok:
        raise BadInput("the shard section does not fit the walk (k, n, first, end, lo, hi)")


def check_audio(audio, lengths: list[int] | None) -> None:
    a = audio
    ok = (
        isinstance(a, dict) and isinstance(a.get("file"), str) and isinstance(a.get("sha256"), str)
        and isinstance(a.get("name"), str) and a["name"] and "/" not in a["name"] and "\\" not in a["name"] and a["name"] not in (".", "..")
        and (a.get("on_beats") is None or (type(a["on_beats"]) is int and a["on_beats"] > 0))
        and (a.get("tempo") is None or (isinstance(a["tempo"], (int, float)) and not isinstance(a["tempo"], bool)))
        and all(isinstance(a.get(k), (int, float)) and not isinstance(a.get(k), bool) for k in ("start", "duration", "react"))
        and a["start"] >= 0 and a["duration"] > 0 and 0 <= a["react"] <= 1
        and isinstance(a.get("envelope"), list) and all(isinstance(v, (int, float)) and v >= 0 for v in a["envelope"])
        and (lengths is None or len(a["envelope"]) == sum(lengths))
    )  # fmt: skip
    if not ok:
        raise BadInput("the audio section must have file, name (no folders), sha256, start, duration, react (0 to 1), "
                       "on_beats (a whole number or null) and one envelope value per frame interval")


def _frame(index, a, b, t, t2=None, alpha=0.0) -> Frame:
    return Frame(int(index), int(a), int(b), float(t), None if t2 is None else float(t2), float(alpha))


@dataclass
class Options:
    """How a run behaves, as opposed to what it draws."""

    overwrite: bool = False
    quiet: bool = False
    keep_frames: bool = False
    frames_dir: Path | None = None  # a work directory of the user's choosing, always kept
    allow_pickle: bool = False


# Left out of the key: fps and crf change only the packaging; frames and easing only where the
# renders are placed, and renders are stored by their place in the walk, so a run of the same
# walk with other frame counts reuses them; device and dtype are in the identity, resolved
# ("auto" is not a device); batch size is what a resumed run takes from the interrupted one.
_NOT_PIXELS = ("fps", "crf", "frames", "ease", "batch_size", "device", "dtype")
_NOT_RENDERS = ("plan", "lengths", "smooth", "crossfade", "chunks", "loop", "discontinuities", "audio", "starts")


# Settings added after 0.1, left out of the key at their defaults: older interrupted renders resume.
_LATER = {"family": None, "model_config": None, "long_prompts": False, "shard": None, "share": False, "fit": "crop", "invert_guidance": None}
PICTURE = ("image", "image_sha256")  # a keyframe's picture: left out where it has none


def job_key(job: Job, identity: dict[str, Any]) -> str:
    """A hash of everything that can change a pixel. `identity` holds what the job alone does
    not pin down: the resolved device and dtype, the model's files and the library versions."""
    data = {k: v for k, v in job.to_dict().items() if k not in _NOT_RENDERS and not (k in _LATER and v == _LATER[k])}
    data["settings"] = {k: v for k, v in data["settings"].items() if k not in _NOT_PIXELS and not (k in _LATER and v == _LATER[k])}
    if not any(k.image for k in job.keyframes):
        for name in ("fit", "invert_guidance"):  # they shape pictures only
            data["settings"].pop(name, None)
    # A picture by its content: where it lies does not change a pixel.
    data["keyframes"] = [{k: v for k, v in kf.items() if k not in ("frames", "at", "image")} for kf in data["keyframes"]]
    if job.share and job.smooth:
        # A shared render starts from its neighbours, which the placement chose: what decides
        # the placement decides its pixels too (the frames, the easing, the music, the fades).
        audio = {k: v for k, v in (job.audio or {}).items() if k != "file"}
        data["placed"] = {"lengths": job.lengths, "loop": job.loop, "crossfade": job.crossfade, "audio": audio,
                          "ease": job.settings.ease, "frames": job.settings.frames}  # fmt: skip
    text = json.dumps({"job": data, "identity": identity}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def render_id(job: Job) -> str:
    """The whole render a shard is part of: every field of its job but the shard's own and
    what its run found (positions, batches, jumps); the audio by content, not by where it is."""
    data = {k: v for k, v in job.to_dict().items() if k not in ("plan", "chunks", "discontinuities", "shard")}
    data["keyframes"] = [{k: v for k, v in kf.items() if k != "image"} for kf in data["keyframes"]]
    if data.get("audio"):
        data["audio"] = {k: v for k, v in data["audio"].items() if k != "file"}
    # Where each part ran is not which render it is: a GPU of its own (cuda:1), a model folder
    # named from another working directory. (concat checks the device types agree.)
    settings = data["settings"] = {k: v for k, v in data["settings"].items() if k != "device"}
    if Path(settings["model"]).expanduser().exists():
        settings["model"] = str(Path(settings["model"]).expanduser().resolve())
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]
