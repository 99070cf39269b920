"""The OpenAPI 3 description of the API, served at /v1/openapi.json; written by hand, and held
to the routes app.py serves by a test (each route here, nothing here that is not served)."""

from __future__ import annotations

from .. import __version__
from ..operations import ALERTS_PAGE
from ..settings import DEFAULT_DUPLICATE_THRESHOLD
from ..store.tags import MAX_REFERENCES, NAME

_ERROR = {"$ref": "#/components/responses/Error"}
_JSON = {"type": "object", "additionalProperties": True}


def _answer(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema or _JSON}}}


def _errors(*statuses: int) -> dict:
    return {str(status): _ERROR for status in (401, 503, *statuses)}


_BINARY = {"type": "string", "format": "binary"}


def _image_body(image_part: dict, **fields: dict) -> dict:
    """An image as the raw body, or as the multipart part `image` (with `fields` beside it)."""
    return {"required": True, "content": {
        "application/octet-stream": {"schema": _BINARY},
        "image/*": {"schema": _BINARY},
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "properties": {"image": image_part, **fields}}}}}


_IMAGE_BODY = _image_body(_BINARY, threshold={"type": "number"}, max_count={"type": "integer"})
_NAME = {"name": "name", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "the raw body's file name: its extension tells a camera raw file (.cr2, .nef, ...)"}
_PATH = {"name": "path", "in": "query", "required": True, "schema": {"type": "string"},
         "description": "a stored image's absolute path"}
_THRESHOLD = {"name": "threshold", "in": "query", "required": False,
              "schema": {"type": "number", "minimum": 0, "maximum": 100, "default": 20}}
_MAX_COUNT = {"name": "max_count", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}}
_TAG_NAME = {"name": "name", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": f"^{NAME.pattern}$"}}
_REFERENCES_BODY = _image_body({"type": "array", "items": _BINARY, "minItems": 1, "maxItems": MAX_REFERENCES})
_TAG = _answer("the tag: its name, when it was put, its references (name given, content hash, size, features)",
               {"$ref": "#/components/schemas/Tag"})
_SIMILAR = _answer("`lookalike similar`'s JSON: the stored images at or above the threshold, best first",
                   {"$ref": "#/components/schemas/Similar"})
_FEATURES = _answer("image2features: the image's id, its feature count, bits per feature, the features",
                    {"$ref": "#/components/schemas/Features"})

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "lookalike", "version": __version__,
             "description": "Reverse image search on the lookalike daemon's search context (docs/api.md)."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "the token in api.token_file, when one is configured"}},
        "responses": {"Error": _answer("an error: `error` is a closed reason, `detail` names what was wrong",
                                       {"$ref": "#/components/schemas/Error"})},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "detail"],
                      "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
            "Similar": {"type": "object", "required": ["version", "query", "threshold", "results"], "properties": {
                "version": {"type": "integer"}, "query": {"type": "string"}, "threshold": {"type": "number"},
                "results": {"type": "array", "items": {"type": "object", "required": ["path", "similarity"],
                                                       "properties": {"path": {"type": "string"},
                                                                      "similarity": {"type": "number"}}}}}},
            "Tag": {"type": "object", "required": ["name", "updated", "references"], "properties": {
                "name": {"type": "string"}, "updated": {"type": "number"},
                "references": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "content_hash": {"type": "string"}, "width": {"type": "integer"},
                    "height": {"type": "integer"}, "features": {"type": "integer"}}}}}},
            "Features": {"type": "object",
                         "required": ["ImageId", "FeaturesCount", "FeatureLengthInBits", "Features"],
                         "properties": {"ImageId": {"type": "string"}, "FeaturesCount": {"type": "integer"},
                                        "FeatureLengthInBits": {"type": "integer"},
                                        "Features": {"type": "string", "format": "byte"}}},
        },
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/v1/status": {"get": {
            "summary": "what `context info` says, and the daemon's queue lengths",
            "responses": {"200": _answer("the context and the queues"), **_errors()}}},
        "/v1/similar": {
            "post": {"summary": "stored images that look like the uploaded one",
                     "parameters": [_THRESHOLD, _MAX_COUNT, _NAME], "requestBody": _IMAGE_BODY,
                     "responses": {"200": _SIMILAR, **_errors(400, 413, 422)}},
            "get": {"summary": "stored images that look like a stored one",
                    "parameters": [_PATH, _THRESHOLD, _MAX_COUNT],
                    "responses": {"200": _SIMILAR, **_errors(400, 404)}}},
        "/v1/extract": {"post": {
            "summary": "an uploaded image's features, not stored (the seed's image2features)",
            "parameters": [_NAME], "requestBody": _IMAGE_BODY,
            "responses": {"200": _FEATURES, **_errors(400, 413, 422)}}},
        "/v1/features": {"get": {
            "summary": "a stored image's features", "parameters": [_PATH],
            "responses": {"200": _FEATURES, **_errors(400, 404)}}},
        "/v1/compare": {"post": {
            "summary": "the similarity of two uploaded images, and why (`lookalike compare`'s JSON)",
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                "type": "object", "required": ["first", "second"],
                "properties": {"first": {"type": "string", "format": "binary"},
                               "second": {"type": "string", "format": "binary"}}}}}},
            "responses": {"200": _answer("similarity 0 to 100, the kinds of copy, the transform, the evidence"),
                          **_errors(400, 413, 422)}}},
        "/v1/duplicates": {"get": {
            "summary": "the latest duplicates report (its JSON format, docs/formats.md)",
            "responses": {"200": _answer("the report"), **_errors(404, 500)}}},
        "/v1/tags/{name}": {
            "put": {"summary": "store the tag with these reference images (one or more), replacing the ones it had",
                    "parameters": [_TAG_NAME, _NAME], "requestBody": _REFERENCES_BODY,
                    "responses": {"200": _TAG, **_errors(400, 413, 422)}},
            "delete": {"summary": "forget the tag and its references", "parameters": [_TAG_NAME],
                       "responses": {"200": _answer("{\"deleted\": NAME}"), **_errors(400, 404)}}},
        "/v1/tags": {"get": {
            "summary": "every tag and its references",
            "responses": {"200": _answer("{\"tags\": [tag, ...]}, by name"), **_errors()}}},
        "/v1/tags/search": {"post": {
            "summary": "stored images that match any reference of these tags (the seed's find images by tags)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["tags"], "additionalProperties": False, "properties": {
                    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "threshold": {"type": "number", "minimum": 0, "maximum": 100,
                                  "default": DEFAULT_DUPLICATE_THRESHOLD},
                    "max_count": {"type": "integer", "minimum": 1}}}}}},
            "responses": {"200": _answer("`similar`'s JSON with `tags` for `query`, each result with the `tag` and "
                                         "`reference` it matches best"), **_errors(400, 404)}}},
        "/v1/alerts": {"get": {
            "summary": "watchlist alerts recorded after a cursor, oldest first, and the cursor to ask with next",
            "parameters": [
                {"name": "since", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0, "default": 0}},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": ALERTS_PAGE, "default": ALERTS_PAGE}}],
            "responses": {"200": _answer("{\"version\": 1, \"alerts\": [...], \"next\": CURSOR}"),
                          **_errors(400)}}},
        "/v1/openapi.json": {"get": {
            "summary": "this document", "responses": {"200": _answer("OpenAPI 3"), **_errors()}}},
    },
}
