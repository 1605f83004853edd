"""Plan -> batches -> backend -> frames -> sink: the one loop every command runs.

Conditioning and noise are computed once per keyframe; each batch only interpolates between
them (on the model's device, in float32) and hands the result to the backend. Every render is
kept in a store by its place in the walk (a, b, t), which is how an interrupted run resumes.

Where the frames are is either known beforehand (stills, `--no-smooth`, a manifest's recorded
walk) or asked of placement.py segment by segment: it names positions, they are rendered and
measured, and when it has chosen the segment's frames they are yielded in order, so memory
stays flat. Frames go to the sink through a bounded queue on a writer thread, so the model
never waits for PNG or video encoding, and a slow sink slows the model down instead of filling
memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from latentwalk import __version__, sharing
from latentwalk.errors import BadInput, LatentwalkError
from latentwalk.backend import Backend
from latentwalk.interp import INTERPOLATIONS, seed_noise, step_seed
from latentwalk.placement import EXTRA_RENDERS
from latentwalk.schedule import EASINGS, Frame, Keyframe, Pos, Shard, batched, position


@dataclass
class RenderSpec:
    """What to render. `plan` fixes every frame (stills, uniform walks, a manifest's recorded
    walk); without it the walk over `lengths` is placed while rendering (see placement.py)."""

    keyframes: list[Keyframe]
    plan: list[Frame] | None
    width: int
    height: int
    steps: int
    guidance: float
    batch_size: int = 1
    noise_interp: str = "slerp"
    cond_interp: str = "lerp"
    # Seconds spent per phase (encode, denoise, decode, write, ...), filled in while rendering.
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    lengths: list[int] | None = None  # frames per segment, for a walk placed while rendering
    loop: bool = False
    ease: str = "linear"
    # Each frame interval's share of its segment's change (music.py), instead of even shares,
    # and the renders beyond the frames a segment may make (placement.py).
    profile: list[float] | None = None
    extra: float = EXTRA_RENDERS
    crossfade: bool = False
    # Renders in the batches an earlier run made them in (a manifest's), to make them again exactly.
    chunks: list[list[Pos]] | None = None
    # A smooth walk's in-between batches are one segment's round each, the same in every run,
    # resume and shard of the walk: each is made at its own row count. A uniform walk's are cut
    # from the frames by the batch size (a shard's last one is shorter than the whole walk's),
    # so they are topped up to the batch size.
    exact: bool = False
    only: set[int] | None = None  # stills: render just the batches holding these frames
    shard: Shard | None = None  # a placed walk's part: just its segments (and their keyframes)
    # Shared trajectories (sharing.py): in-between renders of a placed walk start part-way from
    # their neighbours' latents. `starts` are a manifest's, (step, lo t, hi t) by position: a
    # re-render starts each render as recorded.
    share: bool = False
    starts: dict[Pos, tuple[int, float, float]] | None = None
    # Image keyframes (pictures.py): how a picture takes the frame's shape, and what names the
    # model for the inversions kept in the cache (the runner's identity: model files, dtype,
    # device, versions).
    fit: str = "crop"
    invert_guidance: float | None = None  # None: the walk's guidance
    identity: str = ""
    # Filled in while rendering: every frame's position, the batches rendered, discontinuities.
    frames: list[Frame] = field(default_factory=list)
    rendered: list[list[Pos]] = field(default_factory=list)
    jumps: list[dict] = field(default_factory=list)
    renders: int = 0  # distinct renders the frames came from, made now or found in the store
    resumed: int = 0  # of those, found in the store (an earlier run's)
    shared: dict[Pos, tuple[int, float, float]] = field(default_factory=dict)  # the pool's renders: their starts
    pictures: dict[int, float] = field(default_factory=dict)  # image keyframes: mean difference of the frame to the picture (0-255)
    inversions: int = 0  # pictures inverted now (the others were in the cache)
    model_calls: int = 0  # denoising steps summed over the renders made now (B rows in one call count B)
    model_calls_unshared: int = 0  # what the same renders cost from their own noise
    batches: int = 0  # model calls as made: rows side by side count once
    on_render: Callable[[int], None] = lambda count: None  # progress, per render


class MemoryStore:
    """For tests and benchmarks that need no resume: keeps only the keyframes, which every
    segment that starts or ends on them needs. A segment's other renders stay in the renderer's
    cache while it is placed, so memory stays flat in the walk's length."""

    durable = False  # cannot give back what it did not keep

    def __init__(self):
        self._images: dict[Pos, np.ndarray] = {}

    def load(self, pos: Pos) -> np.ndarray | None:
        return self._images.get(pos)

    def save(self, pos: Pos, image: np.ndarray) -> None:
        if pos[2] == 0.0:
            self._images[pos] = image

    def load_latents(self, pos: Pos) -> dict[int, torch.Tensor] | None:
        return None  # the renderer holds a segment's while it is placed

    def save_latents(self, pos: Pos, kept: dict[int, torch.Tensor]) -> None:
        pass


def motion_features(image: np.ndarray, side: int = 128) -> np.ndarray:
    """What the placement compares: the frame box-averaged down to at most `side` pixels on its
    long side, as float32. The distance is the mean absolute difference of these (0-255), the
    same 'change' that `latentwalk inspect` reports, at a cost of a few milliseconds a frame."""
    h, w = image.shape[:2]
    factor = max(1, math.ceil(max(h, w) / side))
    h2, w2 = h // factor, w // factor
    cropped = image[: h2 * factor, : w2 * factor].astype(np.float32)
    return cropped.reshape(h2, factor, w2, factor, -1).mean(axis=(1, 3))


def feature_distance(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.abs(x - y).mean())


class Passed:
    """A pool render an earlier run made, in a round this run makes again: it keeps its place in
    the round's calls, so the others meet calls of the sizes they met then (their bits depend
    on it), without a model call, and shows the latents it kept as it passes each step, as a
    render being made would, so the ones that start from it start when they did."""

    def __init__(self, key: Pos, step: int, steps: int, image: np.ndarray, stored: dict[int, torch.Tensor]):
        self.key, self.step, self.steps, self.image, self.stored = key, step, steps, image, stored
        self.kept: dict[int, torch.Tensor] = {}

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def call(self) -> None:
        if self.step in self.stored:
            self.kept[self.step] = self.stored[self.step]
        self.step += 1


class Renderer:
    """Renders positions of the walk through the backend, batch by batch, keeping each in the
    store by its position. A batch is rendered whole or not at all, with the same members as
    an uninterrupted run, so resumed renders are bit-identical to it."""

    def __init__(self, backend: Backend, spec: RenderSpec, store):
        self.backend, self.spec, self.store = backend, spec, store
        timings = spec.timings
        started = time.perf_counter()
        self.conds = backend.keyframe_conditioning([(k.prompt, k.negative) for k in spec.keyframes])
        timings["encode"] += time.perf_counter() - started
        self.pictures: dict[int, np.ndarray] = {}  # image keyframes' pictures, fitted to the frame
        uses = keyframes_used(spec)
        self.noises = torch.cat([self.keyframe_noise(i, k, i in uses) for i, k in enumerate(spec.keyframes)])
        self.mix_noise = INTERPOLATIONS[spec.noise_interp]
        self.mix_cond = INTERPOLATIONS[spec.cond_interp]
        self.recorded = {p: chunk for chunk in (spec.chunks or []) for p in chunk}
        self.cache: dict[Pos, np.ndarray] = {}  # renders held for frames still to come
        self.done: set[Pos] = set()  # every render this walk used, made now or found
        self.rows = backend.rows(spec.steps, spec.guidance, tuple(self.noises.shape[1:]))
        self.steps = len(self.rows.scheduler.timesteps)  # model calls of a render from noise
        # Sharing: each render keeps its latents at the steps later renders may start at.
        self.sharing = (spec.share or bool(spec.starts)) and backend.shares_steps() and self.steps >= 4
        self.keep = set(sharing.starts(self.steps)[1:]) if self.sharing else set()
        self.kept: dict[Pos, dict[int, torch.Tensor]] = {}
        # The pool: each segment's round of renders, queued in order, each row at its own step.
        # An entry is (position, lo, hi, start step, picture): the picture when an earlier run
        # made it, whose row then passes through the pool without a model call (see Passed).
        self.pending: list[tuple[Pos, tuple[Pos, float], tuple[Pos, float], int, np.ndarray | None]] = []
        self.active: list = []  # common.Trajectory rows and Passed ones
        self.rounds: dict[Pos, list[Pos]] = {}  # each pool render's round, to make it again
        self.round_of: dict[Pos, int] = {}  # which round a render in the pool is of (rounds share no call)
        self.numbered = 0
        # A manifest's starts: each must be one this sampler can make, and each render's kept
        # latents are let go of once the last render that starts from them has started.
        self.needed: dict[Pos, int] = defaultdict(int)
        for (a, b, t), (step, lo, hi) in (spec.starts or {}).items():
            if not self.sharing and step:
                raise BadInput(f"the manifest's renders start part-way (--share), which {backend.scheduler_name} with {spec.steps} steps cannot")
            if step and step not in self.keep:
                raise BadInput(f"the manifest starts the render at t={t} at step {step}, not one latentwalk {__version__} keeps latents at")
            if step:
                for end in (lo, hi):
                    self.needed[position(a, b, end)] += 1

    def keyframe_noise(self, i: int, keyframe: Keyframe, used: bool = True) -> torch.Tensor:
        """A keyframe's initial noise: its seed's, or for a picture its inversion under the
        keyframe's prompt at the walk's steps, guidance and size, made once and kept in the
        cache by everything that decides it (the picture's sha256, the fit, the model, the
        sampler, the prompt's tensors), so every walk it is in starts from the same noise. (A
        shard inverts only the pictures its frames reach; the others' rows are never read.)"""
        spec = self.spec
        if keyframe.image is None or not used:
            return self.backend.noise(keyframe.seed, spec.width, spec.height)
        from latentwalk.pictures import load
        from latentwalk.workdir import load_inversion, save_inversion

        picture = self.pictures[i] = load(Path(keyframe.image), spec.width, spec.height, spec.fit, keyframe.image_sha256)
        cond = {name: value[i : i + 1] for name, value in self.conds.items()}
        scheduler = self.backend.pipe.scheduler  # its config less diffusers' bookkeeping ("_use_default_values" is a set's order)
        guidance = spec.guidance if spec.invert_guidance is None else spec.invert_guidance
        digest = hashlib.sha256()
        for name in sorted(cond):
            digest.update(name.encode() + cond[name].float().cpu().numpy().tobytes())
        key = hashlib.sha256(json.dumps({
            "picture": keyframe.image_sha256, "fit": spec.fit, "size": [spec.width, spec.height], "steps": spec.steps,
            "guidance": guidance, "sampler": [type(scheduler).__name__, {k: v for k, v in scheduler.config.items() if not k.startswith("_")}], "model": spec.identity,
            "cond": digest.hexdigest(), "inversion": self.backend.family.inversion,
        }, sort_keys=True, default=str).encode()).hexdigest()[:32]  # fmt: skip
        noise = load_inversion(key)
        if noise is None:
            started = time.perf_counter()
            noise = self.backend.invert(picture, cond, spec.steps, guidance)
            save_inversion(key, noise)
            spec.inversions += 1
            spec.timings["invert"] += time.perf_counter() - started
        return noise.to(self.backend.device)

    def batches(self, positions: list[Pos]) -> list[list[Pos]]:
        """The batches that make these positions: of the batch size, in order, or the batches
        a manifest recorded. Fixed before any is rendered, so a resume makes the same ones."""
        positions = [p for p in dict.fromkeys(positions) if p not in self.done]
        if not self.recorded:
            return [list(b) for b in batched(positions, self.spec.batch_size)]
        found: list[list[Pos]] = []
        for p in positions:
            chunk = self.recorded.get(p, [p])
            if chunk not in found:
                found.append(chunk)
        return found

    def ensure(self, positions: list[Pos]) -> None:
        """Make sure every position is rendered (held, and in the store)."""
        for chunk in self.batches(positions):
            self.render_batch(chunk)

    def render_batch(self, chunk: list[Pos]) -> None:
        """One batch: found whole in the store, or rendered whole."""
        if self.spec.starts and all(p in self.spec.starts for p in chunk):
            self.replay(chunk)
            return
        timings = self.spec.timings
        started = time.perf_counter()
        self.spec.rendered.append(chunk)
        new = [p for p in chunk if p not in self.done]
        found = {p: self.made(p) for p in chunk if p not in self.cache}
        if all(image is not None for image in found.values()):
            self.cache.update(found)
            timings["resume"] += time.perf_counter() - started
            self.spec.resumed += len(new)
            self._made(new)
            return
        # A row's result can differ in its last float bits between call sizes and places in the
        # call, but not with its batch-mates (measured), so each batch is made in its order and at
        # a size every run of the walk gives it: its own for keyframes (generate's batches) and a
        # smooth walk's rounds, and for a uniform walk's in-betweens the batch size, a short
        # batch topped up with copies of its last row, whose pictures are dropped.
        exact = self.spec.exact or self.spec.plan is None  # placed now, or a smooth walk's manifest
        size = self.spec.batch_size if not exact and all(p[2] != 0.0 for p in chunk) else len(chunk)
        # Mixed over the whole topped-up batch, as before rows had their own steps: a mix's
        # reductions may sum in another order for another row count (on a GPU).
        padded = chunk + [chunk[-1]] * (size - len(chunk))
        noise, cond = self.inputs(padded)
        rows = self.rows.from_noise(noise, cond, self.step_noise(padded), count=len(chunk), keep=self.keep)
        latents = self.rows.run(rows, size)
        self.backend.sync()
        self._count(len(chunk) * self.steps, len(chunk) * self.steps)
        denoised = time.perf_counter()
        timings["denoise"] += denoised - started
        # Decoded at the call's size too (the top-up rows again): the VAE's last bits can depend on it.
        latents = torch.cat([latents, latents[-1:].expand(size - len(chunk), *latents.shape[1:])]) if size > len(chunk) else latents
        images = self.backend.decode(latents).cpu().numpy()[: len(chunk)]  # the one copy to the host
        timings["decode"] += time.perf_counter() - denoised
        saved = time.perf_counter()
        for p, image, row in zip(chunk, images, rows):
            if p in self.cache:
                continue
            if found.get(p) is not None:
                # What the store holds wins: a resume finds that one, so decisions must use it.
                self.cache[p] = found[p]
                continue
            self._keep(p, row.kept)
            self.store.save(p, image)
            self.cache[p] = image
        timings["save"] += time.perf_counter() - saved
        self._made(new)

    def inputs(self, chunk: list[Pos]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The rows' initial noise and conditioning, each mixed between its keyframes."""
        a = torch.tensor([p[0] for p in chunk], device=self.noises.device)
        b = torch.tensor([p[1] for p in chunk], device=self.noises.device)
        t = torch.tensor([p[2] for p in chunk], dtype=torch.float32, device=self.noises.device)
        noise = self.mix_noise(self.noises[a], self.noises[b], t)
        cond = {name: value[a] if name in self.backend.constant else self.mix_cond(value[a], value[b], t) for name, value in self.conds.items()}
        return noise, cond

    def _count(self, row_steps: int, unshared: int) -> None:
        self.spec.batches = self.rows.calls
        self.spec.model_calls += row_steps
        self.spec.model_calls_unshared += unshared

    def _keep(self, pos: Pos, kept: dict[int, torch.Tensor]) -> None:
        """A render's latents at the steps later renders may start at: held, and stored before
        its picture (the picture is what says a render is made, so a resume finds both)."""
        if self.sharing:
            self.kept[pos] = kept
            self.store.save_latents(pos, kept)

    def latents_at(self, pos: Pos, step: int) -> torch.Tensor | None:
        """A render's latents at `step`, if it kept them (held, stored by an earlier run, or
        passed already by a render still in the pool)."""
        for row in self.active:
            if row.key == pos:
                return row.kept.get(step)
        if any(entry[0] == pos for entry in self.pending):
            return None
        if pos not in self.kept and not self._load_latents(pos):
            return None
        return self.kept[pos].get(step)

    def _load_latents(self, pos: Pos) -> bool:
        """An earlier run's kept latents of a render, held from now on; False if there are none."""
        stored = self.store.load_latents(pos)
        if stored is not None:
            self.kept[pos] = {k: v.to(self.noises.device) for k, v in stored.items()}
        return stored is not None

    # ---- Shared trajectories: a pool of renders, each at its own step ---------------------------

    def made(self, pos: Pos) -> np.ndarray | None:
        """A render an earlier run made: its picture, and when sharing its kept latents too
        (a render whose latents are lost is made again, exactly: later renders start from them)."""
        image = self.store.load(pos)
        if image is not None and self.sharing and pos not in self.kept and not self._load_latents(pos):
            return None
        return image

    def share(self, entries: list[tuple[Pos, tuple[Pos, float], tuple[Pos, float], int]]) -> list[Pos]:
        """Queue one segment's round of in-between renders, each (position, lo, hi, step): to
        start between two renders `lo` and `hi` (position, t) of its segment at `step` from
        their latents (0: its own noise), once both have passed that step. Returns the ones
        made already: all of them when an earlier run made the whole round, else none.

        A round runs in calls of its own (its renders never share a call with another round's,
        or another segment's), each of as many rows as the round has in the pool at that step, in the order
        they started. So every row's call sizes and places are a function of its round alone,
        the same in a resume or a shard, and its bits with them. Renders an earlier run made of
        a round it did not finish pass through the pool without being made again, keeping their
        places, so the others meet the same calls."""
        found = {pos: self.made(pos) for pos, *_ in entries}
        chunk = [e[0] for e in entries]
        if not any(p in self.rounds for p in chunk):  # (not a round made again: recorded once)
            self.spec.rendered.append(chunk)
        self.numbered += 1
        number = self.numbered
        for pos, lo, hi, step in entries:
            # Recorded as started, found or not: a manifest of a resumed run starts it the same way.
            self.spec.shared[pos] = (step, lo[1], hi[1])
            self.rounds[pos], self.round_of[pos] = chunk, number
        if all(image is not None for image in found.values()):
            self.cache.update(found)
            self.spec.resumed += len(chunk)
            self._made(chunk)
            return chunk
        self.pending += [(pos, lo, hi, step, found[pos]) for pos, lo, hi, step in entries]
        return []

    @property
    def busy(self) -> bool:
        return bool(self.pending or self.active)

    def advance(self) -> list[Pos]:
        """One step of the pool: each round in the pool makes one model call, up to a batch of
        its renders, each at its own step, topped up from the queue in order with the
        renders whose start is known. The renders it finished are decoded (one at a time: a
        row's pixels never depend on a batch) and kept."""
        timings, batch = self.spec.timings, self.spec.batch_size
        started = time.perf_counter()
        waiting = []
        for entry in self.pending:
            pos, lo, hi, step, image = entry
            mates = sum(1 for row in self.active if self.round_of[row.key] == self.round_of[pos])
            if mates >= batch or not self.can_start(lo[0], hi[0], step):
                waiting.append(entry)
                continue
            self.active.append(self._start(pos, lo, hi, step, image))
        self.pending = waiting
        if not self.active:
            if self.pending:  # nothing runs and nothing can start: a start no neighbour kept
                pos, lo, hi, step, _ = self.pending[0]
                raise LatentwalkError(f"the render at t={pos[2]} cannot start at step {step}: its neighbours (t={lo[1]}, t={hi[1]}) kept no latents there")
            return []
        groups: dict[int, list] = {}
        for row in self.active:
            groups.setdefault(self.round_of[row.key], []).append(row)
        for rows in groups.values():
            at = [k for k, row in enumerate(rows) if not isinstance(row, Passed)]  # each at its place
            if at:
                self.rows.call([rows[k] for k in at], len(rows), at)
                self._count(len(at), 0)
            for row in rows:
                if isinstance(row, Passed):
                    row.call()
        self.backend.sync()
        finished = [row for row in self.active if row.done]
        self.active = [row for row in self.active if not row.done]
        denoised = time.perf_counter()
        timings["denoise"] += denoised - started
        made, passed = [], []
        for row in finished:
            if isinstance(row, Passed):
                self.cache[row.key] = row.image
                passed.append(row.key)
                continue
            image = self.backend.decode(self.rows.family.finish(row.latents)).cpu().numpy()[0]
            self._keep(row.key, row.kept)
            self.store.save(row.key, image)
            self.cache[row.key] = image
            made.append(row.key)
        timings["decode"] += time.perf_counter() - denoised
        if made:
            self._count(0, len(made) * self.steps)
        self.spec.resumed += len(passed)
        if made or passed:
            self._made(made + passed)
        return made + passed

    def _start(self, pos: Pos, lo: tuple[Pos, float], hi: tuple[Pos, float], step: int, image: np.ndarray | None = None):
        """A pool row: from its own noise (step 0), or from the spherical mix of its neighbours'
        latents at `step`, under its own conditioning and step noise either way; or, for a
        render an earlier run made, its Passed row."""
        for end in (lo[0], hi[0]):  # a manifest's re-render: let go of what no later render needs
            if step and end in self.needed:
                self.needed[end] -= 1
                if not self.needed[end]:
                    self.kept.pop(end, None)
        if image is not None:
            return Passed(pos, step, self.steps, image, self.kept.get(pos, {}))
        noise, cond = self.inputs([pos])
        if step == 0:
            return self.rows.trajectory(pos, cond, self.step_noise([pos]), noise=noise, keep=self.keep)
        u = torch.tensor([(pos[2] - lo[1]) / (hi[1] - lo[1])], dtype=torch.float32, device=self.noises.device)
        x, y = self.latents_at(lo[0], step), self.latents_at(hi[0], step)
        latents = INTERPOLATIONS["slerp"](x.float(), y.float(), u).to(x.dtype)
        return self.rows.trajectory(pos, cond, self.step_noise([pos]), latents=latents, step=step, keep=self.keep)

    def can_start(self, lo: Pos, hi: Pos, step: int) -> bool:
        return step == 0 or (self.latents_at(lo, step) is not None and self.latents_at(hi, step) is not None)

    def replay(self, chunk: list[Pos]) -> None:
        """A pool round made again as it ran (a manifest's, or one of this run's with a picture
        lost since): its neighbours outside it first, then the round, so that each of its
        renders starts as it did and meets calls of the same sizes."""
        if all(p in self.done for p in chunk):
            return
        entries = []
        for pos in chunk:
            step, lo_t, hi_t = (self.spec.starts or {}).get(pos) or self.spec.shared[pos]
            ends = [(position(pos[0], pos[1], x), x) for x in (lo_t, hi_t)]
            for end, _ in ends:
                if end not in chunk and end not in self.done:
                    self.ensure([end])
            entries.append((pos, *ends, step))
        # (A lost picture's round: the others are found in the store and pass through.)
        if not self.share(entries):
            while any(e[0] in chunk for e in self.pending) or any(row.key in chunk for row in self.active):
                self.advance()

    def step_noise(self, chunk: list[Pos]):
        """A stochastic sampler's fresh noise at each step, row by row: each keyframe's own
        (seeded by its seed and the step), moved between keyframes like the initial noise. So
        a walk stays continuous, a keyframe is generate's picture, and no row depends on its
        batch."""
        seeds = [k.seed for k in self.spec.keyframes]
        device = self.noises.device
        t = torch.tensor([p[2] for p in chunk], dtype=torch.float32, device=device)

        def noise(step: int, shape: tuple[int, ...]) -> torch.Tensor:
            one = tuple(shape[1:])
            drawn = {k: seed_noise(step_seed(seeds[k], step), one).to(device) for k in {i for p in chunk for i in p[:2]}}
            ends = [torch.stack([drawn[p[i]] for p in chunk]) for i in (0, 1)]
            return self.mix_noise(ends[0], ends[1], t)

        return noise

    def _made(self, positions: list[Pos]) -> None:
        self.done.update(positions)
        self.spec.renders = len(self.done)
        self.spec.on_render(len(positions))

    def alias(self, pos: Pos, same: Pos) -> None:
        """A keyframe identical to another one: its picture, not a render of its own."""
        if pos in self.done:
            return
        image = self.image(same)
        self.store.save(pos, image)
        self.cache[pos] = image
        self._made([pos])

    def image(self, pos: Pos) -> np.ndarray:
        if pos not in self.cache:
            image = self.store.load(pos)
            if image is None:  # lost since it was made (removed by hand): make it again, the same way
                self.done.discard(pos)
                if pos in self.spec.shared:
                    self.replay(self.rounds.get(pos) or self.recorded.get(pos) or [pos])
                else:
                    self.ensure([pos])
                image = self.cache[pos]
            self.cache[pos] = image
        return self.cache[pos]

    def release(self, positions) -> None:
        """Let go of renders the store can give back (memory stays flat in long segments)."""
        if getattr(self.store, "durable", False):
            for p in positions:
                self.cache.pop(p, None)

    def forget(self) -> None:
        self.cache = {}


def keyframes_used(spec: RenderSpec) -> set[int]:
    """The keyframes whose noise this render reads: all, but for a shard those of its frames."""
    n = len(spec.keyframes)
    if spec.shard is not None and spec.shard.lo is not None:
        return {a for a in range(spec.shard.lo, spec.shard.hi)} | {(a + 1) % n for a in range(spec.shard.lo, spec.shard.hi)}
    if spec.shard is not None and spec.plan is not None:
        return {k for f in spec.plan for k in (f.a, f.b)}
    return set(range(n))


def blend(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """A crossfade frame: the pixel mix of two renders."""
    mixed = (1 - alpha) * x.astype(np.float32) + alpha * y.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def render_frames(backend: Backend, spec: RenderSpec, store=None) -> Iterator[tuple[Frame, np.ndarray]]:
    """Yield (frame, HxWx3 uint8 image) in video order.

    Every render is kept in `store` by its position (an interrupted run's renders are found
    there and not made again). The keyframes are rendered first, in the batches `generate`
    uses, so a walk's keyframes are generate's pictures."""
    renderer = Renderer(backend, spec, store if store is not None else MemoryStore())
    if spec.plan is not None:
        yield from _fixed(renderer, spec)
    else:
        yield from _placed(renderer, spec)


def _fixed(renderer: Renderer, spec: RenderSpec) -> Iterator[tuple[Frame, np.ndarray]]:
    """Frames whose positions are known beforehand: stills, uniform walks, recorded walks.
    Streamed: each batch is rendered when its first frame is due, and each render let go of
    after its last frame."""
    plan = spec.plan
    if all(f.a == f.b for f in plan):  # stills: one batch at a time, in order
        for chunk in batched(plan, spec.batch_size):
            if spec.only is not None and not spec.only & {f.index for f in chunk}:
                continue
            renderer.ensure([position(f.a, f.b, f.t) for f in chunk])
            for f in chunk:
                yield f, _picture(renderer, f)
            renderer.forget()
        spec.frames = list(plan)
        return
    needs = [[position(f.a, f.b, t) for t in (f.t, f.t2) if t is not None] for f in plan]
    _keyframes(renderer, spec, range(len(spec.keyframes)), {p[0] for need in needs for p in need if p[2] == 0.0})
    batches = renderer.batches([p for need in needs for p in need if p[2] != 0.0])
    batch_of = {p: chunk for chunk in batches for p in chunk}
    last_use = {p: i for i, need in enumerate(needs) for p in need}
    for i, f in enumerate(plan):
        for p in needs[i]:
            if p not in renderer.done and p in batch_of:
                renderer.render_batch(batch_of[p])
                for q in batch_of[p]:  # made with it but no frame's (a placement's extra render)
                    if q not in last_use:
                        renderer.cache.pop(q, None)
        yield f, _picture(renderer, f)
        for p in needs[i]:
            if last_use[p] == i:
                renderer.cache.pop(p, None)
    spec.frames = list(plan)


def _keyframes(renderer: Renderer, spec: RenderSpec, keys, needed: set[int] | None = None) -> None:
    """Render a walk's keyframes first, in the batches `generate` makes for them: one prompt
    (and negative) at a time, its seeds together. A render's last bits can depend on the batch
    size, so this is what keeps each keyframe generate's picture bit for bit. A shard makes just
    the batches that hold the keyframes it `needed`, still whole."""
    groups: dict[tuple[str, str], list[Pos]] = {}
    first: dict[tuple[str, str, int], Pos] = {}
    repeats: list[tuple[Pos, Pos]] = []
    for k in keys:
        keyframe = spec.keyframes[k]
        same = first.setdefault((keyframe.prompt, keyframe.negative, keyframe.seed, keyframe.image_sha256), (k, k, 0.0))
        if same != (k, k, 0.0):
            repeats.append(((k, k, 0.0), same))  # a walk that comes back: the same picture
            continue
        # A picture's keyframe in a batch of its own: its frame is the same in any walk.
        group = (keyframe.prompt, keyframe.negative) if keyframe.image is None else ("image", k)
        groups.setdefault(group, []).append((k, k, 0.0))
    for positions in groups.values():
        for chunk in renderer.batches(positions):
            if needed is None or any(p[0] in needed for p in chunk) or any(same in chunk for pos, same in repeats if pos[0] in needed):
                renderer.render_batch(chunk)
    for pos, same in repeats:
        if needed is None or pos[0] in needed:
            renderer.alias(pos, same)
    # How close each picture's frame came back (the walk's guidance and sampler draw it).
    from latentwalk.pictures import difference

    for k, picture in renderer.pictures.items():
        if needed is None or k in needed:
            spec.pictures[k] = round(difference(renderer.image((k, k, 0.0)), picture), 3)
    renderer.forget()


def _picture(renderer: Renderer, f: Frame) -> np.ndarray:
    image = renderer.image(position(f.a, f.b, f.t))
    if f.t2 is None:
        return image
    return blend(image, renderer.image(position(f.a, f.b, f.t2)), f.alpha)


class _Segment:
    """One segment being placed: its placer, what it compares, what it waits for."""

    def __init__(self, renderer: Renderer, spec: RenderSpec, a: int, n: int, start: int):
        from latentwalk.placement import SegmentPlacer, ease_profile

        self.renderer, self.a, self.n, self.start = renderer, a, n, start
        self.b = (a + 1) % len(spec.keyframes)
        self.features: dict[float, np.ndarray] = {}
        self.waiting: set[Pos] = set()
        self.settled = False
        self.measure([0.0, 1.0])
        distance = lambda t1, t2: feature_distance(self.features[t1], self.features[t2])  # noqa: E731
        profile = ease_profile(EASINGS[spec.ease], n)
        if spec.profile is not None:  # the music's shares, shaped by the easing as well
            profile = [w * m for w, m in zip(profile, spec.profile[start : start + n])]
        self.placer = SegmentPlacer(n, distance, profile, extra=spec.extra, crossfade=spec.crossfade)

    def measure(self, ts) -> None:
        """Keep what placement compares, and let go of the pictures (back when due)."""
        for t in ts:
            pos = position(self.a, self.b, t)
            self.features[t] = motion_features(self.renderer.image(pos))
            self.renderer.release([pos])

    def ask(self) -> list[Pos]:
        """The next round's positions, or [] once the segment is settled."""
        positions = [position(self.a, self.b, t) for t in self.placer.next_round()]
        self.waiting = set(positions)
        self.settled = not positions
        return positions

    def share(self, positions: list[Pos]) -> list[Pos]:
        """Queue a round's positions as shared renders; those already made come back.

        Each starts between its nearest neighbours among the renders made and the round's
        coarser positions (latentblending's bisection order: t = 1/2 before 1/4 and 3/4, where
        a round puts several in one gap), at the step sharing.start_step gives for the change
        between the neighbours' pictures: measured, or for a neighbour of this round not made
        yet, its share of the measured gap it splits. The first look starts from noise.
        So every start is known now and a render waits only for its neighbours to pass its start
        step, not to finish: the round's renders run side by side, in calls of their own. In a
        suspected discontinuity, in a big gap that changes much faster than the segment (where
        the model may jump: see sharing.FAST), and where a neighbour starts later than the
        render would, it starts from its own noise."""
        made = sorted(self.features)
        entries, planned = [], {}
        # A frame's share of the segment's change, as far as the renders so far tell.
        whole = max(feature_distance(self.features[0.0], self.features[1.0]),
                    sum(feature_distance(self.features[x], self.features[y]) for x, y in zip(made, made[1:])))  # fmt: skip
        per_frame = max(whole / self.n, 1e-6)
        for pos in sorted(positions, key=lambda p: (dyadic_depth(p[2]), p[2])):
            t = pos[2]
            coarser = [q[2] for q in positions if dyadic_depth(q[2]) < dyadic_depth(t)]
            around = sorted(set(made) | set(coarser))
            lo, hi = max(x for x in around if x < t), min(x for x in around if x > t)
            outer_lo, outer_hi = max(x for x in made if x < t), min(x for x in made if x > t)
            if lo in self.features and hi in self.features:
                change = feature_distance(self.features[lo], self.features[hi])
            else:
                around_change = feature_distance(self.features[outer_lo], self.features[outer_hi])
                change = around_change * (hi - lo) / (outer_hi - outer_lo)
            frames_worth = change / per_frame
            speed = change / max(whole * (hi - lo), 1e-9)  # over the segment's average
            # The first look along the segment is where the placement finds its jumps: its renders
            # are the model's own pictures (a mix across a jump would hide it), and with no
            # neighbours to wait for they fill the pool together (measured: evener and faster).
            first_look = self.placer.rounds <= 1
            step = 0 if first_look else sharing.start_step(frames_worth, self.renderer.steps, jump=self.placer.suspect(outer_lo, outer_hi), speed=speed)
            ends = (position(self.a, self.b, lo), lo), (position(self.a, self.b, hi), hi)
            if step and any(planned.get(x, 0) > step for x in (lo, hi)):
                step = 0  # a neighbour of this round starts later: it never holds this step's latents
            if step and any(x in self.features and self.renderer.latents_at(end, step) is None for (end, x) in ends):
                step = 0  # a neighbour made from later on (or by a run that kept nothing)
            planned[t] = step
            entries.append((pos, *ends, step))
        return self.renderer.share(entries)

    def rendered(self, chunk: list[Pos]) -> None:
        mine = [p for p in chunk if p in self.waiting]
        self.measure([p[2] for p in mine])
        self.waiting -= set(mine)

    def frames(self, spec: RenderSpec, total: int) -> list[Frame]:
        """The chosen frames, with the discontinuities noted in spec.jumps."""
        placer, a, n, index = self.placer, self.a, self.n, self.start
        picks = placer.choose()
        frames = [Frame(index + k, a, self.b, p.t, p.t2, p.alpha) for k, p in enumerate(picks)]
        looks = [self.features[p.t] if p.t2 is None else blend_features(self.features[p.t], self.features[p.t2], p.alpha) for p in picks]
        changes = [feature_distance(x, y) for x, y in zip(looks, looks[1:] + [self.features[1.0]])]
        pace = sum(changes) / len(changes)
        for jump in placer.jumps():
            after = next((f.index for f in frames if f.t2 == jump.hi or f.t >= jump.hi), index + n)
            spec.jumps.append({
                "frame": after % total, "segment": a, "t": round(jump.lo, 6), "change": round(jump.change, 3),
                "over_mean": round(jump.change / pace, 2) if pace > 0 else None,
                "crossfade_frames": sum(1 for f in frames if f.t2 == jump.hi),
            })  # fmt: skip
        return frames


def dyadic_depth(t: float) -> int:
    """How fine a position is on the dyadic lattice: 1 for 1/2, 2 for 1/4 and 3/4, ..."""
    depth = 0
    while t != math.floor(t) and depth < 64:
        t *= 2
        depth += 1
    return depth


def _placed(renderer: Renderer, spec: RenderSpec) -> Iterator[tuple[Frame, np.ndarray]]:
    """A smooth walk: each segment's frames placed where the picture changes evenly.

    Segments are placed one after another, round by round. A round's positions are rendered in
    batches of their own (up to the batch size, each at its own row count; shared, a pool of
    their own), so the batches, and the sizes that decide a render's last bits, are a fixed
    function of the segment's placement and the batch size: a resume or a shard makes the same
    ones. A segment's frames go out once it is settled."""
    n_keys = len(spec.keyframes)
    lo, hi = (spec.shard.lo, spec.shard.hi) if spec.shard is not None else (0, len(spec.lengths))
    _keyframes(renderer, spec, range(n_keys), keyframes_used(spec))
    total = sum(spec.lengths) + (0 if spec.loop else 1)
    starts = [sum(spec.lengths[:a]) for a in range(len(spec.lengths))]
    # One segment at a time: side by side they would share no call (a segment's renders never
    # share a call with another's: that is what keeps a shard's renders the whole walk's).
    for a in range(lo, hi):
        segment = _Segment(renderer, spec, a, spec.lengths[a], starts[a])
        while asked := segment.ask():
            if renderer.sharing:
                # Made already (an earlier run's), or into the pool, which measures each render
                # as it finishes, so the renders that wait on it can start at the next call.
                segment.rendered(segment.share(asked))
                while segment.waiting:
                    assert renderer.busy, "a segment always waits on a render in the pool"
                    segment.rendered(renderer.advance())
            else:
                renderer.ensure(asked)
                segment.rendered(asked)
        yield from _emit(renderer, segment, segment.frames(spec, total), spec)
        for t in segment.features:  # the renders no frame took, too
            if t not in (0.0, 1.0):
                renderer.cache.pop(position(segment.a, segment.b, t), None)
                renderer.kept.pop(position(segment.a, segment.b, t), None)
    if not spec.loop and hi == len(spec.lengths):
        last = n_keys - 1
        final = Frame(total - 1, last, last, 0.0)
        spec.frames.append(final)
        yield final, renderer.image((last, last, 0.0))


def _emit(renderer: Renderer, segment: _Segment, frames: list[Frame], spec: RenderSpec) -> Iterator[tuple[Frame, np.ndarray]]:
    """A settled segment's frames, each render let go of after its last frame."""
    a, b = segment.a, segment.b
    needs = [[position(a, b, t) for t in (f.t, f.t2) if t is not None] for f in frames]
    last_use = {p: i for i, need in enumerate(needs) for p in need}
    for i, f in enumerate(frames):
        yield f, _picture(renderer, f)
        for p in needs[i]:
            if last_use[p] == i:
                renderer.cache.pop(p, None)  # its last frame: no segment needs it again
    spec.frames += frames


def blend_features(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    return (1 - alpha) * x + alpha * y


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
