"""`cm-media ui` as a service: end-to-end latency of one request per served model, then throughput with N concurrent
clients for a while (every request answered? any error? the server's resident memory over time).

The server runs as `cm-media ui --preload` in a subprocess (models loaded before the clock starts, as the issue's
targets say); clients are gradio_client.Client objects on this machine, so a request's time is end to end: upload
(the footage picture), queue, generation, file writing, the result's files downloaded. The server's own time per
request (the page's "on the server" figure) is reported beside it.

    python benchmarks/ui_latency.py --json benchmarks/results/ui/ui_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_FRAME = ROOT / "modalities" / "video" / "pretrained_footage" / "first_frame.png"
SERVER_S = re.compile(r"\*\*([0-9.]+) s\*\* on the server")
TARGETS_S = {"audio": 0.5, "image": 0.5, "video": 1.5}  # issue 36: one-step requests, end to end, 2 cores


def start_server(concurrency: int | None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cm_media.cli", "ui", "--port", "0", "--preload"]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    for line in proc.stdout:
        if "http://" in line:
            url = line[line.index("http://"):].split()[0].rstrip("/")
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep draining
            return proc, url
    raise RuntimeError(f"the server did not start (exit status {proc.wait()})")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Http:
    """A plain HTTP client of the app's REST API (what `curl` would do): upload, POST /gradio_api/call/generate,
    read the event stream, download every result file."""

    def __init__(self, url: str):
        import httpx

        self.url, self.http = url, httpx.Client(timeout=300)

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as f:
            r = self.http.post(f"{self.url}/gradio_api/upload", files={"files": (path.name, f)})
        r.raise_for_status()
        return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}

    def call(self, api: str, data: list) -> tuple[list, int]:
        """The endpoint's outputs and the bytes of the files it returned (all downloaded)."""
        r = self.http.post(f"{self.url}/gradio_api/call/{api}", json={"data": data})
        r.raise_for_status()
        event, payload = None, None
        with self.http.stream("GET", f"{self.url}/gradio_api/call/{api}/{r.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    payload = json.loads(line[5:])
                    break
        if event != "complete":
            raise RuntimeError(f"{api}: {payload}")
        size = 0
        for item in payload[2] or []:
            size += len(self.http.get(item["url"]).content)
        return payload, size


def request(http: Http, model: str) -> tuple[str, int]:
    """The page's default request for `model`: one sample, one step, its conditions left at "(any)" (footage:
    the shipped picture as its first frame, uploaded with the request); returns the info text and file bytes."""
    frame = http.upload(FIRST_FRAME) if model == "footage" else None
    cfg = 2.0 if model in ("footage", "spoken-digits", "fashion-mnist") else (1.5 if model == "image" else 1.0)
    out, size = http.call("generate", [model, "(any)", "(any)", frame, 1, cfg, 0, 1, 0])
    return out[0], size


def models_of(url: str) -> list[str]:
    """The served models, from the page's config (the model menu's choices)."""
    import httpx

    config = httpx.get(f"{url}/config", timeout=60).json()
    for comp in config["components"]:
        if comp.get("props", {}).get("elem_id") == "generate-model":
            return [c[1] if isinstance(c, list) else c for c in comp["props"]["choices"]]
    raise RuntimeError("no model menu in the page")


def latency(url: str, repeats: int) -> list[dict]:
    """Per model: the median of `repeats` requests end to end over plain HTTP, the server's own time, and the
    median through gradio_client (its own overhead: polling, copying the files)."""
    from gradio_client import Client, handle_file

    http, client = Http(url), Client(url, verbose=False)
    rows = []
    for model in models_of(url):
        request(http, model)  # warm: first call of each shape
        times, server = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            info, size = request(http, model)
            times.append(time.perf_counter() - t0)
            server.append(float(SERVER_S.search(info).group(1)))
        frame = handle_file(str(FIRST_FRAME)) if model == "footage" else None
        cfg = 2.0 if model in ("footage", "spoken-digits", "fashion-mnist") else (1.5 if model == "image" else 1.0)
        gc_times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, _, files = client.predict(model, "(any)", "(any)", frame, 1, cfg, 0, 1, 0, api_name="/generate")
            gc_times.append(time.perf_counter() - t0)
        kind = {".wav": "audio", ".mp4": "video", ".png": "image"}[Path(files[0]).suffix]
        row = {"model": model, "kind": kind, "end_to_end_s": statistics.median(times), "min_s": min(times),
               "server_s": statistics.median(server), "gradio_client_s": statistics.median(gc_times),
               "bytes": size, "target_s": TARGETS_S.get(kind)}
        rows.append(row)
        print(f"{model:16s} {kind:6s} end to end {row['end_to_end_s']:.3f} s (min {row['min_s']:.3f}), server "
              f"{row['server_s']:.3f} s, via gradio_client {row['gradio_client_s']:.3f} s", flush=True)
    return rows


def throughput(url: str, pid: int, clients: int, seconds: float, models: list[str]) -> dict:
    """`clients` threads, each its own HTTP client, cycling over `models` until `seconds` pass."""
    done, errors, times = [0] * clients, [], []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(i: int):
        http = Http(url)
        k = i
        while time.monotonic() < stop:
            model = models[k % len(models)]
            k += 1
            t0 = time.perf_counter()
            try:
                _, size = request(http, model)
                ok = size > 0
                with lock:
                    if ok:
                        done[i] += 1
                        times.append(time.perf_counter() - t0)
                    else:
                        errors.append(f"{model}: empty result")
            except Exception as exc:  # any failure counts
                with lock:
                    errors.append(f"{model}: {type(exc).__name__}: {exc}")

    rss = [(0.0, rss_mib(pid))]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1.0)
        rss.append((time.monotonic() - t0, rss_mib(pid)))
    wall = time.monotonic() - t0
    n = sum(done)
    times.sort()
    out = {"clients": clients, "seconds": wall, "models": models, "answered": n, "errors": len(errors),
           "error_examples": errors[:5], "requests_per_s": n / wall,
           "latency_median_s": statistics.median(times) if times else None,
           "latency_p95_s": times[int(0.95 * (len(times) - 1))] if times else None,
           "rss_start_mib": rss[0][1], "rss_end_mib": rss[-1][1], "rss_max_mib": max(r for _, r in rss),
           "rss_first_10s_mib": max(r for t, r in rss if t <= 10), "rss_trace": rss}
    print(f"{clients} clients for {wall:.0f} s: {n} answered ({out['requests_per_s']:.1f}/s), {len(errors)} errors, "
          f"latency median {out['latency_median_s']:.2f} s p95 {out['latency_p95_s']:.2f} s; server RSS "
          f"{out['rss_start_mib']:.0f} -> {out['rss_end_mib']:.0f} MiB (max {out['rss_max_mib']:.0f})", flush=True)
    return out


def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed requests per model (median reported)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0, help="length of the throughput run")
    p.add_argument("--models", default="audio,image,notes,video,sounding-digits",
                   help="what the concurrent clients ask for, in turn")
    p.add_argument("--concurrency", type=int, default=None, help="the server's --concurrency (default: its own)")
    p.add_argument("--no-latency", action="store_true", help="only the concurrent-clients run")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    os.environ.setdefault("TMPDIR", tempfile.gettempdir())
    proc, url = start_server(args.concurrency)
    try:
        load_before = load_average()
        rows = [] if args.no_latency else latency(url, args.repeats)
        tp = throughput(url, proc.pid, args.clients, args.seconds, args.models.split(","))
        result = {"url": url, "cpus": os.cpu_count(), "load_average_before": load_before,
                  "load_average_after": load_average(), "latency": rows, "throughput": tp}
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    finally:
        proc.send_signal(signal.SIGTERM)  # the server stops cleanly and removes its results folder
        proc.wait(60)
    for r in rows:
        if r["target_s"] is not None:
            verdict = "met" if r["end_to_end_s"] < r["target_s"] else "MISSED"
            print(f"target {r['model']} ({r['kind']}) < {r['target_s']} s: {r['end_to_end_s']:.3f} s {verdict}")
    print(f"load average before / after: {result['load_average_before']} / {result['load_average_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
