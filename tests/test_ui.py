"""`cm-media ui`: the web app served on a free local port, called through its HTTP API (gradio_client) for every
modality, fed bad uploads and values, and loaded in a real headless Chromium (as the demo report test does).

Files that come back are decoded and compared with what `Generator.generate` makes for the same request, so the
condition, seed and length asked for in the page are the ones the model got.
"""

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("gradio")

from cm_media.errors import UserError  # noqa: E402
from cm_media.ui import limits, serve  # noqa: E402
from cm_media.ui.handlers import Outputs, bench_table, condition_request  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIRST_FRAME = ROOT / "modalities" / "video" / "pretrained_footage" / "first_frame.png"


@pytest.fixture(scope="module")
def server():
    s = serve(port=0, block=False, quiet=True, concurrency=2)
    yield s
    s.close()
    assert not s.outputs.root.exists()  # the results folder goes with the server


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server.url, verbose=False)


def generate(client, model, conds=(), first_frame=None, steps=1, cfg=1.0, seed=0, n=1, length=0):
    conds = list(conds) + [limits.ANY] * (2 - len(conds))
    frame = None if first_frame is None else gradio_client.handle_file(str(first_frame))
    return client.predict(model, *conds, frame, steps, cfg, seed, n, length, api_name="/generate")


def video_frames(path) -> tuple[np.ndarray, float, int]:
    """[T, H, W, 3] uint8 frames, fps, and the number of audio samples (0 without a soundtrack)."""
    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0)) if c.streams.audio else 0
    return frames, fps, samples


def test_generate_audio_with_conditions_and_length(client, server):
    info, html, files = generate(client, "notes", ["60", "flute"], n=2, length=0.5)
    assert len(files) == 2 and "notes_000.wav" in files[0]
    gen = server.store.get("notes")
    want = gen.generate(2, steps=1, seed=0, cond={"pitch": "60", "instrument": "flute"}, cfg_scale=1.0, seconds=0.5,
                        bf16=server.store.bf16)
    other = gen.generate(2, steps=1, seed=0, cond={"pitch": "72", "instrument": "flute"}, cfg_scale=1.0, seconds=0.5,
                        bf16=server.store.bf16)
    for i, f in enumerate(files):
        wav, rate = sf.read(f, dtype="float32")
        assert rate == 16000 and wav.shape == (8000,)  # the asked-for 0.5 s
        got = torch.from_numpy(wav)  # the writer scales down a clip that would clip: compare shapes, not levels
        cos = torch.nn.functional.cosine_similarity
        assert cos(got, want[i, 0, :8000], 0) > 0.999  # the request the model got: pitch 60, flute, seed 0
        assert cos(got, other[i, 0, :8000], 0) < 0.9  # and not another pitch
    assert "1 network evaluation(s) per sample" in info and "--cond pitch=60 --cond instrument=flute" in info
    assert html.count("<audio") == 2 and "pitch=60, instrument=flute" in html


def test_generate_images_grid_and_tiles(client, server):
    info, html, files = generate(client, "image", ["7"], n=4, cfg=1.5)
    names = [Path(f).name for f in files]
    assert names == ["image.png", "0000.png", "0001.png", "0002.png", "0003.png"]
    want = server.store.get("image").generate(4, steps=1, seed=0, cond={"class": "7"}, cfg_scale=1.5,
                                              bf16=server.store.bf16)  # [4, 1, 8, 8]
    for i, f in enumerate(files[1:]):
        tile = np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255  # whole-pixel upscaled 8x8 digit
        scale = tile.shape[0] // 8
        assert tile.shape == (8 * scale, 8 * scale)
        assert np.abs(tile[::scale, ::scale] - want[i, 0].numpy()).max() <= 1 / 255 + 1e-6
    assert html.count("<img") == 4 and "class=7" in html


def test_generate_video_frames_and_sounding_video(client, server):
    _, html, files = generate(client, "moving-mnist", ["3", "7"], length=8)
    clip = next(f for f in files if f.endswith(".mp4"))
    frames, fps, samples = video_frames(clip)
    assert frames.shape[0] == 8 and fps == 8 and samples == 0  # the asked-for 8 frames, silent
    want = server.store.get("moving-mnist").generate(1, steps=1, seed=0, cond={"digit1": "3", "digit2": "7"}, frames=8,
                                                     bf16=server.store.bf16)
    small = torch.from_numpy(frames[..., 0]).float()[None] / 255  # [1, T, H', W'] upscaled by the writer
    small = torch.nn.functional.interpolate(small, size=want.shape[-2:], mode="area")[0]
    assert (small - want[0, 0]).abs().mean() < 0.03  # H.264 at crf 18: close to what the model made
    assert "digit1=3, digit2=7" in html and html.count("<video") == 1

    _, html, files = generate(client, "sounding-digits", ["3"])
    frames, fps, samples = video_frames(files[0])
    assert frames.shape[0] == 16 and fps == 8 and abs(samples / 16000 - 2.0) < 0.1  # 2 s with its soundtrack
    assert "digit=3" in html


def test_generate_footage_from_a_first_frame(client):
    _, html, files = generate(client, "footage", first_frame=FIRST_FRAME, cfg=2.0)
    frames, _, _ = video_frames(next(f for f in files if f.endswith(".mp4")))
    assert frames.shape[0] == 16 and "first frame given" in html
    picture = np.asarray(Image.open(FIRST_FRAME).convert("RGB").resize(frames.shape[2:0:-1]), dtype=np.float32)
    first, last_diff = frames[0].astype(np.float32), np.abs(frames[0].astype(np.float32) - 128).mean()
    assert np.abs(first - picture).mean() < 0.5 * last_diff  # the clip starts from the picture given
    with pytest.raises(gradio_client.exceptions.AppError, match="takes no first frame"):
        generate(client, "image", first_frame=FIRST_FRAME)


def edit(client, model, path, region, steps=2, conds=()):
    conds = list(conds) + [limits.ANY] * (2 - len(conds))
    return client.predict(model, *conds, gradio_client.handle_file(str(path)), region, steps, 0, 1.0, 0,
                          api_name="/edit")


def test_edit_every_modality(client, server, tmp_path):
    gen = server.store.get("audio")
    gen.save(gen.generate(1, seed=3, bf16=server.store.bf16), tmp_path / "note.wav")
    _, html, files = edit(client, "audio", tmp_path / "note.wav", "0.25:0.4")
    before, _ = sf.read(tmp_path / "note.wav", dtype="float32")
    after, rate = sf.read(files[0], dtype="float32")
    assert after.shape == before.shape  # the whole clip back, its length kept
    assert html.count("<audio") == 2 and "input: note.wav" in html and "edited: 0.25:0.4" in html

    img = server.store.get("image")
    three = tmp_path / "three.png"  # at the model's 8x8 (generate's upscaled files read back blurred)
    pixels = img.generate(1, seed=1, cond={"class": "3"}, bf16=server.store.bf16)[0, 0].mul(255).round().byte().numpy()
    Image.fromarray(pixels, mode="L").save(three)
    _, html, files = edit(client, "image", three, "box:0,0,4,8", conds=["3"])
    a = img.modality.read(three, img.cfg, img.codec)[0, 0]
    tile = np.asarray(Image.open(files[0]).convert("L"), dtype=np.float32) / 255
    b = torch.from_numpy(tile[:: tile.shape[0] // 8, :: tile.shape[1] // 8])  # the whole-pixel upscaled result
    assert a.shape == b.shape == (8, 8)
    assert (a[:, 4:] - b[:, 4:]).abs().max() <= 2 / 255 and (a[:, :4] - b[:, :4]).abs().max() > 0.05  # the box only

    vid = server.store.get("video")
    vid.save(vid.generate(1, seed=2, bf16=server.store.bf16), tmp_path / "clip.mp4")
    _, html, files = edit(client, "video", tmp_path / "clip.mp4", "6-9")
    assert video_frames(next(f for f in files if f.endswith(".mp4")))[0].shape[0] == 16

    av_gen = server.store.get("sounding-digits")
    av_gen.save(av_gen.generate(1, seed=4, cond={"digit": "5"}, bf16=server.store.bf16), tmp_path / "sounding.mp4")
    _, html, files = edit(client, "sounding-digits", tmp_path / "sounding.mp4", "audio", steps=1)
    frames, _, samples = video_frames(files[0])
    assert frames.shape[0] == 16 and samples > 0 and "edited: audio" in html


def test_compare_one_two_four_steps(client):
    info, html, files = client.predict("image", "7", limits.ANY, None, 1.5, 0, 1, api_name="/compare")
    for k in (1, 2, 4):
        assert f"image, {k} step(s)**: {k} network evaluation(s)" in info
        assert f"<h3>{k} evaluation(s)" in html
    assert sum(Path(f).name == "image.png" for f in files) == 3 and html.count("<img") == 3


BAD_VALUES = [  # sliders are bounded by Gradio itself ("Value ..."), the rest by cm_media.ui.limits ("error: ...")
    ((["notes"], {"steps": 0}), "Value 0 is less than minimum value 1"),
    ((["notes"], {"n": 100}), "Value 100 is greater than maximum value 16"),
    ((["notes"], {"length": 1000}), "seconds must be a finite number in (0, 60]"),
    ((["notes"], {"seed": -1}), "seed must be an integer"),
    ((["notes", ["600"]], {}), "unknown value '600' for condition 'pitch'"),
    ((["moving-mnist"], {"length": 100000}), "frames must be an integer in 1..256"),
]


@pytest.mark.parametrize("call, needle", BAD_VALUES)
def test_bad_values_are_a_message(client, call, needle):
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        generate(client, *call[0], **call[1])
    assert str(err.value).startswith(("error: ", "Value ")) and needle in str(err.value)


def test_bad_uploads_are_a_message_and_the_server_keeps_serving(client, tmp_path):
    (tmp_path / "notes.txt").write_text("not audio at all\n" * 100)
    sf.write(tmp_path / "ten_hours.wav", np.zeros(36000 * 100, dtype=np.int16), 100)  # 10 h at 100 Hz: 7 MB
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(500))
    cases = [("audio", "notes.txt", "0.1:0.2", "notes.txt holds no audio stream"),
             ("audio", "ten_hours.wav", "0.1:0.2", "is 36000.0 s long; this server edits at most 60 s"),
             ("sounding-digits", "broken.mp4", "audio", "is not video this server can read"),
             ("video", "broken.mp4", "6-9", "is not video this server can read"),
             ("image", "fake.png", "center", "is not a picture this server can read"),
             ("audio", "ten_hours.wav", "9:10", "is 36000.0 s long")]
    for model, name, region, needle in cases:
        with pytest.raises(gradio_client.exceptions.AppError) as err:
            edit(client, model, tmp_path / name, region)
        assert str(err.value).startswith("error: ") and needle in str(err.value), (name, str(err.value))
    sf.write(tmp_path / "short.wav", np.zeros(4000, dtype=np.float32), 8000)
    with pytest.raises(gradio_client.exceptions.AppError, match=r"audio --mask 1:2 is not inside the 0.5\d s input"):
        edit(client, "audio", tmp_path / "short.wav", "1:2")
    with open(tmp_path / "huge.wav", "wb") as f:  # above the upload limit: refused before it is stored
        f.truncate(limits.MAX_UPLOAD_BYTES + 1)
    with pytest.raises(Exception, match="(?i)file size|too large|413|exceeds"):
        edit(client, "audio", tmp_path / "huge.wav", "0.1:0.2")
    _, html, files = generate(client, "audio")  # and the next request is answered
    assert sf.info(files[0]).frames > 0 and "<audio" in html


def test_limits_and_conditions_without_a_server(server):
    info = server.store.info("notes")
    assert condition_request(info, ["60", limits.ANY]) == {"pitch": "60"}
    assert condition_request(info, [" 60,72 ", "flute"]) == {"pitch": "60,72", "instrument": "flute"}
    assert limits.length(0, "seconds") == {} and limits.length(2, "seconds") == {"seconds": 2.0}
    assert limits.length(8.0, "frames") == {"frames": 8}
    with pytest.raises(UserError, match="frames must be an integer"):
        limits.length(2.5, "frames")
    with pytest.raises(UserError, match="ask for 1 or fewer"):
        limits.request_size(2, (1, 2**24))
    table, plot = bench_table(server.store.info("audio"))
    assert table.count("| audio | consistency |") >= 1 and plot is not None and plot.is_file()
    assert bench_table(server.store.info("audio"), ROOT / "no-such-folder") == ("", None)


def test_any_condition_captions_name_the_drawn_classes(server):
    """With no condition asked, each sample's caption names the class generate drew for it, truly."""
    from cm_media.ui import handlers

    r = handlers.generate(server.store, server.outputs, "image", [], n=5, cfg_scale=1.5, seed=3)
    drawn = [s.caption.removeprefix("any: class=") for s in r.shown]
    assert len(drawn) == 5 and all(s.caption.startswith("any: class=") for s in r.shown)
    gen, bf16 = server.store.get("image"), server.store.bf16
    named = gen.generate(5, seed=3, cond={"class": drawn}, cfg_scale=1.5, bf16=bf16)
    assert torch.allclose(gen.generate(5, seed=3, cfg_scale=1.5, bf16=bf16), named, atol=1e-6)


def test_results_folder_is_bounded_and_removed(tmp_path):
    old = Outputs(tmp_path / "a", keep=2, max_age_s=0, most=3)  # everything past the last 2 has expired
    made = [old.new("generate") for _ in range(5)]
    assert [f.is_dir() for f in made] == [False, False, False, True, True]
    young = Outputs(tmp_path / "b", keep=2, max_age_s=1e9, most=3)  # young ones stay, up to `most`
    made = [young.new("edit") for _ in range(5)]
    assert [f.is_dir() for f in made] == [False, False, True, True, True]
    old.cleanup()
    assert not (tmp_path / "a").exists()


def test_page_in_headless_chromium(server, tmp_path):
    from test_demo import INSPECT_MEDIA, Chromium, find_chromium

    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")
    browser = Chromium(binary, timeout=120)
    try:
        for model, tag in (("sounding-digits", "video"), ("image", "img")):
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            browser.send("Network.enable", session=session)
            browser.send("Page.enable", session=session)
            browser.send("Page.navigate", {"url": f"{server.url}/?model={model}"}, session=session)
            browser._wait_event("Page.loadEventFired", session)
            opened = f"document.querySelector('#generate-model input')?.value === '{model}'"
            assert wait_js(browser, session, opened), "the page did not open on ?model="
            browser.evaluate(session, "document.querySelector('#generate-button').click()")
            found = f"document.querySelectorAll('#generate-results {tag}').length > 0"
            assert wait_js(browser, session, found, 90), "no result appeared"
            page = browser.evaluate(session, INSPECT_MEDIA)
            shown = [m for m in page["media"] if "gradio_api/file=" in (m["src"] or "")]
            images = [i for i in page["images"] if "gradio_api/file=" in (i["src"] or "")]
            if tag == "video":
                assert shown, page
                for m in shown:  # decoded, played, and the soundtrack decoded while it played
                    assert m["error"] is None and m["readyState"] >= 2 and m["playedTo"] > 0, m
                    assert m["duration"] == pytest.approx(2.0, abs=0.15) and m["audioBytes"] > 0, m
            else:
                assert images and all(i["naturalWidth"] >= 8 for i in images), images
            # nothing but this server was asked for anything (no CDN, fonts, analytics)
            urls = [e["params"]["request"]["url"] for e in browser.events
                    if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session]
            outside = [u for u in urls if not u.startswith((server.url, "data:", "blob:"))]
            assert urls and not outside, outside
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
        (tmp_path / "page.png").write_bytes(base64.b64decode(shot))
        assert Image.open(tmp_path / "page.png").size[0] > 0
    finally:
        browser.close()


def wait_js(browser, session, expression: str, seconds: float = 30) -> bool:
    """Poll a JavaScript expression in the page until it is true (or `seconds` pass)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if browser.evaluate(session, expression):
            return True
        time.sleep(0.2)
    return False


def test_cli_serves_on_localhost_and_cleans_up(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "cm_media.cli", "ui", "image", "--no-bundled", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        url = None
        for line in proc.stdout:
            if "http://" in line:
                url = line[line.index("http://"):].split()[0].rstrip("/")
                break
        assert url and url.startswith("http://127.0.0.1:"), url
        assert b"cm-media" in urllib.request.urlopen(url, timeout=30).read()
        assert len(list(tmp_path.glob("cm-media-ui-*"))) == 1
    finally:
        proc.send_signal(signal.SIGTERM)  # as a service manager stops it: cleanly
        proc.wait(60)
    assert not list(tmp_path.glob("cm-media-ui-*"))  # the results folder is removed when the server stops


@pytest.mark.parametrize("args, needle", [
    (["/no/such/run", "--no-bundled"], "source not found: /no/such/run"),
    (["--no-bundled"], "--no-bundled needs at least one SOURCE"),
    (["--port", "70000"], "--port must be an integer in 0..65535"),
    (["--concurrency", "0"], "--concurrency must be an integer in 1..64"),
])
def test_cli_user_errors(args, needle, capsys):
    from cm_media.cli import main

    assert main(["ui", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]


def test_cli_without_the_ui_extra(monkeypatch, capsys):
    from cm_media.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed
    assert main(["ui", "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == ('error: cm-media ui needs the ui extra (gradio is not installed): '
                                               'pip install -e ".[ui]"')
