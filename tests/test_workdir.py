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


def test_a_store_keeps_whole_renders_by_place_and_drops_broken_or_foreign_ones(tmp_path):
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    key0, middle, other = (0, 0, 0.0), (0, 1, 0.375), (0, 1, 5.960464477539063e-08)
    store = FrameStore(tmp_path / "w", "key-1", {"command": "seed-walk"})
    for pos in (key0, middle, other):
        store.save(pos, image)
    store.close(remove=False)
    # Named by their place in the walk; a repr() of t round-trips exactly.
    names = sorted(str(p.relative_to(tmp_path / "w")) for p in (tmp_path / "w").rglob("*.png"))
    assert names == ["renders/key_0000.png", "renders/seg_0000_0001/t_0.375.png", "renders/seg_0000_0001/t_5.960464477539063e-08.png"]
    (tmp_path / "w" / "renders" / "seg_0000_0001" / "t_0.375.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    (tmp_path / "w" / "renders" / ".key_0002.png.x.partial").write_bytes(b"half")

    store = FrameStore(tmp_path / "w", "key-1", {"command": "seed-walk"})
    assert store.resumed == 3 and store.record["command"] == "seed-walk"
    assert np.array_equal(store.load(key0), image) and np.array_equal(store.load(other), image)
    assert store.load(middle) is None and store.load((2, 2, 0.0)) is None and store.present == {key0, other}
    assert not list((tmp_path / "w").rglob(".*.partial"))
    # The video's frames, in a --frames-dir; those past the end of a shorter run go.
    for index in range(3):
        store.save_frame(index, image, {"frame": str(index)})
    store.trim_frames(2)
    assert sorted(p.name for p in (tmp_path / "w").glob("frame_*")) == ["frame_000000.png", "frame_000001.png"]
    store.close(remove=False)

    with pytest.raises(BadInput, match="holds frames of another render; pass --overwrite"):
        FrameStore(tmp_path / "w", "key-2", {})
    store = FrameStore(tmp_path / "w", "key-2", {}, replace_foreign=True)
    assert store.resumed == 0 and not list((tmp_path / "w").glob("frame_*")) and not (tmp_path / "w" / "renders").exists()
    store.close(remove=True)
    assert not (tmp_path / "w").exists()
