"""Where finished frames wait for the video, and the locks that keep two runs apart.

A work directory is named by the job's key (see job.py): re-running the same command after a
crash finds the frames it already made, and a changed parameter finds another directory. Each
frame is written whole (temporary file, then rename), and a frame that cannot be read back is
rendered again, never used. Locks are flock(2) locks, which the kernel releases when their
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
from latentwalk.video import FILE_MODE, partial_path

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
    for leftover in (partial_path(output), lock):
        if leftover.exists():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def frame_name(index: int) -> str:
    return f"frame_{index:06d}.png"


class FrameStore:
    """A locked folder of finished frames for one job key.

    `folder` is a directory under work_root() named by the key, or the user's --frames-dir.
    job.json records the key (frames of another job are never used) and what a resumed run
    must reuse, such as the batch size.
    """

    def __init__(self, folder: Path, key: str, description: dict, replace_foreign: bool = False):
        self.folder = Path(folder)
        self.key = key
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
        for leftover in self.folder.glob(".*.partial"):  # cut short by a crash; we hold the lock
            leftover.unlink(missing_ok=True)
        self.present = {int(m[1]) for p in self.folder.glob("frame_*.png") if (m := re.fullmatch(r"frame_(\d+)\.png", p.name))}
        self.resumed = len(self.present)

    def _adopt(self, description: dict, replace_foreign: bool) -> dict:
        path = self.folder / JOB_FILE
        old = None
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except (ValueError, OSError, UnicodeDecodeError):
                old = {}
        has_frames = any(self.folder.glob("frame_[0-9]*.png"))
        if old is not None and old.get("key") == self.key:
            return old
        # Frames in a folder named by our key are ours, even if a crash lost job.json.
        if has_frames and self.folder.name != self.key:
            if not replace_foreign:
                raise BadInput(
                    f"{str(self.folder)!r} holds frames of another render; pass --overwrite to replace them"
                )
            for p in self.folder.glob("frame_[0-9]*.png"):
                p.unlink()
        record = {"key": self.key, "created": time.time(), **description}
        self.save_record(record)
        return record

    def save_record(self, record: dict) -> None:
        self.record = record
        atomic_write(self.folder / JOB_FILE, (json.dumps(record, indent=1) + "\n").encode())

    def path(self, index: int) -> Path:
        return self.folder / frame_name(index)

    def load(self, index: int) -> np.ndarray | None:
        """A finished frame, or None when it is missing or unreadable (then it is rendered again)."""
        if index not in self.present:
            return None
        try:
            with Image.open(self.path(index)) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError):  # PIL's errors for a truncated or corrupt PNG
            self.present.discard(index)
            return None

    def save(self, index: int, image: np.ndarray, text: dict[str, str] | None = None) -> None:
        info = PngImagePlugin.PngInfo()
        for key, value in (text or {}).items():
            info.add_itxt(key, str(value))
        fd, tmp = tempfile.mkstemp(prefix=f".{frame_name(index)}.", suffix=".partial", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                # Level 1: lossless like any level, at a fraction of the default's time.
                Image.fromarray(image).save(f, format="PNG", pnginfo=info, compress_level=1)
            os.chmod(tmp, FILE_MODE)  # a --frames-dir is the user's: usual permissions
            os.replace(tmp, self.path(index))
        except OSError as e:  # disk full, file size limit: say which, not where in PIL
            Path(tmp).unlink(missing_ok=True)
            raise LatentwalkError(f"cannot write frame {str(self.path(index))!r}: {e.strerror or e}") from e
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.present.add(index)

    def close(self, remove: bool) -> None:
        """Release the folder; `remove` deletes it with its frames (after a success)."""
        if remove:
            for p in self.folder.glob("frame_[0-9]*.png"):
                p.unlink()
            (self.folder / JOB_FILE).unlink(missing_ok=True)
        self.lock.release()
        if remove:
            try:
                self.folder.rmdir()  # only if nothing of the user's is left in it
            except OSError:
                pass


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
    frames: int
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
        for p in folder.iterdir():
            try:
                stats[p.name] = p.stat()
            except FileNotFoundError:  # a running render renamed it meanwhile
                pass
        found.append(
            WorkDir(
                folder=folder,
                record=record,
                frames=sum(1 for name in stats if name.startswith("frame_")),
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
