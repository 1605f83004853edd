"""The user's own pictures as keyframes (`image=FILE` in a prompts file): checked, and fitted to
the walk's size. Pillow and numpy only, no torch: every check runs before a model loads.

A picture's keyframe starts from its inversion (each family's `invert`, families/), and a
walk reaches it like any keyframe. Here: what a picture file may be, and how it becomes the
RGB frame the model inverts (and that the walk's frame there is compared with).
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from latentwalk.audio import file_sha256
from latentwalk.errors import BadInput

FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
# A JPEG holding more than one picture (a phone's HDR gain map, a camera's preview) opens as MPO:
# its first picture is the photo.
ALSO = {"MPO": "JPEG"}
FITS = ("crop", "pad", "stretch")
# What a keyframe picture may be: a phone photo (50 MP) passes, a decompression bomb does not
# (Pillow would decode it whole before we could look at it).
MAX_SIDE = 16384
MAX_PIXELS = 64_000_000
MIN_SIDE = 8
# What `--fit pad` fills with, and what shows through a transparent picture: white, the page a
# sketch or a cut-out was drawn on.
PAPER = (255, 255, 255)


@dataclass(frozen=True)
class Picture:
    path: Path  # absolute
    sha256: str
    width: int  # as shown (after its EXIF orientation)
    height: int


def check_fit(fit: str) -> str:
    if fit not in FITS:
        raise BadInput(f"--fit must be one of {', '.join(FITS)}, got {fit!r}")
    return fit


def check_picture(path: Path, what: str) -> Picture:
    """A picture file fit to be a keyframe: it exists, is a PNG, JPEG or WebP of a sane size, and
    decodes whole (a truncated file is refused, never padded with grey). `what` names it in the
    message (the prompts file's line)."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{what}: picture {str(path)!r} does not exist")
    if path.is_dir():
        raise BadInput(f"{what}: picture {str(path)!r} is a directory")
    try:
        with _open(path, what) as image:
            kind = ALSO.get(image.format, image.format)
            if kind not in FORMATS:
                raise BadInput(f"{what}: {str(path)!r} is a {kind} image; latentwalk reads {', '.join(FORMATS.values())}")
            width, height = image.size
            if min(width, height) < MIN_SIDE:
                raise BadInput(f"{what}: picture {str(path)!r} is {width}x{height} px; a keyframe picture needs at least {MIN_SIDE} px a side")
            if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
                raise BadInput(f"{what}: picture {str(path)!r} is {width}x{height} px; at most {MAX_SIDE} px a side "
                               f"and {MAX_PIXELS // 1_000_000} megapixels")  # fmt: skip
            image.load()  # the whole file: a truncated one raises here
            if _transposed(image):
                width, height = height, width
    except BadInput:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadInput(f"{what}: picture {str(path)!r} is damaged or truncated ({_reason(e)})") from None
    return Picture(path.resolve(), file_sha256(path), width, height)


def checked(keyframes: list, source: str) -> list:
    """The keyframes, each picture checked (schedule.Keyframe.image) and named by its absolute
    path and sha256; `source` (the prompts file) and the line name a bad one."""
    found = []
    for keyframe in keyframes:
        if keyframe.image is not None:
            picture = check_picture(Path(keyframe.image), f"{source}:{keyframe.line}" if keyframe.line else source)
            keyframe = replace(keyframe, image=str(picture.path), image_sha256=picture.sha256)
        found.append(keyframe)
    return found


def _open(path: Path, what: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f" ({int(pixels[1]) / 1e6:.0f} megapixels)" if pixels else ""
        raise BadInput(f"{what}: picture {str(path)!r} is too large{size}; at most {MAX_SIDE} px a side and {MAX_PIXELS // 1_000_000} megapixels") from None
    except UnidentifiedImageError:
        raise BadInput(f"{what}: {str(path)!r} is not an image latentwalk can read ({', '.join(FORMATS.values())})") from None
    except OSError as e:
        raise BadInput(f"{what}: cannot read picture {str(path)!r} ({e.strerror or e})") from None


def _reason(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:120]


def _transposed(image: Image.Image) -> bool:
    """Whether the picture's EXIF orientation turns it a quarter (5 to 8 swap its sides)."""
    try:
        return image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: shown as stored
        return False


def load(path: Path, width: int, height: int, fit: str, sha256: str | None = None) -> np.ndarray:
    """The picture as the walk's frame: uint8 [height, width, 3], turned upright by its EXIF
    orientation, transparency over white, grey and 16-bit made 8-bit RGB, and fitted: `crop`
    (the centre at the frame's aspect), `pad` (all of it, the rest white) or `stretch`. With
    `sha256`, the bytes decoded must be those (the job and the cache are named by them)."""
    check_fit(fit)
    data = Path(path).read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise BadInput(f"picture {str(path)!r} has changed since it was checked (its sha256 differs); run the command again")
    with Image.open(io.BytesIO(data)) as image:
        image = rgb(ImageOps.exif_transpose(image))
    if fit == "stretch":
        fitted = image.resize((width, height), Image.Resampling.LANCZOS)
    elif fit == "crop":
        fitted = ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    else:
        fitted = ImageOps.pad(image, (width, height), Image.Resampling.LANCZOS, color=PAPER, centering=(0.5, 0.5))
    return np.asarray(fitted, dtype=np.uint8).copy()


def rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: alpha (and a palette's transparency) composited over white; 16-bit and 32-bit
    grey scaled to 8 bits (Pillow's own conversion clips them to white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" else 65535.0  # a 16-bit PNG opens as I;16 or as I
        grey = np.clip(np.rint(values / top * 255), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        paper = Image.new("RGBA", image.size, (*PAPER, 255))
        return Image.alpha_composite(paper, image).convert("RGB")
    return image.convert("RGB")


def difference(frame: np.ndarray, picture: np.ndarray) -> float:
    """Mean absolute difference (0-255) between the walk's frame and the fitted picture."""
    return float(np.abs(frame.astype(np.float32) - picture.astype(np.float32)).mean())
