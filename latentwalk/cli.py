"""The command line: parse and check every input, build a job, run it, report.

Every check that needs no model runs before the model is loaded (and before torch and diffusers
are even imported), so a typo costs milliseconds, not a model load.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from inspect import Parameter, Signature, signature
from pathlib import Path
from typing import Annotated, Callable, Iterator, Optional

import typer

from latentwalk import __version__
from latentwalk.errors import EXIT_FAILURE, BadInput, Busy, Interrupted, LatentwalkError
from latentwalk.job import Engine, Job, Options, Settings, resolve_settings
from latentwalk.schedule import (
    Frame,
    Keyframe,
    check_positive,
    check_walk,
    parse_seed,
    parse_seeds,
    parse_shard,
    plan_stills,
    plan_walk,
    read_prompts,
    segment_lengths,
    shard_of,
)

app = typer.Typer(
    add_completion=True,  # --install-completion, --show-completion: bash, zsh, fish, PowerShell
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: it is the manual, and "[default: x]" must survive
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Images and latent-space interpolation videos from diffusion models.",
)

# ---- Options shared by several commands, defined once ---------------------------------------------
Model = Annotated[Optional[str], typer.Option("--model", "-m", help="Hub id (org/name), local diffusers folder, .safetensors file, builtin:shapes or builtin:tiny. [default: builtin:tiny]", show_default=False)]
Revision = Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit of a hub --model. [default: main]", show_default=False)]
Lora = Annotated[Optional[list[str]], typer.Option("--lora", help="LoRA weights fused into the model, PATH[:SCALE] (scale 1 by default); repeat for several. Needs latentwalk[lora].", show_default=False)]
Vae = Annotated[Optional[str], typer.Option("--vae", help="A VAE to use instead of the model's: a diffusers folder or a .safetensors file.", show_default=False)]
Family = Annotated[Optional[str], typer.Option("--family", help="A single-file --model's family when its keys do not tell: sd1, sd2, sdxl, sd3 or flux. [default: from the keys]", show_default=False)]
ModelConfig = Annotated[Optional[str], typer.Option("--model-config", help="For a single-file --model: a diffusers folder (or hub id) of the same architecture, whose configs and tokenizers it takes. [default: the family's base model, from the hub cache]", show_default=False)]
LongPrompts = Annotated[bool, typer.Option("--long-prompts", help="Read prompts past CLIP's 77 tokens, in chunks of 75 encoded one by one (SD 1/2, SDXL); without it they are cut, with a warning.")]
AllowPickle = Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle weights (.ckpt, .bin, .pt), which can run code when loaded. Only for sources you trust.")]
Preset = Annotated[Optional[str], typer.Option("--preset", "-p", help="Preset name (shapes, tiny, sd15, sd-turbo, sdxl, sdxl-turbo, lcm, sd3, flux-schnell, flux-dev) or path to a .toml file; flags override it.")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Denoising steps. [default: the model family's: 25 for SD 1/2, 30 SDXL, 28 SD 3, 4 LCM and Flux schnell, 28 Flux dev]", show_default=False)]
Guidance = Annotated[Optional[float], typer.Option("--guidance", "-g", help="Guidance scale; 1 or less turns classifier-free guidance off (Flux dev embeds it instead). [default: the model family's: 7.5 SD 1/2, 5 SDXL, 7 SD 3, 8 LCM, 0 Flux schnell, 3.5 Flux dev]", show_default=False)]
Size = Annotated[Optional[str], typer.Option("--size", help="WIDTHxHEIGHT or one side for a square, multiples of 8. [default: the model's]", show_default=False)]
Negative = Annotated[Optional[str], typer.Option("--negative", "-n", help="Negative prompt.", show_default=False)]
Scheduler = Annotated[Optional[str], typer.Option("--scheduler", help="Sampler: ddim, euler, euler-a, heun, dpm++-2m, dpm++-2m-karras, dpm++-2m-sde, dpm++-sde, unipc, pndm, ddpm, lcm; flow-euler, flow-heun for SD 3 and Flux. Stochastic ones draw each frame's noise from its seeds. [default: the model's]", show_default=False)]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps. [default: auto]", show_default=False)]
Dtype = Annotated[Optional[str], typer.Option("--dtype", help="float32, float16 or bfloat16. [default: float16 on GPU, float32 on CPU]", show_default=False)]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Frames per denoising call. [default: 1 on CPU, by free memory on GPU]", show_default=False)]
Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the UNet and VAE decoder: slow start, faster frames on long renders.")]
ChannelsLast = Annotated[bool, typer.Option("--channels-last", help="channels_last memory format for the UNet and VAE (often faster on GPUs).")]
VaeSlicing = Annotated[bool, typer.Option("--vae-slicing", help="Decode a batch one frame at a time (less memory).")]
VaeTiling = Annotated[bool, typer.Option("--vae-tiling", help="Decode in overlapping tiles (large sizes on small GPUs).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output (warnings and errors still go to stderr).")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout at the end.")]
Frames = Annotated[Optional[int], typer.Option("--frames", "-f", help="Frames per segment (keyframe to next keyframe). [default: 24]", show_default=False)]
Duration = Annotated[Optional[float], typer.Option("--duration", "-d", help="Total length in seconds instead of --frames; frames are shared evenly among segments.", show_default=False)]
Fps = Annotated[Optional[float], typer.Option("--fps", help="Frames per second of the video. [default: 24]", show_default=False)]
Loop = Annotated[bool, typer.Option("--loop", help="Walk back to the first keyframe for a seamless loop.")]
Ease = Annotated[Optional[str], typer.Option("--ease", help="Easing within each segment: linear, ease-in-out, ease-in or ease-out. [default: linear]", show_default=False)]
Crf = Annotated[Optional[int], typer.Option("--crf", help="Quality, lower is better: 0-51 for .mp4 (default 18), 0-63 for .webm (default 32).", show_default=False)]
FramesDir = Annotated[Optional[Path], typer.Option("--frames-dir", help="Keep every frame as a PNG in this folder; an interrupted run resumes from it.", show_default=False)]
KeepFrames = Annotated[bool, typer.Option("--keep-frames", help="Keep the work directory after success: the renders (for a later run of the walk to reuse) and the video's frames (its path is printed).")]
Share = Annotated[bool, typer.Option("--share/--no-share", help="With --smooth: in-between frames start part-way from their rendered neighbours' latents (shared trajectories): about 0.65x the model calls and 1.3x faster at 24 frames a segment, 0.5x and 1.6x at 96, frames a few levels off the unshared ones, the motion sometimes less even (scripts/bench_share.py). Keyframes, and frames beside a discontinuity, start from their own noise.")]
Smooth = Annotated[bool, typer.Option("--smooth/--no-smooth", help="Place frames where the picture changes evenly, or with the music (up to 25% more renders than frames, 50% with --audio); --no-smooth spaces them evenly in the walk parameter.")]
Crossfade = Annotated[bool, typer.Option("--crossfade/--no-crossfade", help="Spread a discontinuity of the model (a jump no placement splits) over a few blended frames.")]
Audio = Annotated[Optional[Path], typer.Option("--audio", help="Music for the video (wav, flac, mp3, ogg, m4a, ...): muxed in, and the change on screen follows its beats. Needs latentwalk[audio].", show_default=False)]
AudioStart = Annotated[Optional[float], typer.Option("--audio-start", help="Where the section of the audio starts, in seconds. [default: 0]", show_default=False)]
AudioDuration = Annotated[Optional[float], typer.Option("--audio-duration", help="Length of the section in seconds; the video is as long unless --duration or --frames say otherwise. [default: to the end]", show_default=False)]
AudioReact = Annotated[Optional[float], typer.Option("--audio-react", help="How much the music drives the motion: 0 even motion, 1 all change on the hits. [default: 0.8]", show_default=False)]
OnBeats = Annotated[Optional[int], typer.Option("--on-beats", help="Keyframes on the beat, every N beats: the first at the start, the next on beat N, then 2N, ... (the section's first beat is beat 0); the video ends on the last one's beat.", show_default=False)]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help="Render only part K of N of the walk (K/N, e.g. 2/4) into a segment video and its manifest; `latentwalk concat` joins the parts into the video one run would make. An evenly placed walk splits by whole segments, --no-smooth by frames. [default: the whole walk]", show_default=False)]
RayOpt = Annotated[Optional[str], typer.Option("--ray", help="Render the walk's parts as Ray tasks, one GPU each (CPUs without GPUs), and join them: the address of a Ray cluster, or 'local' to start one on this machine. Needs latentwalk[ray].", show_default=False)]
Workers = Annotated[Optional[int], typer.Option("--workers", help="With --ray: parts to split the walk into, rendered side by side. [default: 2]", show_default=False)]
Fit = Annotated[Optional[str], typer.Option("--fit", help="How an image= keyframe's picture takes the frame's shape: crop (the centre, at the frame's aspect), pad (all of it, on white) or stretch. [default: crop]", show_default=False)]
InvertGuidance = Annotated[Optional[float], typer.Option("--invert-guidance", help="The guidance image= pictures are inverted under (1: none). [default: the walk's --guidance]", show_default=False)]
VideoOut = Annotated[Optional[Path], typer.Option("--output", "-o", help="Video file: .mp4 (H.264), .webm (VP9) or .gif. [default: from the prompt]", show_default=False)]


# ---- Option groups: the options several commands take, each declared once -------------------------
# A command names the groups it takes (`@takes(WALK, MODEL, OUTPUT)`); they are added to its
# flags after its own, and it receives their values as one dict, `flags`. A new model setting is
# one line in MODEL (and a Settings field): every command and `batch` job files get it.
MODEL = {
    "model": (Model, None), "revision": (Revision, None), "family": (Family, None), "model_config": (ModelConfig, None),
    "lora": (Lora, None), "vae": (Vae, None), "preset": (Preset, None), "steps": (Steps, None), "guidance": (Guidance, None),
    "size": (Size, None), "negative": (Negative, None), "scheduler": (Scheduler, None), "long_prompts": (LongPrompts, False),
    "device": (Device, None), "dtype": (Dtype, None), "batch_size": (BatchSize, None), "compile": (Compile, False),
    "channels_last": (ChannelsLast, False), "vae_slicing": (VaeSlicing, False), "vae_tiling": (VaeTiling, False),
    "allow_pickle": (AllowPickle, False),
}  # fmt: skip
WALK = {
    "output": (VideoOut, None), "frames": (Frames, None), "duration": (Duration, None), "fps": (Fps, None), "loop": (Loop, False),
    "ease": (Ease, None), "smooth": (Smooth, True), "share": (Share, False), "crossfade": (Crossfade, True), "audio": (Audio, None),
    "audio_start": (AudioStart, None), "audio_duration": (AudioDuration, None), "audio_react": (AudioReact, None),
    "on_beats": (OnBeats, None), "crf": (Crf, None), "frames_dir": (FramesDir, None), "keep_frames": (KeepFrames, False),
    "shard": (ShardOpt, None), "ray": (RayOpt, None), "workers": (Workers, None), "fit": (Fit, None),
    "invert_guidance": (InvertGuidance, None),
}  # fmt: skip
OUTPUT = {"overwrite": (Overwrite, False), "quiet": (Quiet, False), "json_out": (Json, False)}
# The flags that are Settings (job.py), and so also preset keys; the rest of MODEL is the Engine.
SETTINGS = ("model", "revision", "family", "model_config", "lora", "vae", "steps", "guidance", "size", "negative",
            "scheduler", "long_prompts", "device", "dtype", "batch_size", "fps", "frames", "crf", "ease", "fit", "invert_guidance")  # fmt: skip


def takes(*groups: dict) -> Callable:
    """Give a command the options of `groups`, after its own, collected in its `flags` argument."""

    def decorate(command: Callable) -> Callable:
        own = [p for p in signature(command, eval_str=True).parameters.values() if p.name != "flags"]
        names = [name for group in groups for name in group]

        @functools.wraps(command)
        def wrapper(**kwargs):
            return command(**{k: v for k, v in kwargs.items() if k not in names}, flags={k: kwargs[k] for k in names})

        shared = [Parameter(name, Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
                  for group in groups for name, (annotation, default) in group.items()]  # fmt: skip
        wrapper.__signature__ = Signature(own + shared)
        wrapper.__annotations__ = {p.name: p.annotation for p in own + shared}
        return wrapper

    return decorate


def settings_of(flags: dict) -> tuple[Settings, Engine, bool]:
    """The job's settings (defaults, preset, flags), its engine, and --allow-pickle."""
    given = {name: flags[name] for name in SETTINGS if name in flags}
    given["long_prompts"] = given["long_prompts"] or None  # off: the preset's, if it sets one
    settings = resolve_settings(flags["preset"], **given)
    engine = Engine(flags["compile"], flags["channels_last"], flags["vae_slicing"], flags["vae_tiling"])
    return settings, engine, flags["allow_pickle"]


# What the last command run in this thread ended with, for callers in the same process (the
# studio): `error` (its one line) or `summary` (what --json prints). A caller that reports the
# error itself (the studio checking a job) sets `silent`, and gets the warnings in `warnings`.
RESULT = threading.local()


def fail(message: str, code: int) -> None:
    RESULT.error = message
    if not getattr(RESULT, "silent", False):
        typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    if getattr(RESULT, "silent", False):
        RESULT.warnings.append(message)
        return
    typer.echo(f"Warning: {message}", err=True)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn every failure into one line on stderr and an exit code. LATENTWALK_DEBUG=1 shows tracebacks."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except LatentwalkError as e:
        if os.environ.get("LATENTWALK_DEBUG"):
            raise
        fail(str(e), e.exit_code)
    except Interrupted as e:
        typer.echo(f"Interrupted by {e}.", err=True)
        raise typer.Exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        raise typer.Exit(130)
    except Exception as e:  # noqa: BLE001 - a bug still gets one line and exit 1, not a traceback
        if os.environ.get("LATENTWALK_DEBUG"):
            raise
        fail(f"{type(e).__name__}: {e} (set LATENTWALK_DEBUG=1 for the traceback)", EXIT_FAILURE)


def slug(prompt: str) -> str:
    """A file-name-safe short form of a prompt."""
    text = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return text[:48].rstrip("-") or "latentwalk"


def base_metadata(settings: Settings, resolved: dict) -> dict[str, str]:
    return {
        "model": settings.model,
        "steps": str(settings.steps),
        "guidance": f"{settings.guidance:g}",
        "width": str(resolved["width"]),
        "height": str(resolved["height"]),
        "scheduler": resolved["scheduler"],
        "dtype": resolved["dtype"],
        "latentwalk_version": __version__,
    }


# ---- Commands --------------------------------------------------------------------------------------


@app.command()
@takes(MODEL, OUTPUT)
def generate(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What to draw.", show_default=False)],
    seeds: Annotated[str, typer.Option("--seeds", "-s", help="Seeds, one image each: 1,2,3 or ranges like 1-8.")] = "0",
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs (created if missing), or a .png file name.")] = Path("."),
    flags: dict = None,
) -> None:
    """Draw one PNG per seed. Each PNG carries its parameters in text chunks, and has a
    manifest beside it (NAME.png.json) that `latentwalk render` re-renders.

    \b
    Example:
      latentwalk generate "a medieval castle" --seeds 1-3 -o out/
    """
    with one_line_errors():
        settings, engine, allow_pickle = settings_of(flags)
        quiet = flags["quiet"]
        check_prompt(prompt)
        seed_list = parse_seeds(seeds)
        repeated = sorted({s for s in seed_list if seed_list.count(s) > 1})
        if repeated:
            raise BadInput(f"--seeds lists {', '.join(map(str, repeated))} more than once")
        paths = image_paths(output, prompt, seed_list)
        keyframes = [Keyframe(prompt, seed, settings.negative) for seed in seed_list]
        job = Job("generate", settings, engine, keyframes, plan_stills(len(keyframes)))
        summary = run_job(job, dict(enumerate(paths)), Options(flags["overwrite"], quiet, allow_pickle=allow_pickle))
        summary.update(outputs=[str(p) for p in paths], images=len(paths))
        report(quiet, flags["json_out"], summary, f"Wrote {len(paths)} image(s) to {str(output)!r} in {summary['seconds']:.1f}s")


@app.command("seed-walk")
@takes(WALK, MODEL, OUTPUT)
def seed_walk(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="The prompt, fixed for the whole walk.", show_default=False)],
    seeds: Annotated[str, typer.Option("--seeds", "-s", help="Keyframe seeds, walked in order: 1,2,3.", show_default=False)],
    interp: Annotated[str, typer.Option("--interp", help="How the noise moves between seeds: slerp (keeps its statistics) or lerp.")] = "slerp",
    flags: dict = None,
) -> None:
    """One prompt; the initial noise is slerped from seed to seed, so the picture morphs.

    \b
    Example:
      latentwalk seed-walk "a medieval castle" --seeds 1,2,3 --frames 48 -o castle.mp4
    """
    with one_line_errors():
        settings, engine, _ = settings_of(flags)
        check_prompt(prompt)
        check_interp(interp)
        keyframes = [Keyframe(prompt, seed, settings.negative) for seed in parse_seeds(seeds)]
        own = {"prompt": prompt, "seeds": seeds, "interp": interp}
        walk("seed-walk", settings, engine, keyframes, flags, "seeds", Path(f"{slug(prompt)}.mp4"), interp, "lerp", own)


@app.command("prompt-walk")
@takes(WALK, MODEL, OUTPUT)
def prompt_walk(
    prompts_file: Annotated[Path, typer.Argument(metavar="PROMPTS_FILE", help="Prompts file: one keyframe per line, e.g. 'a castle at dawn | seed=7 | frames=60'.", show_default=False)],
    seed: Annotated[str, typer.Option("--seed", help="Seed of the lines that set none.")] = "0",
    interp: Annotated[str, typer.Option("--interp", help="How the text embeddings move between prompts: lerp or slerp. Seeds are always slerped.")] = "lerp",
    flags: dict = None,
) -> None:
    """A story: the text embeddings (and seeds) are interpolated from prompt to prompt.

    The prompts file has one keyframe per line; blank lines and lines starting with # are
    skipped. After the prompt, a line may set options separated by |: seed=N, frames=N (length
    of the segment from this line to the next) and negative=TEXT (its own negative prompt).

    \b
    Example, castle.txt:
      # blank lines and comments are skipped
      a castle at dawn | seed=7 | frames=60
      a castle at noon | negative=fog
      a castle at night
    latentwalk prompt-walk castle.txt -o castle.mp4

    A line may give its time instead, at=SECONDS from the start of the video (with --audio,
    from --audio-start): 'a castle at night | at=12.5'. Keyframes without one are spread evenly
    between those with one.

    A keyframe may be a picture of yours, image=FILE (PNG, JPEG or WebP, relative to the
    prompts file), with a prompt that describes it or none: the walk starts from, passes
    through or ends on it (its inversion; --fit sets how it takes the frame's shape):
      a castle at dusk | image=photos/castle.jpg
      image=sketch.png
    """
    from latentwalk.pictures import checked

    with one_line_errors():
        settings, engine, _ = settings_of(flags)
        check_interp(interp)

        keyframes = checked(read_prompts(prompts_file, parse_seed(seed, "--seed"), settings.negative), str(prompts_file))
        for k in keyframes:
            if k.image is None:  # a picture's words may be empty
                check_prompt(k.prompt)
        own = {"prompts_file": prompts_file, "seed": seed, "interp": interp}
        walk("prompt-walk", settings, engine, keyframes, flags, "prompts", prompts_file.with_suffix(".mp4"), "slerp", interp, own)


@app.command()
def render(
    manifest_file: Annotated[Path, typer.Argument(metavar="MANIFEST", help="A manifest: the NAME.json beside a video or image latentwalk made.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write. [default: the manifest's name without .json]", show_default=False)] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="Render on another device than the manifest's (frames then differ slightly).", show_default=False)] = None,
    audio: Annotated[Optional[Path], typer.Option("--audio", help="The manifest's audio file, if it is no longer where the manifest says (checked by its sha256).", show_default=False)] = None,
    allow_pickle: AllowPickle = False,
    frames_dir: FramesDir = None,
    keep_frames: KeepFrames = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Render what a manifest describes, again. The same device and library versions give
    identical frames; other versions are named in a warning.

    \b
    Example:
      latentwalk render castle.mp4.json -o castle-again.mp4
    """
    from latentwalk import manifest

    with one_line_errors():
        data = manifest.read(manifest_file)
        job = manifest.to_job(data, manifest_file, device)
        for line in manifest.version_changes(data):
            warn(line)
        target = output or manifest_file.with_name(manifest_file.name.removesuffix(".json"))
        options = Options(overwrite, quiet, keep_frames, frames_dir, allow_pickle)
        index = data.get("index")
        if index is None:
            if job.audio is not None and job.shard is None:
                from latentwalk.video import check_audio_format

                check_audio_format(target)
                job.audio["file"] = str(manifest.find_audio(job.audio, manifest_file, audio))
            elif audio is not None and job.audio is None:
                raise BadInput("--audio: the manifest's video has no audio")
            run_walk(job, target, options, json_out)
            return
        if audio is not None:
            raise BadInput("--audio: the manifest is an image's, which has no sound")
        if target.suffix.lower() != ".png":
            raise BadInput(f"output {str(target)!r}: an image manifest renders a .png")
        from latentwalk.video import check_writable_file

        for path in (target, manifest.sidecar(target)):
            check_writable_file(path, overwrite)
        # Just this image, in the batch it was made in: a batch's frames can differ in the last
        # bit. The job stays whole, so the manifest this writes renders again too.
        summary = run_job(job, {index: target}, options, only={index})
        summary["outputs"] = [str(target)]
        report(quiet, json_out, summary, f"Wrote {str(target)!r} in {summary['seconds']:.1f}s")


@app.command()
def concat(
    segments: Annotated[list[Path], typer.Argument(metavar="SEGMENT", help="The segment videos of one render made with --shard, in any order.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The joined video (.mp4 or .webm, as the segments).", show_default=False)],
    audio: Annotated[Optional[Path], typer.Option("--audio", help="The walk's audio file, if it is no longer where the manifests say (checked by its sha256).", show_default=False)] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Join the segments of a render split with --shard into the video one run would have made,
    without re-encoding (stream copy), with the music muxed once. Refuses a missing, repeated or
    foreign segment. The joined video gets a manifest that `latentwalk render` re-renders.

    \b
    Example:
      latentwalk seed-walk "a koi pond" --seeds 1,2,3,4 --shard 1/2 -o koi.part1.mp4   # machine 1
      latentwalk seed-walk "a koi pond" --seeds 1,2,3,4 --shard 2/2 -o koi.part2.mp4   # machine 2
      latentwalk concat koi.part1.mp4 koi.part2.mp4 -o koi.mp4
    """
    from latentwalk.concat import join

    with one_line_errors():
        started = time.perf_counter()
        summary = join(segments, output, overwrite, audio)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        report(quiet, json_out, summary, f"Wrote {str(output)!r}: {summary['frames']} frames from {summary['parts']} segments")


@app.command()
def inspect(
    videos: Annotated[list[Path], typer.Argument(metavar="VIDEO", help="Videos to measure: any file ffmpeg reads, ours or not.", show_default=False)],
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Draw the change per frame of every video into this .png (keyframes marked where our manifest is beside a video).", show_default=False)] = None,
    audio: Annotated[Optional[Path], typer.Option("--audio", help="Compare the change per frame with this music's envelope: their correlation, and the envelope in the plot. Needs latentwalk[audio].", show_default=False)] = None,
    audio_start: Annotated[Optional[float], typer.Option("--audio-start", help="Where the video starts in the audio, in seconds. [default: the manifest's, else 0]", show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per video.")] = False,
) -> None:
    """How evenly a video moves: the change between consecutive frames (mean absolute
    difference, 0-255), its mean, coefficient of variation, max/mean, ISTD, PDV and AID's 1-Gini.
    With --audio, how closely the change follows the music (Pearson's r with its envelope).

    \b
    Example:
      latentwalk inspect castle.mp4 other-tool.mp4 --plot change.png
      latentwalk inspect song-walk.mp4 --audio song.mp3 --plot sync.png
    """
    from latentwalk.inspect import check_plot_path, format_table, inspect_video
    from latentwalk.inspect import plot as draw

    with one_line_errors():
        if plot is not None:
            check_plot_path(plot)
        if audio is not None:
            from latentwalk.audio import check_audio_file, check_librosa

            check_audio_file(audio)
            check_librosa()
            check_audio_start(audio_start)
        elif audio_start is not None:
            raise BadInput("--audio-start needs --audio")
        results = []
        for video in videos:
            results.append(inspect_video(video, audio, audio_start))
            if json_out:
                typer.echo(json.dumps(results[-1]))
        if plot is not None:
            draw(results, plot)
        if not json_out:
            typer.echo(format_table(results))


@app.command()
def doctor(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object: ok and every check.")] = False,
) -> None:
    """Check this machine for rendering: torch and its devices (GPUs, memory, float16 and
    bfloat16), diffusers, the bundled ffmpeg and its encoders, the extras, the caches. Exits 1
    when something a render needs is broken.
    """
    from latentwalk.doctor import doctor as check

    with one_line_errors():
        report_ = check()
        if json_out:
            typer.echo(json.dumps(report_))
        else:
            width = max(len(c["name"]) for c in report_["checks"])
            for c in report_["checks"]:
                mark = "ok" if c["ok"] else ("BROKEN" if c["needed"] else "no")
                typer.echo(f"{c['name'].ljust(width)}  {mark:<6}  {c['detail']}")
            typer.echo("Everything a render needs works." if report_["ok"] else "Something a render needs is broken (BROKEN above).")
        if not report_["ok"]:
            raise typer.Exit(EXIT_FAILURE)


@app.command()
def models(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per model.")] = False,
) -> None:
    """List the models in the local Hugging Face cache (what --model can name offline), with
    their family and size on disk.
    """
    from latentwalk.doctor import hub_cache, scan_models

    with one_line_errors():
        found = scan_models()
        if json_out:
            for entry in found:
                typer.echo(json.dumps(entry))
            return
        if not found:
            typer.echo(f"No models in {str(hub_cache())!r}.")
            return
        width = max(len(e["model"]) for e in found)
        for e in found:
            typer.echo(f"{e['model'].ljust(width)}  {e['family']:<18}  {e['bytes'] / 1e9:7.2f} GB")


@app.command()
def batch(
    jobs_file: Annotated[Path, typer.Argument(metavar="JOBS_FILE", help="A TOML file of [[job]] tables (see the README).", show_default=False)],
    quiet: Quiet = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per job as it ends (state, outputs, seconds, error, and the job's own summary).")] = False,
) -> None:
    """Run a list of renders in one process: consecutive jobs of one model load it once,
    outputs that are already complete are skipped, and a failed job does not stop the others.
    Ends with a summary; exit 1 if any job failed.

    \b
    Example, nightly.toml:
      [[job]]
      command = "seed-walk"
      prompt = "a koi pond"
      seeds = "1,2,3"
      preset = "shapes"
      output = "koi.mp4"
    latentwalk batch nightly.toml
    """
    from latentwalk import runner
    from latentwalk.batch import cli_commands, command_params, read_jobs, to_argv

    with one_line_errors():
        tables = read_jobs(jobs_file)
        commands, params = cli_commands(), command_params()
        entries = [to_argv(i + 1, table, params, jobs_file.resolve().parent) for i, table in enumerate(tables)]
    results = []
    runner.LOADED = {}
    try:
        for entry in entries:
            result = run_entry(entry, commands, quiet)
            results.append(result)
            if json_out:
                typer.echo(json.dumps(result))
            elif not quiet or result["state"] == "failed":
                what = f"job {entry.number} ({entry.command}"
                what += f" -> {', '.join(result['outputs'])})" if result["outputs"] else ")"
                line = {"done": f"done in {result['seconds']:.1f}s", "skipped": "skipped: already complete"}.get(result["state"])
                typer.echo(f"{what}: {line or 'failed: ' + str(result['error'])}", err=True)
    finally:
        runner.LOADED = None
    failed = [r for r in results if r["state"] == "failed"]
    counts = {state: sum(r["state"] == state for r in results) for state in ("done", "skipped", "failed")}
    if not json_out and not (quiet and not failed):
        typer.echo(f"{len(results)} jobs: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"
                   + (f" (job {', '.join(str(r['job']) for r in failed)})" if failed else ""), err=True)  # fmt: skip
    if failed:
        raise typer.Exit(EXIT_FAILURE)


def run_entry(entry, commands: dict, quiet: bool) -> dict:
    """One job of a batch, in process, through its command's own parser and checks. Its error
    line is kept for the summary; its stderr still goes to the terminal as it runs."""
    import contextlib
    import io
    import sys

    result = {"job": entry.number, "command": entry.command, "state": "failed", "outputs": [], "seconds": 0.0, "error": entry.error}
    if entry.error is not None:
        return result
    command = commands[entry.command]
    argv = entry.argv[1:]
    outputs = planned_outputs(command, entry.command, argv)
    result["outputs"] = [str(p) for p in outputs]
    if outputs and all(p.is_file() for p in outputs) and not any(a == "--overwrite" for a in argv[: argv.index("--")]):
        result["state"] = "skipped"
        return result
    flags = ["--json"] + (["--quiet"] if quiet else [])
    argv = flags + argv
    stdout, stderr = io.StringIO(), _Tee(sys.stderr)
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = command.main(args=argv, prog_name=f"latentwalk {entry.command}", standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    except Exception as e:  # noqa: BLE001 - the parser's own errors (a bad number, a missing option), typer's click exceptions
        if not hasattr(e, "format_message"):
            raise
        stderr.lines.append(f"Error: {e.format_message()}")
        code = getattr(e, "exit_code", 2)
    result["seconds"] = round(time.perf_counter() - started, 3)
    if not code:
        result["state"] = "done"
        result["error"] = None
        try:
            result["summary"] = json.loads(stdout.getvalue().strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
    else:
        errors = [line for line in stderr.lines if line.startswith(("Error: ", "Interrupted"))]
        result["error"] = (errors[-1].removeprefix("Error: ") if errors else f"exit {code}")
        result["exit_code"] = code
        if code == 130 or code > 128:  # interrupted: the rest of the batch too
            raise typer.Exit(code)
    return result


class _Tee:
    """stderr that also keeps its lines (for a job's error in the batch's summary)."""

    def __init__(self, stream):
        self.stream, self.lines, self._part = stream, [], ""

    def write(self, text: str) -> int:
        self._part += text
        *done, self._part = self._part.split("\n")
        self.lines += done
        return self.stream.write(text)

    def __getattr__(self, name):  # isatty, fileno, flush, encoding: the terminal's
        return getattr(self.stream, name)


def planned_outputs(command, name: str, argv: list[str]) -> list[Path]:
    """The files a job will write, from its parsed arguments; [] where that needs the run, or
    where the arguments do not parse (the run then says why, rather than a skip hiding it)."""
    try:
        ctx = command.make_context(name, list(argv))
    except Exception:  # noqa: BLE001 - the run reports what is wrong
        return []
    values = ctx.params
    try:
        if name == "generate":
            output, seeds = values.get("output") or Path("."), parse_seeds(values.get("seeds") or "0")
            if output.suffix.lower() == ".png":
                return [output] if len(seeds) == 1 else [output.with_name(f"{output.stem}-{seed}.png") for seed in seeds]
            return [output / f"{slug(values['prompt'])}-{seed}.png" for seed in seeds]
        if values.get("output"):
            return [Path(values["output"])]
        default = Path(f"{slug(values['prompt'])}.mp4") if name == "seed-walk" else Path(values["prompts_file"]).with_suffix(".mp4")
        if values.get("shard"):  # as walk() names a part
            k, n = parse_shard(values["shard"])
            default = default.with_name(f"{default.stem}.part{k}of{n}{default.suffix}")
        return [default]
    except (BadInput, KeyError, TypeError):
        return []


@app.command()
def ui(
    host: Annotated[str, typer.Option("--host", help="Address to listen on; any but loopback requires a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port; 0 picks a free one.")] = 7860,
    outputs: Annotated[Path, typer.Option("--outputs", help="Folder of the jobs, their outputs and their state.")] = Path("latentwalk-ui"),
    token: Annotated[Optional[str], typer.Option("--token", help="Require this token. [default: none on loopback, a generated one elsewhere]", show_default=False)] = None,
) -> None:
    """The studio: a page and a job API in the browser, over the same render engine. Prints
    the URL to open. Needs latentwalk[ui].

    \b
    Example:
      latentwalk ui --outputs ~/walks
    """
    import socket

    with one_line_errors():
        try:
            import uvicorn

            from latentwalk.studio.app import create_app
        except ImportError:
            raise BadInput("latentwalk ui needs FastAPI and uvicorn, which are not installed: pip install 'latentwalk[ui]'") from None
        if not 0 <= port <= 65535:
            raise BadInput(f"--port must be from 0 to 65535, got {port}")
        if outputs.exists() and not outputs.is_dir():
            raise BadInput(f"--outputs {str(outputs)!r} is a file")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise BadInput(f"cannot listen on {host}:{port} ({e.strerror})") from None
        sock.listen(128)  # connections wait from now on, so the URL works as soon as it is printed
        port = sock.getsockname()[1]
        app_ = create_app(outputs, host, port, token)
        where = f"[{host}]" if ":" in host else host
        query = f"/?token={app_.state.token}" if app_.state.token else "/"
        typer.echo(f"latentwalk studio: http://{where}:{port}{query}", err=False)
        server = uvicorn.Server(uvicorn.Config(app_, log_level="warning"))
        server.run(sockets=[sock])


@app.command()
def clean(
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only list what would be removed.")] = False,
    older_than: Annotated[float, typer.Option("--older-than", help="Only work directories untouched for this many hours.")] = 0.0,
    json_out: Json = False,
) -> None:
    """Remove the work directories of interrupted renders (finished renders waiting for a
    re-run to resume them) and those kept with --keep-frames, with the lock and partial files
    a killed run left beside its output. Those of running renders stay.

    \b
    Work directories live in $LATENTWALK_CACHE/work, by default ~/.cache/latentwalk/work.
    """
    from latentwalk.workdir import list_work_dirs, remove_leftovers, remove_work_dir, work_root

    with one_line_errors():
        if not older_than >= 0:
            raise BadInput(f"--older-than must be 0 or more hours, got {older_than}")
        now, listed, freed = time.time(), [], 0
        for work in list_work_dirs():
            age_hours = (now - work.modified) / 3600
            entry = {
                "path": str(work.folder), "command": work.record.get("command"), "outputs": work.record.get("outputs", []),
                "renders": work.renders, "frames": work.record.get("frames"), "bytes": work.bytes,
                "age_hours": round(age_hours, 2), "running": work.running,
            }  # fmt: skip
            if work.running or age_hours < older_than:
                entry["action"] = "kept"
            elif dry_run:
                entry["action"] = "would remove"
            else:
                try:
                    remove_work_dir(work)
                    entry["action"] = "removed"
                    freed += work.bytes
                    for output in entry["outputs"]:
                        remove_leftovers(Path(output))
                except Busy:  # a run took it after we listed it
                    entry["action"], entry["running"] = "kept", True
            listed.append(entry)
            if not json_out:
                why = " (running)" if entry["running"] else ""
                outputs = ", ".join(entry["outputs"]) or "?"
                typer.echo(f"{entry['action']}{why}: {entry['path']}: {entry['command']} -> {outputs}, "
                           f"{work.renders} renders for {entry['frames']} frames, {work.bytes / 1e6:.1f} MB, {age_hours:.1f} h old")  # fmt: skip
        if json_out:
            typer.echo(json.dumps({"work_root": str(work_root()), "work_dirs": listed, "freed_bytes": freed}))
        elif not listed:
            typer.echo(f"No work directories in {str(work_root())!r}.")


# ---- What the commands share ---------------------------------------------------------------------


@dataclass
class MusicOptions:
    file: Path
    start: float
    duration: float | None
    react: float
    on_beats: int | None


def check_music(audio: Path | None, start: float | None, duration: float | None, react: float | None,
                on_beats: int | None, frames: int | None, total: float | None) -> MusicOptions | None:  # fmt: skip
    """The music options, checked without decoding anything."""
    from latentwalk.music import DEFAULT_REACT

    given = {"--audio-start": start, "--audio-duration": duration, "--audio-react": react, "--on-beats": on_beats}
    if audio is None:
        for name, value in given.items():
            if value is not None:
                raise BadInput(f"{name} needs --audio")
        return None
    check_audio_start(start)
    if duration is not None:
        check_positive("--audio-duration", duration, limit=24 * 3600)
    if react is not None and not 0 <= react <= 1:
        raise BadInput(f"--audio-react must be from 0 to 1, got {react}")
    if on_beats is not None:
        check_positive("--on-beats", on_beats, limit=10_000)
        if frames is not None or total is not None:
            raise BadInput("--on-beats sets where the keyframes fall; give it or --frames/--duration, not both")
    from latentwalk.audio import check_audio_file, check_librosa

    check_audio_file(audio)
    check_librosa()
    return MusicOptions(audio, start or 0.0, duration, DEFAULT_REACT if react is None else react, on_beats)


def check_audio_start(start: float | None) -> None:
    if start is not None and not (math.isfinite(start) and start >= 0):
        raise BadInput(f"--audio-start must be 0 or more seconds, got {start}")


def check_outputs(output: Path, overwrite: bool, frames_dir: Path | None, music: MusicOptions | None) -> None:
    """The video, its manifest and the frames folder, before anything is decoded or loaded."""
    from latentwalk.manifest import sidecar
    from latentwalk.video import check_audio_format, check_video_path, check_writable_file

    check_video_path(output, overwrite)
    if music is not None:
        check_audio_format(output)
    check_writable_file(sidecar(output), overwrite)
    if frames_dir is not None:
        check_frames_dir(frames_dir)


def walk(command: str, settings: Settings, engine: Engine, keyframes: list[Keyframe], flags: dict, what: str,
         default_output: Path, noise_interp: str, cond_interp: str, own: dict) -> None:  # fmt: skip
    """What seed-walk and prompt-walk share once their keyframes are known: every check that
    needs no model, then the job and the run (here, or in parts on Ray)."""
    frames, duration, loop, quiet = flags["frames"], flags["duration"], flags["loop"], flags["quiet"]
    farm = check_farm(flags)
    check_length(frames, duration)
    music = check_music(flags["audio"], flags["audio_start"], flags["audio_duration"], flags["audio_react"], flags["on_beats"], frames, duration)
    check_walk(keyframes, loop, what)
    shard = None if flags["shard"] is None else parse_shard(flags["shard"])
    if shard is not None:
        default_output = default_output.with_name(f"{default_output.stem}.part{shard[0]}of{shard[1]}{default_output.suffix}")
    output = flags["output"] or default_output
    if shard is not None and output.suffix.lower() not in (".mp4", ".webm"):
        raise BadInput(f"--shard: a segment is an .mp4 or .webm (joined without re-encoding), got {str(output)!r}")
    check_outputs(output, flags["overwrite"], flags["frames_dir"], music)
    job = walk_job(command, settings, engine, keyframes, loop, duration, frames, noise_interp, cond_interp,
                   flags["smooth"], flags["crossfade"], music, quiet, shard)  # fmt: skip
    job.share = flags["share"] and job.smooth  # sharing follows the placement's rounds
    if farm is not None:
        from latentwalk import farm as ray_farm
        from latentwalk.job import render_id

        address, workers = farm
        most = len(job.lengths) if flags["smooth"] else job.frame_count
        argv = ray_farm.to_argv(command, own, flags, settings.lora)
        summary = ray_farm.render(argv, output, min(workers, most), render_id(job), address, workers, flags["overwrite"], quiet)
        report(quiet, flags["json_out"], summary, f"Wrote {str(output)!r}: {summary['frames']} frames from {summary['parts']} parts on Ray, {summary['seconds']:.1f}s")
        return
    options = Options(flags["overwrite"], quiet, flags["keep_frames"], flags["frames_dir"], flags["allow_pickle"])
    run_walk(job, output, options, flags["json_out"])


def check_farm(flags: dict) -> tuple[str, int] | None:
    """--ray and --workers, checked before anything is analysed or loaded."""
    address, workers = flags["ray"], flags["workers"]
    if address is None:
        if workers is not None:
            raise BadInput("--workers needs --ray")
        return None
    if flags["shard"] is not None:
        raise BadInput("--ray splits the walk itself; give --ray or --shard, not both")
    if flags["frames_dir"] is not None or flags["keep_frames"]:
        option = "--frames-dir" if flags["frames_dir"] is not None else "--keep-frames"
        raise BadInput(f"{option} with --ray: each part keeps its own frames; run the parts with --shard to keep them")
    if workers is not None:
        check_positive("--workers", workers, limit=10_000)
    from latentwalk.farm import check_ray

    check_ray()
    return address, workers or 2


def walk_job(command: str, settings: Settings, engine: Engine, keyframes: list[Keyframe], loop: bool, duration: float | None,
             frames: int | None, noise_interp: str, cond_interp: str, smooth: bool, crossfade: bool,
             music: MusicOptions | None = None, quiet: bool = True, shard: tuple[int, int] | None = None) -> Job:  # fmt: skip
    """A walk: its segments' lengths (from --frames, --duration, keyframe times or the music),
    and the frames' positions unless they are placed while rendering (smooth)."""
    from latentwalk.music import frame_envelope, keyframe_lengths, walk_profile

    end = None
    if duration is not None:
        check_positive("--duration", duration, limit=24 * 3600)
        check_positive("--duration x --fps (frames)", round(duration * settings.fps))
        end = duration
    last = keyframes[-1]
    if any(k.at is not None for k in keyframes) and frames is not None:
        raise BadInput("the prompts file gives keyframe times (at=) and --frames gives lengths; give one or the other")
    if duration is not None and not loop and last.at is not None and round(last.at * settings.fps) != round(duration * settings.fps) - 1:
        raise BadInput(f"line {last.line}: at={last.at:g} ends the video, but --duration says {duration:g} s; drop one")
    analysis = None
    if music is not None:
        from latentwalk.audio import analyze

        sets_length = end is None and frames is None and music.on_beats is None

        def check_section(seconds: float) -> None:
            count, segments = round(seconds * settings.fps), len(keyframes) if loop else len(keyframes) - 1
            if count < segments + (0 if loop else 1):
                raise BadInput(
                    f"the audio section is {seconds:.3g} s, {count} frame{'s' if count != 1 else ''} at {settings.fps:g} fps: "
                    f"too few for {len(keyframes)} keyframes; give a longer --audio-duration"
                )

        if sets_length and music.duration is not None:
            check_section(music.duration)  # before the analysis: it takes seconds
        analysis = analyze(music.file, music.start, music.duration)
        if sets_length:
            end = analysis.duration  # the video is as long as the section
            check_section(end)
    timed = any(k.at is not None for k in keyframes) or (music is not None and music.on_beats is not None)
    if timed:
        lines = [k.line for k in keyframes]
        pins = [k.at for k in keyframes]
        beats = analysis.beats if analysis is not None else None
        every = music.on_beats if music is not None else None
        lengths = keyframe_lengths(len(keyframes), loop, settings.fps, pins, end, settings.frames, beats, every, lines)
    else:
        # Every segment's own frames= decides the video's length over the audio section's.
        own = all(k.frames is not None for k in keyframes[: len(keyframes) if loop else -1])
        total = None if end is None or (duration is None and own) else round(end * settings.fps)
        source = "--duration" if duration is not None else "the audio section"
        lengths = segment_lengths(keyframes, loop, frames=settings.frames, total=total, source=source)
    audio = None
    if analysis is not None:
        if not quiet:
            tempo = f", {analysis.tempo:g} bpm" if analysis.tempo else ""
            typer.echo(f"latentwalk: {music.file.name}: {analysis.duration:.2f} s from {music.start:g} s, "
                       f"{len(analysis.onsets)} onsets, {len(analysis.beats)} beats{tempo}", err=True)  # fmt: skip
        if not analysis.onsets:
            warn(f"{music.file.name} has no onsets from {music.start:g} s (silence?): the motion is even")
        envelope = frame_envelope(analysis.envelope, analysis.rate, settings.fps, sum(lengths))
        audio = {
            "file": str(music.file.resolve()), "name": music.file.name, "sha256": analysis.sha256,
            "start": music.start, "duration": round(analysis.duration, 6), "react": music.react,
            "on_beats": music.on_beats, "tempo": analysis.tempo, "envelope": envelope,
        }  # fmt: skip
    plan = None
    if not smooth:
        plan = plan_walk(lengths, loop, settings.ease, walk_profile(audio, lengths))
    part = None
    if shard is not None:  # after the placement's inputs (lengths, music): each shard computes them all
        part = asdict(shard_of(*shard, lengths, loop, by_segments=smooth))
        plan = None if plan is None else [f for f in plan if part["first"] <= f.index < part["end"]]
    return Job(command, settings, engine, keyframes, plan, loop, noise_interp, cond_interp, lengths, smooth, crossfade and smooth,
               audio=audio, shard=part)  # fmt: skip


def run_walk(job: Job, output: Path, options: Options, json_out: bool) -> None:
    check_outputs(output, options.overwrite, options.frames_dir, None)
    summary = run_job(job, output, options)
    summary.update(output=str(output), fps=job.settings.fps, keyframes=len(job.keyframes), loop=job.loop,
                   frames_per_second=round(job.frame_count / summary["seconds"], 3))  # fmt: skip
    if job.shard is not None:
        summary["shard"] = job.shard
    n, seconds = job.frame_count, summary["seconds"]
    line = f"Wrote {str(output)!r}: {n} frames from {summary['renders']} renders, {summary['width']}x{summary['height']}, {seconds:.1f}s ({n / seconds:.2f} frames/s)"
    for jump in summary.get("discontinuities", []):
        count = jump["crossfade_frames"]
        faded = f", crossfaded over {count} frame{'s' if count > 1 else ''}" if count else ""
        warn(f"the model jumps at frame {jump['frame']} ({jump['over_mean']}x its segment's mean change; no placement splits it{faded})")
    if "frames_dir" in summary:
        line += f"; frames in {summary['frames_dir']!r}"
    report(options.quiet, json_out, summary, line)


def run_job(job: Job, output: Path | dict[int, Path], options: Options, only: set[int] | None = None) -> dict:
    """A video for a Path, else one image per (frame index: path)."""
    from latentwalk.runner import ImageSink, VideoSink, run

    if isinstance(output, dict):
        sink = ImageSink(output)
        return run(job, sink, options, warn, lambda frame, resolved: image_text(job, frame, resolved), only)
    # A shard's segment has no sound: `concat` muxes it once into the joined video.
    audio = None if job.audio is None or job.shard is not None else (Path(job.audio["file"]), float(job.audio["start"]))
    sink = VideoSink(output, job.settings.fps, job.settings.crf, audio)
    return run(job, sink, options, warn, lambda frame, resolved: frame_text(job, frame, resolved))


def image_text(job: Job, frame: Frame, resolved: dict) -> dict[str, str]:
    keyframe = job.keyframes[frame.a]
    text = {"prompt": keyframe.prompt, "negative_prompt": keyframe.negative, "seed": str(keyframe.seed), **base_metadata(job.settings, resolved)}
    text["parameters"] = a1111_parameters(text)
    return text


def frame_text(job: Job, frame: Frame, resolved: dict) -> dict[str, str]:
    """Where a frame is on the walk, in its PNG."""
    ka, kb = job.keyframes[frame.a], job.keyframes[frame.b]
    return {
        "frame": str(frame.index), "t": f"{frame.position:.6f}",
        "prompt": ka.prompt, "seed": str(ka.seed), "negative_prompt": ka.negative,
        "to_prompt": kb.prompt, "to_seed": str(kb.seed), **base_metadata(job.settings, resolved),
    }  # fmt: skip


def check_prompt(prompt: str) -> None:
    if not prompt.strip():
        raise BadInput("the prompt is empty")


def check_length(frames: int | None, duration: float | None) -> None:
    if frames is not None and duration is not None:
        raise BadInput("give --frames (per segment) or --duration (whole video), not both")


def check_interp(interp: str) -> None:
    if interp not in ("slerp", "lerp"):
        raise BadInput(f"--interp must be slerp or lerp, got {interp!r}")


def image_paths(output: Path, prompt: str, seeds: list[int]) -> list[Path]:
    """Where generate writes: a folder of <prompt>-<seed>.png, or a .png name (-<seed> added for
    several seeds). Existing files are checked by the runner, which knows if it resumes."""
    from latentwalk.video import check_writable_dir

    if output.suffix.lower() == ".png":
        if len(seeds) == 1:
            paths = [output]
        else:
            paths = [output.with_name(f"{output.stem}-{seed}.png") for seed in seeds]
    else:
        if output.exists() and not output.is_dir():
            raise BadInput(f"output {str(output)!r} is a file; give a folder or a .png name")
        if not output.exists():
            if not output.parent.is_dir():
                raise BadInput(f"output directory {str(output.parent)!r} does not exist")
            try:
                output.mkdir()
            except OSError as e:
                raise BadInput(f"cannot create output folder {str(output)!r}: {e.strerror}") from None
        paths = [output / f"{slug(prompt)}-{seed}.png" for seed in seeds]
    for path in paths:
        if path.is_dir():
            raise BadInput(f"output {str(path)!r} is a directory; give a file name")
    check_writable_dir(paths[0].parent, "output directory")
    return paths


def check_frames_dir(folder: Path) -> None:
    """Cheap checks only; whether its frames belong to this render is known once it is opened."""
    from latentwalk.video import check_writable_dir

    if folder.exists() and not folder.is_dir():
        raise BadInput(f"--frames-dir {str(folder)!r} is a file")
    if not folder.exists() and not folder.parent.is_dir():
        raise BadInput(f"--frames-dir parent {str(folder.parent)!r} does not exist")
    check_writable_dir(folder if folder.exists() else folder.parent, "--frames-dir")


def a1111_parameters(text: dict[str, str]) -> str:
    """The `parameters` chunk other tools (AUTOMATIC1111, ComfyUI readers) understand."""
    lines = [text["prompt"]]
    if text["negative_prompt"]:
        lines.append(f"Negative prompt: {text['negative_prompt']}")
    lines.append(
        f"Steps: {text['steps']}, Sampler: {text['scheduler']}, CFG scale: {text['guidance']}, "
        f"Seed: {text['seed']}, Size: {text['width']}x{text['height']}, Model: {text['model']}"
    )
    return "\n".join(lines)


def report(quiet: bool, json_out: bool, summary: dict, line: str) -> None:
    RESULT.summary = summary
    if json_out:
        typer.echo(json.dumps(summary))
    elif not quiet:
        typer.echo(line, err=True)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"latentwalk {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Images and latent-space interpolation videos from diffusion models."""


def main() -> None:
    # Libraries' deprecation notices are for developers, not for the people running renders.
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    app(prog_name="latentwalk")
