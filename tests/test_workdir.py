"""Work directories and locks, in process: the CLI tests kill real runs around them."""

import os

import numpy as np
import pytest

from latentwalk.errors import BadInput, Busy
from latentwalk.workdir import FrameStore, Lock


def test_a_lock_refuses_a_second_holder_and_goes_with_its_holder(tmp_path):
    first = Lock(tmp_path / "lock", "the thing").acquire()
    with pytest.raises(Busy, match=rf"the thing is in use by another latentwalk \(pid {os.getpid()} on "):
        Lock(tmp_path / "lock", "the thing").acquire()
    first.release()
    assert not (tmp_path / "lock").exists()
    with Lock(tmp_path / "lock", "the thing"):
        assert (tmp_path / "lock").exists()


def test_a_store_keeps_whole_frames_and_drops_broken_or_foreign_ones(tmp_path):
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    store = FrameStore(tmp_path / "w", "key-1", {"command": "seed-walk"})
    store.save(0, image, {"frame": "0"})
    store.save(1, image)
    store.close(remove=False)
    (tmp_path / "w" / "frame_000001.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    (tmp_path / "w" / ".frame_000002.png.x.partial").write_bytes(b"half")

    store = FrameStore(tmp_path / "w", "key-1", {"command": "seed-walk"})
    assert store.resumed == 2 and store.record["command"] == "seed-walk"
    assert np.array_equal(store.load(0), image)
    assert store.load(1) is None and store.load(2) is None and store.present == {0}
    assert not list((tmp_path / "w").glob(".*.partial"))
    store.close(remove=False)

    with pytest.raises(BadInput, match="holds frames of another render; pass --overwrite"):
        FrameStore(tmp_path / "w", "key-2", {})
    store = FrameStore(tmp_path / "w", "key-2", {}, replace_foreign=True)
    assert store.resumed == 0 and not list((tmp_path / "w").glob("frame_*"))
    store.close(remove=True)
    assert not (tmp_path / "w").exists()
