"""The world of `builtin:shapes`: procedural scenes, their captions, and a numpy scorer.

A scene is one shape (circle, square or triangle; small or large; one of six colours) on a
plain background, captioned "a large red circle on a blue background". Training draws them
(scripts/train_shapes.py); the scorer reads the four attributes back from any image, so the
trained model can be checked against the caption it was given (scripts/eval_shapes.py, tests).
Pure numpy: no torch.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

SIZE = 64
SIZES = ("small", "large")
COLOURS = {
    "red": (220, 40, 40),
    "green": (50, 190, 60),
    "blue": (60, 100, 235),
    "yellow": (240, 215, 40),
    "white": (245, 245, 245),
    "purple": (150, 60, 200),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {
    "black": (12, 12, 12),
    "gray": (120, 120, 120),
    "blue": (25, 40, 120),
    "green": (25, 95, 40),
}
# Half the side of the shape's bounding box, in pixels: drawn from the range, read back by it.
HALF_SIDE = {"small": (6.0, 8.5), "large": (13.0, 17.0)}


@dataclass(frozen=True)
class Scene:
    size: str
    colour: str
    shape: str
    background: str

    @property
    def caption(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} on a {self.background} background"


def all_scenes() -> list[Scene]:
    """Every combination, less a shape in its background's own colour (it would not show)."""
    return [
        Scene(size, colour, shape, background)
        for size, colour, shape, background in itertools.product(SIZES, COLOURS, SHAPES, BACKGROUNDS)
        if colour != background
    ]


def held_out() -> list[Scene]:
    """Captions never shown in training: one scene in eight, spread so that every value of
    every attribute still appears in training. Fixed, so scores compare across runs."""
    scenes = all_scenes()
    return [s for i, s in enumerate(scenes) if i % 8 == 3]


def training_scenes() -> list[Scene]:
    unseen = set(held_out())
    return [s for s in all_scenes() if s not in unseen]


def words() -> list[str]:
    """The vocabulary of the captions."""
    found: list[str] = []
    for scene in all_scenes():
        for word in scene.caption.split():
            if word not in found:
                found.append(word)
    return found


def unknown_words(texts: list[str]) -> list[str]:
    """Words of the texts that no caption holds, in order, once each."""
    known = set(words())
    found: list[str] = []
    for text in texts:
        for word in re.findall(r"[a-z]+", text.lower()):
            if word not in known and word not in found:
                found.append(word)
    return found


def draw(scene: Scene, rng: np.random.Generator, supersample: int = 4) -> np.ndarray:
    """A SIZE x SIZE x 3 uint8 image of the scene, at a random place and size within its class,
    antialiased by drawing at `supersample` times the size and averaging."""
    n = SIZE * supersample
    half = rng.uniform(*HALF_SIDE[scene.size])
    margin = half + 2
    cx, cy = rng.uniform(margin, SIZE - margin, size=2)
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / supersample
    dx, dy = x - cx, y - cy
    if scene.shape == "circle":
        inside = dx**2 + dy**2 <= half**2
    elif scene.shape == "square":
        inside = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    else:  # an upright triangle, as wide as it is tall
        top = dy + half  # 0 at the apex, 2*half at the base
        inside = (top >= 0) & (dy <= half) & (np.abs(dx) <= top / 2)
    image = np.empty((n, n, 3), np.float32)
    image[:] = BACKGROUNDS[scene.background]
    image[inside] = COLOURS[scene.colour]
    image = image.reshape(SIZE, supersample, SIZE, supersample, 3).mean(axis=(1, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _nearest(colour: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = [np.linalg.norm(colour - np.array(palette[name], np.float32)) for name in names]
    return names[int(np.argmin(distances))]


def classify(image: np.ndarray) -> Scene | None:
    """Read the four attributes back from an image (None when no shape stands out).

    Background: the median of the border. Shape: the pixels far from it (the largest blob's
    bounding box). Colour: their median. Size: the box's longer side. Type: the ideal square,
    circle or upright triangle in that box that overlaps the shape best (intersection over
    union): where a shape misses its box tells more than how much of it it fills, since a
    square with soft, wavy edges fills no more of its box than a circle does."""
    pixels = image.astype(np.float32)
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3), pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    background_colour = np.median(border, axis=0)
    background = _nearest(background_colour, BACKGROUNDS)
    mask = np.linalg.norm(pixels - background_colour, axis=2) > 60
    if mask.sum() < 12:
        return None
    mask = _largest_blob(mask)
    ys, xs = np.nonzero(mask)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    colour = _nearest(np.median(pixels[mask], axis=0), COLOURS)
    side = max(height, width)
    size = "small" if side < (2 * HALF_SIDE["small"][1] + 2 * HALF_SIDE["large"][0]) / 2 else "large"
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    shape = max(SHAPES, key=lambda name: _overlap(box, _ideal(name, height, width)))
    return Scene(size, colour, shape, background)


def _ideal(shape: str, height: int, width: int) -> np.ndarray:
    """The shape drawn to fill a height x width box, as a boolean mask."""
    v, u = (np.mgrid[0:height, 0:width] + 0.5) / np.array([height, width])[:, None, None]
    if shape == "square":
        return np.ones((height, width), bool)
    if shape == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    return np.abs(u - 0.5) <= v / 2  # upright triangle: apex at the top, base at the bottom


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def subjects(image: np.ndarray, least: int = 20) -> int:
    """How many shapes stand out from the background (as classify finds them: pixels far from
    the border's colour, 4-connected regions of at least `least` pixels). A scene has one; a
    double exposure, the mix of two pictures with the shape in two places, has two."""
    pixels = image.astype(np.float32)
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3), pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    mask = np.linalg.norm(pixels - np.median(border, axis=0), axis=2) > 60
    return sum(1 for size in _blobs(mask)[1] if size >= least)


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask (stray pixels of a generated image
    must not stretch the bounding box)."""
    labels, sizes = _blobs(mask)
    return labels == (1 + int(np.argmax(sizes))) if sizes else labels > 0


def _blobs(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The 4-connected regions of a boolean mask: labels (1, 2, ...) and their sizes."""
    labels = np.zeros(mask.shape, np.int32)
    sizes: list[int] = []
    current = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        current += 1
        stack, count = [start], 0
        labels[start] = current
        while stack:
            y, x = stack.pop()
            count += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
        sizes.append(count)
    return labels, sizes


def score(pairs: list[tuple[Scene, np.ndarray]]) -> dict[str, float]:
    """Accuracy per attribute and for all four at once, of images against the scenes asked for."""
    hits = {"size": 0, "colour": 0, "shape": 0, "background": 0, "all": 0}
    for wanted, image in pairs:
        got = classify(image)
        if got is None:
            continue
        same = {name: getattr(got, name) == getattr(wanted, name) for name in ("size", "colour", "shape", "background")}
        for name, ok in same.items():
            hits[name] += ok
        hits["all"] += all(same.values())
    return {name: count / len(pairs) for name, count in hits.items()}
