"""latentwalk ui: the job API in process (FastAPI's TestClient), over the real render engine."""

import json
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import read_video  # noqa: E402
from latentwalk.studio.app import create_app  # noqa: E402

BASE = "http://127.0.0.1:7860"
WALK = {"command": "seed-walk", "prompt": "a large red circle on a blue background", "seeds": "1,2", "preset": "shapes",
        "steps": 4, "frames": 4}  # fmt: skip


@pytest.fixture
def studio(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = create_app(tmp_path / "outputs", "127.0.0.1", 7860)
    with TestClient(app, base_url=BASE) as client:
        yield client, tmp_path / "outputs"
    app.state.worker.stop()


def wait(client, job_id, states=("done", "failed", "cancelled"), seconds=120):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_a_walk_submitted_renders_and_its_command_makes_the_same_frames(studio, run, tmp_path):
    client, outputs = studio
    response = client.post("/api/jobs", json={**WALK, "output": "koi.mp4"})
    assert response.status_code == 201
    job_id = response.json()["id"]
    job = wait(client, job_id)
    assert job["state"] == "done", job
    assert job["frames_done"] == job["frames_total"] == 5 and job["outputs"] == ["koi.mp4"]
    assert job["command"][:2] == ["latentwalk", "seed-walk"] and job["command"][-2:] == ["--", WALK["prompt"]]
    video = client.get(f"/api/jobs/{job_id}/files/koi.mp4")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    ranged = client.get(f"/api/jobs/{job_id}/files/koi.mp4", headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206 and len(ranged.content) == 100  # a <video> seeks
    assert client.get(f"/api/jobs/{job_id}/files/koi.mp4.json").json()["job"]["command"] == "seed-walk"
    assert client.get(f"/api/jobs/{job_id}/files/latest.png").headers["content-type"] == "image/png"
    assert job["renders_done"] >= 5 and job["renders_most"] >= job["renders_done"]  # a smooth walk's progress before its frames
    # inspect's figures and plot of the video, read back from the file.
    figures = client.get(f"/api/jobs/{job_id}/smoothness").json()
    assert figures["video"] == "koi.mp4" and figures["frames"] == 5 and len(figures["changes"]) == 4 and figures["keyframes"] == [0, 4]
    plot = client.get(f"/api/jobs/{job_id}/files/smoothness.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    # Its events: the current state on connecting, which is final here.
    events = client.get(f"/api/jobs/{job_id}/events").text
    assert events.startswith("id: ") and json.loads(events.split("data: ")[1])["state"] == "done"
    # The command, run by hand from the outputs folder, makes the same frames.
    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    run(*[a if a != "koi.mp4" else str(by_hand / "koi.mp4") for a in job["command"][1:]])
    assert np.array_equal(read_video(outputs / "koi.mp4")[0], read_video(by_hand / "koi.mp4")[0])
    # A prompt walk, its prompts file's text in the job.
    story = client.post("/api/jobs", json={"command": "prompt-walk", "prompts": "a red circle | seed=1\na blue square | seed=2\n",
                                           "preset": "shapes", "steps": 4, "frames": 2, "smooth": False})  # fmt: skip
    done = wait(client, story.json()["id"])
    assert done["state"] == "done" and (outputs / done["outputs"][0]).is_file()
    assert [j["id"] for j in client.get("/api/jobs").json()] == [job_id, story.json()["id"]]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"framez": 3}, "unknown key 'framez' for seed-walk"),
        ({"ease": "bounce"}, "--ease must be one of"),
        ({"frames": "many"}, "Invalid value for '--frames'"),
        ({"output": "../escape.mp4"}, "output must be a file name"),
        ({"output": "/tmp/escape.mp4"}, "output must be a file name"),
        ({"output": "x.png"}, "output must be a file name (.mp4, .webm, .gif)"),
        ({"model": "/etc/secrets"}, "model must be a hub id or a builtin model, not a path"),
        ({"frames_dir": "/tmp"}, "frames_dir is not available through the server"),
        ({"audio": "../../song.mp3"}, "audio must be the name of an uploaded file"),
        ({"audio": "song.wav"}, "audio must be the name of an uploaded file"),
        ({"audio": 2024}, "audio must be a string, got 2024"),  # else a path relative to the server
        ({"prompts_file": 7}, "prompts_file must be a string"),
        ({"command": "render"}, "command must be one of generate, seed-walk, prompt-walk"),
    ],
)
def test_a_bad_job_is_422_with_the_cli_s_one_line(studio, change, message):
    client, outputs = studio
    response = client.post("/api/jobs", json={**WALK, **change})
    assert response.status_code == 422 and message in response.json()["error"], response.json()
    assert client.get("/api/jobs").json() == []
    assert not (outputs.parent / "escape.mp4").exists()


def test_a_cancelled_job_stops_and_keeps_its_renders(studio):
    client, outputs = studio
    job_id = client.post("/api/jobs", json={**WALK, "frames": 400, "smooth": False, "output": "long.mp4"}).json()["id"]
    wait(client, job_id, states=("running",))
    cancelled = client.post(f"/api/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 409
    time.sleep(1.0)
    assert client.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled" and not (outputs / "long.mp4").exists()
    assert client.post("/api/jobs/nope/cancel").status_code == 404


def test_foreign_hosts_and_origins_are_refused_and_a_token_server_wants_its_token(tmp_path):
    app = create_app(tmp_path / "out", "127.0.0.1", 7860, worker=False)
    with TestClient(app, base_url=BASE) as client:
        assert client.get("/api/jobs").status_code == 200
        assert client.get("/api/jobs", headers={"Host": "evil.example:7860"}).status_code == 403  # DNS rebinding
        assert client.get("/api/jobs", headers={"Origin": "http://evil.example"}).status_code == 403  # CSRF
        assert client.post("/api/jobs", json=WALK, headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.get("/api/jobs", headers={"Origin": BASE}).status_code == 200
    app = create_app(tmp_path / "out2", "0.0.0.0", 7860, worker=False)
    token = app.state.token
    assert token and len(token) >= 24  # generated, as Jupyter does, off loopback
    with TestClient(app, base_url="http://0.0.0.0:7860") as client:
        for route in ("/", "/api/jobs", "/api/jobs/x/files/latest.png", "/api/jobs/x/events", "/static/studio.js"):
            assert client.get(route).status_code == 401
        assert client.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/jobs", headers={"Authorization": b"Bearer w\xe9"}).status_code == 401  # not ASCII: still 401
        assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        page = client.get(f"/?token={token}")  # the page keeps it in a cookie
        assert page.status_code == 200 and "latentwalk studio" in page.text
        assert client.get("/api/jobs").status_code == 200


@pytest.mark.parametrize(
    "name",
    ["../jobs.sqlite", "..%2Fjobs.sqlite", "%2e%2e%2f.studio%2fjobs.sqlite", ".studio%2Fjobs.sqlite", "..\\jobs.sqlite",
     "%2e%2e", "/etc/passwd", "%2Fetc%2Fpasswd", "....//jobs.sqlite", "koi.mp4%00.png", ".%2Fkoi.mp4", "KOI.MP4"],
)
def test_the_files_route_serves_a_job_s_outputs_and_nothing_else(tmp_path, name):
    app = create_app(tmp_path / "out", "127.0.0.1", 7860, worker=False)
    outputs = tmp_path / "out"
    job_id = app.state.store.add(WALK, ["latentwalk"], ["koi.mp4"])
    (outputs / "koi.mp4").write_bytes(b"video")
    (tmp_path / "secret.txt").write_text("secret")
    with TestClient(app, base_url=BASE) as client:
        assert client.get(f"/api/jobs/{job_id}/files/koi.mp4").content == b"video"
        response = client.get(f"/api/jobs/{job_id}/files/{name}")
        assert response.status_code == 404 and b"secret" not in response.content and b"SQLite" not in response.content


def test_a_server_killed_mid_render_finishes_the_job_on_restart_with_the_same_frames(tmp_path, run):
    """SIGKILL and a restart over the same --outputs: the job resumes from its finished renders."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    outputs = tmp_path / "outputs"

    def serve():
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen([sys.executable, "-m", "latentwalk", "ui", "--port", "0", "--outputs", str(outputs)],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)  # fmt: skip
        line = process.stdout.readline()
        assert line.startswith("latentwalk studio: http://127.0.0.1:"), line
        return process, line.split(": ", 1)[1].strip().rstrip("/")

    process, url = serve()
    try:
        job = {**WALK, "frames": 40, "smooth": False, "output": "kill.mp4"}
        job_id = httpx.post(f"{url}/api/jobs", json=job, timeout=60).json()["id"]
        end = time.monotonic() + 120
        while httpx.get(f"{url}/api/jobs/{job_id}").json()["frames_done"] < 4 and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (outputs / "kill.mp4").exists()
    process, url = serve()
    try:
        end = time.monotonic() + 120
        while (state := httpx.get(f"{url}/api/jobs/{job_id}").json())["state"] not in ("done", "failed") and time.monotonic() < end:
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert state["state"] == "done" and state["frames_done"] == 41, state
    by_hand = tmp_path / "by-hand.mp4"
    run(*[a if a != "kill.mp4" else str(by_hand) for a in state["command"][1:]])
    assert np.array_equal(read_video(outputs / "kill.mp4")[0], read_video(by_hand)[0])


def test_an_uploaded_audio_file_is_checked_and_named_for_jobs(tmp_path):
    from latentwalk.audio import click_track, write_wav

    app = create_app(tmp_path / "out", "127.0.0.1", 7860, worker=False)
    write_wav(tmp_path / "song.wav", click_track([0.5, 1.0], 2.0))
    with TestClient(app, base_url=BASE) as client:
        stored = client.post("/api/uploads?name=song.wav", content=(tmp_path / "song.wav").read_bytes())
        assert stored.status_code == 201
        name = stored.json()["name"]
        assert name.endswith(".wav") and (tmp_path / "out" / name).read_bytes() == (tmp_path / "song.wav").read_bytes()
        assert client.post("/api/uploads?name=notes.txt", content=b"hello").status_code == 422
        bad = client.post("/api/uploads?name=song.mp3", content=b"not audio at all")
        assert bad.status_code == 422 and "song.mp3" in bad.json()["error"]
        assert client.post("/api/uploads?name=../../song.wav", content=b"RIFF").status_code == 422
        assert not (tmp_path / "song.wav.1").exists() and not any(p.name.startswith("..") for p in (tmp_path / "out").iterdir())
        # A job names it, and the music walk is checked with it.
        job = {**WALK, "audio": name, "output": "music.mp4"}
        assert client.post("/api/jobs", json=job).status_code == 201
        # A picture for an image= keyframe: checked on upload, and named by its upload only.
        from PIL import Image

        Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "photo.jpg")
        picture = client.post("/api/uploads?name=photo.jpg", content=(tmp_path / "photo.jpg").read_bytes()).json()["name"]
        assert picture.endswith(".jpg") and (tmp_path / "out" / picture).is_file()
        cut = client.post("/api/uploads?name=cut.png", content=b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
        assert cut.status_code == 422 and "cut.png" in cut.json()["error"] and str(tmp_path) not in cut.json()["error"]
        story = {"command": "prompt-walk", "preset": "shapes", "frames": 4}
        plan = client.post("/api/check", json={**story, "prompts": f"a red circle | image={picture}\na blue square\n"})
        assert plan.status_code == 200 and plan.json()["frames"] == 5
        for path in ("/etc/photo.jpg", "../photo.jpg", "photo.jpg"):
            refused = client.post("/api/check", json={**story, "prompts": f"a red circle | image={path}\na blue square\n"})
            assert refused.status_code == 422 and refused.json()["error"].startswith("line 1: image= must be the name of an uploaded picture")
            # A byte-order mark the command would drop does not hide the line from the check.
            refused = client.post("/api/check", json={**story, "prompts": f"\ufeffimage={path}\na blue square\n"})
            assert refused.status_code == 422 and refused.json()["error"].startswith("line 1: image= must be the name of an uploaded picture")


def test_a_composed_walk_is_checked_and_planned_without_being_queued(tmp_path):
    """POST /api/check: the page's live check while composing, with the keyframes' times as
    the walk places them (frames=, at=, the music's beats)."""
    from latentwalk.audio import click_track, write_wav

    app = create_app(tmp_path / "out", "127.0.0.1", 7860, worker=False)
    write_wav(tmp_path / "song.wav", click_track([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], 4.0))
    with TestClient(app, base_url=BASE) as client:
        story = {"command": "prompt-walk", "preset": "shapes", "steps": 4}
        lines = "a red circle | seed=1 | frames=6\na blue square | seed=2 | frames=12\na green circle | seed=3\n"
        plan = client.post("/api/check", json={**story, "prompts": lines}).json()
        assert plan["frames"] == 19 and plan["fps"] == 12 and plan["keyframes"] == [0.0, 0.5, 1.5] and plan["warnings"] == []
        timed = client.post("/api/check", json={**story, "prompts": "a red circle\na blue square | at=2\na green circle | at=3\n"}).json()
        assert timed["keyframes"] == [0.0, 2.0, 3.0] and timed["frames"] == 37
        bad = client.post("/api/check", json={**story, "prompts": "a red circle | at=1\na blue square\n"})
        assert bad.status_code == 422 and bad.json()["error"].startswith("line 1: the first keyframe starts the video")
        assert client.post("/api/check", json={**WALK, "frames": "many"}).status_code == 422
        # The music: what the server hears in an upload, and keyframes on its beats.
        name = client.post("/api/uploads?name=song.wav", content=(tmp_path / "song.wav").read_bytes()).json()["name"]
        heard = client.get(f"/api/uploads/{name}").json()
        assert heard["duration"] == 4.0 and len(heard["beats"]) == 7 and len(heard["onsets"]) == 7
        assert all(abs(b - c) < 0.03 for b, c in zip(heard["beats"], [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]))
        assert max(heard["envelope"]) == 1.0 and len(heard["envelope"]) <= 2000 and heard["rate"] > 50
        section = client.get(f"/api/uploads/{name}?start=1.25&duration=2").json()
        assert section["duration"] == 2.0 and len(section["beats"]) >= 3  # in seconds from the section's start
        assert all(min(abs(b - c) for c in (0.25, 0.75, 1.25, 1.75)) < 0.03 for b in section["beats"])
        beats = client.post("/api/check", json={**story, "prompts": "a red circle\na blue square\na green circle\n", "audio": name, "on_beats": 2}).json()
        assert beats["keyframes"][1:] == [round(round(b * 12) / 12, 4) for b in heard["beats"][2:5:2]]
        for wrong in ("song.wav", "upload-0123456789ab.wav", "..%2Fsong.wav", "jobs.sqlite"):
            assert client.get(f"/api/uploads/{wrong}").status_code == 404
        for query in ("start=9", "start=nan", "start=-2", "duration=0", "duration=inf", "duration=-1"):
            answer = client.get(f"/api/uploads/{name}?{query}")
            assert answer.status_code == 422 and "\n" not in answer.json()["error"], (query, answer.text)
        # A refused walk leaves no prompts file, whichever check refuses it.
        for wrong in ({"output": "../x.mp4"}, {"steps": "many"}, {"ease": "bounce"}):
            assert client.post("/api/check", json={**story, "prompts": lines, **wrong}).status_code == 422
            assert client.post("/api/jobs", json={**story, "prompts": lines, **wrong}).status_code == 422
        # Nothing was queued or left behind.
        assert client.get("/api/jobs").json() == []
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".studio", name]


def test_the_smoothness_of_a_job_that_is_not_a_finished_walk_is_409(studio):
    client, _ = studio
    job_id = client.post("/api/jobs", json={"command": "generate", "prompt": "a red circle", "preset": "shapes", "steps": 2}).json()["id"]
    assert wait(client, job_id)["state"] == "done"
    assert client.get(f"/api/jobs/{job_id}/smoothness").status_code == 409
    assert client.get(f"/api/jobs/{job_id}/files/smoothness.png").status_code == 404
    assert client.get("/api/jobs/nope/smoothness").status_code == 404


def test_a_jobs_file_from_an_earlier_studio_opens_and_gains_the_new_columns(tmp_path):
    import sqlite3

    from latentwalk.studio.store import Store

    folder = tmp_path / ".studio"
    folder.mkdir()
    db = sqlite3.connect(folder / "jobs.sqlite")
    db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT, frames_done INTEGER, frames_total INTEGER,"
               " outputs TEXT, error TEXT, command TEXT, job TEXT, created REAL, updated REAL, version INTEGER)")  # fmt: skip
    db.execute("INSERT INTO jobs VALUES ('old', 'running', 3, 9, '[\"a.mp4\"]', NULL, '[\"latentwalk\"]', '{}', 1.0, 1.0, 4)")
    db.commit()
    db.close()
    store = Store(folder)
    old = store.get("old")
    assert old["state"] == "queued" and old["frames_done"] == 3 and old["renders_done"] == 0 and old["outputs"] == ["a.mp4"]
    store.update("old", renders_done=5, renders_most=12)
    assert store.get("old")["renders_most"] == 12
    new = store.add({}, ["latentwalk"], ["b.mp4"])
    assert store.get(new)["renders_done"] == 0 and store.get(new)["renders_most"] is None
