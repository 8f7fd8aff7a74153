"""Time-bounded reads: every read (open + decode) runs in a daemon thread and is abandoned after a timeout.

decord and PyAV release the GIL while in FFmpeg, so the timeout fires even when the decoder is stuck; the stuck
thread is abandoned (daemon: interpreter exit never waits for it) and a fresh one serves the next read.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from datamodules.video.decoding.settings import DecodeTimeout

__all__ = ["DecodeThread"]


class DecodeThread:
    """One daemon thread running jobs; a job that overruns is abandoned with its thread."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], dict[str, Any], threading.Event]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="vidrec-decode", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job, box, done = self._jobs.get()
            try:
                box["value"] = job()
            except BaseException as error:  # handed to the caller, re-raised there
                box["error"] = error
            done.set()

    def run(self, job: Callable[[], Any], timeout_s: float) -> Any:
        """Result of ``job()``; raises :class:`DecodeTimeout` when it takes longer than ``timeout_s``."""
        box: dict[str, Any] = {}
        done = threading.Event()
        self._jobs.put((job, box, done))
        if not done.wait(timeout_s):
            raise DecodeTimeout(f"read did not finish within {timeout_s:g} s")
        if "error" in box:
            raise box["error"]
        return box["value"]
