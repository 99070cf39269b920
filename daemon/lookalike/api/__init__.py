"""The daemon's HTTP API (docs/api.md): reverse image search over the context the daemon keeps.

  server.py    waitress: listeners, threads, timeouts, the body cap
  app.py       the WSGI application: routes over operations.py, token, concurrency cap, errors
  uploads.py   uploaded images decoded in worker processes
  openapi.py   the OpenAPI document
"""

from .server import ApiServer

__all__ = ["ApiServer"]
