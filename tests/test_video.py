import os

import numpy as np
import pytest

from conftest import read_video
from latentwalk.errors import LatentwalkError
from latentwalk.video import VideoWriter, png_bytes, publish, write_new


def solid(color, width=64, height=48):
    return np.full((height, width, 3), color, np.uint8)


COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]


@pytest.mark.parametrize("suffix, codec", [(".mp4", "h264"), (".webm", "vp9"), (".gif", "gif")])
def test_frames_stream_into_a_video_that_reads_back(tmp_path, suffix, codec):
    path = tmp_path / f"clip{suffix}"
    with VideoWriter(path, 64, 48, fps=10) as video:
        for color in COLORS:
            video.write(solid(color))
        assert not path.exists()  # only appears once complete
    frames, meta = read_video(path)
    assert meta["codec"].startswith(codec) and meta["size"] == (64, 48)
    assert frames.shape == (5, 48, 64, 3)
    for frame, color in zip(frames, COLORS):
        assert np.abs(frame.reshape(-1, 3).mean(0) - color).max() < 12
    assert oct(path.stat().st_mode & 0o777) != "0o600"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_an_error_while_rendering_leaves_no_file(tmp_path):
    path = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(path, 64, 48, fps=10) as video:
            video.write(solid((1, 2, 3)))
            raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_an_ffmpeg_failure_is_one_clear_error_and_leaves_no_file(tmp_path):
    path = tmp_path / "odd.mp4"
    with pytest.raises(LatentwalkError, match="ffmpeg"):
        with VideoWriter(path, 63, 47, fps=10) as video:  # H.264 4:2:0 needs even sizes
            for _ in range(3):
                video.write(solid((9, 9, 9), 63, 47))
    assert list(tmp_path.iterdir()) == []


def test_publish_never_replaces_a_file_that_appeared_meanwhile(tmp_path):
    tmp, target = tmp_path / "new.partial", tmp_path / "out.mp4"
    tmp.write_bytes(b"new")
    target.write_bytes(b"user's file")
    with pytest.raises(FileExistsError):
        publish(tmp, target, overwrite=False)
    assert target.read_bytes() == b"user's file" and tmp.read_bytes() == b"new"
    publish(tmp, target, overwrite=True)
    assert target.read_bytes() == b"new" and not tmp.exists()


def test_png_carries_its_text(tmp_path):
    from PIL import Image

    data = png_bytes(solid((5, 6, 7)), {"prompt": "a castle ☃", "seed": "7"})
    assert png_bytes(solid((5, 6, 7)), {"prompt": "a castle ☃", "seed": "7"}) == data  # resume relies on it
    write_new(tmp_path / "a.png", lambda f: f.write(data), overwrite=False)
    with pytest.raises(LatentwalkError, match="appeared while rendering; not replaced"):
        write_new(tmp_path / "a.png", lambda f: f.write(b"other"), overwrite=False)
    image = Image.open(tmp_path / "a.png")
    assert image.text == {"prompt": "a castle ☃", "seed": "7"}
    assert os.listdir(tmp_path) == ["a.png"]
