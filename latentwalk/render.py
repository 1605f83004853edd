"""Plan -> batches -> backend -> frames -> sink: the one loop every command runs.

Conditioning and noise are computed once per keyframe; each batch only interpolates between
them (on the model's device, in float32) and hands the result to the backend. Frames go to the
sink through a bounded queue on a writer thread, so the model never waits for PNG or video
encoding, and a slow sink slows the model down instead of filling memory.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from latentwalk.backend import Backend
from latentwalk.interp import INTERPOLATIONS
from latentwalk.schedule import Frame, Keyframe, batched


@dataclass
class RenderSpec:
    keyframes: list[Keyframe]
    plan: list[Frame]
    width: int
    height: int
    steps: int
    guidance: float
    batch_size: int = 1
    noise_interp: str = "slerp"
    cond_interp: str = "lerp"
    # Seconds spent per phase (encode, denoise, decode, write, ...), filled in while rendering.
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def render_frames(
    backend: Backend,
    spec: RenderSpec,
    finished: Callable[[int], np.ndarray | None] = lambda index: None,
) -> Iterator[tuple[Frame, np.ndarray]]:
    """Yield (frame, HxWx3 uint8 image) in plan order, one batch at a time.

    `finished(index)` gives a frame a previous, interrupted run already made, or None. A batch
    is rendered whole or not at all: the same frames in the same batches as an uninterrupted
    run, so resumed frames are bit-identical to it."""
    timings = spec.timings
    started = time.perf_counter()
    per_keyframe = [backend.conditioning(k.prompt, k.negative) for k in spec.keyframes]
    conds = {name: torch.cat([c[name] for c in per_keyframe]) for name in per_keyframe[0]}
    noises = torch.cat([backend.noise(k.seed, spec.width, spec.height) for k in spec.keyframes])
    timings["encode"] += time.perf_counter() - started

    mix_noise = INTERPOLATIONS[spec.noise_interp]
    mix_cond = INTERPOLATIONS[spec.cond_interp]
    for batch in batched(spec.plan, spec.batch_size):
        started = time.perf_counter()
        done = [finished(f.index) for f in batch]
        if all(image is not None for image in done):
            timings["resume"] += time.perf_counter() - started
            yield from zip(batch, done)
            continue
        a = torch.tensor([f.a for f in batch], device=noises.device)
        b = torch.tensor([f.b for f in batch], device=noises.device)
        t = torch.tensor([f.t for f in batch], dtype=torch.float32, device=noises.device)
        noise = mix_noise(noises[a], noises[b], t)
        cond = {name: mix_cond(value[a], value[b], t) for name, value in conds.items()}
        latents = backend.denoise(noise, cond, spec.steps, spec.guidance)
        backend.sync()
        denoised = time.perf_counter()
        timings["denoise"] += denoised - started
        images = backend.decode(latents).cpu().numpy()  # the one copy to the host
        timings["decode"] += time.perf_counter() - denoised
        yield from zip(batch, images)


_DONE = object()


def write_frames(
    frames: Iterable[tuple[Frame, np.ndarray]],
    write: Callable[[Frame, np.ndarray], None],
    timings: dict[str, float],
    queue_size: int = 8,
) -> int:
    """Feed every frame to `write` on a writer thread behind a bounded queue.

    An error on either side stops both: a failed write stops the render at its next frame, and
    a failed or interrupted render stops the writer once it has written the frames already
    queued (they are finished work). Returns the number of frames written.
    """
    pending: queue.Queue = queue.Queue(maxsize=queue_size)
    failure: list[BaseException] = []
    stop = threading.Event()
    written = 0

    def writer() -> None:
        nonlocal written
        while True:
            item = pending.get()
            if item is _DONE or stop.is_set():
                return
            started = time.perf_counter()
            try:
                write(*item)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                failure.append(e)
                stop.set()
                return
            timings["write"] += time.perf_counter() - started
            written += 1

    def put(item) -> bool:
        """Queue an item, waiting while the queue is full; False once the writer has stopped."""
        started = time.perf_counter()
        try:
            while not stop.is_set():
                try:
                    pending.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False
        finally:
            timings["queue_wait"] += time.perf_counter() - started

    thread = threading.Thread(target=writer, name="latentwalk-writer", daemon=True)
    thread.start()
    try:
        for item in frames:
            if not put(item):
                break
        put(_DONE)
    except BaseException:
        # A second signal while the queue drains ends the wait; the writer thread is a daemon
        # and each of its files is written whole, so nothing half-written is left behind.
        put(_DONE)
        thread.join()
        raise
    thread.join()
    if failure:
        raise failure[0]
    return written
