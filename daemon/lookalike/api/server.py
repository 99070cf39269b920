"""The API's HTTP server: waitress on `api.listen` and/or `api.socket`, in threads of the daemon.

waitress reads each request whole (the body into a temporary file past 512 KiB) before a thread
of its own runs the application, so a client that sends slowly holds a connection, never a
thread; one that stops sending is dropped after `api.read_timeout`. A body over
`api.max_upload_bytes` is refused by its declared length before it is read. One thread runs
waitress's event loop over every listener, and closes them at stop from that same thread.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path
from typing import Callable

from waitress import wasyncore
from waitress.server import create_server

from ..config import ApiSettings, read_token
from ..errors import ConfigError, LookalikeError
from ..metrics import Metrics
from ..store import SearchContext
from ..store.writer import Writer
from .app import Api
from .uploads import UploadExtractor

log = logging.getLogger("lookalike")

LOOP_SECONDS = 0.5            # how soon a stop is seen by the event loop
# Threads beyond api.max_concurrent: a request past the cap reaches the application at once, to
# be answered 503, instead of waiting in waitress's queue for a thread.
SPARE_THREADS = 2
CONNECTION_LIMIT = 100        # waitress's default: open connections, idle keep-alives included

# waitress warns of every request that waits for a thread: under load, a line per request. The
# API's own cap is the signal that matters (503, counted in lookalike_api_requests_total).
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


class ApiServer:
    def __init__(self, settings: ApiSettings, context: SearchContext, writer: Writer, reports: Path,
                 metrics: Metrics, queues: Callable[[], dict[str, int]], source: str):
        token = None
        if settings.token_file is not None:
            try:
                token = read_token(settings.token_file)
            except ValueError as exc:             # changed since the config was checked
                raise ConfigError(source, [f"api.token_file: {exc}"]) from None
        self._map: dict = {}
        self._stopping = threading.Event()
        self.uploads = UploadExtractor(min(settings.max_concurrent, os.cpu_count() or 1), context.settings,
                                       settings.request_timeout)
        self._servers = []
        try:
            # A change not written within the request's time is answered 503 (`store`); it stays queued.
            commit = functools.partial(writer.apply, timeout=settings.request_timeout)
            self.app = Api(context, commit, reports, self.uploads, queues, metrics, token, settings.max_concurrent,
                           settings.max_upload_bytes)
            adjustments = dict(threads=settings.max_concurrent + SPARE_THREADS, channel_timeout=settings.read_timeout,
                               cleanup_interval=max(1, settings.read_timeout // 2), connection_limit=CONNECTION_LIMIT,
                               # waitress refuses a declared length >= this: the cap itself is allowed
                               max_request_body_size=settings.max_upload_bytes + 1,
                               ident="lookalike", expose_tracebacks=False, asyncore_use_poll=True)
            if settings.listen is not None:
                self._servers.append(self._bind("api.listen", settings.listen, listen=settings.listen,
                                                **adjustments))
            if settings.socket is not None:
                self._servers.append(self._bind("api.socket", str(settings.socket),
                                                unix_socket=str(settings.socket),
                                                unix_socket_perms=f"{settings.socket_mode:o}", **adjustments))
        except BaseException:
            self._close()
            self.uploads.stop()
            raise
        for _, where in self.addresses():
            log.info("API on %s", where)
        if settings.beyond_loopback:
            log.warning("api.listen is %s: the API is reachable from other hosts (with the token of "
                        "api.token_file)", settings.listen)
        self._thread = threading.Thread(target=self._run, name="api-http", daemon=True)
        self._thread.start()

    def _bind(self, key: str, where: str, **adjustments):
        try:
            return create_server(self.app, map=self._map, **adjustments)
        except OSError as exc:
            raise LookalikeError(f"{key}: cannot listen on {where}: {exc.strerror or exc}") from None

    def addresses(self) -> list[tuple[str, str]]:
        """("tcp", "http://HOST:PORT") or ("unix", PATH) for each listener."""
        found = []
        for server in self._servers:
            if server.adj.unix_socket:
                found.append(("unix", server.adj.unix_socket))
            else:
                host = server.effective_host
                found.append(("tcp", f"http://{f'[{host}]' if ':' in host else host}:{server.effective_port}"))
        return found

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=LOOP_SECONDS, use_poll=True, map=self._map, count=1)
        except Exception:
            log.exception("the API's HTTP loop failed; the API is closed until a restart")
        finally:
            self._close()

    def _close(self) -> None:
        for server in self._servers:
            server.task_dispatcher.shutdown(timeout=1)
        wasyncore.close_all(self._map)

    def stop(self) -> None:
        """Stop the upload workers (a request waiting for one is answered 503), then stop
        listening and drop open connections."""
        self.uploads.stop()
        self._stopping.set()
        self._thread.join(LOOP_SECONDS * 4)
