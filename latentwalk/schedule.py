"""The schedule: which frame gets which keyframes and weight. Pure Python, no torch.

A walk is a list of keyframes (prompt, negative prompt, seed). Segment i runs from keyframe i
to keyframe i+1 (to keyframe 0 for the closing segment of a loop) and owns its first frame but
not its last, so no frame is repeated at a boundary; an open walk ends on its last keyframe.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from itertools import accumulate
from pathlib import Path
from typing import Callable, Iterable, Iterator

from latentwalk.errors import BadInput

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
MAX_FRAMES = 1_000_000


@dataclass(frozen=True)
class Keyframe:
    prompt: str
    seed: int
    negative: str = ""
    frames: int | None = None  # length of the segment that starts here; None: the walk's default
    at: float | None = None  # seconds from the video's start where this keyframe shows (music.py)
    line: int | None = None  # line number in the prompts file, for error messages
    # A picture of the user's (pictures.py): the keyframe starts from its inversion. Its absolute
    # path, and its sha256 once checked: the sha256 is what the picture is, the path where it was.
    image: str | None = None
    image_sha256: str | None = None


@dataclass(frozen=True)
class Frame:
    index: int
    a: int  # keyframe the segment starts from
    b: int  # keyframe it goes to
    t: float  # eased weight of b: 0 is exactly keyframe a
    # A crossfade frame over a discontinuity: the pixel mix of the renders at t and t2, with
    # weight alpha on t2 (see placement.py).
    t2: float | None = None
    alpha: float = 0.0

    @property
    def position(self) -> float:
        """Where on the segment the frame shows, for its PNG's text and for plots."""
        return self.t if self.t2 is None else (1 - self.alpha) * self.t + self.alpha * self.t2


# Positions of renders: (a, b, t), the keyframes a segment goes from and to and the weight of b.
# Normalised so a keyframe has one name whichever segment asks for it: (k, k, 0.0).
Pos = tuple[int, int, float]


def position(a: int, b: int, t: float) -> Pos:
    if t == 0.0 or a == b:
        return (a, a, 0.0)
    if t == 1.0:
        return (b, b, 0.0)
    return (a, b, t)


# Easing of the weight within a segment: functions [0, 1] -> [0, 1] with f(0)=0, f(1)=1.
def ease_linear(x: float) -> float:
    """Constant speed."""
    return x


def ease_in_out(x: float) -> float:
    """Slow near each keyframe, fast between (cosine)."""
    return (1 - math.cos(math.pi * x)) / 2


def ease_in(x: float) -> float:
    """Slow leaving a keyframe, fast arriving."""
    return 1 - math.cos(math.pi * x / 2)


def ease_out(x: float) -> float:
    """Fast leaving a keyframe, slow arriving."""
    return math.sin(math.pi * x / 2)


EASINGS: dict[str, Callable[[float], float]] = {
    "linear": ease_linear,
    "ease-in-out": ease_in_out,
    "ease-in": ease_in,
    "ease-out": ease_out,
}


def segment_count(n_keyframes: int, loop: bool) -> int:
    return n_keyframes if loop else n_keyframes - 1


def segment_lengths(
    keyframes: list[Keyframe],
    loop: bool,
    frames: int | None = None,
    total: int | None = None,
    source: str = "--duration",
) -> list[int]:
    """Frames in each segment: a keyframe's own `frames`, else `frames`, else an even share of
    `total` (the whole video's length, final frame included, set by `source`) among the
    segments left."""
    n = segment_count(len(keyframes), loop)
    own = [k.frames for k in keyframes[:n]]
    if total is None:
        return [f if f is not None else frames for f in own]
    free = [i for i, f in enumerate(own) if f is None]
    budget = total - (0 if loop else 1) - sum(f for f in own if f is not None)
    if not free:
        if budget != 0:
            raise BadInput(
                f"{source} gives {total} frames but every segment sets its own frames= "
                f"(total {total - budget}); drop one or the other"
            )
        return list(own)
    if budget < len(free):
        raise BadInput(
            f"{source} gives {total} frames, too few for {n} segments; "
            "make it longer or raise --fps"
        )
    share, extra = divmod(budget, len(free))
    lengths = list(own)
    for rank, i in enumerate(free):
        lengths[i] = share + (1 if rank < extra else 0)
    return lengths


def plan_walk(lengths: list[int], loop: bool, easing: str = "linear", profile: list[float] | None = None) -> list[Frame]:
    """Every frame of a walk over len(lengths) segments (len(lengths)+1 keyframes unless loop).
    With a profile (each frame interval's share of its segment, music.py), t advances by those
    shares instead of evenly."""
    ease = EASINGS[easing]
    n_keyframes = len(lengths) if loop else len(lengths) + 1
    plan: list[Frame] = []
    for a, n in enumerate(lengths):
        b = (a + 1) % n_keyframes
        if profile is None:
            shares = [j / n for j in range(n)]
        else:
            part = list(accumulate(profile[len(plan) : len(plan) + n], initial=0.0))
            shares = [c / part[-1] for c in part[:-1]]
        for j in range(n):
            plan.append(Frame(len(plan), a, b, ease(shares[j])))
    if not loop:
        last = n_keyframes - 1
        plan.append(Frame(len(plan), last, last, 0.0))
    return plan


def plan_stills(n_keyframes: int) -> list[Frame]:
    """One frame exactly at each keyframe: what `generate` renders."""
    return [Frame(i, i, i, 0.0) for i in range(n_keyframes)]


def batched(plan: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in plan:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---- Parsing of what the user types -------------------------------------------------------------

_RANGE = re.compile(r"^(\d+)-(\d+)$")


def parse_seed(text: str, what: str = "seed") -> int:
    text = text.strip()
    if not re.fullmatch(r"\d+", text):
        raise BadInput(f"{what} must be a whole number from 0 to {MAX_SEED}, got {text!r}")
    seed = int(text)
    if seed > MAX_SEED:
        raise BadInput(f"{what} must be at most {MAX_SEED}, got {seed}")
    return seed


def parse_seeds(text: str) -> list[int]:
    """'1,2,3' or ranges like '1-4' (inclusive), mixed: '1,5-7'."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = _RANGE.match(part)
        if match:
            lo, hi = parse_seed(match[1]), parse_seed(match[2])
            if hi < lo or hi - lo >= 10_000:
                raise BadInput(f"--seeds range {part!r} must go upward and span under 10000 seeds")
            seeds.extend(range(lo, hi + 1))
        elif part:
            seeds.append(parse_seed(part, "--seeds: each seed"))
        else:
            raise BadInput(f"--seeds must be a comma-separated list like 1,2,3; got {text!r}")
    return seeds


def parse_size(text: str) -> tuple[int, int]:
    """'512x768' (width x height) or '512' for a square."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not match:
        raise BadInput(f"--size must look like 512x512 or 512, got {text!r}")
    width = int(match[1])
    height = int(match[2]) if match[2] else width
    for name, value in (("width", width), ("height", height)):
        if value <= 0 or value % 8:
            raise BadInput(f"--size {name} must be a positive multiple of 8, got {value}")
        if value > 8192:
            raise BadInput(f"--size {name} must be at most 8192, got {value}")
    return width, height


def check_positive(name: str, value, limit: float = MAX_FRAMES) -> None:
    if value is None:
        return
    if not (value > 0) or value > limit or (isinstance(value, float) and not math.isfinite(value)):
        raise BadInput(f"{name} must be greater than 0 and at most {limit:g}, got {value}")


# Options a prompts-file line may carry after its prompt: `a castle at dawn | seed=7 | frames=60`,
# or with a time instead of a length: `a castle at night | at=12.5` (seconds into the video), or
# a picture of the user's that the prompt describes: `a castle at dusk | image=castle.jpg`.
LINE_OPTIONS = ("seed", "frames", "negative", "at", "image")


def parse_prompts(text: str, default_seed: int, default_negative: str = "", source: str = "prompts",
                  folder: Path | None = None) -> list[Keyframe]:  # fmt: skip
    """Keyframes from a prompts file: one per line, blank lines and #-comments skipped. An
    image= path is taken relative to `folder` (the prompts file's)."""
    keyframes = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        prompt, *options = (part.strip() for part in line.split("|"))
        if re.match(r"image\s*=", prompt):  # a picture with no words: `image=photo.jpg`
            prompt, options = "", [prompt, *options]
        if not prompt and not any(re.match(r"image\s*=", option) for option in options):
            raise BadInput(f"{where}: the line has options but no prompt (only a line with image= may have none)")
        keyframe = Keyframe(prompt=prompt, seed=default_seed, negative=default_negative, line=number)
        seen = set()
        for option in options:
            key, sep, value = (s.strip() for s in option.partition("="))
            if not sep or key not in LINE_OPTIONS:
                raise BadInput(
                    f"{where}: expected key=value with key one of {', '.join(LINE_OPTIONS)}; "
                    f"got {option!r}"
                )
            if key in seen:
                raise BadInput(f"{where}: {key}= given twice")
            seen.add(key)
            if key == "seed":
                keyframe = replace(keyframe, seed=parse_seed(value, f"{where}: seed"))
            elif key == "at":
                try:
                    at = float(value)
                except ValueError:
                    at = -1.0
                if not (math.isfinite(at) and 0 <= at <= 24 * 3600):
                    raise BadInput(f"{where}: at= must be a time in seconds from 0 to 86400, got {value!r}")
                keyframe = replace(keyframe, at=at)
            elif key == "image":
                if not value:
                    raise BadInput(f"{where}: image= needs a file name")
                path = Path(value).expanduser()
                keyframe = replace(keyframe, image=str(path if path.is_absolute() or folder is None else folder / path))
            elif key == "frames":
                if not re.fullmatch(r"\d+", value) or not 0 < int(value) <= MAX_FRAMES:
                    raise BadInput(f"{where}: frames must be a whole number from 1 to {MAX_FRAMES}, got {value!r}")
                keyframe = replace(keyframe, frames=int(value))
            else:
                keyframe = replace(keyframe, negative=value)
        keyframes.append(keyframe)
    if not keyframes:
        raise BadInput(f"{source}: no prompts in the file (blank lines and # comments are skipped)")
    timed = [k for k in keyframes if k.at is not None]
    sized = [k for k in keyframes if k.frames is not None]
    if timed and sized:
        raise BadInput(
            f"{source}:{sized[0].line}: frames= and at= (line {timed[0].line}) both place keyframes; "
            "give times with at= or lengths with frames=, not both"
        )
    return keyframes


def read_prompts(path: Path, default_seed: int, default_negative: str = "") -> list[Keyframe]:
    if not path.exists():
        raise BadInput(f"prompts file {str(path)!r} does not exist")
    if path.is_dir():
        raise BadInput(f"prompts file {str(path)!r} is a directory")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInput(f"prompts file {str(path)!r} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise BadInput(f"cannot read prompts file {str(path)!r}: {e.strerror}") from None
    if "\x00" in text:
        raise BadInput(f"prompts file {str(path)!r} is binary, not text")
    return parse_prompts(text, default_seed, default_negative, source=str(path), folder=path.parent)


def check_walk(keyframes: list[Keyframe], loop: bool, what: str) -> None:
    """A walk needs two keyframes, and a segment from a keyframe to an identical one is a still."""
    if len(keyframes) < 2:
        raise BadInput(f"a walk needs at least two {what}, got {len(keyframes)}")
    last = keyframes[-1]
    if last.frames is not None and not loop:
        raise BadInput(
            f"{_where(last)}frames= on the last keyframe has no segment to apply to (or use --loop)"
        )
    pairs = list(zip(keyframes, keyframes[1:] + (keyframes[:1] if loop else [])))
    # A picture's keyframe starts from the picture, whatever its seed.
    same = lambda k: (k.prompt, k.negative, k.seed) if k.image is None else (k.prompt, k.negative, k.image_sha256 or k.image)  # noqa: E731
    for k0, k1 in pairs:
        if same(k0) == same(k1):
            raise BadInput(
                f"{_where(k1)}two neighbouring keyframes are identical ({'the same picture' if k1.image else f'seed {k1.seed}'}); "
                "the segment between them would be a still"
            )


def _where(keyframe: Keyframe) -> str:
    return f"line {keyframe.line}: " if keyframe.line is not None else ""


# ---- Shards: one render split across machines ------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """The K-th of N parts of a walk: its frames [first, end) of the whole video, and for a walk
    placed while rendering the segments [lo, hi) that hold them (placement decides a segment's
    frames from its own renders, so a segment is never split: every shard places its segments
    exactly as the whole render does)."""

    k: int
    n: int
    first: int
    end: int
    lo: int | None = None
    hi: int | None = None


def parse_shard(text: str) -> tuple[int, int]:
    """--shard K/N, K from 1 to N."""
    head, sep, tail = text.partition("/")
    try:
        k, n = int(head), int(tail)
    except ValueError:
        k = n = 0
    if not sep or not 1 <= k <= n or n > 10_000:
        raise BadInput(f"--shard must be K/N with K from 1 to N (e.g. 2/4), got {text!r}")
    return k, n


def shard_of(k: int, n: int, lengths: list[int], loop: bool, by_segments: bool) -> Shard:
    """Which frames shard k of n renders. Contiguous parts of about equal frame counts: by whole
    segments for a placed walk, by frames for one whose positions are known beforehand. The
    last keyframe's frame (a walk that does not loop ends on it) goes to the last shard."""
    total = sum(lengths) + (0 if loop else 1)
    if not by_segments:
        if n > total:
            raise BadInput(f"--shard {k}/{n}: the walk has {total} frames, too few for {n} shards")
        return Shard(k, n, (k - 1) * total // n, k * total // n)
    segments = len(lengths)
    if n > segments:
        raise BadInput(
            f"--shard {k}/{n}: an evenly placed walk is split by whole segments (keyframe to keyframe) and this one has "
            f"{segments}; use at most {segments} shard{'s' if segments > 1 else ''}, more keyframes, or --no-smooth (split by frames)"
        )
    starts = [sum(lengths[:i]) for i in range(segments + 1)]
    # Cut before the segment whose start is nearest each even share, keeping every part non-empty.
    cuts = [0]
    for j in range(1, n):
        target = j * starts[-1] / n
        best = min(range(cuts[-1] + 1, segments - (n - j) + 1), key=lambda s: (abs(starts[s] - target), s))
        cuts.append(best)
    cuts.append(segments)
    lo, hi = cuts[k - 1], cuts[k]
    end = starts[hi] + (1 if hi == segments and not loop else 0)
    return Shard(k, n, starts[lo], end, lo, hi)
