"""The studio's page in a real headless Chromium (Debian's `chromium`, driven by playwright),
against a live server over the real render engine. Screenshots of each step are kept in the
test's temporary folder (and at $LATENTWALK_STUDIO_SCREENSHOT, for the README, when set)."""

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from latentwalk.audio import click_track, write_wav

pytest.importorskip("fastapi")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REASON = "no browser: install Debian's chromium (apt-get install chromium) and the playwright package"
if os.environ.get("LATENTWALK_REQUIRE_BROWSER") == "1":
    assert CHROMIUM, REASON
    import playwright  # noqa: F401 - required: fail, do not skip
elif CHROMIUM is None:
    pytest.skip(REASON, allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason=REASON)


@pytest.fixture
def live(tmp_path, monkeypatch):
    import uvicorn

    from latentwalk.studio.app import create_app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(tmp_path / "outputs", "127.0.0.1", port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(10)
    app.state.worker.stop()


@pytest.fixture
def page(tmp_path):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
        yield page
        browser.close()


def test_compose_preview_render_reload_play_and_cancel_in_the_page(live, page, tmp_path):
    url, app = live
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page.goto(url)
    page.fill("#steps", "4")
    rows = page.locator("tr.keyframe")
    assert rows.count() == 2  # two keyframes to start from
    # Five keyframes in all, so that frames come out while later segments still render.
    for prompt in ("a large purple triangle on a black background", "a small green circle on a gray background", "a large red circle on a blue background"):
        page.click("#add-keyframe")
        rows.nth(rows.count() - 1).locator(".prompt").fill(prompt)
    assert rows.count() == 5
    rows.nth(4).locator(".remove").click()  # and remove one again: four
    for i in range(3):
        rows.nth(i).locator(".frames").fill("16")
    page.wait_for_function("document.querySelector('#plan').textContent.startsWith('49 frames')", timeout=30_000)
    # Preview the first keyframe: a strip of four seeds; keep the second.
    rows.nth(0).locator(".preview").click()
    page.wait_for_selector("tr.keyframe >> nth=0 >> .candidates img >> nth=3", timeout=60_000)
    rows.nth(0).locator(".candidates img").nth(1).click()
    assert rows.nth(0).locator(".seed").input_value() == "2"
    # Music: its envelope and beats on the timeline, with the keyframes; a click on the timeline
    # puts the selected keyframe on the nearest beat, and the walk is placed by seconds.
    song = tmp_path / "song.wav"
    write_wav(song, click_track([0.5 * k for k in range(1, 9)], 4.5))
    page.set_input_files("#audio-file", str(song))
    page.wait_for_function("Number(document.querySelector('#timeline').dataset.beats) >= 7", timeout=60_000)
    rows.nth(2).locator(".prompt").focus()
    box = page.locator("#timeline").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 2.07 / 4.5, box["y"] + box["height"] / 2)  # near the beat at 2 s
    assert page.locator("#placing").input_value() == "seconds"
    at = float(rows.nth(2).locator(".at").input_value())
    assert abs(at - 2.0) < 0.05, at  # snapped to the beat
    page.wait_for_function(f"JSON.parse(document.querySelector('#timeline').dataset.keyframes)[2] === {round(round(at * 12) / 12, 4)}", timeout=30_000)
    keys = page.evaluate("JSON.parse(document.querySelector('#timeline').dataset.keyframes)")
    assert keys[0] == 0 and keys[1] == 1.3333 and keys[3] == 4.0, keys  # the others keep the times they had (16 frames apart)
    # The last keyframe is a picture of the user's, which its prompt describes.
    from PIL import Image

    from latentwalk import shapes

    scene = shapes.Scene("small", "green", "circle", "gray")
    Image.fromarray(shapes.draw(scene, __import__("numpy").random.default_rng(2))).save(tmp_path / "mine.png")
    rows.nth(3).locator(".picture-file").set_input_files(str(tmp_path / "mine.png"))
    page.wait_for_function("document.querySelectorAll('tr.keyframe')[3].querySelector('.picture-name').textContent === 'mine.png'", timeout=30_000)
    page.screenshot(path=shots / "1-preview.png")
    # Render, and see the progress move.
    page.click("#render")
    page.wait_for_function("Number(document.querySelector('#current-progress').dataset.done || 0) > 0", timeout=60_000)
    page.screenshot(path=shots / "2-rendering.png")
    before = int(page.locator("#current-progress").get_attribute("data-done"))
    assert page.locator("#current-state").get_attribute("data-state") == "running" and before < 49
    # A reload mid-render: the page finds the job again and follows it on.
    page.reload()
    page.wait_for_function(f"Number(document.querySelector('#current-progress').dataset.done || 0) > {before}", timeout=60_000)
    assert page.locator("#current-state").get_attribute("data-state") in ("running", "done")
    page.screenshot(path=shots / "3-after-reload.png")
    # Done: the video plays in the page.
    page.wait_for_function("document.querySelector('#current-state').dataset.state === 'done'", timeout=120_000)
    page.wait_for_function("document.querySelector('#current-video').readyState >= 1", timeout=30_000)
    video = page.evaluate("(() => { const v = document.querySelector('#current-video'); return [v.readyState, v.duration, v.videoWidth, v.videoHeight]; })()")
    assert video[0] >= 1 and abs(video[1] - 49 / 12) < 0.2 and video[2:] == [64, 64], video
    # inspect's smoothness plot beside it, and how closely the change follows the music.
    page.wait_for_function("document.querySelector('#smoothness-plot').naturalWidth > 0", timeout=60_000)
    assert "follows the music: r = " in page.locator("#smoothness-figures").text_content()
    [manifest] = [json.loads(p.read_text()) for p in (tmp_path / "outputs").glob("*.mp4.json")]
    assert [p["keyframe"] for p in manifest["pictures"]] == [3] and manifest["pictures"][0]["difference"] < 20  # at 4 steps
    page.screenshot(path=shots / "4-done.png", full_page=True)
    # Cancel a job from the list.
    job = page.evaluate("""fetch('/api/jobs', {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({command: 'seed-walk', prompt: 'a large red circle on a blue background', seeds: '1,2',
        preset: 'shapes', frames: 400, smooth: false, output: 'long.mp4'})}).then(r => r.json())""")
    page.reload()
    cancel = page.locator(f"tr[data-id='{job['id']}'] button.cancel")
    cancel.wait_for(timeout=30_000)
    cancel.click()
    page.wait_for_function(f"document.querySelector(\"tr[data-id='{job['id']}'] .state\").textContent === 'cancelled'", timeout=30_000)
    page.screenshot(path=shots / "5-cancelled.png")
    assert page.errors == []
    if os.environ.get("LATENTWALK_STUDIO_SCREENSHOT"):
        shutil.copy(shots / "4-done.png", Path(os.environ["LATENTWALK_STUDIO_SCREENSHOT"]))
