"""The backend on real diffusers pipelines (random tiny weights), in process."""

import json

import numpy as np
import pytest
import torch

from latentwalk.backend import Backend, load_pipeline
from latentwalk.errors import BadInput, LatentwalkError
from latentwalk.render import RenderSpec, render_frames
from latentwalk.schedule import Keyframe, plan_stills, plan_walk
from latentwalk.schedulers import names_for

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def backend():
    return Backend(load_pipeline("builtin:tiny", torch.float32), "builtin:tiny", CPU, torch.float32)


def test_render_matches_the_diffusers_pipeline_exactly(backend):
    """Our loop and noise give what StableDiffusionPipeline.__call__ gives for prompt + CPU generator."""
    pipe = backend.pipe
    ours = backend.render(backend.noise(3, 64, 64), backend.conditioning("a red circle", "blurry"), steps=5, guidance=7.5)
    reference = pipe(
        "a red circle", negative_prompt="blurry", num_inference_steps=5, guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(3), output_type="np",
    ).images  # fmt: skip
    assert ours.dtype == np.uint8 and ours.shape == (1, 64, 64, 3)
    assert np.array_equal(ours, (reference * 255).round().astype(np.uint8))


def test_unguided_render_matches_the_pipeline(backend):
    ours = backend.render(backend.noise(4, 64, 64), backend.conditioning("a cat", ""), steps=3, guidance=1.0)
    reference = backend.pipe("a cat", num_inference_steps=3, guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(4), output_type="np").images
    assert np.array_equal(ours, (reference * 255).round().astype(np.uint8))


def test_saved_folder_loads_through_the_users_path(saved_model):
    index = json.loads((saved_model / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    loaded = Backend(load_pipeline(str(saved_model), torch.float32), str(saved_model), CPU, torch.float32)
    from latentwalk.tiny import build_tiny_pipeline

    in_memory = Backend(build_tiny_pipeline(seed=1), "mem", CPU, torch.float32)
    args = lambda b: (b.noise(1, 64, 64), b.conditioning("a castle", ""), 3, 7.5)  # noqa: E731
    assert np.array_equal(loaded.render(*args(loaded)), in_memory.render(*args(in_memory)))


def test_model_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="not a diffusers model"):
        load_pipeline(str(tmp_path / "empty"), torch.float32)
    (tmp_path / "model.ckpt").write_bytes(b"x")
    with pytest.raises(BadInput, match="pickle"):
        load_pipeline(str(tmp_path / "model.ckpt"), torch.float32)
    with pytest.raises(BadInput, match="no such file or folder"):
        load_pipeline(str(tmp_path / "missing"), torch.float32)
    with pytest.raises(BadInput, match="unknown builtin"):
        load_pipeline("builtin:huge", torch.float32)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model_index.json").write_text("{not json")
    with pytest.raises(LatentwalkError, match="cannot load model"):
        load_pipeline(str(corrupt), torch.float32)


@pytest.mark.parametrize("name", names_for("noise"))
def test_every_scheduler_renders_deterministically(name):
    backend = Backend(load_pipeline("builtin:tiny", torch.float32), "builtin:tiny", CPU, torch.float32, scheduler=name)
    args = (backend.noise(1, 64, 64), backend.conditioning("x", ""), 4, 7.5)
    first = backend.render(*args)
    assert np.array_equal(first, backend.render(*args))


def test_pndm_below_its_minimum_steps_is_bad_input():
    backend = Backend(load_pipeline("builtin:tiny", torch.float32), "builtin:tiny", CPU, torch.float32, scheduler="pndm")
    with pytest.raises(BadInput, match="at least 4"):
        backend.check_steps(3)
    backend.check_steps(4)


def test_long_prompt_warns_with_the_dropped_words():
    warnings = []
    backend = Backend(load_pipeline("builtin:tiny", torch.float32), "builtin:tiny", CPU, torch.float32, warn=warnings.append)
    backend.conditioning("a castle " * 12 + "with dragons", "")  # byte-level: one token per character
    assert len(warnings) == 1 and "77 tokens" in warnings[0] and "dragons" in warnings[0]


def test_text_is_encoded_once_per_distinct_prompt(backend, monkeypatch):
    calls = []
    original = backend.pipe.encode_prompt
    monkeypatch.setattr(backend.pipe, "encode_prompt", lambda text, *a, **k: calls.append(text) or original(text, *a, **k))
    backend.family._text_cache.clear()
    keyframes = [Keyframe("a", 1), Keyframe("b", 2), Keyframe("a", 3)]
    spec = RenderSpec(keyframes, plan_walk([2, 2], loop=False), 64, 64, steps=2, guidance=7.5, batch_size=3)
    assert len(list(render_frames(backend, spec))) == 5
    assert sorted(calls) == ["", "a", "b"]


def test_walk_frames_at_keyframes_equal_stills_whatever_the_batch(backend):
    keyframes = [Keyframe("a red circle", 1), Keyframe("a blue square", 2), Keyframe("a tree", 3)]
    stills = [img for _, img in render_frames(backend, RenderSpec(keyframes, plan_stills(3), 64, 64, 3, 7.5))]
    walk = RenderSpec(keyframes, plan_walk([3, 2], loop=False), 64, 64, 3, 7.5, batch_size=4)
    frames = [img for _, img in render_frames(backend, walk)]
    assert len(frames) == 6
    for still, index in zip(stills, [0, 3, 5]):
        assert np.abs(frames[index].astype(int) - still.astype(int)).max() <= 1
    # Between keyframes the picture changes from frame to frame.
    assert all(np.abs(frames[i].astype(int) - frames[i + 1].astype(int)).mean() > 1 for i in range(5))
