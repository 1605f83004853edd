"""The render loop and its writer thread."""

import threading
import time
from collections import defaultdict

import numpy as np
import pytest
import torch

from latentwalk.backend import Backend, auto_batch_size, load_pipeline
from latentwalk.render import RenderSpec, render_frames, write_frames
from latentwalk.schedule import Frame, Keyframe, plan_walk

CPU = torch.device("cpu")


def items(n):
    return [(Frame(i, 0, 0, 0.0), np.full((2, 2, 3), i % 256, np.uint8)) for i in range(n)]


def test_every_frame_is_written_in_order():
    seen, timings = [], defaultdict(float)
    count = write_frames(items(50), lambda frame, image: seen.append((frame.index, int(image[0, 0, 0]))), timings)
    assert count == 50 and seen == [(i, i) for i in range(50)]
    assert timings["write"] > 0


def test_a_slow_writer_holds_the_render_back_instead_of_buffering():
    produced, written = [], []

    def frames():
        for item in items(30):
            produced.append(item[0].index)
            yield item

    def slow_write(frame, image):
        written.append(frame.index)
        time.sleep(0.002)
        # Queue of 4 + one being written + one waiting to be put: never more ahead.
        assert len(produced) - len(written) <= 6

    timings = defaultdict(float)
    assert write_frames(frames(), slow_write, timings, queue_size=4) == 30
    assert timings["queue_wait"] > 0


def test_a_failed_write_stops_the_render_and_raises_in_the_caller():
    produced = []

    def frames():
        for item in items(1000):
            produced.append(item)
            yield item

    def write(frame, image):
        if frame.index == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_frames(frames(), write, defaultdict(float), queue_size=2)
    assert len(produced) < 20


def test_a_failed_render_stops_the_writer():
    def frames():
        yield from items(3)
        raise RuntimeError("out of memory")

    written = []
    with pytest.raises(RuntimeError, match="out of memory"):
        write_frames(frames(), lambda f, i: written.append(f.index), defaultdict(float))
    assert not any(t.name == "latentwalk-writer" for t in threading.enumerate())
    assert written == [0, 1, 2]  # finished frames are still written: they are finished work


@pytest.fixture(scope="module")
def keyframes():
    return [Keyframe("a red circle", 1), Keyframe("a blue square", 2)]


def frames_with(keyframes, size=64, **optimize):
    backend = Backend(load_pipeline("builtin:tiny", torch.float32), "builtin:tiny", CPU, torch.float32)
    backend.optimize(**optimize)
    spec = RenderSpec(keyframes, plan_walk([2], loop=False), size, size, 3, 7.5, batch_size=3)
    frames = np.stack([image for _, image in render_frames(backend, spec)])
    return frames, spec.timings


def test_timings_cover_each_phase(keyframes):
    frames, timings = frames_with(keyframes)
    assert frames.shape == (3, 64, 64, 3)
    assert set(timings) == {"encode", "denoise", "decode", "save"} and all(v > 0 for v in timings.values())


@pytest.mark.parametrize("switch", ["channels_last", "vae_slicing", "vae_tiling"])
def test_engine_switches_draw_the_same_frames(keyframes, switch):
    size = 128 if switch == "vae_tiling" else 64  # the tiny VAE tiles above 64px
    reference, _ = frames_with(keyframes, size)
    frames, _ = frames_with(keyframes, size, **{switch: True})
    distance = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    if switch != "vae_tiling":
        assert distance(frames, reference) < 1  # float rounding only
        return
    # Tiles normalise their own statistics, which moves a random VAE's colours: each tiled
    # frame must still be the same picture, nearest to its own untiled frame.
    for i, frame in enumerate(frames):
        distances = [distance(frame, ref) for ref in reference]
        assert int(np.argmin(distances)) == i and distances[i] < 16, distances


def test_auto_batch_size_is_one_on_the_cpu():
    assert auto_batch_size(CPU, 512, 512, torch.float32) == 1


def test_a_compiler_that_fails_is_one_clear_error_before_any_output(monkeypatch, keyframes):
    from latentwalk.errors import LatentwalkError

    class Broken(torch.nn.Module):
        """Like torch.compile's wrapper on a machine whose compiler fails at the first call."""

        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self._orig_mod, name)

        def forward(self, *args, **kwargs):
            raise RuntimeError("InductorError: C++ compile error\n" + "page of compiler output\n" * 50)

    monkeypatch.setattr(torch, "compile", Broken)

    backend = Backend(load_pipeline("builtin:tiny", torch.float32), "builtin:tiny", CPU, torch.float32)
    backend.optimize(compile=True)
    with pytest.raises(LatentwalkError) as error:
        backend.warm_up(64, 64, batch_size=2, guidance=7.5)
    message = str(error.value)
    assert message.startswith("--compile failed on this machine (RuntimeError: InductorError: C++ compile error)")
    assert "\n" not in message and message.endswith("run without --compile")
