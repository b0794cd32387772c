"""`cm-media ui`: a local web app (Gradio) to generate, edit and compare with the bundled models and any run,
checkpoint or export named on the command line.

`serve` starts it: analytics, share links and every other network call of Gradio off, bound to 127.0.0.1 unless
told otherwise, results in a temporary folder removed when the server stops. Layout: `app.py`; what the buttons
do: `handlers.py`; request bounds and upload checks: `limits.py`; the served models: `models.py`.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
from dataclasses import dataclass

log = logging.getLogger(__name__)

# set before gradio is imported: no telemetry, no version check, no hub calls
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "GRADIO_SSR_MODE": "False"}


# Gradio keeps each session's component state (every API call is a session of its own) up to this many sessions:
# its default, 10000, let resident memory grow by ~0.25 MiB per request for hours
SESSIONS = 200


@dataclass
class Server:
    """A running app: its URL, the Gradio Blocks, the models and the results folder; `close` stops it and
    removes the results."""

    url: str
    app: object
    store: object
    outputs: object

    def close(self) -> None:
        try:
            self.app.close()
        finally:
            self.outputs.cleanup()


def default_concurrency() -> int:
    """Requests run at once: one per usable core (each request's torch work then runs on one thread)."""
    from cm_media.threads import usable_cores

    return max(1, usable_cores())


def limit_malloc_arenas(n: int) -> None:
    """At most `n` glibc malloc arenas. Requests run on a pool of worker threads, and glibc gives each new thread
    an arena of its own (up to 8 per core): resident memory then grew with every thread that ever ran a request."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, int(n))  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (for --port 0)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve(sources: list[str] | None = None, host: str = "127.0.0.1", port: int | None = 7860, bundled: bool = True,
          concurrency: int | None = None, device: str = "auto", preload: bool = False, block: bool = True,
          quiet: bool = False) -> Server:
    """Start the app; with `block` wait until Ctrl-C or SIGTERM, then stop and clean up (an interrupt before the
    server is up still removes the results folder, at exit). A bad SOURCE is a UserError before anything starts."""
    if block:  # a service manager's stop (SIGTERM), from now on: the same clean shutdown as Ctrl-C
        signal.signal(signal.SIGTERM, _interrupt)
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up checks of its local URL
    from cm_media.ui import limits
    from cm_media.ui.handlers import Outputs
    from cm_media.ui.models import ModelStore

    limit_malloc_arenas(max(2, concurrency or 2))
    store = ModelStore(sources, bundled=bundled, device=device)
    outputs = Outputs()
    atexit.register(outputs.cleanup)
    os.environ["GRADIO_TEMP_DIR"] = str(outputs.root / "uploads")  # Gradio's copies of uploads and results, too
    from cm_media.ui.app import CSS, HEAD, build

    concurrency = default_concurrency() if concurrency is None else concurrency
    port = free_port(host) if not port else port
    app = build(store, outputs, concurrency)
    app.queue(max_size=64, default_concurrency_limit=concurrency)
    if preload:
        store.preload()
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
               allowed_paths=[str(outputs.root)], max_file_size=limits.MAX_UPLOAD_BYTES, show_error=True,
               quiet=quiet, ssr_mode=False, pwa=False, mcp_server=False, enable_monitoring=False,
               run_history=False, footer_links=["api"], css=CSS, head=HEAD,  # run history can sync to the Hub
               state_session_capacity=SESSIONS)
    server = Server(app.local_url.rstrip("/"), app, store, outputs)
    if not block:
        return server
    try:
        app.block_thread()  # until Ctrl-C or SIGTERM (KeyboardInterrupt)
    finally:
        server.close()
    return server


def _interrupt(signum, frame):
    raise KeyboardInterrupt
