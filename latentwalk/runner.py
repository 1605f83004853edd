"""Run a job, resumably: lock the outputs, open the work directory, load the model, render the
frames not yet made, stream every frame to its sink, publish the outputs and their manifests.

Killed at any moment, a run loses only the renders in flight: finished renders wait in the work
directory (see workdir.py), outputs appear only when complete, and the next identical run
starts where this one stopped.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from latentwalk import manifest, music, shapes
from latentwalk.errors import BadInput, Interrupted, LatentwalkError, OutOfMemory, is_out_of_memory, signals_raise
from latentwalk.job import Job, Options, job_key
from latentwalk.schedule import Frame, Shard
from latentwalk.workdir import FrameStore, Lock, lock_path, work_root

# Builds the manifest of an output: (its path, its frame index for images or None) -> dict.
Describe = Callable[[Path, "int | None"], dict]
# The text chunks of a frame's PNG: (frame, resolved facts such as size and scheduler) -> dict.
Texts = Callable[[Frame, dict], dict[str, str]]


class VideoSink:
    """The video and its manifest."""

    def __init__(self, path: Path, fps: float, crf: int | None, audio: tuple[Path, float] | None = None):
        self.path, self.fps, self.crf, self.audio = Path(path), fps, crf, audio
        self.paths = [self.path]
        self._video = None

    def open(self, width: int, height: int, overwrite: bool, resumed: bool, describe: Describe) -> None:
        from latentwalk.video import VideoWriter

        self.overwrite, self.describe = overwrite, describe
        self._video = VideoWriter(self.path, width, height, self.fps, self.crf, overwrite, self.audio)

    def write(self, frame: Frame, image: np.ndarray, text: dict[str, str]) -> None:
        self._video.write(image)

    def finish(self) -> None:
        self._video.close()
        manifest.write(self.describe(self.path, None), manifest.sidecar(self.path), self.overwrite)

    def abort(self) -> None:
        if self._video is not None:
            self._video.abort()


class ImageSink:
    """One PNG (and its manifest) per frame of the plan that has a path."""

    def __init__(self, paths: dict[int, Path]):
        self.by_index = paths
        self.paths = list(paths.values())

    def open(self, width: int, height: int, overwrite: bool, resumed: bool, describe: Describe) -> None:
        self.overwrite, self.describe = overwrite, describe
        if overwrite or resumed:
            return  # resumed: existing images are checked one by one as they come
        for path in self.paths:
            for p in (path, manifest.sidecar(path)):
                if p.exists():
                    raise BadInput(f"output {str(p)!r} exists; pass --overwrite to replace it")

    def write(self, frame: Frame, image: np.ndarray, text: dict[str, str]) -> None:
        from latentwalk.video import png_bytes, write_new

        path, overwrite = self.by_index.get(frame.index), self.overwrite
        if path is None:
            return
        data = png_bytes(image, text)
        if path.exists() and not overwrite:
            if path.read_bytes() != data:
                raise BadInput(f"output {str(path)!r} exists; pass --overwrite to replace it")
            # An interrupted run of this very job wrote it: the same pixels and parameters.
        else:
            write_new(path, lambda f: f.write(data), overwrite)
        side = manifest.sidecar(path)
        if overwrite or not side.exists():
            manifest.write(self.describe(path, frame.index), side, overwrite)

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


def run(job: Job, sink, options: Options, warn: Callable[[str], None], texts: Texts, only: set[int] | None = None) -> dict:
    """Render `job` into `sink` (a VideoSink or an ImageSink); returns the summary for --json.
    `only` limits stills to the batches holding those frames (re-rendering one image).
    A signal ends it with Stopped, whose exit code is 128 + the signal's number."""
    from latentwalk.backend import resolve_device, resolve_dtype

    if getattr(LOCAL, "check_only", False):
        raise CheckedOnly(job)
    timings: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    with signals_raise():
        device = resolve_device(job.settings.device)
        s = job.settings
        dtype = resolve_dtype(s.dtype, device, s.model, s.family, s.model_config)
        identity = {
            "device": device.type,
            "dtype": str(dtype).removeprefix("torch."),
            "model": manifest.model_fingerprint(job.settings.model, job.settings.revision),
            # A changed LoRA or VAE file changes the pixels: its stamp is in the key too.
            # So does a single file's config folder (its tokenizers).
            "weights": [manifest.model_fingerprint(path, None) for path in [*(p for p, _ in s.lora), *filter(None, [s.vae, s.model_config])]],
            "versions": {k: v for k, v in manifest.versions().items() if k != "python"},
        }
        key = job_key(job, identity)
        locks = []
        try:
            for path in sink.paths:
                locks.append(Lock(lock_path(path), f"output {str(path)!r}").acquire())
            folder = options.frames_dir or work_root() / key
            description = {"command": job.command, "outputs": [str(p.resolve()) for p in sink.paths], "frames": job.frame_count}
            # The video's frames are written out where someone will look at them: a --frames-dir, or a
            # work directory kept with --keep-frames. Otherwise the renders alone are kept, to resume.
            frames = options.frames_dir is not None or options.keep_frames
            store = FrameStore(folder, key, description, replace_foreign=options.overwrite, frames=frames)
            try:
                summary = _render(job, sink, options, store, timings, warn, texts, device, dtype, only, identity)
            except BaseException as e:
                # Keep what was made; a work directory that never got a render is just litter.
                store.close(remove=not store.present and options.frames_dir is None)
                explained = _explained(e, store)
                if explained is e:
                    raise
                raise explained from e
            store.close(remove=options.frames_dir is None and not options.keep_frames)
        finally:
            for lock in locks:
                lock.release()
    seconds = time.perf_counter() - started
    summary.update(seconds=round(seconds, 3), timings={p: round(s, 3) for p, s in timings.items()})
    if options.keep_frames or options.frames_dir is not None:
        summary["frames_dir"] = str(store.folder)
    return summary


def _render(job, sink, options, store: FrameStore, timings, warn, texts, device, dtype, only, identity: dict) -> dict:
    from latentwalk.placement import EXTRA_MUSIC, EXTRA_RENDERS, render_budget
    from latentwalk.progress import Progress, pick_mode
    from latentwalk.render import RenderSpec, render_frames, write_frames
    from latentwalk.smoothness import Motion

    settings = job.settings
    backend, width, height, batch = load_backend(job, device, dtype, options, timings, warn, store.record.get("batch_size"))
    if store.record.get("batch_size") != batch:
        store.save_record({**store.record, "batch_size": batch})
    if store.resumed and not options.quiet:
        print(f"latentwalk: resuming: {store.resumed} renders already made in {str(store.folder)!r}", file=sys.stderr, flush=True)
    resolved = {
        "width": width, "height": height, "batch_size": batch, "scheduler": backend.scheduler_name,
        "dtype": str(dtype).removeprefix("torch."), "device": str(backend.device), "device_name": device_name(backend.device),
    }  # fmt: skip
    facts: dict = {}  # what the render found out (placement, smoothness), for the manifest

    def describe(path: Path, index: int | None) -> dict:
        return manifest.build(job, resolved, path, timings, index, facts)

    if any(k.image is not None for k in job.keyframes):
        from latentwalk.schedulers import adds_noise

        if adds_noise(backend.pipe.scheduler):
            warn(f"image= keyframes: the {backend.scheduler_name} sampler adds fresh noise at every step, so a picture comes back only roughly; "
                 "a deterministic one (ddim, euler, dpm++-2m) draws it back closely")  # fmt: skip
    if job.share and not backend.shares_steps():
        warn(f"--share: the {backend.scheduler_name} sampler cannot start a render part-way (it steps twice or keeps state): every frame starts from its own noise")
    placed = job.plan is None
    profile = music.walk_profile(job.audio, job.lengths) if placed else None
    extra = EXTRA_RENDERS if profile is None else EXTRA_MUSIC
    spec = RenderSpec(job.keyframes, job.plan, width, height, settings.steps, settings.guidance, batch,
                      job.noise_interp, job.cond_interp, timings, lengths=job.lengths, loop=job.loop,
                      ease=settings.ease, profile=profile, extra=extra, crossfade=job.crossfade, chunks=job.chunks, only=only,
                      shard=None if job.shard is None else Shard(**job.shard), share=job.share, exact=job.smooth,
                      starts=None if job.starts is None else {(a, b, t): (k, lo, hi) for a, b, t, k, lo, hi in job.starts},
                      fit=settings.fit, invert_guidance=settings.invert_guidance, identity=json.dumps({**identity, "lora": settings.lora, "vae": settings.vae}, sort_keys=True))  # fmt: skip
    if job.chunks is not None:
        most = sum(len(c) for c in job.chunks)
    elif placed:
        lo, hi = (job.shard["lo"], job.shard["hi"]) if job.shard is not None else (0, len(job.lengths))
        most = len(job.keyframes) + sum(render_budget(n, extra) for n in job.lengths[lo:hi])
    else:
        most = job.frame_count
    motion = Motion()
    sink.open(width, height, options.overwrite, store.resumed > 0, describe)
    try:
        with Progress(most, job.command, pick_mode(options.quiet), unit="renders", at_most=placed) as progress:
            tick = getattr(LOCAL, "tick", None)  # a watcher's say after each batch (it may stop the run)
            spec.on_render = progress.advance if tick is None else (lambda count: (progress.advance(count), tick(progress.done, most)))

            watch = getattr(LOCAL, "watch", None)
            written = [0]

            def write(frame: Frame, image: np.ndarray) -> None:
                text = texts(frame, resolved)
                if store.frames:
                    store.save_frame(frame.index, image, text)
                sink.write(frame, image, text)
                motion.add(image)
                written[0] += 1
                if watch is not None:
                    watch(written[0], job.frame_count, image)

            write_frames(render_frames(backend, spec, store), write, timings)
            progress.finish()
        if job.command != "generate":
            # A manifest's own positions and batches stay as they were: its re-render's
            # manifest must be the same job.
            if placed:
                job.discontinuities = spec.jumps
            job.plan = job.plan if job.plan is not None else spec.frames
            job.chunks = job.chunks if job.chunks is not None else spec.rendered
            if job.starts is None and spec.shared:
                job.starts = [[*pos, *start] for pos, start in spec.shared.items()]
            facts.update(_facts(job, spec, motion))
            facts.update(model_calls=spec.model_calls, model_calls_unshared=spec.model_calls_unshared, shared=job.share)
            if spec.pictures:
                # Each picture's frame against the picture itself: how faithful its inversion is.
                facts["pictures"] = [{"keyframe": k, "file": job.keyframes[k].image, "sha256": job.keyframes[k].image_sha256,
                                      "difference": d} for k, d in sorted(spec.pictures.items())]  # fmt: skip
        if store.frames:
            store.trim_frames(job.first_frame + job.frame_count)
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    summary = {
        "command": job.command, "frames": job.frame_count, "renders": spec.renders, "resumed": spec.resumed,
        # Denoising steps summed over the renders made now (B rows in one call count B), and what
        # the same renders would have cost from their own noise: the saving of --share.
        "model_calls": spec.model_calls, "model_calls_unshared": spec.model_calls_unshared, "batches": spec.batches,
        "inversions": spec.inversions,
        "width": width, "height": height, "model": settings.model, "batch_size": batch, "work_dir": str(store.folder),
    }  # fmt: skip
    summary.update(facts)
    return summary


def _facts(job: Job, spec, motion) -> dict:
    """Placement and smoothness of a walk, for its summary and manifest."""
    keyframe_frames = [f.index for f in spec.frames if f.t == 0.0 and f.t2 is None]
    facts = {
        "smooth": job.smooth, "renders": spec.renders, "keyframe_frames": keyframe_frames,
        "smoothness": motion.summary(), "discontinuities": job.discontinuities or [],
    }  # fmt: skip
    if job.audio is not None:
        # How closely the change on screen follows the music: what `inspect --audio` reports.
        audio = {k: job.audio.get(k) for k in ("name", "sha256", "start", "duration", "react", "on_beats", "tempo")}
        envelope = job.audio["envelope"][job.first_frame : job.first_frame + len(motion.changes)]  # a shard's part
        facts["audio"] = {**audio, "correlation": music.correlation(motion.changes, envelope)}
    return facts


# Watching runs from the same process (the studio), per thread. `watch(done, total, image)` is
# called after each frame is written (frames written, frames in the output) and `tick(done, most)`
# after each batch of renders (renders made, at most how many: a smooth walk places its frames as
# it renders, so its frames come out late and its renders show the progress); either may raise errors.Cancelled to stop the run; `check_only` stops a run before anything is opened or
# loaded, with CheckedOnly, once every check of the command line has passed.
LOCAL = threading.local()


class CheckedOnly(BaseException):
    """A command line whose every check passed, stopped before it rendered (LOCAL.check_only);
    `job` is what it would have rendered (its lengths and frame count, for the studio's plan)."""

    def __init__(self, job: Job | None = None):
        super().__init__()
        self.job = job


# The loaded model kept for the next job of the same process (`latentwalk batch`), by all that
# shapes the loaded pipeline. One at a time: two large models need not fit in memory together.
# None (a command line): each run loads its own.
LOADED: dict | None = None


def load_backend(job: Job, device, dtype, options: Options, timings: dict, warn, resumed_batch: int | None):
    """Load the model (diffusers is imported only now, after every cheap check). Returns the
    backend, the frame size and the batch size: the one given, else the one an interrupted run
    used (so resumed frames match it bit for bit), else one that fits the device."""
    from latentwalk.backend import Backend, apply_loras, apply_vae, auto_batch_size, load_pipeline

    settings, engine = job.settings, job.engine
    started = time.perf_counter()
    key = json.dumps([settings.model, settings.revision, settings.family, settings.model_config, settings.vae, settings.lora, str(dtype),
                      str(device), settings.scheduler, settings.long_prompts, options.allow_pickle, asdict(engine)])  # fmt: skip
    backend = LOADED.get(key) if LOADED is not None else None
    fresh = backend is None
    if fresh:
        if LOADED:
            LOADED.clear()  # let go of the last model before loading the next
        pipe = load_pipeline(settings.model, dtype, settings.revision, options.allow_pickle, settings.family, settings.model_config)
        apply_vae(pipe, settings.vae, dtype, options.allow_pickle, settings.model, settings.family, settings.model_config)
        apply_loras(pipe, settings.lora, options.allow_pickle)
        backend = Backend(pipe, settings.model, device, dtype, scheduler=settings.scheduler, warn=warn, long_prompts=settings.long_prompts)
    width, height = settings.size or backend.default_size
    backend.check_size(width, height)
    backend.check_steps(settings.steps)
    if resumed_batch is not None and settings.batch_size not in (None, resumed_batch):
        # Typically after running out of memory: better than throwing the finished renders away.
        warn(
            f"resuming with --batch-size {settings.batch_size} where the interrupted run used {resumed_batch}: "
            "the new frames may differ from an uninterrupted run by float rounding"
        )
    batch_size = settings.batch_size or resumed_batch or auto_batch_size(device, width, height, dtype)
    if fresh:
        backend.optimize(engine.compile, engine.channels_last, engine.vae_slicing, engine.vae_tiling)
        if LOADED is not None:
            LOADED[key] = backend
    timings["load"] += time.perf_counter() - started
    if settings.model == "builtin:tiny" and not options.quiet:
        warn("builtin:tiny is a random toy model and draws noise; use --preset shapes (offline) or sd-turbo for pictures")
    if settings.model == "builtin:shapes":
        unknown = shapes.unknown_words([k.prompt for k in job.keyframes] + [settings.negative or ""])
        if unknown:
            warn(f"builtin:shapes never saw the words {', '.join(map(repr, unknown))}; it knows captions like '{shapes.Scene('large', 'red', 'circle', 'blue').caption}'")
    started = time.perf_counter()
    backend.warm_up(width, height, batch_size, settings.guidance, [text for k in job.keyframes for text in (k.prompt, k.negative)])
    if engine.compile:
        timings["compile"] += time.perf_counter() - started
    return backend, width, height, batch_size


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine()


def _explained(error: BaseException, store: FrameStore) -> BaseException:
    """The error as the user should read it, with what was kept and how to go on."""
    kept = len(store.present)
    where = f"{kept} renders kept in {str(store.folder)!r}"
    if isinstance(error, Interrupted):
        if not kept:
            return Stopped(f"interrupted by {error} before the first render was finished", error.exit_code)
        return Stopped(f"interrupted by {error}: {where}; run the same command again to resume", error.exit_code)
    if not isinstance(error, Exception):
        return error
    if isinstance(error, BadInput) and kept == store.resumed:
        return error  # nothing new was made; the message stands alone
    if is_out_of_memory(error):
        return OutOfMemory(
            "out of memory: try a smaller --batch-size, --vae-slicing or --vae-tiling, or a smaller "
            f"--size ({where}; run again to resume)"
        )
    message = str(error) if isinstance(error, LatentwalkError) else f"{type(error).__name__}: {error}"
    if kept:
        message += f" ({where}; run the same command again to resume)"
    explained = type(error)(message) if isinstance(error, LatentwalkError) else LatentwalkError(message)
    return explained


class Stopped(LatentwalkError):
    """An interrupted run, with the exit code of its signal (128 + number)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
