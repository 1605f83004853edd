"""The command line: parse and check every input, build a plan, run it, report.

Every check that needs no model runs before the model is loaded (and before torch and diffusers
are even imported), so a typo costs milliseconds, not a model load.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from latentwalk import __version__
from latentwalk.errors import EXIT_FAILURE, BadInput, LatentwalkError
from latentwalk.presets import load_preset
from latentwalk.schedule import (
    EASINGS,
    Keyframe,
    check_positive,
    check_walk,
    parse_seed,
    parse_seeds,
    parse_size,
    plan_stills,
    plan_walk,
    read_prompts,
    segment_lengths,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: it is the manual, and "[default: x]" must survive
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Images and latent-space interpolation videos from diffusion models.",
)

# Built-in defaults; a preset overrides them and explicit flags override the preset.
DEFAULTS = dict(
    model="builtin:tiny",
    steps=25,
    guidance=7.5,
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
)

# ---- Options shared by several commands, defined once ---------------------------------------------
Model = Annotated[Optional[str], typer.Option("--model", "-m", help="Hub id (org/name), local diffusers folder, .safetensors file, or builtin:tiny. [default: builtin:tiny]", show_default=False)]
Preset = Annotated[Optional[str], typer.Option("--preset", "-p", help="Preset name (tiny, sd15, sd-turbo) or path to a .toml file; flags override it.")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Denoising steps. [default: 25]", show_default=False)]
Guidance = Annotated[Optional[float], typer.Option("--guidance", "-g", help="Classifier-free guidance scale; 1 or less turns it off. [default: 7.5]", show_default=False)]
Size = Annotated[Optional[str], typer.Option("--size", help="WIDTHxHEIGHT or one side for a square, multiples of 8. [default: the model's]", show_default=False)]
Negative = Annotated[Optional[str], typer.Option("--negative", "-n", help="Negative prompt.", show_default=False)]
Scheduler = Annotated[Optional[str], typer.Option("--scheduler", help="ddim, euler, dpm++, unipc, pndm or heun. [default: the model's]", show_default=False)]
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
FramesDir = Annotated[Optional[Path], typer.Option("--frames-dir", help="Also save every frame as a PNG in this folder.", show_default=False)]
VideoOut = Annotated[Optional[Path], typer.Option("--output", "-o", help="Video file: .mp4 (H.264), .webm (VP9) or .gif. [default: from the prompt]", show_default=False)]


def fail(message: str, code: int) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
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
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        raise typer.Exit(130)
    except Exception as e:  # noqa: BLE001 - a bug still gets one line and exit 1, not a traceback
        if os.environ.get("LATENTWALK_DEBUG"):
            raise
        fail(f"{type(e).__name__}: {e} (set LATENTWALK_DEBUG=1 for the traceback)", EXIT_FAILURE)


@dataclass
class Settings:
    model: str
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


def resolve_settings(preset: str | None, **flags) -> Settings:
    """Defaults, then the preset, then the flags given; every value checked."""
    values = dict(DEFAULTS)
    if preset is not None:
        values.update(load_preset(preset))
    values.update({key: value for key, value in flags.items() if value is not None})
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
    return Settings(**values)


def slug(prompt: str) -> str:
    """A file-name-safe short form of a prompt."""
    text = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return text[:48].rstrip("-") or "latentwalk"


@dataclass
class Engine:
    """How to run the model, as opposed to what to draw."""

    compile: bool = False
    channels_last: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False


def load_backend(settings: Settings, engine: Engine, quiet: bool, timings: dict):
    """Import torch and diffusers only now, after all cheap checks passed.
    Returns the backend, the frame size and the batch size."""
    from latentwalk.backend import Backend, auto_batch_size, load_pipeline, resolve_device, resolve_dtype

    started = time.perf_counter()
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    pipe = load_pipeline(settings.model, dtype)
    backend = Backend(pipe, settings.model, device, dtype, scheduler=settings.scheduler, warn=warn)
    width, height = settings.size or backend.default_size
    backend.check_size(width, height)
    backend.check_steps(settings.steps)
    batch_size = settings.batch_size or auto_batch_size(device, width, height, dtype)
    backend.optimize(engine.compile, engine.channels_last, engine.vae_slicing, engine.vae_tiling)
    timings["load"] += time.perf_counter() - started
    if settings.model == "builtin:tiny" and not quiet:
        warn("builtin:tiny is a random toy model and draws noise; use --preset sd-turbo or --model for pictures")
    started = time.perf_counter()
    backend.warm_up(width, height, batch_size, settings.guidance)
    if engine.compile:
        timings["compile"] += time.perf_counter() - started
    return backend, width, height, batch_size


def base_metadata(settings: Settings, backend, width: int, height: int) -> dict[str, str]:
    return {
        "model": settings.model,
        "steps": str(settings.steps),
        "guidance": f"{settings.guidance:g}",
        "width": str(width),
        "height": str(height),
        "scheduler": backend.scheduler_name,
        "dtype": str(backend.dtype).removeprefix("torch."),
        "latentwalk_version": __version__,
    }


# ---- Commands --------------------------------------------------------------------------------------


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What to draw.", show_default=False)],
    seeds: Annotated[str, typer.Option("--seeds", "-s", help="Seeds, one image each: 1,2,3 or ranges like 1-8.")] = "0",
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the PNGs (created if missing), or a .png file name.")] = Path("."),
    model: Model = None,
    preset: Preset = None,
    steps: Steps = None,
    guidance: Guidance = None,
    size: Size = None,
    negative: Negative = None,
    scheduler: Scheduler = None,
    device: Device = None,
    dtype: Dtype = None,
    batch_size: BatchSize = None,
    compile: Compile = False,
    channels_last: ChannelsLast = False,
    vae_slicing: VaeSlicing = False,
    vae_tiling: VaeTiling = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """Draw one PNG per seed. Each PNG carries its parameters in text chunks.

    \b
    Example:
      latentwalk generate "a medieval castle" --seeds 1-3 -o out/
    """
    with one_line_errors():
        started = time.perf_counter()
        settings = resolve_settings(
            preset, model=model, steps=steps, guidance=guidance, size=size, negative=negative,
            scheduler=scheduler, device=device, dtype=dtype, batch_size=batch_size,
        )  # fmt: skip
        check_prompt(prompt)
        seed_list = parse_seeds(seeds)
        repeated = sorted({s for s in seed_list if seed_list.count(s) > 1})
        if repeated:
            raise BadInput(f"--seeds lists {', '.join(map(str, repeated))} more than once")
        paths = image_paths(output, prompt, seed_list, overwrite)

        from latentwalk.progress import Progress, pick_mode
        from latentwalk.render import RenderSpec, render_frames, write_frames
        from latentwalk.video import save_png

        timings = defaultdict(float)
        engine = Engine(compile, channels_last, vae_slicing, vae_tiling)
        backend, width, height, batch = load_backend(settings, engine, quiet, timings)
        keyframes = [Keyframe(prompt, seed, settings.negative) for seed in seed_list]
        spec = RenderSpec(keyframes, plan_stills(len(keyframes)), width, height, settings.steps, settings.guidance, batch, timings=timings)
        metadata = base_metadata(settings, backend, width, height)

        with Progress(len(paths), "generate", pick_mode(quiet)) as progress:

            def write(frame, image):
                text = {"prompt": prompt, "negative_prompt": settings.negative, "seed": str(keyframes[frame.a].seed), **metadata}
                text["parameters"] = a1111_parameters(text)
                save_png(image, paths[frame.index], text, overwrite)
                progress.advance()

            write_frames(render_frames(backend, spec), write, timings)
        seconds = time.perf_counter() - started
        report(
            quiet, json_out,
            {"command": "generate", "outputs": [str(p) for p in paths], "images": len(paths),
             "width": width, "height": height, "model": settings.model, "batch_size": batch,
             "seconds": round(seconds, 3), "timings": rounded(timings)},
            f"Wrote {len(paths)} image(s) to {str(output)!r} in {seconds:.1f}s",
        )  # fmt: skip


@app.command("seed-walk")
def seed_walk(
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="The prompt, fixed for the whole walk.", show_default=False)],
    seeds: Annotated[str, typer.Option("--seeds", "-s", help="Keyframe seeds, walked in order: 1,2,3.", show_default=False)],
    output: VideoOut = None,
    frames: Frames = None,
    duration: Duration = None,
    fps: Fps = None,
    loop: Loop = False,
    interp: Annotated[str, typer.Option("--interp", help="How the noise moves between seeds: slerp (keeps its statistics) or lerp.")] = "slerp",
    ease: Ease = None,
    model: Model = None,
    preset: Preset = None,
    steps: Steps = None,
    guidance: Guidance = None,
    size: Size = None,
    negative: Negative = None,
    scheduler: Scheduler = None,
    device: Device = None,
    dtype: Dtype = None,
    batch_size: BatchSize = None,
    compile: Compile = False,
    channels_last: ChannelsLast = False,
    vae_slicing: VaeSlicing = False,
    vae_tiling: VaeTiling = False,
    crf: Crf = None,
    frames_dir: FramesDir = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_out: Json = False,
) -> None:
    """One prompt; the initial noise is slerped from seed to seed, so the picture morphs.

    \b
    Example:
      latentwalk seed-walk "a medieval castle" --seeds 1,2,3 --frames 48 -o castle.mp4
    """
    with one_line_errors():
        settings = resolve_settings(
            preset, model=model, steps=steps, guidance=guidance, size=size, negative=negative,
            scheduler=scheduler, device=device, dtype=dtype, batch_size=batch_size, fps=fps,
            frames=frames, crf=crf, ease=ease,
        )  # fmt: skip
        check_prompt(prompt)
        check_interp(interp)
        check_length(frames, duration)
        keyframes = [Keyframe(prompt, seed, settings.negative) for seed in parse_seeds(seeds)]
        check_walk(keyframes, loop, "seeds")
        run_walk("seed-walk", keyframes, loop, settings, output or Path(f"{slug(prompt)}.mp4"),
                 duration, frames_dir, overwrite, quiet, json_out, noise_interp=interp, cond_interp="lerp",
                 engine=Engine(compile, channels_last, vae_slicing, vae_tiling))  # fmt: skip


@app.command("prompt-walk")
def prompt_walk(
    prompts_file: Annotated[Path, typer.Argument(metavar="PROMPTS_FILE", help="Prompts file: one keyframe per line, e.g. 'a castle at dawn | seed=7 | frames=60'.", show_default=False)],
    output: VideoOut = None,
    seed: Annotated[str, typer.Option("--seed", help="Seed of the lines that set none.")] = "0",
    frames: Frames = None,
    duration: Duration = None,
    fps: Fps = None,
    loop: Loop = False,
    interp: Annotated[str, typer.Option("--interp", help="How the text embeddings move between prompts: lerp or slerp. Seeds are always slerped.")] = "lerp",
    ease: Ease = None,
    model: Model = None,
    preset: Preset = None,
    steps: Steps = None,
    guidance: Guidance = None,
    size: Size = None,
    negative: Negative = None,
    scheduler: Scheduler = None,
    device: Device = None,
    dtype: Dtype = None,
    batch_size: BatchSize = None,
    compile: Compile = False,
    channels_last: ChannelsLast = False,
    vae_slicing: VaeSlicing = False,
    vae_tiling: VaeTiling = False,
    crf: Crf = None,
    frames_dir: FramesDir = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_out: Json = False,
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
    """
    with one_line_errors():
        settings = resolve_settings(
            preset, model=model, steps=steps, guidance=guidance, size=size, negative=negative,
            scheduler=scheduler, device=device, dtype=dtype, batch_size=batch_size, fps=fps,
            frames=frames, crf=crf, ease=ease,
        )  # fmt: skip
        check_interp(interp)
        check_length(frames, duration)
        keyframes = read_prompts(prompts_file, parse_seed(seed, "--seed"), settings.negative)
        for k in keyframes:
            check_prompt(k.prompt)
        check_walk(keyframes, loop, "prompts")
        run_walk("prompt-walk", keyframes, loop, settings, output or prompts_file.with_suffix(".mp4"),
                 duration, frames_dir, overwrite, quiet, json_out, noise_interp="slerp", cond_interp=interp,
                 engine=Engine(compile, channels_last, vae_slicing, vae_tiling))  # fmt: skip


# ---- What the commands share ---------------------------------------------------------------------


def run_walk(
    command: str,
    keyframes: list[Keyframe],
    loop: bool,
    settings: Settings,
    output: Path,
    duration: float | None,
    frames_dir: Path | None,
    overwrite: bool,
    quiet: bool,
    json_out: bool,
    noise_interp: str,
    cond_interp: str,
    engine: Engine,
) -> None:
    started = time.perf_counter()
    total = None
    if duration is not None:
        check_positive("--duration", duration, limit=24 * 3600)
        total = round(duration * settings.fps)
        check_positive("--duration x --fps (frames)", total)
    lengths = segment_lengths(keyframes, loop, frames=settings.frames, total=total)
    plan = plan_walk(lengths, loop, settings.ease)

    from latentwalk.video import check_video_path

    check_video_path(output, overwrite)
    if frames_dir is not None:
        prepare_frames_dir(frames_dir, overwrite)

    from latentwalk.progress import Progress, pick_mode
    from latentwalk.render import RenderSpec, render_frames, write_frames
    from latentwalk.video import VideoWriter, save_png

    timings = defaultdict(float)
    backend, width, height, batch = load_backend(settings, engine, quiet, timings)
    spec = RenderSpec(keyframes, plan, width, height, settings.steps, settings.guidance, batch, noise_interp, cond_interp, timings)
    metadata = base_metadata(settings, backend, width, height)
    with VideoWriter(output, width, height, settings.fps, settings.crf, overwrite) as video, \
            Progress(len(plan), command, pick_mode(quiet)) as progress:  # fmt: skip

        def write(frame, image):
            video.write(image)
            if frames_dir is not None:
                ka, kb = keyframes[frame.a], keyframes[frame.b]
                text = {
                    "frame": str(frame.index), "t": f"{frame.t:.6f}",
                    "prompt": ka.prompt, "seed": str(ka.seed), "negative_prompt": ka.negative,
                    "to_prompt": kb.prompt, "to_seed": str(kb.seed), **metadata,
                }  # fmt: skip
                save_png(image, frames_dir / f"frame_{frame.index:06d}.png", text, overwrite=True)
            progress.advance()

        write_frames(render_frames(backend, spec), write, timings)
    seconds = time.perf_counter() - started
    report(
        quiet, json_out,
        {"command": command, "output": str(output), "frames": len(plan), "width": width, "height": height,
         "fps": settings.fps, "keyframes": len(keyframes), "loop": loop, "model": settings.model,
         "batch_size": batch, "seconds": round(seconds, 3), "frames_per_second": round(len(plan) / seconds, 3),
         "timings": rounded(timings)},
        f"Wrote {str(output)!r}: {len(plan)} frames, {width}x{height}, {seconds:.1f}s ({len(plan) / seconds:.2f} frames/s)",
    )  # fmt: skip


def check_prompt(prompt: str) -> None:
    if not prompt.strip():
        raise BadInput("the prompt is empty")


def check_length(frames: int | None, duration: float | None) -> None:
    if frames is not None and duration is not None:
        raise BadInput("give --frames (per segment) or --duration (whole video), not both")


def check_interp(interp: str) -> None:
    if interp not in ("slerp", "lerp"):
        raise BadInput(f"--interp must be slerp or lerp, got {interp!r}")


def image_paths(output: Path, prompt: str, seeds: list[int], overwrite: bool) -> list[Path]:
    """Where generate writes: a folder of <prompt>-<seed>.png, or a .png name (-<seed> added for
    several seeds). Checked up front: no existing file is replaced without --overwrite."""
    from latentwalk.video import check_writable_file

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
        check_writable_file(path, overwrite)
    return paths


def prepare_frames_dir(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"--frames-dir {str(folder)!r} is a file")
    if folder.is_dir():
        if any(folder.glob("frame_*.png")) and not overwrite:
            raise BadInput(f"--frames-dir {str(folder)!r} already holds frames; pass --overwrite to replace them")
    elif not folder.parent.is_dir():
        raise BadInput(f"--frames-dir parent {str(folder.parent)!r} does not exist")
    else:
        folder.mkdir()
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"--frames-dir {str(folder)!r} is not writable")


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


def rounded(timings: dict[str, float]) -> dict[str, float]:
    return {phase: round(seconds, 3) for phase, seconds in timings.items()}


def report(quiet: bool, json_out: bool, summary: dict, line: str) -> None:
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
