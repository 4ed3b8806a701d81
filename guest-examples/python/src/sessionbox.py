"""Helpers shared by the example scenarios: a tiny Python SDK for Sessionbox.

- `Scenario`: a base class whose event handlers do nothing (`http_request`
  answers 404), so a scenario overrides only the events it cares about,
  those of `app-events` and of `media-events` (`call_held`, ...) alike.
- `log`, `refusal_text`, `check`: logging and refusals.
- `http_post` / `http_request`: blocking outbound HTTP over wasi:http.
- `response`: builds an `HttpResponse`.
- `get_text`, `set_text`, `increment`, ... and `variable`: the app's storage
  and variables.

componentize-py bundles this module into every component that imports it.
"""

import json
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.app_events import HttpResponse
from wit_world.imports import logger, outgoing_handler, storage, streams, variables
from wit_world.imports.sessionbox_scenario_types import Header
from wit_world.imports import wasi_http_types as wasi_http


def log(message: str) -> None:
    """Appends one line to the session log. Works in every phase."""
    logger.write(message)


def refusal_text(error) -> str:
    """The text of a refusal, as every Sessionbox SDK prints it:
    `{capability} refused in {phase}: {reason}`.

    A host function returning `result<_, refusal>` raises
    `componentize_py_types.Err` on `err`; its `value` is the `Refusal`
    record, whose `capability`, `phase` and `kind` are enums (printed
    lowercase, their WIT names).
    Pass the `Err` or the record itself.
    """
    refusal = error.value if isinstance(error, Err) else error
    if hasattr(refusal, "capability"):
        return (
            f"{refusal.capability.name.lower()} refused in "
            f"{refusal.phase.name.lower()}: {refusal.reason}"
        )
    return str(refusal)


def check(action) -> None:
    """Runs `action` (a host call); a refusal is logged as `refused: ...`."""
    try:
        action()
    except Err as error:
        log(f"refused: {refusal_text(error)}")


def response(status: int, body: bytes | str = b"", content_type: str | None = None) -> HttpResponse:
    """An `HttpResponse`; a `str` body is sent as UTF-8."""
    headers = [Header("content-type", content_type)] if content_type else []
    if isinstance(body, str):
        body = body.encode()
    return HttpResponse(status, headers, body)


class _OneInstance(type(exports.AppEvents)):
    """componentize-py constructs the export classes once per event function;
    this makes every construction return the same object, so state kept on
    `self` is the session's, as in the other SDKs."""

    def __call__(cls, *args, **kwargs):
        instance = cls.__dict__.get("_sessionbox_instance")
        if instance is None:
            instance = super().__call__(*args, **kwargs)
            cls._sessionbox_instance = instance
        return instance


class Scenario(exports.AppEvents, exports.MediaEvents, metaclass=_OneInstance):
    """A session's event handlers. Each does nothing by default, except
    `http_request`, which answers 404 with an empty body.

    The app module's class `AppEvents` (a subclass) has one instance per
    session. componentize-py creates it while building the component, before
    any host function is available: `__init__` may set fields but must not
    call the host.
    """

    def __init_subclass__(cls, **kwargs):
        # componentize-py wants a class per exported interface in the app
        # module; `AppEvents` handles both, so scenarios written before
        # media-events (0.3.0) build unchanged, with one instance for all.
        super().__init_subclass__(**kwargs)
        if cls.__name__ == "AppEvents":
            sys.modules[cls.__module__].MediaEvents = cls

    def started(self, event) -> None:
        pass

    def call_alerting(self, event) -> None:
        pass

    def http_request(self, request) -> HttpResponse:
        return response(404)

    def websocket(self, event) -> None:
        pass

    def new_websocket_failed(self, event) -> None:
        pass

    def terminating(self) -> None:
        pass

    def terminated(self) -> None:
        pass

    def timer_fired(self, id: int) -> None:
        pass

    def call_connected(self, call: int) -> None:
        pass

    def call_disconnected(self, call: int) -> None:
        pass

    def call_failed(self, call: int, code: int, reason: str) -> None:
        pass

    def call_message_received(self, call: int, text: str) -> None:
        pass

    def call_tone_received(self, call: int, tone: str) -> None:
        pass

    def call_playback_finished(self, call: int) -> None:
        pass

    def websocket_message(self, socket: int, message) -> None:
        pass

    def websocket_closed(self, socket: int, code: int, reason: str) -> None:
        pass

    def call_held(self, call: int) -> None:
        pass

    def call_resumed(self, call: int) -> None:
        pass

    def recording_finished(self, recording: int, call: int, duration_ms: int, error: str | None) -> None:
        pass

    def stream_ended(self, id: int, call: int, reason: str) -> None:
        pass


# --- Storage and variables ----------------------------------------------------
#
# `storage` is the app's key-value store, shared by every session of the app
# and kept across sessions; values are bytes. These helpers add text and JSON
# values and defaults for the optional arguments; `wit_world.imports.storage`
# has the same functions without them. Like every host call, each raises
# `Err` with a `Refusal`, e.g. for a key or value over the host's limit
# (`rule`) or a full quota (`quota`). `ttl`, where taken, is in seconds;
# without it a key stays until deleted.


def get_bytes(key: str) -> bytes | None:
    """The value of `key`, or None when it is absent."""
    return storage.get(key)


def get_text(key: str) -> str | None:
    """The value of `key` as text (UTF-8; invalid bytes read as U+FFFD), or
    None when it is absent."""
    value = get_bytes(key)
    return None if value is None else value.decode("utf-8", errors="replace")


def get_json(key: str):
    """The value of `key` parsed as JSON, or None when it is absent."""
    text = get_text(key)
    return None if text is None else json.loads(text)


def set_bytes(key: str, value: bytes, ttl: int | None = None) -> None:
    """Sets `key` to `value`, replacing any value and TTL."""
    storage.set(key, value, ttl)


def set_text(key: str, text: str, ttl: int | None = None) -> None:
    """Sets `key` to `text`, stored as UTF-8."""
    set_bytes(key, text.encode(), ttl)


def set_json(key: str, value, ttl: int | None = None) -> None:
    """Sets `key` to `value` as compact JSON text, non-ASCII unescaped (as
    JavaScript's `JSON.stringify` writes it)."""
    set_text(key, json.dumps(value, separators=(",", ":"), ensure_ascii=False), ttl)


def delete_key(key: str) -> bool:
    """Deletes `key`: True if it was there."""
    return storage.delete(key)


def increment(key: str, delta: int = 1) -> int:
    """Adds `delta` to the integer at `key`, atomically across every session
    of the app (an absent key counts as 0), and returns the sum."""
    return storage.increment(key, delta)


def compare_and_set(key: str, expected: bytes | str | None, value: bytes | str, ttl: int | None = None) -> bool:
    """Sets `key` to `value` only if its value is `expected` now (None: only
    if it is absent), atomically; `str` values are UTF-8. True if it was set;
    False if another writer got there first."""
    if isinstance(expected, str):
        expected = expected.encode()
    if isinstance(value, str):
        value = value.encode()
    return storage.compare_and_set(key, expected, value, ttl)


def list_keys(prefix: str = "", after: str | None = None, limit: int = 100) -> storage.KeyPage:
    """One page of the keys that start with `prefix`, in byte order: those
    after the key `after` (None: from the first), at most `limit` (at most
    1,000). The page's `next` is the `after` of the next page, or None on the
    last page."""
    return storage.list_keys(prefix, after, limit)


def all_keys(prefix: str = "", page_size: int = 100) -> Iterator[str]:
    """Every key that starts with `prefix`, fetched a page at a time."""
    after = None
    while True:
        page = list_keys(prefix, after, page_size)
        yield from page.keys
        if page.next is None:
            return
        after = page.next


def variable(name: str) -> str:
    """The value of the app's variable or secret `name`, from the server's
    configuration; a name the app does not have is refused (`unknown`). The
    host shows a secret's value as `[secret]` wherever it would reach the
    log."""
    return variables.get(name)


# --- Outbound HTTP over wasi:http/outgoing-handler ---------------------------
#
# The host meters requests like every other capability: while running up to a
# per-session limit, in `terminating` exactly one, in `terminated` none. A
# refusal is the standard `HttpRequestDenied` error code, so the text of a
# refused request's `HttpError` is `ErrorCode::HttpRequestDenied`.


class HttpError(Exception):
    """An outbound request failed; `str(error)` says why, a wasi:http error
    code under its name (e.g. `ErrorCode::ConnectionRefused`)."""


def http_post(url: str, content_type: str, body: bytes) -> tuple[int, bytes]:
    """`POST url` with a body of the given content type: (status, body)."""
    return http_request("POST", url, [("content-type", content_type)], body)


def http_request(method: str, url: str, headers=(), body: bytes = b"") -> tuple[int, bytes]:
    """Sends a request and blocks until the whole response has arrived.

    `url` is absolute (`http://host:port/path?query`). Returns
    (status, body); raises `HttpError`.
    """
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise HttpError(f"not an absolute URL: {json.dumps(url)}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        fields = wasi_http.Fields.from_list([(name, value.encode()) for name, value in headers])
    except Err as error:
        raise HttpError(f"invalid header: {_code_text(error.value)}") from None
    request = wasi_http.OutgoingRequest(fields)
    try:
        request.set_method(_method(method))
        request.set_scheme(_scheme(parts.scheme))
        request.set_authority(parts.netloc)
        request.set_path_with_query(path)
    except Err:
        raise HttpError(f"invalid request: {method} {url}") from None
    outgoing = request.body()

    # Send first, then stream the body: the host reads the body only once the
    # request is under way.
    try:
        future = outgoing_handler.handle(request, None)
    except Err as error:
        raise HttpError(_code_text(error.value)) from None
    with future:
        write_error = _write_body(outgoing, body)
        incoming = _wait(future)
        if write_error is not None:
            incoming.__exit__(None, None, None)
            raise HttpError(write_error)
    with incoming:
        status = incoming.status()
        return status, _read_body(incoming)


def _write_body(outgoing, body: bytes):
    """Writes `body` and finishes the request body; the error text, if any."""
    try:
        if body:
            with outgoing.write() as stream:
                # wasi:io allows at most 4096 bytes per blocking write.
                for start in range(0, len(body), 4096):
                    stream.blocking_write_and_flush(body[start : start + 4096])
        wasi_http.OutgoingBody.finish(outgoing, None)
    except Err as error:
        return f"request body: {_stream_error_text(error.value)}"
    return None


def _wait(future):
    with future.subscribe() as pollable:
        pollable.block()
    answer = future.get()
    if answer is None or isinstance(answer, Err):
        raise HttpError("no response")
    if isinstance(answer.value, Err):
        raise HttpError(_code_text(answer.value.value))
    return answer.value.value


def _read_body(incoming) -> bytes:
    body = incoming.consume()
    chunks = []
    error = None
    with body.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(64 * 1024))
            except Err as e:
                if not isinstance(e.value, streams.StreamError_Closed):
                    error = f"response body: {_stream_error_text(e.value)}"
                break
    # Children before parents: the stream (above), then the body.
    wasi_http.IncomingBody.finish(body).__exit__(None, None, None)
    if error is not None:
        raise HttpError(error)
    return b"".join(chunks)


def _code_text(code) -> str:
    """`ErrorCode::Name` or `ErrorCode::Name(value)`, like Rust's Debug."""
    name = type(code).__name__
    if not name.startswith("ErrorCode_"):
        return repr(code)
    value = getattr(code, "value", None)
    text = "ErrorCode::" + name[len("ErrorCode_") :]
    return text if value is None else f"{text}({value!r})"


def _stream_error_text(error) -> str:
    if isinstance(error, streams.StreamError_Closed):
        return "closed early"
    if isinstance(error, streams.StreamError_LastOperationFailed):
        code = wasi_http.http_error_code(error.value)
        return _code_text(code) if code is not None else error.value.to_debug_string()
    return repr(error)


def _method(method: str):
    simple = {
        "GET": wasi_http.Method_Get,
        "HEAD": wasi_http.Method_Head,
        "POST": wasi_http.Method_Post,
        "PUT": wasi_http.Method_Put,
        "DELETE": wasi_http.Method_Delete,
        "CONNECT": wasi_http.Method_Connect,
        "OPTIONS": wasi_http.Method_Options,
        "TRACE": wasi_http.Method_Trace,
        "PATCH": wasi_http.Method_Patch,
    }.get(method.upper())
    return simple() if simple else wasi_http.Method_Other(method)


def _scheme(scheme: str):
    scheme = scheme.lower()
    if scheme == "http":
        return wasi_http.Scheme_Http()
    if scheme == "https":
        return wasi_http.Scheme_Https()
    return wasi_http.Scheme_Other(scheme)
