"""The API's WSGI application: routes, each a thin handler over operations.py, and the rules
every request goes through (token, concurrency cap, errors as JSON, metrics).

A route is one line of ROUTES and a handler `(api, request, **url_arguments) -> document`; its
OpenAPI description is one entry of openapi.DOCUMENT (a test holds the two to each other).
Handlers read the daemon's open context (read transactions, safe from any thread); the few that
change it (tags) hand their change to the store's writer thread (`commit`), which stays its only
writer.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .. import operations
from ..errors import ImageError, LookalikeError, NotFoundError, ReportError, StoreError, UsageError
from ..extract import Query
from ..metrics import Metrics
from ..settings import DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_SIMILAR_THRESHOLD
from ..store import SearchContext
from ..store.tags import Reference, check_name
from .openapi import DOCUMENT
from .uploads import Stopping, UploadExtractor

log = logging.getLogger(__name__)

# Every `error` an answer can carry: the CLI's failure reasons for an image, then the API's own.
REASONS = ImageError.REASONS + ("usage", "not_found", "unauthorized", "method_not_allowed", "busy",
                                "unavailable", "store", "report", "internal")
UNMATCHED = "unmatched"        # the route label of every request no route matched
RETRY_AFTER_SECONDS = 1
UPLOAD_NAME = "upload"         # what an upload without a file name is called in answers


class ApiError(Exception):
    """An answer other than 200, made where the request is handled."""

    def __init__(self, status: int, reason: str, detail: str, headers: dict | None = None):
        assert reason in REASONS, reason
        super().__init__(detail)
        self.status, self.reason, self.detail, self.headers = status, reason, detail, headers or {}


@dataclass(frozen=True)
class Route:
    method: str
    path: str                    # a werkzeug rule: /v1/tags/<name>
    handler: Callable[..., dict]

    @functools.cached_property
    def documented(self) -> str:
        """The path as the OpenAPI document and the metrics' `route` label write it: /v1/tags/{name}."""
        return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", self.path)


class Api:
    """The WSGI application. `queues` says how long the daemon's queues are now; `commit` writes
    a change to the context through the daemon's writer and returns its result."""

    def __init__(self, context: SearchContext, commit: operations.Commit, reports: Path, uploads: UploadExtractor,
                 queues: Callable[[], dict[str, int]], metrics: Metrics, token: str | None,
                 max_concurrent: int, max_upload_bytes: int):
        self.context = context
        self.commit = commit
        self.reports = reports
        self.uploads = uploads
        self.queues = queues
        self.metrics = metrics
        self._token = token.encode() if token else None
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.max_upload_bytes = max_upload_bytes
        self.url_map = Map([Rule(route.path, methods=[route.method], endpoint=route) for route in ROUTES])

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        request = Request(environ)
        request.max_content_length = self.max_upload_bytes
        route = UNMATCHED
        try:
            self._authorise(request)
            try:
                rule, arguments = self.url_map.bind_to_environ(environ).match(return_rule=True)
            except NotFound:
                raise ApiError(404, "not_found", f"{request.method} {request.path}: no such route "
                                                 "(the routes: GET /v1/openapi.json)") from None
            except MethodNotAllowed as exc:
                allowed = ", ".join(exc.valid_methods or ())
                raise ApiError(405, "method_not_allowed", f"{request.path} answers {allowed}", {"Allow": allowed}) from None
            route = rule.endpoint.documented
            if not self._slots.acquire(blocking=False):
                raise ApiError(503, "busy", "every request slot is taken (api.max_concurrent); retry shortly",
                               {"Retry-After": str(RETRY_AFTER_SECONDS)})
            try:
                response = _json(200, rule.endpoint.handler(self, request, **arguments))
            finally:
                self._slots.release()
        except Exception as exc:
            failure = _as_api_error(exc)
            if failure.status >= 500 and failure.reason not in ("busy", "unavailable"):
                log.error("%s %s: %s", request.method, request.path, failure.detail,
                          exc_info=failure.reason == "internal")
                if failure.reason == "internal":
                    self.metrics.internal_errors.labels("api").inc()
            else:
                log.debug("%s %s: %d %s: %s", request.method, request.path, failure.status, failure.reason,
                          failure.detail)
            response = _json(failure.status, {"error": failure.reason, "detail": failure.detail})
            response.headers.update(failure.headers)
        self.metrics.api_requests.labels(route, str(response.status_code)).inc()
        self.metrics.api_duration.labels(route).observe(time.perf_counter() - started)
        return response(environ, start_response)

    def _authorise(self, request: Request) -> None:
        if self._token is None:
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise ApiError(401, "unauthorized", "send the token of api.token_file as 'Authorization: Bearer TOKEN'",
                           {"WWW-Authenticate": 'Bearer realm="lookalike"'})

    # --- what handlers share -------------------------------------------------------------

    def uploaded(self, request: Request, *fields: str, every: bool = False) -> list[Query]:
        """The images a request carries, as queries: the multipart part named by each of
        `fields` (every part so named with `every`), or, for one field, the raw body (named by
        the `name` parameter, whose extension tells a camera raw file). Decoded in the upload
        workers, all at once."""
        if _multipart(request):
            uploads = [_upload(part) for field in fields for part in _parts(request, field)[:None if every else 1]]
        elif len(fields) == 1:
            uploads = [_raw_upload(request)]
        else:
            raise UsageError(f"send the images as multipart/form-data parts named {', '.join(map(repr, fields))}")
        futures = [self.uploads.extract(name, data) for name, data in uploads]
        return [self.uploads.query(future) for future in futures]


def _json(status: int, document: dict) -> Response:
    return Response(json.dumps(document) + "\n", status=status, mimetype="application/json")


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ImageError):
        return ApiError({"missing": 404, "too_large": 413}.get(exc.reason, 422), exc.reason, exc.message)
    if isinstance(exc, RequestEntityTooLarge):
        return ApiError(413, "too_large", "the body is over api.max_upload_bytes")
    if isinstance(exc, HTTPException):                       # a body werkzeug could not parse
        return ApiError(exc.code or 400, "usage", exc.description or exc.name)
    for kind, status, reason in ((UsageError, 400, "usage"), (NotFoundError, 404, "not_found"),
                                 (Stopping, 503, "unavailable"), (StoreError, 503, "store"),
                                 (ReportError, 500, "report"), (LookalikeError, 500, "internal")):
        if isinstance(exc, kind):
            return ApiError(status, reason, exc.message)
    return ApiError(500, "internal", f"unexpected {type(exc).__name__}; the daemon's log has the details")


# --- parameters ------------------------------------------------------------------------------

def _multipart(request: Request) -> bool:
    return request.mimetype == "multipart/form-data"


def _parts(request: Request, field: str) -> list:
    """The multipart body's file parts named `field`: one at least."""
    parts = request.files.getlist(field)
    if not parts:
        raise UsageError(f"the multipart body has no file part named {field!r} (it has: "
                         f"{', '.join(request.files) or 'none'})")
    return parts


def _upload(part) -> tuple[str, bytes]:
    return os.path.basename(part.filename or "") or UPLOAD_NAME, part.read()


def _raw_upload(request: Request) -> tuple[str, bytes]:
    return (os.path.basename(request.args.get("name", "")) or UPLOAD_NAME,
            request.get_data(cache=False, parse_form_data=False))


def _parameter(request: Request, name: str) -> str | None:
    """A query parameter, or a multipart field. Any other body is the image itself, whatever its
    declared type (`curl --data-binary` declares a form), so it is never parsed as a form."""
    value = request.args.get(name)
    if value is None and _multipart(request):
        value = request.form.get(name)
    return value


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    text = _parameter(request, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name}: must be a number, not {text!r}") from None
    if not low <= value <= high:
        raise UsageError(f"{name}: must be from {low:g} to {high:g}, not {text}")
    return value


def _whole(request: Request, name: str, default: int | None, low: int) -> int | None:
    text = _parameter(request, name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < low:
        raise UsageError(f"{name}: must be a whole number of at least {low}, not {text!r}")
    return int(text)


def _search_limits(request: Request) -> tuple[float, int | None]:
    return _number(request, "threshold", DEFAULT_SIMILAR_THRESHOLD, 0, 100), _whole(request, "max_count", None, 1)


TAG_SEARCH_KEYS = ("tags", "threshold", "max_count")


def _tag_search(request: Request) -> tuple[list[str], float, int | None]:
    """The JSON body of a tag search: {"tags": [NAME, ...], "threshold": 0-100, "max_count": N}."""
    try:
        document = json.loads(request.get_data(cache=False, parse_form_data=False))
    except ValueError as exc:
        raise UsageError(f"the body must be JSON ({exc})") from None
    if not isinstance(document, dict):
        raise UsageError('the body must be a JSON object: {"tags": ["NAME", ...], "threshold": 50, "max_count": 10}')
    unknown = sorted(set(document) - set(TAG_SEARCH_KEYS))
    if unknown:
        raise UsageError(f"{', '.join(unknown)}: not a key of a tag search (its keys: {', '.join(TAG_SEARCH_KEYS)})")
    names = document.get("tags")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise UsageError('tags: must be a list of one or more tag names, such as ["NAME"]')
    threshold = document.get("threshold", DEFAULT_DUPLICATE_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 100:
        raise UsageError(f"threshold: must be a number from 0 to 100, not {json.dumps(threshold)}")
    max_count = document.get("max_count")
    if max_count is not None and (isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 1):
        raise UsageError(f"max_count: must be a whole number of at least 1, not {json.dumps(max_count)}")
    return names, float(threshold), max_count


def _stored_path(request: Request) -> str:
    path = request.args.get("path")
    if not path:
        raise UsageError("path: name a stored image by its absolute path (?path=/photos/a.jpg)")
    if not os.path.isabs(path):
        raise UsageError(f"path: must be absolute, not {path!r}")
    return os.path.normpath(path)


# --- handlers ------------------------------------------------------------------------------

def status(api: Api, request: Request) -> dict:
    return operations.daemon_status(api.context, api.queues())


def similar_to_upload(api: Api, request: Request) -> dict:
    threshold, max_count = _search_limits(request)
    [query] = api.uploaded(request, "image")
    return operations.similar_document(api.context, query, threshold, max_count)


def similar_to_stored(api: Api, request: Request) -> dict:
    threshold, max_count = _search_limits(request)
    query = Query(operations.stored_features(api.context, _stored_path(request)))
    return operations.similar_document(api.context, query, threshold, max_count)


def extract(api: Api, request: Request) -> dict:
    [features] = [query.features for query in api.uploaded(request, "image")]
    return operations.features_document(features.path, features.local, api.context.settings.detector)


def stored_features(api: Api, request: Request) -> dict:
    return operations.stored_features_document(api.context, _stored_path(request))


def compare(api: Api, request: Request) -> dict:
    first, second = [query.features for query in api.uploaded(request, "first", "second")]
    return operations.compare_features(first, second, api.context.settings.detector)


def duplicates(api: Api, request: Request) -> dict:
    return operations.latest_duplicates(api.reports)


def put_tag(api: Api, request: Request, name: str) -> dict:
    check_name(name)                    # before the uploads are decoded
    references = [Reference.of_file(query.features) for query in api.uploaded(request, "image", every=True)]
    return operations.put_tag(api.context, name, references, api.commit)


def list_tags(api: Api, request: Request) -> dict:
    return operations.list_tags(api.context)


def delete_tag(api: Api, request: Request, name: str) -> dict:
    return operations.delete_tag(api.context, name, api.commit)


def search_tags(api: Api, request: Request) -> dict:
    return operations.search_tags(api.context, *_tag_search(request))


def alerts(api: Api, request: Request) -> dict:
    return operations.alerts_since(api.context, _whole(request, "since", 0, 0),
                                   _whole(request, "limit", operations.ALERTS_PAGE, 1))


def openapi(api: Api, request: Request) -> dict:
    return DOCUMENT


ROUTES = (
    Route("GET", "/v1/status", status),
    Route("POST", "/v1/similar", similar_to_upload),
    Route("GET", "/v1/similar", similar_to_stored),
    Route("POST", "/v1/extract", extract),
    Route("GET", "/v1/features", stored_features),
    Route("POST", "/v1/compare", compare),
    Route("GET", "/v1/duplicates", duplicates),
    Route("PUT", "/v1/tags/<name>", put_tag),
    Route("GET", "/v1/tags", list_tags),
    Route("DELETE", "/v1/tags/<name>", delete_tag),
    Route("POST", "/v1/tags/search", search_tags),
    Route("GET", "/v1/alerts", alerts),
    Route("GET", "/v1/openapi.json", openapi),
)
