"""Where a shared render starts (sharing.py) and the rows at their own steps (families/common.Rows):
the policy on synthetic distances in milliseconds, the engine on a tiny real pipeline."""

import math

import pytest
import torch

from latentwalk import sharing
from latentwalk.render import dyadic_depth


def test_close_neighbours_start_late_and_far_ones_early():
    steps = 20
    changes = [0.1, 1.0, sharing.NEAR, 3.0, 4.0, 6.0, 10.0, 16.0, sharing.FAR, 40.0, 1000.0]
    starts = [sharing.start_step(c, steps) for c in changes]
    assert starts == sorted(starts, reverse=True)  # never later for farther neighbours
    assert starts[0] == starts[2] == max(sharing.starts(steps)) == math.floor(sharing.LATEST * steps)
    assert starts[-3:] == [0, 0, 0]  # as far as FAR or farther: its own noise
    assert len(set(starts)) >= 5  # and graded between
    for change in changes:
        assert sharing.start_step(change, steps) in sharing.starts(steps)  # only where neighbours keep latents


def test_a_suspected_discontinuity_or_a_short_schedule_starts_from_noise():
    assert sharing.start_step(0.5, 20, jump=True) == 0
    assert sharing.start_step(0.5, 3) == 0  # too few steps to share
    assert sharing.start_step(float("nan"), 20) == 0
    assert sharing.start_step(float("inf"), 20) == 0


def test_a_big_gap_that_changes_much_faster_than_its_segment_starts_from_noise():
    """Where the model may jump (a shape teleports) before placement has narrowed it down: a
    large change concentrated in a narrow gap. A mix across it would be a double exposure."""
    big = sharing.BIG * 2
    assert sharing.start_step(big, 20) > 0  # as fast as the segment goes: shared
    assert sharing.start_step(big, 20, speed=sharing.FAST * 0.9) > 0
    assert sharing.start_step(big, 20, speed=sharing.FAST) == 0
    assert sharing.start_step(big, 20, speed=100.0) == 0
    # A fast but small change (a gap already narrowed to a frame or two) still shares.
    assert sharing.start_step(sharing.BIG * 0.9, 20, speed=100.0) > 0
    assert sharing.start_step(1.0, 20, speed=100.0) == max(sharing.starts(20))


@pytest.mark.parametrize("steps", [4, 8, 20, 30, 50, 100])
def test_the_starts_a_render_keeps_are_few_and_leave_the_last_quarter(steps):
    starts = sharing.starts(steps)
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert max(starts) <= 0.75 * steps  # the last quarter always runs: the picture is the model's
    assert len(starts) <= 21
    assert sharing.start_step(0.0, steps) == max(starts)


def test_dyadic_depth_orders_bisection():
    assert [dyadic_depth(t) for t in (0.0, 1.0, 0.5, 0.25, 0.75, 0.125, 3 / 2**24)] == [0, 0, 1, 2, 2, 3, 24]


@pytest.fixture(scope="module")
def tiny_backend():
    from latentwalk.backend import Backend, load_pipeline

    return Backend(load_pipeline("builtin:tiny", torch.float32), "builtin:tiny", torch.device("cpu"), torch.float32, scheduler="ddim")


def _trajectory(rows, backend, seed, step, latents=None):
    cond = backend.conditioning("a castle", "")
    noise = backend.noise(seed, 32, 32) if latents is None else None
    return rows.trajectory(seed, cond, None, noise=noise, latents=latents, step=step, keep={4, 6})


def test_rows_at_different_steps_share_a_call_and_each_gets_what_it_gets_alone(tiny_backend):
    """One model call with rows at their own timesteps: each row's result equals that row run
    alone (in calls of the same size), so no render depends on its batch-mates."""
    backend = tiny_backend
    rows = backend.rows(10, 5.0, tuple(backend.noise(0, 32, 32).shape[1:]))
    first = _trajectory(rows, backend, 1, 0)
    for _ in range(6):
        rows.call([first], 4)
    assert first.step == 6 and set(first.kept) == {4}  # latents as they enter step 4 (step 6 is next)
    rows.call([first], 4)
    assert set(first.kept) == {4, 6}
    start = first.kept[6].clone()
    # Together: a row from noise at step 0 and one starting at step 6 from kept latents.
    a, b = _trajectory(rows, backend, 2, 0), _trajectory(rows, backend, 3, 6, latents=start)
    while not b.done:
        rows.call([a, b], 4)
    while not a.done:
        rows.call([a], 4)
    # Alone, each in calls of the same size.
    a2, b2 = _trajectory(rows, backend, 2, 0), _trajectory(rows, backend, 3, 6, latents=start)
    for row in (a2, b2):
        while not row.done:
            rows.call([row], 4)
    assert torch.equal(a.latents, a2.latents) and torch.equal(b.latents, b2.latents)
    assert rows.row_steps == 7 + 10 + 4 + 10 + 4


def test_a_full_render_through_rows_is_the_pipeline_s_own(tiny_backend):
    """The shared loop changed how a batch is stepped (a scheduler per row); a render from
    noise is still what diffusers' pipeline makes from the same latents."""
    backend = tiny_backend
    pipe = backend.pipe
    noise = backend.noise(7, 32, 32)
    cond = backend.conditioning("a castle", "")
    ours = backend.denoise(noise, cond, 6, 5.0)
    theirs = pipe(prompt_embeds=cond["prompt_embeds"], negative_prompt_embeds=cond["negative_prompt_embeds"], latents=noise.clone(),
                  num_inference_steps=6, guidance_scale=5.0, output_type="latent", height=32, width=32).images  # fmt: skip
    assert torch.allclose(ours, theirs, atol=1e-5)


# ---- Shared walks, end to end through the CLI -----------------------------------------------------

SHARED = ("seed-walk", "a large red circle on a blue background", "--seeds", "1,2,3", "--frames", "8", "--preset", "shapes",
          "--steps", "8", "--share")  # fmt: skip


def png_frames(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("frame_*.png"))}


def test_a_shared_walk_keeps_its_keyframes_reports_its_calls_and_renders_again_from_its_manifest(run, tmp_path):
    import json

    from conftest import read_png

    summary = json.loads(run(*SHARED, "-o", "walk.mp4", "--frames-dir", "frames", "--json").stdout)
    # Fewer model calls, counted as the issue asks (B rows of one call count B). (Few here: the
    # keyframes and the first look along each segment start from noise, and these are short.)
    assert summary["model_calls"] < summary["model_calls_unshared"]
    assert summary["model_calls_unshared"] == summary["renders"] * 8
    manifest = json.loads((tmp_path / "walk.mp4.json").read_text())
    assert manifest["job"]["share"] is True and manifest["model_calls"] == summary["model_calls"]
    starts = manifest["job"]["starts"]
    assert starts and any(k > 0 for *_, k, _, _ in starts) and all(0 <= lo < t < hi <= 1 for _, _, t, _, lo, hi in starts)
    # The keyframes are generate's pictures: they always start from their own noise.
    run("generate", *SHARED[1:2], "--seeds", "1,2,3", "--preset", "shapes", "--steps", "8", "-o", "key.png")
    frames = sorted((tmp_path / "frames").glob("frame_*.png"))
    for seed, index in zip((1, 2, 3), summary["keyframe_frames"]):
        assert (read_png(frames[index]) == read_png(tmp_path / f"key-{seed}.png")).all()
    # The manifest renders every frame again, bit for bit, starting each render where it started.
    run("render", "walk.mp4.json", "-o", "again.mp4", "--frames-dir", "again")
    assert png_frames(tmp_path / "again") == png_frames(tmp_path / "frames")
    # And split in shards by segments, the same frames: a segment's renders share only within it.
    for k in (1, 2):
        run(*SHARED, "--shard", f"{k}/2", "-o", f"part{k}.mp4", "--frames-dir", f"part{k}")
    parts = {**png_frames(tmp_path / "part1"), **png_frames(tmp_path / "part2")}
    assert parts == png_frames(tmp_path / "frames")


@pytest.mark.parametrize("scheduler", ["dpm++-2m", "unipc", "heun"])
def test_samplers_with_state_start_part_way_cleanly_or_say_they_cannot(run, tmp_path, scheduler):
    """DPM++ 2M and UniPC keep the model's last outputs between steps; a render started part-way
    has none yet, so its first step is first order (as at step 0): the same every run, and close
    to the unshared walk's frames. Heun takes two calls a step and cannot start part-way: --share
    says so and renders every frame whole."""
    import json

    import numpy as np

    from conftest import read_png

    length = "4" if scheduler == "heun" else "16"  # (enough for a render to start part-way; Heun's never does)
    walk = ("seed-walk", "a large red circle on a blue background", "--seeds", "1,2", "--frames", length, "--preset", "shapes",
            "--steps", "8", "--scheduler", scheduler, "--json")  # fmt: skip
    result = run(*walk, "--share", "-o", "s.mp4", "--frames-dir", "s")
    shared = json.loads(result.stdout.strip().splitlines()[-1])
    alone = json.loads(run(*walk, "--no-share", "-o", "u.mp4", "--frames-dir", "u").stdout.strip().splitlines()[-1])
    frames = [read_png(p).astype(np.float32) for p in sorted((tmp_path / "s").glob("frame_*.png"))]
    unshared = [read_png(p).astype(np.float32) for p in sorted((tmp_path / "u").glob("frame_*.png"))]
    if scheduler == "heun":
        assert "cannot start a render part-way" in result.output
        assert shared["model_calls"] == shared["model_calls_unshared"] == alone["model_calls"]
        assert all(np.array_equal(a, b) for a, b in zip(frames, unshared, strict=True))
        return
    assert shared["model_calls"] < shared["model_calls_unshared"]
    assert any(k > 0 for *_, k, _, _ in json.loads((tmp_path / "s.mp4.json").read_text())["job"]["starts"])
    assert len(frames) == len(unshared) == 17
    assert np.array_equal(frames[0], unshared[0]) and np.array_equal(frames[-1], unshared[-1])
    # Near the unshared frames (1.6 and 3.9 levels on the mean here: other positions, placed on
    # other measurements), not a different picture.
    assert np.mean([np.abs(a - b).mean() for a, b in zip(frames, unshared)]) < 8
    run("render", "s.mp4.json", "-o", "again.mp4", "--frames-dir", "again")
    assert png_frames(tmp_path / "again") == png_frames(tmp_path / "s")


def test_a_shared_walk_over_a_discontinuity_has_no_double_exposure(run, tmp_path):
    """Seeds 2 and 3 of the red circle: the circle teleports. The renders around the jump
    start from their own noise, so no frame shows the circle twice."""
    import json

    from conftest import read_png
    from latentwalk.shapes import subjects

    walk = ("seed-walk", "a large red circle on a blue background", "--seeds", "2,3", "--frames", "12", "--preset", "shapes", "--share", "--no-crossfade")
    summary = json.loads(run(*walk, "-o", "jump.mp4", "--frames-dir", "frames", "--json").stdout)
    assert summary["discontinuities"], "the walk has its jump"
    counts = [subjects(read_png(p)) for p in sorted((tmp_path / "frames").glob("frame_*.png"))]
    assert counts[0] == counts[-1] == 1
    assert not [i for i in range(1, len(counts) - 1) if counts[i] >= 2 and counts[i - 1] <= 1 and counts[i + 1] <= 1], counts


class _KeepAll:
    """A store that keeps every render and its latents, as a work directory does."""

    durable = True

    def __init__(self, images=None, latents=None):
        self.images, self.latents = dict(images or {}), dict(latents or {})

    def load(self, pos):
        return self.images.get(pos)

    def save(self, pos, image):
        self.images[pos] = image

    def load_latents(self, pos):
        return self.latents.get(pos)

    def save_latents(self, pos, kept):
        self.latents[pos] = {k: v.clone() for k, v in kept.items()}


@pytest.fixture(scope="module")
def shapes_walk():
    """builtin:shapes (DDIM) and a fresh spec of a shared 12-frame seed walk each time it is called."""
    from latentwalk.backend import Backend, load_pipeline
    from latentwalk.render import RenderSpec
    from latentwalk.schedule import Keyframe

    backend = Backend(load_pipeline("builtin:shapes", torch.float32), "builtin:shapes", torch.device("cpu"), torch.float32, scheduler="ddim")
    keyframes = [Keyframe("a large red circle on a blue background", 2), Keyframe("a large red circle on a blue background", 3)]

    def spec():
        return RenderSpec(keyframes, None, 64, 64, 12, 5.0, batch_size=8, lengths=[12], share=True, crossfade=True)

    return backend, spec


def test_a_round_cut_short_is_made_again_in_the_calls_it_had(shapes_walk):
    """A kill in the middle of a pool round leaves some of its renders made: made again, the
    others meet the calls they met (sizes and places: a row's last bits depend on both), so
    the frames are bit for bit the uninterrupted run's."""
    import numpy as np

    from latentwalk.render import render_frames

    backend, spec = shapes_walk

    full, store = spec(), _KeepAll()
    frames = [image for _, image in render_frames(backend, full, store)]
    rounds = [chunk for chunk in full.rendered if any(p in full.shared for p in chunk)]
    # A round whose renders start at several steps (some from the others' latents), past the first look.
    cut = next(i for i, chunk in enumerate(rounds) if i and len({full.shared[p][0] for p in chunk}) >= 3)
    latest = max(full.shared[p][0] for p in rounds[cut])
    kept = [p for chunk in rounds[:cut] for p in chunk] + [p for p in rounds[cut] if full.shared[p][0] == latest]
    keys = [p for p in store.images if p[2] == 0.0]
    resumed, second = spec(), _KeepAll({p: store.images[p] for p in kept + keys}, {p: store.latents[p] for p in kept + keys if p in store.latents})
    again = [image for _, image in render_frames(backend, resumed, second)]
    assert resumed.resumed == len(kept) + len(keys) and 0 < resumed.model_calls < full.model_calls
    assert len(again) == len(frames) and all(np.array_equal(a, b) for a, b in zip(again, frames))
    # Bit for bit below the pixels too: the latents each render made again kept for later ones.
    remade = [p for chunk in rounds[cut:] for p in chunk if p not in kept]
    assert remade and all(torch.equal(second.latents[p][k], store.latents[p][k]) for p in remade for k in store.latents[p])


def test_a_pool_picture_lost_after_its_round_is_made_again_bit_for_bit(shapes_walk):
    """A shared render whose picture is not in the store when its frame goes out (a save lost,
    a disk cleaned under a running job) is made again with its round, as the round ran: the
    same calls and places, so the same bits, though its neighbours' latents come from the store."""
    import numpy as np

    from latentwalk.render import render_frames

    backend, spec = shapes_walk

    full, kept = spec(), _KeepAll()
    frames = [image for _, image in render_frames(backend, full, kept)]
    chosen = {(f.a, f.b, f.t) for f in full.frames}
    # A frame started from its neighbours' latents, late in a round of several (its place in
    # the round's calls is not the first: alone, it would be).
    victim = next(p for chunk in reversed(full.rendered) if len(chunk) > 2 for p in reversed(chunk[1:]) if p in chosen and full.shared.get(p, (0,))[0] > 0)

    class Lossy(_KeepAll):
        lost = False

        def save(self, pos, image):
            if pos == victim and not self.lost:
                self.lost = True  # its first save never reaches the disk
                return
            super().save(pos, image)

    store = Lossy()
    again = spec()
    pictures = [image for _, image in render_frames(backend, again, store)]
    assert store.lost and again.model_calls > full.model_calls  # made twice
    assert len(pictures) == len(frames) and all(np.array_equal(a, b) for a, b in zip(pictures, frames))
    # Bit for bit below the pixels (a call of another size moves only the last bits of a latent).
    assert store.latents[victim] and all(torch.equal(store.latents[victim][k], kept.latents[victim][k]) for k in kept.latents[victim])
