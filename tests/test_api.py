"""The HTTP API (api/): a real daemon answering over real HTTP, on TCP and on a Unix socket.

Each endpoint with good input is checked against what the CLI says of the same files; bad
input of every kind gets a 4xx with a reason from the closed list, and the daemon answers the
next request. The config rules (the token beyond loopback) are checked on `config check`."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

import images
from harness import Daemon, content_hash, folder, lookalike, occupied, stop_group
from lookalike import operations
from lookalike.api.app import REASONS, ROUTES, UNMATCHED
from lookalike.api.openapi import DOCUMENT
from lookalike.api.uploads import UploadExtractor
from lookalike.errors import ExitCode
from lookalike.extract import extract_file
from lookalike.settings import ExtractionSettings
from lookalike.store import SearchContext

REPO = Path(__file__).resolve().parent.parent


class Answer:
    def __init__(self, response: http.client.HTTPResponse):
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"{self.status} {self.body[:300]!r}"


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def call(where: int | str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 60) -> Answer:
    """One request to the API on a TCP port on 127.0.0.1, or on a Unix socket's path."""
    connection = (http.client.HTTPConnection("127.0.0.1", where, timeout=timeout) if isinstance(where, int)
                  else UnixConnection(where, timeout))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        return Answer(connection.getresponse())
    finally:
        connection.close()


def multipart(parts: dict[str, tuple[str, bytes] | str] | list[tuple[str, tuple[str, bytes] | str]]) -> tuple[bytes, dict]:
    """A multipart/form-data body: name -> (file name, bytes) for a file, or a plain value; as a
    list of (name, value) for several parts of one name."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, value in (parts.items() if isinstance(parts, dict) else parts):
        if isinstance(value, tuple):
            filename, data = value
            chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                          f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
        else:
            chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def ok(answer: Answer) -> dict:
    assert answer.status == 200, answer
    return answer.json()


def assert_error(answer: Answer, status: int, reason: str) -> dict:
    assert answer.status == status, answer
    document = answer.json()
    assert document["error"] == reason and document["error"] in REASONS, document
    assert document["detail"], document
    return document


# --- one daemon for the endpoints -----------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A daemon on three photos, a smaller copy of one, and a reference to compare with, once
    they are indexed and a duplicates report is written; and the query files (not watched)."""
    root = tmp_path_factory.mktemp("api")
    photos = folder(root)
    queries = folder(root, "queries")
    for name in ("astronaut", "chelsea", "coffee"):
        images.write_jpeg(photos, f"{name}.jpg", images.photo(name))
    images.write_jpeg(photos, "coffee-small.jpg", images.resized(images.photo("coffee"), 300, 200))
    images.write_jpeg(queries, "coffee-query.jpg", images.photo("coffee"), quality=60)
    images.write_jpeg(queries, "chelsea-query.jpg", images.resized(images.photo("chelsea"), 320, 240))
    images.truncated_jpeg(queries, "half.jpg")
    daemon = Daemon(root, [photos])
    daemon.write_config([photos], duplicates={"interval": "1s"}, extraction={"working_size": 320},
                        api={"listen": f"127.0.0.1:{daemon.api_port}", "max_upload_bytes": 4 << 20,
                             "read_timeout": "1s"})
    try:
        daemon.start().ready()
        daemon.wait_records([photos / f"{n}.jpg" for n in ("astronaut", "chelsea", "coffee", "coffee-small")])
        daemon.wait(lambda: (daemon.reports / "duplicates-latest.json").exists(), "a duplicates report")
        yield daemon, photos, queries
    finally:
        left = stop_group(daemon.process, timeout=15)
        daemon.close()
    assert not left, f"the daemon left processes behind: {left}"


@pytest.mark.slow
def test_status_is_context_info_and_the_queues(served):
    daemon, photos, _ = served
    document = ok(call(daemon.api_port, "GET", "/v1/status"))
    info = daemon.cli("context", "info")
    assert {k: document[k] for k in ("context", "settings", "images", "failed", "schema")} == \
           {k: info[k] for k in ("context", "settings", "images", "failed", "schema")}
    assert document["images"] == 4
    assert set(document["queues"]) == {"settling", "extracting", "storing"}
    assert all(isinstance(v, int) and v >= 0 for v in document["queues"].values())


@pytest.mark.slow
def test_similar_to_an_upload_is_what_the_cli_says(served):
    daemon, photos, queries = served
    query = queries / "coffee-query.jpg"
    expected = daemon.cli("similar", query, "--threshold", "30")
    assert {hit["path"] for hit in expected["results"]} == {str(photos / "coffee.jpg"), str(photos / "coffee-small.jpg")}

    raw = call(daemon.api_port, "POST", "/v1/similar?threshold=30", query.read_bytes(),
               {"Content-Type": "application/x-www-form-urlencoded"})      # what curl --data-binary sends
    assert raw.status == 200, raw
    assert raw.json() == {**expected, "query": "upload"}

    body, headers = multipart({"image": ("coffee-query.jpg", query.read_bytes()), "threshold": "30",
                               "max_count": "1"})
    parted = call(daemon.api_port, "POST", "/v1/similar", body, headers)
    assert parted.status == 200, parted
    assert parted.json() == {**expected, "query": "coffee-query.jpg", "results": expected["results"][:1]}


def test_similar_to_an_uploaded_heavy_crop_finds_its_original(tmp_path):
    """The upload workers hand the working pixels back with the features, so that the API's
    `similar` can look a heavy crop up at its original's scale as the CLI's does."""
    settings = ExtractionSettings()
    pixels = images.texture("grass")
    original = images.write_jpeg(tmp_path, "original.jpg", pixels)
    extractor = UploadExtractor(1, settings, timeout=60)
    try:
        query = extractor.query(extractor.extract("crop.jpg", images.jpeg_bytes(images.centre_crop(pixels, 0.6), 60)))
    finally:
        extractor.stop()
    with SearchContext.create(tmp_path / "context", settings) as context:
        context.upsert_many([extract_file(str(original), settings)])
        found = operations.similar_document(context, query, 20.0, None)["results"]
    assert [hit["path"] for hit in found] == [str(original)]


@pytest.mark.slow
def test_similar_to_a_stored_image(served):
    daemon, photos, _ = served
    stored = photos / "coffee-small.jpg"
    document = ok(call(daemon.api_port, "GET", f"/v1/similar?path={stored}&threshold=30"))
    assert document["query"] == str(stored)
    assert [hit["path"] for hit in document["results"]] == [str(photos / "coffee.jpg")]


@pytest.mark.slow
def test_extract_and_features_are_the_seeds_image2features(served):
    daemon, photos, queries = served
    query = queries / "chelsea-query.jpg"
    expected = daemon.cli("features", "extract", query)
    answer = call(daemon.api_port, "POST", "/v1/extract?name=chelsea-query.jpg", query.read_bytes())
    assert answer.status == 200, answer
    assert answer.json() == {**expected, "ImageId": "chelsea-query.jpg"}
    assert set(expected) == {"ImageId", "FeaturesCount", "FeatureLengthInBits", "Features"}

    stored = photos / "chelsea.jpg"
    answer = call(daemon.api_port, "GET", f"/v1/features?path={stored}")
    assert answer.status == 200, answer
    assert answer.json() == daemon.cli("features", "get", stored)


@pytest.mark.slow
def test_compare_two_uploads_is_the_compare_json(served):
    daemon, photos, queries = served
    first, second = photos / "coffee.jpg", queries / "coffee-query.jpg"
    body, headers = multipart({"first": ("a.jpg", first.read_bytes()), "second": ("b.jpg", second.read_bytes())})
    answer = call(daemon.api_port, "POST", "/v1/compare", body, headers)
    assert answer.status == 200, answer
    assert answer.json() == daemon.cli("compare", first, second)
    assert answer.json()["similarity"] > 50


@pytest.mark.slow
def test_duplicates_is_the_latest_report(served):
    daemon, _, _ = served
    document = ok(call(daemon.api_port, "GET", "/v1/duplicates"))
    # the report is rewritten every second: compare with the copy written at the same pass
    assert document == json.loads((daemon.reports / f"duplicates-{document['generated'].replace('-', '').replace(':', '')}.json").read_text())
    assert len(document["groups"]) == 1


@pytest.mark.slow
def test_the_openapi_document_is_served(served):
    daemon, _, _ = served
    answer = call(daemon.api_port, "GET", "/v1/openapi.json")
    assert answer.status == 200, answer
    assert answer.json() == json.loads(json.dumps(DOCUMENT))


def test_the_openapi_document_describes_exactly_the_routes():
    served_routes = {(route.documented, route.method.lower()) for route in ROUTES}
    described = {(path, method) for path, operations in DOCUMENT["paths"].items() for method in operations}
    assert served_routes == described
    assert DOCUMENT["openapi"].startswith("3.")


@pytest.mark.slow
@pytest.mark.parametrize("method, path, body, headers, status, reason", [
    ("POST", "/v1/similar", "truncated", {}, 422, "truncated"),
    ("POST", "/v1/similar", b"", {}, 422, "empty"),
    ("POST", "/v1/extract", b"this is no picture at all, only words " * 20, {}, 422, "unsupported"),
    ("POST", "/v1/similar", b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\nabc",
     {"Content-Type": "multipart/form-data; boundary=x"}, 400, "usage"),          # never closed
    ("POST", "/v1/similar", "multipart-without-image", {}, 400, "usage"),
    ("POST", "/v1/compare", "coffee", {}, 400, "usage"),                           # a raw body: which one?
    ("POST", "/v1/similar?threshold=high", "coffee", {}, 400, "usage"),
    ("POST", "/v1/similar?threshold=101", "coffee", {}, 400, "usage"),
    ("POST", "/v1/similar?max_count=0", "coffee", {}, 400, "usage"),
    ("POST", "/v1/similar?max_count=%C2%B2", "coffee", {}, 400, "usage"),          # a digit to str.isdigit, not to int()
    ("GET", "/v1/similar?path=photos/coffee.jpg", None, {}, 400, "usage"),
    ("GET", "/v1/similar", None, {}, 400, "usage"),
    ("GET", "/v1/similar?path=/nowhere/coffee.jpg", None, {}, 404, "not_found"),
    ("GET", "/v1/features?path=/nowhere/coffee.jpg", None, {}, 404, "not_found"),
    ("GET", "/v1/nothing-here", None, {}, 404, "not_found"),
    ("DELETE", "/v1/status", None, {}, 405, "method_not_allowed"),
])
def test_bad_input_is_a_4xx_with_a_reason_and_the_daemon_goes_on(served, method, path, body, headers,
                                                                  status, reason):
    daemon, photos, queries = served
    if body == "truncated":
        body = (queries / "half.jpg").read_bytes()
    elif body == "coffee":
        body = (photos / "coffee.jpg").read_bytes()
    elif body == "multipart-without-image":
        body, headers = multipart({"picture": ("a.jpg", (photos / "coffee.jpg").read_bytes())})
    assert_error(call(daemon.api_port, method, path, body, headers), status, reason)
    assert call(daemon.api_port, "GET", "/v1/status").status == 200
    assert daemon.alive()


@pytest.mark.slow
def test_a_body_over_the_cap_is_413_and_the_daemon_goes_on(served):
    daemon, _, _ = served
    with socket.create_connection(("127.0.0.1", daemon.api_port), timeout=30) as client:
        # Refused on the declared length, before the body is sent.
        client.sendall(f"POST /v1/similar HTTP/1.1\r\nHost: x\r\nContent-Length: {(4 << 20) + 1}\r\n\r\n".encode())
        response = http.client.HTTPResponse(client)
        response.begin()
        assert response.status == 413
    assert call(daemon.api_port, "POST", "/v1/extract", images.jpeg_bytes(images.photo("rocket"))).status == 200


@pytest.mark.slow
def test_a_client_that_stops_sending_is_dropped_and_others_are_answered(served):
    daemon, _, _ = served
    with socket.create_connection(("127.0.0.1", daemon.api_port), timeout=30) as slow:
        slow.sendall(b"POST /v1/similar HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"\xff\xd8" * 10)
        started = time.monotonic()
        # Meanwhile, the daemon answers others.
        assert call(daemon.api_port, "GET", "/v1/status", timeout=10).status == 200
        assert slow.recv(65536) == b""                 # closed by the daemon, unanswered
        assert time.monotonic() - started < 10         # read_timeout is 1 s in this config
    assert call(daemon.api_port, "GET", "/v1/status").status == 200


@pytest.mark.slow
def test_requests_are_counted_by_route_and_code(served):
    daemon, _, _ = served
    before = daemon.metric("lookalike_api_requests_total", 0.0, route="/v1/status", code="200")
    unmatched = daemon.metric("lookalike_api_requests_total", 0.0, route=UNMATCHED, code="404")
    call(daemon.api_port, "GET", "/v1/status")
    call(daemon.api_port, "GET", "/v1/status")
    call(daemon.api_port, "GET", f"/v1/{uuid.uuid4().hex}")
    assert daemon.metric("lookalike_api_requests_total", route="/v1/status", code="200") == before + 2
    assert daemon.metric("lookalike_api_requests_total", route=UNMATCHED, code="404") == unmatched + 1
    assert daemon.metric("lookalike_api_request_duration_seconds_count", route="/v1/status") >= 2
    routes = {dict(labels).get("route") for (name, labels) in daemon.scrape() if name == "lookalike_api_requests_total"}
    assert routes <= {route.documented for route in ROUTES} | {UNMATCHED}


# --- daemons of their own -------------------------------------------------------------------

def small_photo_folder(tmp_path: Path) -> Path:
    photos = folder(tmp_path)
    images.write_jpeg(photos, "coffee.jpg", images.photo("coffee"))
    return photos


@pytest.mark.slow
def test_beyond_max_concurrent_requests_are_503_with_retry_after(daemons, tmp_path):
    photos = small_photo_folder(tmp_path)
    daemon = daemons([photos])
    daemon.write_config([photos], api={"listen": f"127.0.0.1:{daemon.api_port}", "max_concurrent": 1})
    daemon.start().ready()
    large = images.jpeg_bytes(images.resized(images.photo("coffee"), 3000, 2000), 95)
    answers: list[Answer] = []
    barrier = threading.Barrier(6)

    def query():
        barrier.wait()
        answers.append(call(daemon.api_port, "POST", "/v1/similar", large))

    threads = [threading.Thread(target=query) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    statuses = sorted(answer.status for answer in answers)
    assert set(statuses) == {200, 503}, answers
    busy = next(answer for answer in answers if answer.status == 503)
    assert busy.headers["Retry-After"] == "1"
    assert_error(busy, 503, "busy")


@pytest.mark.slow
def test_an_upload_whose_decoding_overruns_is_stopped_and_the_daemon_goes_on(daemons, tmp_path):
    photos = small_photo_folder(tmp_path)
    daemon = daemons([photos])
    daemon.write_config([photos], api={"listen": f"127.0.0.1:{daemon.api_port}", "request_timeout": "10ms"})
    daemon.start().ready()
    large = images.jpeg_bytes(images.resized(images.photo("coffee"), 4000, 3000), 95)
    for _ in range(2):                  # the second in the worker started in place of the first
        assert_error(call(daemon.api_port, "POST", "/v1/similar?name=big.jpg", large), 422, "timeout")
    assert call(daemon.api_port, "GET", "/v1/status").status == 200


@pytest.mark.slow
def test_the_token_is_required_and_checked(daemons, tmp_path):
    photos = small_photo_folder(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    daemon = daemons([photos])
    daemon.write_config([photos], api={"listen": f"127.0.0.1:{daemon.api_port}", "token_file": str(token_file)})
    daemon.start().ready()
    assert_error(call(daemon.api_port, "GET", "/v1/status"), 401, "unauthorized")
    wrong = call(daemon.api_port, "GET", "/v1/status", headers={"Authorization": "Bearer s3cret-tokem"})
    assert_error(wrong, 401, "unauthorized")
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(call(daemon.api_port, "GET", "/v1/nothing"), 401, "unauthorized")    # no route is told
    right = call(daemon.api_port, "GET", "/v1/status", headers={"Authorization": "Bearer s3cret-token"})
    assert right.status == 200, right


@pytest.mark.parametrize("api, problem", [
    ({"listen": "0.0.0.0:9848"}, "api.token_file: is required when api.listen (0.0.0.0:9848) is beyond loopback"),
    ({"listen": "[::]:9848"}, "api.token_file: is required"),
    ({"listen": "0.0.0.0:9848", "token_file": "{tmp}/empty"}, "api.token_file: {tmp}/empty is empty"),
    ({"listen": "0.0.0.0:9848", "token_file": "{tmp}/absent"}, "api.token_file: cannot read {tmp}/absent"),
    ({"listen": None}, "api: listen is null and there is no socket"),
    ({"socket_mode": "0999"}, "api.socket_mode: must be a file mode"),
    ({"max_concurrent": 0}, "api.max_concurrent: must be greater than zero"),
])
def test_an_api_config_that_cannot_be_served_is_invalid(tmp_path, api, problem):
    (tmp_path / "empty").write_text("\n")
    photos = folder(tmp_path)
    config = tmp_path / "lookalike.yaml"
    api = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in api.items()}
    config.write_text(json.dumps({"watch": [str(photos)], "state_dir": str(tmp_path / "state"), "api": api}))
    result = lookalike("config", "check", config)
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert problem.format(tmp=tmp_path) in result.stderr


def test_a_loopback_address_or_a_token_makes_a_valid_config(tmp_path):
    (tmp_path / "token").write_text("t\n")
    photos = folder(tmp_path)
    config = tmp_path / "lookalike.yaml"
    for api in ({"listen": "127.0.0.1:9848"}, {"listen": "[::1]:9848"},
                {"listen": "0.0.0.0:9848", "token_file": str(tmp_path / "token")}, {"enabled": False}):
        config.write_text(json.dumps({"watch": [str(photos)], "state_dir": str(tmp_path / "state"), "api": api}))
        result = lookalike("config", "check", config)
        assert result.returncode == ExitCode.OK, (api, result.stderr)


@pytest.mark.slow
def test_the_unix_socket_with_its_mode(daemons, tmp_path):
    photos = small_photo_folder(tmp_path)
    path = tmp_path / "api.sock"
    daemon = daemons([photos])
    daemon.write_config([photos], api={"listen": None, "socket": str(path), "socket_mode": "0660"})
    daemon.start().ready()
    daemon.wait_records([photos / "coffee.jpg"])
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    answer = call(str(path), "POST", "/v1/similar", (photos / "coffee.jpg").read_bytes())
    assert answer.status == 200, answer
    assert [hit["path"] for hit in answer.json()["results"]] == [str(photos / "coffee.jpg")]
    with pytest.raises(ConnectionRefusedError):                  # listen: null, no TCP listener
        call(daemon.api_port, "GET", "/v1/status", timeout=5)


@pytest.mark.slow
def test_a_disabled_api_does_not_listen(daemons, tmp_path):
    photos = small_photo_folder(tmp_path)
    daemon = daemons([photos])
    daemon.write_config([photos], api={"listen": f"127.0.0.1:{daemon.api_port}", "enabled": False})
    daemon.start().ready()
    with pytest.raises(ConnectionRefusedError):
        call(daemon.api_port, "GET", "/v1/status", timeout=5)


@pytest.mark.slow
def test_tags_put_over_http_raise_alerts_for_copies_in_a_watched_folder_that_survive_a_restart(daemons, tmp_path):
    photos = folder(tmp_path)
    daemon = daemons([photos])
    daemon.start().ready()
    port = daemon.api_port
    astronaut = images.jpeg_bytes(images.photo("astronaut"))

    # One reference as the raw body, named by ?name=; two as multipart parts named `image`.
    space = ok(call(port, "PUT", "/v1/tags/space?name=astronaut.jpg", astronaut))
    assert [(r["name"], r["content_hash"]) for r in space["references"]] == [
        ("astronaut.jpg", content_hash(astronaut).hex())]
    body, headers = multipart([("image", ("chelsea.jpg", images.jpeg_bytes(images.photo("chelsea")))),
                               ("image", ("rocket.jpg", images.jpeg_bytes(images.photo("rocket"))))])
    cats = ok(call(port, "PUT", "/v1/tags/cats", body, headers))
    assert [r["name"] for r in cats["references"]] == ["chelsea.jpg", "rocket.jpg"]
    assert ok(call(port, "GET", "/v1/tags")) == daemon.cli("tag", "list") == {"tags": [cats, space]}

    # A copy dropped into the watched folder: an alert, read with a cursor.
    crop = images.photo("astronaut")[50:450, 60:460]
    copy = images.write_png(photos, "astronaut-copy.png", images.resized(crop, 300, 300))
    alerts = daemon.wait(lambda: ok(call(port, "GET", "/v1/alerts?since=0"))["alerts"], "an alert over HTTP")
    assert [(a["cursor"], a["path"], a["tag"], a["reference"]) for a in alerts] == [
        (1, str(copy), "space", "astronaut.jpg")]
    assert ok(call(port, "GET", "/v1/alerts?since=1&limit=10")) == {"version": 1, "alerts": [], "next": 1}

    search = {"tags": ["space", "cats"], "threshold": 50, "max_count": 5}
    found = ok(call(port, "POST", "/v1/tags/search", json.dumps(search).encode(),
                    {"Content-Type": "application/json"}))
    assert found == daemon.cli("tag", "search", "space", "cats", "--threshold", "50", "--max-count", "5")
    assert [(hit["path"], hit["tag"]) for hit in found["results"]] == [(str(copy), "space")]

    for method, path, body, status, reason in [
        ("PUT", "/v1/tags/_space", astronaut, 400, "usage"),            # a name must begin with a letter or digit
        ("PUT", "/v1/tags/" + "a" * 65, astronaut, 400, "usage"),
        ("PUT", "/v1/tags/space", b"", 422, "empty"),
        ("DELETE", "/v1/tags/dogs", None, 404, "not_found"),
        ("POST", "/v1/tags/search", b'{"tags": ["dogs"]}', 404, "not_found"),
        ("POST", "/v1/tags/search", b'{"tags": "space"}', 400, "usage"),
        ("POST", "/v1/tags/search", b'{"tags": ["space"], "threshold": 101}', 400, "usage"),
        ("POST", "/v1/tags/search", b"tags=space", 400, "usage"),
        ("GET", "/v1/alerts?since=-1", None, 400, "usage"),
        ("GET", "/v1/alerts?limit=1001", None, 400, "usage"),
    ]:
        assert_error(call(port, method, path, body), status, reason)
    assert ok(call(port, "GET", "/v1/tags"))["tags"] == [cats, space]      # a refused put changes nothing

    assert daemon.stop()[0] == 0
    daemon.start().ready()
    assert ok(call(port, "GET", "/v1/alerts")) == {"version": 1, "alerts": alerts, "next": 1}
    assert ok(call(port, "DELETE", "/v1/tags/cats")) == {"deleted": "cats"}
    assert ok(call(port, "GET", "/v1/tags")) == {"tags": [space]}
    assert daemon.metric("lookalike_api_requests_total", route="/v1/tags/{name}", code="200") == 1


# --- docs/api.md ------------------------------------------------------------------------------

def doc_flows() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (REPO / "docs" / "api.md").read_text(), re.S)


@pytest.mark.slow
def test_the_curl_flows_of_the_docs_run_as_written(served, tmp_path):
    daemon, photos, queries = served
    flows = doc_flows()
    assert len(flows) >= 4
    (tmp_path / "photo.jpg").write_bytes((queries / "coffee-query.jpg").read_bytes())
    (tmp_path / "other.jpg").write_bytes((photos / "coffee.jpg").read_bytes())
    environment = {**os.environ, "API": f"http://127.0.0.1:{daemon.api_port}", "PHOTOS": str(photos)}
    for flow in flows:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", flow], cwd=tmp_path, env=environment,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{flow}\n{result.stderr}"
        for line in filter(None, result.stdout.splitlines()):
            json.loads(line)                           # every answer is JSON


@pytest.mark.slow
def test_an_api_address_in_use_stops_the_start_with_its_key(daemons, tmp_path):
    photos = small_photo_folder(tmp_path)
    daemon = daemons([photos])
    with occupied(daemon.api_port):
        daemon.start()
        assert daemon.process.wait(60) == ExitCode.FAILED
    assert f"api.listen: cannot listen on 127.0.0.1:{daemon.api_port}" in daemon.log_text()
