"""HTTP/1.1 on the wire, without I/O: a parser that turns bytes into events, and the bytes of
the messages we send.

Parsing is llhttp's (through httptools, in C): profiling the leader under load showed h11,
pure Python, taking a fifth of its time. The events keep h11's shape (a head, then body
pieces, then the end with its trailers), so the I/O code reads like a sans-I/O state machine:
feed bytes in, take events out.

A request body with a Content-Length does not go through llhttp once its head has been
parsed: the bytes fed after it are the body, up to that length, and are handed on as they came
(an upload arrives as the transport's own bytes objects). Through llhttp, every piece was copied
into a new bytes object by the on_body callback: one more copy of every upload at every node.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import httptools

from nodesvc.digits import ascii_digits

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    409: "Conflict", 411: "Length Required", 413: "Content Too Large",
    417: "Expectation Failed", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    505: "HTTP Version Not Supported", 507: "Insufficient Storage",
}


def origin_form(target: str) -> str:
    """A request target as a path (and query): the absolute form a proxy sends,
    `http://host:port/images/a.png`, is the same request as `/images/a.png` (RFC 9112 3.2.2:
    a server must accept it)."""
    if target[:1] == "/":  # (the usual origin form: nothing to do, on every request)
        return target
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return target
    slash = rest.find("/")
    query = rest.find("?")
    if slash < 0 or 0 <= query < slash:  # no path: the server's root
        return "/" + rest[query:] if query >= 0 else "/"
    return rest[slash:]


class ProtocolError(Exception):
    """The other side broke HTTP/1.1; `status` is the answer a server should give."""

    def __init__(self, text: str, status: int = 400) -> None:
        super().__init__(text)
        self.status = status


@dataclass(slots=True)
class Head:
    """A request's or a response's head. Header names are lower case."""

    method: str = ""
    target: str = ""
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    keep_alive: bool = True


@dataclass(slots=True)
class End:
    trailers: dict[str, str] = field(default_factory=dict)


# What Parser.next_event returns: a Head, a body piece (bytes), an End, or NEED_DATA.
NEED_DATA = None
Event = Head | bytes | End | None


class Parser:
    """Bytes in (`feed`), events out (`next_event`), for a stream of requests (a server's
    side) or of responses (a client's). A head larger than `max_head` bytes is refused (431)
    even when it trickles in: the bytes fed before the head is complete are counted."""

    def __init__(self, kind: Literal["request", "response"], max_head: int = 64 * 1024) -> None:
        self._kind = kind
        self._parser = self._new_llhttp()
        self._max_head = max_head
        self._events: deque[Head | bytes | End] = deque()
        self._head: Head | None = None
        self._in_head = False
        self._head_size = 0  # url and header fields of the head being parsed
        self._trickled = 0   # bytes of whole feeds that arrived while a head was incomplete
        self._url = b""
        self._trailers: dict[str, str] | None = None  # set once the head is complete
        self.broken: ProtocolError | None = None
        self.closed = False  # the other side sent EOF
        self._length: int | None = None  # the Content-Length of the request being parsed
        self._body_seen = 0   # ... and how much of its body llhttp has passed on
        self._raw_left = 0    # body bytes still to come that llhttp does not see (see feed)

    def _new_llhttp(self) -> httptools.HttpRequestParser | httptools.HttpResponseParser:
        return (httptools.HttpRequestParser if self._kind == "request"
                else httptools.HttpResponseParser)(self)

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse `data`; raise ProtocolError if it is not HTTP/1.1 (then and ever after)."""
        if self.broken is not None:
            raise self.broken
        if not data:
            self.closed = True
            return
        if self._raw_left:
            data = self._take_raw(data)
            if not data:
                return
        was_in_head = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.broken = ProtocolError("protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self.broken = ProtocolError(str(exc) or type(exc).__name__)
        if self._in_head and was_in_head:  # all of `data` was head: a head trickling in
            self._trickled += len(data)
        if self.broken is None and self._in_head \
                and max(self._head_size, self._trickled) > self._max_head:
            self.broken = ProtocolError(f"head over {self._max_head} bytes", 431)
        if self.broken is not None and not self._events:
            raise self.broken
        if self.broken is None and self._length is not None and self._trailers is not None:
            # The head is parsed and the body is not all here: the rest of it bypasses llhttp.
            self._raw_left = self._length - self._body_seen
            self._length = None

    def _take_raw(self, data: bytes) -> bytes:
        """Pass on the body bytes at the start of `data`; return what follows the body."""
        if len(data) <= self._raw_left:
            self._events.append(data)  # the bytes object itself: no copy
            self._raw_left -= len(data)
            rest = b""
        else:
            self._events.append(data[:self._raw_left])
            rest = data[self._raw_left:]
            self._raw_left = 0
        if not self._raw_left:
            # llhttp still waits for the body it never saw: the next message gets a new one.
            self._parser = self._new_llhttp()
            self._events.append(End({}))
            self._trailers = None
        return rest

    def next_event(self) -> Event:
        """The next event, or NEED_DATA. Raises ProtocolError for a broken stream once the
        events parsed before the break are taken, and for an EOF in the middle of a
        message."""
        if self._events:
            return self._events.popleft()
        if self.broken is not None:
            raise self.broken
        if self.closed and (self._in_head or self._trailers is not None):
            raise ProtocolError("connection closed mid-message")
        return NEED_DATA

    @property
    def end_ready(self) -> bool:
        """The end of a message has been parsed and waits among the events: the whole
        message is here."""
        return any(isinstance(event, End) for event in self._events)

    @property
    def idle(self) -> bool:
        """Between messages: nothing of the next one has arrived."""
        return not self._in_head and self._trailers is None and not self._events

    # -- httptools callbacks (they must not raise: httptools would wrap the error) ----------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head = Head()
        self._url = b""
        self._head_size = self._trickled = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        text_name = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._head_size += len(name) + len(value) + 4
        if self._trailers is not None:
            # Trailers count against the head's limit too, or a chunked body's end could
            # bring megabytes of fields.
            if self._head_size > self._max_head and self.broken is None:
                self.broken = ProtocolError(f"head and trailers over {self._max_head} bytes",
                                            431)
            self._trailers[text_name] = text
            return
        assert self._head is not None
        headers = self._head.headers
        # Repeated fields are one comma-separated list (RFC 9110 5.3).
        headers[text_name] = f"{headers[text_name]}, {text}" if text_name in headers else text

    def on_headers_complete(self) -> None:
        head = self._head
        assert head is not None
        if self._kind == "request":
            head.method = self._parser.get_method().decode("ascii", "replace")
            head.target = origin_form(self._url.decode("latin-1"))
        else:
            head.status = self._parser.get_status_code()
        head.keep_alive = self._parser.should_keep_alive()
        self._in_head = False
        self._trailers = {}
        self._body_seen = 0
        length = head.headers.get("content-length", "")
        self._length = int(length) if self._kind == "request" and ascii_digits(length) \
            and "transfer-encoding" not in head.headers else None
        if self._head_size > self._max_head:
            # Refused whole: neither this head nor anything after it becomes an event.
            self.broken = ProtocolError(f"head over {self._max_head} bytes", 431)
            return
        if self._parser.get_http_version() not in ("1.1", "1.0"):
            # llhttp reads "HTTP/2.0" and a request line without a version (HTTP/0.9) too.
            self.broken = ProtocolError(
                f"HTTP/{self._parser.get_http_version()} is not supported (HTTP/1.1 is)", 505)
            return
        if self._kind == "request" and self._parser.should_upgrade():
            # llhttp would take the rest of the stream as another protocol and end this
            # message here, without its body: an upload would be stored empty. Refused whole.
            self.broken = ProtocolError("protocol upgrades are not supported")
            return
        self._events.append(head)

    def on_body(self, body: bytes) -> None:
        if self.broken is None:
            self._events.append(body)
            self._body_seen += len(body)

    def on_message_complete(self) -> None:
        if self.broken is None:
            self._events.append(End(self._trailers or {}))
        self._trailers = None
        self._length = None  # the whole body came with its head


# ---- what we send ------------------------------------------------------------------------


def _check(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"a header may not hold a line break: {value[:40]!r}")
    return value


def _fields(headers: list[tuple[str, str]]) -> str:
    return "".join(f"{_check(k)}: {_check(v)}\r\n" for k, v in headers)


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    reason = REASONS.get(status, "")
    return f"HTTP/1.1 {status} {reason}\r\n{_fields(headers)}\r\n".encode("latin-1")


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    return f"{method} {_check(target)} HTTP/1.1\r\n{_fields(headers)}\r\n".encode("latin-1")


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def chunk(data: bytes) -> list[bytes]:
    """One piece of a chunked body (the data itself is not copied)."""
    return [b"%x\r\n" % len(data), data, b"\r\n"] if data else []


def last_chunk(trailers: list[tuple[str, str]]) -> bytes:
    return f"0\r\n{_fields(trailers)}\r\n".encode("latin-1")
