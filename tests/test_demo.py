"""`cm-media demo`: media from the bundled models, a Markdown and an HTML report that references them, and a
real headless Chromium that loads and decodes every audio and video element and renders every image.

The audio model is the bundled one once it ships; until then a tiny run trained here stands in (--model).
"""

import contextlib
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import soundfile as sf

from cm_media.cli import main
from cm_media.cli.demo import bundled_available
from cm_media.registry import get_modality
from cm_media.runs.config import load_config
from cm_media.runs.training import train

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def audio_args(tmp_path_factory):
    """[] when the bundled audio model ships, else --model audio=<a tiny run trained here in a second>."""
    if bundled_available("audio"):
        return []
    sets = {"train.steps": 1, "train.batch_size": 4, "train.log_every": 1, "train.warmup_steps": 1,
            "train.samples": 2, "train.bf16": False, "backbone.preset": "tiny", "data.tones": 64}
    cfg = load_config(ROOT / "configs" / "audio" / "tones_spectrogram_ict.yaml", [f"{k}={v}" for k, v in sets.items()])
    run = tmp_path_factory.mktemp("audio") / "tiny_tones"
    train(cfg, run, progress=False)
    return ["--model", f"audio={run}"]


def audio_seconds(audio_args) -> float:
    """The demo writes audio clips as long as the model's training clips (whole STFT hops)."""
    import cm_media

    gen = cm_media.load(audio_args[1].split("=", 1)[1] if audio_args else "audio")
    return gen.modality.num_samples(gen.cfg, gen.cfg.data.seconds) / gen.cfg.codec.sample_rate


def extra_audio(audio_args) -> dict[str, int]:
    """The audio modality's other bundled models the demo shows (a section each, when the bundled audio model is
    shown rather than --model): folder of their clips -> number of clips (every word, eight requested notes)."""
    if audio_args:
        return {}
    sizes = {"spoken-digits": ("spoken_digits", 10), "notes": ("notes", len(get_modality("audio").demo_notes))}
    return dict(sizes[name] for name in get_modality("audio").demo_models()[1:] if bundled_available(name))


def extra_video() -> dict[str, int]:
    """The video modality's other bundled models the demo shows: folder of their clips -> number of clips (a clip
    per requested pair of digits; two takes on the shipped first frame)."""
    video = get_modality("video")
    sizes = {"moving-mnist": ("moving_mnist", len(video.demo_digits)), "footage": ("footage", 2)}
    return dict(sizes[name] for name in video.demo_models()[1:] if bundled_available(name))


def extra_av() -> dict[str, int]:
    """The sounding-video section (after the images): folder of its clips with sound -> number of clips."""
    return {"sounding_digits": len(get_modality("av").demo_digits)} if bundled_available("sounding-digits") else {}


EXTRA_MODELS = ("spoken-digits", "notes", "moving-mnist", "footage", "fashion-mnist", "sounding-digits")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, audio_args):
    out = tmp_path_factory.mktemp("demo") / "demo"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["demo", "--out", str(out), "--bench-samples", "8", *audio_args])
    return out, code, buf.getvalue()


def test_demo_writes_media_and_reports_with_timings(demo, audio_args):
    out, code, stdout = demo
    assert code == 0
    wavs = sorted((out / "audio").glob("*.wav"))
    mp4s = sorted((out / "video").glob("*.mp4"))
    assert len(wavs) == 4 and len(mp4s) == 4
    for w in wavs:
        assert sf.info(str(w)).duration == pytest.approx(audio_seconds(audio_args), abs=1e-3)
    for name in ("images.png", "video_frames.png", "bench_audio.png", "bench_video.png", "bench_image.png",
                 "report.md", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # it says where everything is and how long each part took
    for m in ("audio", "video", "image"):
        line = next(ln for ln in stdout.splitlines() if ln.startswith(f"{m}: ") and "step(s) in" in ln)
        assert " s (load " in line and str(out) in line
    assert str(out / "report.html") in stdout and "demo finished in" in stdout
    # the Markdown report: timings, and per modality the 1- and 2-step rows with the calibration rows
    md = (out / "report.md").read_text()
    for m in ("Audio", "Video", "Image"):
        assert f"## {m}" in md
    # a section per extra audio model, a row per request; its benchmark runs where its real clips are rendered
    benched = 3 + sum(f"{name}: speed-vs-quality table" in stdout for name in EXTRA_MODELS)
    assert md.count("| data (train split) | baseline |") == benched and md.count("| noise | baseline |") == benched
    assert md.count("| consistency | 1 |") == benched and md.count("| consistency | 2 |") == benched
    for folder, n in extra_audio(audio_args).items():
        assert len(list((out / folder).glob("*.wav"))) == n and md.count(f"]({folder}/") == n
        assert all(sf.info(str(w)).duration == 1.0 for w in (out / folder).glob("*.wav"))
    for folder, n in (extra_video() | extra_av()).items():
        assert len(list((out / folder).glob("*.mp4"))) == n and md.count(f"]({folder}/") >= n
    if extra_av():
        assert "| `digit=3` | [000.mp4](sounding_digits/000.mp4) |" in md
    if bundled_available("fashion-mnist"):
        assert (out / "fashion_mnist.png").is_file() and "(fashion_mnist.png)" in md
    if "spoken_digits" in extra_audio(audio_args):
        assert "| `class=seven` | [007.wav](spoken_digits/007.wav) |" in md
    for ref in ("images.png", "bench_image.png", "audio/000.wav", "video/0000.mp4"):
        assert f"({ref})" in md


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: dict[str, list[str]] = {"audio": [], "video": [], "img": []}

    def handle_starttag(self, tag, attrs):
        if tag in self.refs:
            self.refs[tag].append(dict(attrs)["src"])


def test_report_html_references_every_file_by_relative_path(demo, audio_args):
    out, _, _ = demo
    parser = _Refs()
    parser.feed((out / "report.html").read_text())
    refs = parser.refs
    extra = [f"{folder}/{i:03d}.wav" for folder, n in extra_audio(audio_args).items() for i in range(n)]
    assert refs["audio"] == [f"audio/{i:03d}.wav" for i in range(4)] + extra
    extra_clips = [f"{folder}/{i:04d}.mp4" for folder, n in extra_video().items() for i in range(n)]
    extra_clips += [f"{folder}/{i:03d}.mp4" for folder, n in extra_av().items() for i in range(n)]
    assert refs["video"] == [f"video/{i:04d}.mp4" for i in range(4)] + extra_clips
    assert {"images.png", "video_frames.png", "bench_audio.png", "bench_video.png", "bench_image.png"} <= set(refs["img"])
    for src in refs["audio"] + refs["video"] + refs["img"]:
        assert not os.path.isabs(src) and ".." not in src and (out / src).is_file()


def test_demo_skips_a_missing_bundled_model_with_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(get_modality("audio"), "pretrained_dir", lambda: tmp_path / "empty")
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), "--only", "audio,image", "--no-bench"]) == 0
    stdout = capsys.readouterr().out
    assert "note: skipping audio: no bundled audio model" in stdout
    assert (out / "images.png").is_file() and not (out / "audio").exists()
    assert "audio: skipped" in (out / "report.md").read_text() and "audio: skipped" in (out / "report.html").read_text()


@pytest.mark.parametrize("args, needle", [
    (["--only", "smell"], "--only"),
    (["--model", "audio"], "MODALITY=SOURCE"),
    (["--model", "audio=/no/such/run", "--only", "audio"], "/no/such/run"),
    (["--model", "audio=image", "--only", "audio"], "is a image model"),
    (["--bench-samples", "2"], "--bench-samples"),
    (["--steps", "0"], "--steps"),
    (["--out", "FILE"], "is a file"),
])
def test_demo_user_errors(args, needle, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    args = [str(tmp_path / "f") if a == "FILE" else a for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "d")]
    assert main(["demo", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]


# ---------------------------------------------------------------- a real browser


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: fd 3 in, fd 4 out,
    NUL-separated JSON messages), so no port, websocket library or driver is needed."""

    def __init__(self, binary: str, timeout: float = 60.0):
        self.timeout, self.buf, self.next_id, self.events = timeout, b"", 0, []
        to_r, self.w = os.pipe()
        self.r, from_w = os.pipe()
        # move the child's ends above 4; bash (dash cannot name fds above 9) puts them on 3 and 4 and execs chromium
        child_in, child_out = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
        os.close(to_r)
        os.close(from_w)
        self.profile = tempfile.TemporaryDirectory()
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--remote-debugging-pipe", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                f"--user-data-dir={self.profile.name}", "about:blank"]
        shell = f'exec "$0" "$@" 3<&{child_in} 4>&{child_out} {child_in}<&- {child_out}>&-'
        self.proc = subprocess.Popen([shutil.which("bash") or "bash", "-c", shell, *args], pass_fds=(child_in, child_out),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(child_in)
        os.close(child_out)

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            if select.select([self.r], [], [], left)[0]:
                chunk = os.read(self.r, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium exited (status {self.proc.poll()})")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def _wait_event(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method and e.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._message(deadline))

    def open(self, url: str) -> str:
        """A new tab at `url`, after its load event; returns the session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        self._wait_event("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, expression: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                      session=session)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def close(self):
        with contextlib.suppress(Exception):
            self.send("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.w)
        os.close(self.r)
        self.profile.cleanup()


# Waits until every <audio>/<video> has decoded data (loadeddata) or failed, plays each video a moment (its
# clock only advances when frames decode), waits for every <img>, and reports what the page holds.
INSPECT_MEDIA = """
(async () => {
  const settle = (el, events, ms) => new Promise(res => {
    const t = setTimeout(() => res('timeout'), ms);
    for (const ev of events) el.addEventListener(ev, () => { clearTimeout(t); res(ev); }, {once: true});
  });
  const media = [...document.querySelectorAll('audio, video')];
  await Promise.all(media.map(el => (el.readyState >= 2 || el.error) ? null : settle(el, ['loadeddata', 'error'], 20000)));
  const played = await Promise.all(media.map(async el => {
    if (el.tagName !== 'VIDEO' || el.error) return null;
    try { await el.play(); } catch (e) { return -1; }
    const t0 = performance.now();
    while (el.currentTime === 0 && performance.now() - t0 < 10000) await new Promise(r => setTimeout(r, 25));
    el.pause();
    return el.currentTime;
  }));
  const imgs = [...document.images];
  await Promise.all(imgs.map(im => im.complete ? null : settle(im, ['load', 'error'], 20000)));
  return {
    media: media.map((el, i) => ({tag: el.tagName.toLowerCase(), src: el.getAttribute('src'),
      readyState: el.readyState, duration: el.duration, error: el.error ? el.error.code : null,
      videoWidth: el.videoWidth || 0, videoHeight: el.videoHeight || 0, playedTo: played[i],
      audioBytes: el.webkitAudioDecodedByteCount || 0})),
    images: imgs.map(im => ({src: im.getAttribute('src'), naturalWidth: im.naturalWidth})),
  };
})()
"""


@pytest.fixture(scope="module")
def chromium():
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")
    browser = Chromium(binary)
    yield browser
    browser.close()


def test_report_plays_in_headless_chromium(demo, chromium, tmp_path, audio_args):
    out, _, _ = demo
    page = chromium.evaluate(chromium.open((out / "report.html").as_uri()), INSPECT_MEDIA)
    audio = [m for m in page["media"] if m["tag"] == "audio"]
    video = [m for m in page["media"] if m["tag"] == "video"]
    assert len(audio) == 4 + sum(extra_audio(audio_args).values()) and len(video) == 4 + sum((extra_video() | extra_av()).values())
    for m in audio + video:
        assert m["error"] is None and m["readyState"] >= 2, m  # HAVE_CURRENT_DATA: decoded, not just fetched
    for m in audio:
        seconds = audio_seconds(audio_args) if m["src"].startswith("audio/") else 1.0  # words and notes: 1 s
        assert m["duration"] == pytest.approx(seconds, abs=0.02), m
    for m in video:
        assert m["duration"] == pytest.approx(2.0, abs=0.15), m  # 16 frames at 8 fps
    for m in video:
        assert m["videoWidth"] > 0 and m["videoHeight"] > 0 and m["playedTo"] > 0, m
        if any(m["src"].startswith(f"{folder}/") for folder in extra_av()):
            assert m["audioBytes"] > 0, m  # a sounding clip: the browser decoded its AAC track while it played
    assert len(page["images"]) >= 5
    for im in page["images"]:
        assert im["naturalWidth"] > 0, im
    assert {"bench_audio.png", "bench_video.png", "bench_image.png", "images.png"} <= {i["src"] for i in page["images"]}

    # the same check catches what a browser cannot play: a corrupt video, a missing audio file, a missing image
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (tmp_path / "bad.html").write_text('<video preload="auto" src="broken.mp4"></video>'
                                       '<audio preload="auto" src="missing.wav"></audio><img src="missing.png">')
    bad = chromium.evaluate(chromium.open((tmp_path / "bad.html").as_uri()), INSPECT_MEDIA)
    assert all(m["error"] is not None and m["readyState"] < 2 for m in bad["media"]), bad
    assert bad["images"][0]["naturalWidth"] == 0
