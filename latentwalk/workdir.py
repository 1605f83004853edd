"""Where finished renders wait for the video, and the locks that keep two runs apart.

A work directory is named by the job's key (see job.py): re-running the same command after a
crash finds the renders it already made, by their place in the walk, and a changed parameter
finds another directory. Each render is written whole (temporary file, then rename), and one
that cannot be read back is rendered again, never used. Locks are flock(2) locks, which the kernel releases when their
holder dies, even by SIGKILL or power loss: a dead run's lock is never in the way.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from latentwalk.errors import BadInput, Busy, LatentwalkError
from latentwalk.video import FILE_MODE, partial_path, video_partial_path

JOB_FILE = "job.json"
LOCK_FILE = "lock"


def cache_root() -> Path:
    """$LATENTWALK_CACHE, else $XDG_CACHE_HOME/latentwalk, else ~/.cache/latentwalk."""
    if os.environ.get("LATENTWALK_CACHE"):
        return Path(os.environ["LATENTWALK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "latentwalk"


def work_root() -> Path:
    return cache_root() / "work"


def inversion_path(key: str) -> Path:
    """Where a picture's inversion is kept (render.Renderer): shared by every walk it is in,
    so a picture is inverted once per model, prompt, steps, size and fit."""
    return cache_root() / "inversions" / f"{key}.safetensors"


def save_inversion(key: str, noise) -> None:
    """Kept if the cache can take it: one that cannot (read-only, full) costs a later run the
    inversion again, never this render."""
    from safetensors.torch import save

    path = inversion_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_whole(path, save({"noise": noise.detach().contiguous().cpu()}))
    except (OSError, LatentwalkError):
        pass


def load_inversion(key: str):
    """A kept inversion, or None when there is none (or it cannot be read: then it is made again)."""
    from safetensors.torch import load

    try:
        return load(inversion_path(key).read_bytes())["noise"]
    except Exception:  # noqa: BLE001 - missing or damaged
        return None


class Lock:
    """An exclusive, non-blocking flock on `path`; the file says who holds it, for messages."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = Path(path), what
        self._fd: int | None = None

    def acquire(self) -> "Lock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise Busy(f"{self.what} is in use by another latentwalk ({holder}); wait for it or stop it") from None
            # The holder we waited on may have removed the file just before we locked it.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        self._fd = fd
        return self

    def release(self, remove: bool = True) -> None:
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)  # while still locked, so no one can take a dying file
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}"
    except (ValueError, KeyError, OSError):
        return "pid unknown"


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock at `path` (for listings; racy by nature)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def lock_path(output: Path) -> Path:
    """The lock beside an output: hidden, and removed when its run ends."""
    return output.with_name(f".{output.name}.lock")


def remove_leftovers(output: Path) -> list[Path]:
    """What a killed run leaves beside its output (lock file, ffmpeg's partial video), unless a
    live run holds the output. Returns what was removed."""
    lock = lock_path(output)
    if not output.parent.is_dir() or is_locked(lock):
        return []
    removed = []
    for leftover in (partial_path(output), video_partial_path(output), lock):
        if leftover.exists():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def frame_name(index: int) -> str:
    return f"frame_{index:06d}.png"


RENDERS = "renders"


def render_name(pos: tuple[int, int, float]) -> str:
    """Where a render lives in the work directory: by its place in the walk, not by its frame
    number, so a later run of the walk with other frame counts finds the renders it shares.
    repr() of a float round-trips exactly, and placement puts renders on a dyadic lattice."""
    a, b, t = pos
    if t == 0.0:
        return f"{RENDERS}/key_{a:04d}.png"
    return f"{RENDERS}/seg_{a:04d}_{b:04d}/t_{t!r}.png"


_RENDER_NAME = re.compile(r"key_(\d+)\.png|seg_(\d+)_(\d+)/t_([0-9.e+-]+)\.png")


def parse_render_name(name: str) -> tuple[int, int, float] | None:
    match = _RENDER_NAME.fullmatch(name)
    if not match:
        return None
    if match[1] is not None:
        return (int(match[1]), int(match[1]), 0.0)
    try:
        return (int(match[2]), int(match[3]), float(match[4]))
    except ValueError:
        return None


class FrameStore:
    """A locked folder of finished renders (and, in a --frames-dir, the video's frames) for one
    job key.

    `folder` is a directory under work_root() named by the key, or the user's --frames-dir.
    Renders live in its renders/ subfolder by their place in the walk; a --frames-dir also gets
    the video's frames as frame_000000.png onwards. job.json records the key (renders of
    another job are never used) and what a resumed run must reuse, such as the batch size.
    """

    durable = True  # every render saved can be loaded again

    def __init__(self, folder: Path, key: str, description: dict, replace_foreign: bool = False, frames: bool = False):
        self.folder = Path(folder)
        self.key = key
        self.frames = frames  # whether the video's frames are written here too
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(
                f"cannot create work directory {str(self.folder)!r} ({e.strerror}); "
                "set LATENTWALK_CACHE to a writable folder"
            ) from None
        self.lock = Lock(self.folder / LOCK_FILE, f"frames folder {str(self.folder)!r}").acquire()
        try:
            self.record = self._adopt(description, replace_foreign)
        except BaseException:
            self.lock.release()
            raise
        # Cut short by a crash; we hold the lock. Only our own names: a --frames-dir is the user's.
        ours = [".frame_*.partial", f".{JOB_FILE}.*.partial", f"{RENDERS}/**/.*.partial"]
        for leftover in [p for pattern in ours for p in self.folder.glob(pattern)]:
            leftover.unlink(missing_ok=True)
        renders = self.folder / RENDERS
        found = (parse_render_name(str(p.relative_to(self.folder / RENDERS))) for p in renders.glob("**/*.png"))
        self.present = {pos for pos in found if pos is not None}
        self.resumed = len(self.present)

    def _adopt(self, description: dict, replace_foreign: bool) -> dict:
        path = self.folder / JOB_FILE
        old = None
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except (ValueError, OSError, UnicodeDecodeError):
                old = {}
        has_frames = any(self.folder.glob("frame_[0-9]*.png")) or (self.folder / RENDERS).exists()
        if old is not None and old.get("key") == self.key:
            return {**old, **description}
        # Renders in a folder named by our key are ours, even if a crash lost job.json.
        if has_frames and self.folder.name != self.key:
            if not replace_foreign:
                raise BadInput(
                    f"{str(self.folder)!r} holds frames of another render; pass --overwrite to replace them"
                )
            for p in self.folder.glob("frame_[0-9]*.png"):
                p.unlink()
            shutil.rmtree(self.folder / RENDERS, ignore_errors=True)
        record = {"key": self.key, "created": time.time(), **description}
        self.save_record(record)
        return record

    def save_record(self, record: dict) -> None:
        self.record = record
        atomic_write(self.folder / JOB_FILE, (json.dumps(record, indent=1) + "\n").encode())

    def path(self, pos) -> Path:
        return self.folder / render_name(pos)

    def load(self, pos) -> np.ndarray | None:
        """A finished render, or None when it is missing or unreadable (then it is made again)."""
        if pos not in self.present:
            return None
        try:
            with Image.open(self.path(pos)) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError):  # PIL's errors for a truncated or corrupt PNG
            self.present.discard(pos)
            return None
        return pixels

    def save(self, pos, image: np.ndarray) -> None:
        path = self.path(pos)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_png(path, image, None)
        self.present.add(pos)

    # A render's latents at the steps shared renders may start from (render.Renderer), beside
    # its picture and written before it: a picture in the store means both are there.
    def save_latents(self, pos, kept: dict) -> None:
        from safetensors.torch import save

        path = self.path(pos).with_suffix(".latents")
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_whole(path, save({str(step): value.detach().contiguous().cpu() for step, value in kept.items()}))

    def load_latents(self, pos) -> dict | None:
        from safetensors.torch import load

        try:
            return {int(step): value for step, value in load(self.path(pos).with_suffix(".latents").read_bytes()).items()}
        except Exception:  # noqa: BLE001 - missing or damaged: the renders after it start from their own noise
            return None

    def save_frame(self, index: int, image: np.ndarray, text: dict[str, str] | None = None) -> None:
        """The video's frame `index`, in a --frames-dir."""
        _write_png(self.folder / frame_name(index), image, text)

    def trim_frames(self, count: int) -> None:
        """Remove frames past the video's end, left by an earlier run of the walk with more."""
        for p in self.folder.glob("frame_[0-9]*.png"):
            match = re.fullmatch(r"frame_(\d+)\.png", p.name)
            if match and int(match[1]) >= count:
                p.unlink()

    def close(self, remove: bool) -> None:
        """Release the folder; `remove` deletes it with its renders and frames (after a success)."""
        if remove:
            for p in self.folder.glob("frame_[0-9]*.png"):
                p.unlink()
            shutil.rmtree(self.folder / RENDERS, ignore_errors=True)
            (self.folder / JOB_FILE).unlink(missing_ok=True)
        self.lock.release()
        if remove:
            try:
                self.folder.rmdir()  # only if nothing of the user's is left in it
            except OSError:
                pass


def _write_png(path: Path, image: np.ndarray, text: dict[str, str] | None) -> None:
    """A PNG written whole: a temporary file, then a rename."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, str(value))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            # Level 1: lossless like any level, at a fraction of the default's time.
            Image.fromarray(image).save(f, format="PNG", pnginfo=info, compress_level=1)
        os.chmod(tmp, FILE_MODE)  # a --frames-dir is the user's: usual permissions
        os.replace(tmp, path)
    except OSError as e:  # disk full, file size limit: say which, not where in PIL
        Path(tmp).unlink(missing_ok=True)
        raise LatentwalkError(f"cannot write frame {str(path)!r}: {e.strerror or e}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_whole(path: Path, data: bytes) -> None:
    """A file written whole (a temporary file, then a rename), without atomic_write's fsync:
    one per render would cost more than the render on a slow disk."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise LatentwalkError(f"cannot write {str(path)!r}: {e.strerror or e}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # small and rare: worth surviving a power cut
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class WorkDir:
    folder: Path
    record: dict
    renders: int
    bytes: int
    modified: float
    running: bool


def list_work_dirs(root: Path | None = None) -> list[WorkDir]:
    """Every work directory under the root, oldest first."""
    root = root or work_root()
    found = []
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        if not folder.is_dir():
            continue
        try:
            record = json.loads((folder / JOB_FILE).read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            record = {}
        stats = {}
        for p in folder.rglob("*"):
            try:
                if p.is_file():
                    stats[str(p.relative_to(folder))] = p.stat()
            except FileNotFoundError:  # a running render renamed it meanwhile
                pass
        found.append(
            WorkDir(
                folder=folder,
                record=record,
                renders=sum(1 for name in stats if name.startswith(RENDERS + "/") and name.endswith(".png")),
                bytes=sum(st.st_size for st in stats.values()),
                modified=max((st.st_mtime for st in stats.values()), default=0.0),
                running=is_locked(folder / LOCK_FILE),
            )
        )
    return sorted(found, key=lambda w: w.modified)


def remove_work_dir(work: WorkDir) -> None:
    """Remove a work directory unless a run took it meanwhile."""
    with Lock(work.folder / LOCK_FILE, f"work directory {str(work.folder)!r}"):
        for p in work.folder.iterdir():
            if p.name != LOCK_FILE:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    try:
        work.folder.rmdir()
    except OSError:
        pass
