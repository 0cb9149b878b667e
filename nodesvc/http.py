"""HTTP/1.1 over nodesvc.stream connections (framing in nodesvc.wire): a server and a
keep-alive client pool.

Most requests are whole messages (bodies are bounded by `max_image_bytes`), which keeps the
handlers simple. The exception is an upload arriving at the leader: the server hands its body
over as it arrives (`Request.stream`), so the leader can pass it on to the target node while
the client is still sending, instead of storing it whole first (see Tee, and
HttpClient.stream). The leader keeps the chunks it passed on, so it can send them again to
another node when a target fails mid-upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import orjson

from nodesvc.stream import Connection, open_connection
from nodesvc.wire import (
    CONTINUE,
    NEED_DATA,
    End,
    Head,
    Parser,
    ProtocolError,
    chunk,
    last_chunk,
    request_head,
    response_head,
)

READ_SIZE = 256 * 1024
SMALL = 16 * 1024  # bodies below this are copied behind their head: one write, not two


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    stream: Body | None = None  # set instead of `body` for the requests the server streams
    _sha256: bytes | None = None

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def content_length(self) -> int | None:
        length = self.headers.get("content-length", "")
        return int(length) if length.isdigit() else None

    @property
    def known_sha256(self) -> bytes | None:
        """The body's digest if something asked for it already (a signature over the body)."""
        return self._sha256

    def body_sha256(self) -> bytes:
        """The body's digest, computed once however many times it is needed."""
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.body).digest()
        return self._sha256


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    length: int | None = None  # the Content-Length of a HEAD's answer that has no body here

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def json_response(status: int, data: object, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(status, orjson.dumps(data), headers=list(headers))


def error(status: int, err: str, detail: str = "", *,
          headers: Iterable[tuple[str, str]] = ()) -> Response:
    return json_response(status, {"error": err, "detail": detail}, headers)


Handler = Callable[[Request], Awaitable[Response]]


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class ServerLimits:
    max_body: int
    header_timeout: float = 10.0   # slow or half-open clients are cut off
    body_timeout: float = 60.0
    idle_timeout: float = 75.0     # keep-alive connections with no request
    max_header_bytes: int = 16 * 1024
    max_connections: int = 1024
    # A `100 Continue` for a request whose body came whole with its head is sent only if the
    # answer takes longer than this (well under the peers' 0.6 s wait for a sign of life).
    continue_delay: float = 0.05


class Body:
    """A request body read as it arrives, for a handler that passes it on. It raises
    BodyTooLarge past `max_body`, ProtocolError if the client stops mid-body, and
    TimeoutError past the body deadline."""

    def __init__(self, parser: Parser, reader: Connection,
                 limits: ServerLimits) -> None:
        self._parser = parser
        self._reader = reader
        self._limits = limits
        self._deadline = reader.loop.time() + limits.body_timeout
        self.size = 0
        self.done = False
        self.started = False
        self.trailers: dict[str, str] = {}

    async def chunks(self) -> AsyncIterator[bytes]:
        self._start()
        while True:
            event = await _next_event(self._parser, self._reader, self._deadline)
            if self._accept(event):
                return
            yield event  # as the transport delivered it (see wire.Parser): passed on as it is

    async def read(self) -> bytes:
        """The whole body, by the body deadline."""
        self._start()
        chunks: list[bytes] = []
        while True:
            event = await _next_event(self._parser, self._reader, self._deadline)
            if self._accept(event):
                return _joined(chunks)
            chunks.append(event)

    def _start(self) -> None:
        if self.started:
            raise RuntimeError("a body can be read once")
        self.started = True

    def _accept(self, event: Head | bytes | End | None) -> bool:
        """Count a body event; True at the body's end."""
        if isinstance(event, bytes):
            self.size += len(event)
            if self.size > self._limits.max_body:
                raise BodyTooLarge
            return False
        if isinstance(event, End):
            self.trailers = event.trailers
            self.done = True
            return True
        raise ProtocolError("connection closed mid-body")


class HttpServer:
    def __init__(self, handler: Handler, limits: ServerLimits,
                 streams: Callable[[Request], bool] = lambda request: False) -> None:
        self.handler = handler
        self.limits = limits
        self.streams = streams  # which requests the handler reads as they arrive
        self.connections = 0

    async def serve(self, reader: Connection, writer: Connection) -> None:
        if self.connections >= self.limits.max_connections:
            writer.close()
            return
        self.connections += 1
        try:
            await self._serve(Parser("request", self.limits.max_header_bytes), reader, writer)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, parser: Parser, reader: Connection,
                     writer: Connection) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while True:
            # A deadline for the whole head, not per read, so that a client trickling a
            # byte at a time is cut off all the same: from the connection's start for the
            # first request, and from its first byte for a later one.
            limits = self.limits
            wait = limits.header_timeout if first else limits.idle_timeout
            try:
                head = await _next_event(parser, reader, loop.time() + wait,
                                         None if first else limits.header_timeout)
            except ProtocolError as exc:
                await _send(writer, _refused(exc), close=True)
                return
            except TimeoutError:
                if not parser.idle:  # a head begun and not finished in time
                    await _send(writer, _timed_out("request head", self.limits.header_timeout),
                                close=True)
                return  # (an idle keep-alive connection just closes)
            if head is None:
                return  # the client closed the connection between requests
            first = False
            assert isinstance(head, Head)
            request = Request(head.method, head.target, head.headers)
            length = request.content_length
            if length is not None and length > self.limits.max_body:
                await _send(writer, _too_large(self.limits), close=True)
                return
            expect = head.headers.get("expect", "").lower()
            if expect and expect != "100-continue":  # (RFC 9110 10.1.1; its body unread)
                await _send(writer, error(417, "expectation failed",
                                          "the only expectation understood is 100-continue"),
                            close=True)
                return
            body = Body(parser, reader, self.limits)
            late_continue = None
            if expect:
                # "Alive, send on" (see HttpClient). When the whole body came with the head
                # (a peer sends both at once), the 100 only says "alive": it is sent only if
                # the answer is slow, which saves a write here and a wake-up at the sender.
                if parser.end_ready:
                    late_continue = loop.call_later(self.limits.continue_delay,
                                                    _write_continue, writer)
                else:
                    writer.write(CONTINUE)
            try:
                if self.streams(request):
                    request.stream = body
                else:
                    request.body = await body.read()
                    request.trailers = body.trailers
                response = await self.handler(request)
            except BodyTooLarge:
                await _send(writer, _too_large(self.limits), close=True)
                return
            except ProtocolError as exc:
                await _send(writer, _refused(exc), close=True)
                return
            except TimeoutError:
                if not body.done:  # the client went silent mid-body
                    await _send(writer, _timed_out("body", self.limits.body_timeout),
                                close=True)
                    return
                response = error(500, "internal error", "timeout")
            except ConnectionError:
                if not body.done:
                    raise  # the client went away mid-body: drop the connection
                response = error(500, "internal error", "connection lost")
            except Exception as exc:  # a bug must not kill the node; it is logged and answered
                print(f"[http] handler error on {request.method} {request.target}: {exc!r}",
                      flush=True)
                response = error(500, "internal error", type(exc).__name__)
            finally:
                if late_continue is not None:
                    late_continue.cancel()
            # A streamed body the handler did not read to the end (it answered early, e.g.
            # 401): the rest is still on the wire, so this connection cannot be reused.
            last = not body.done or not head.keep_alive
            await _send(writer, response, close=last, head_only=head.method == "HEAD")
            if last:
                return


def _refused(exc: ProtocolError) -> Response:
    what = {431: "headers too large", 505: "version not supported"}.get(exc.status,
                                                                      "bad request")
    return error(exc.status, what, str(exc))


def _timed_out(what: str, seconds: float) -> Response:
    return error(408, "request timeout", f"the {what} did not arrive within {seconds:g} s")


def _write_continue(writer: Connection) -> None:
    if not writer.is_closing():
        writer.write(CONTINUE)


def _too_large(limits: ServerLimits) -> Response:
    return error(413, "too large", f"body over {limits.max_body} bytes")


async def _next_event(parser: Parser, reader: Connection, deadline: float | None = None,
                      head_timeout: float | None = None) -> Head | bytes | End | None:
    """The next event, reading from `reader` as needed until the loop time `deadline`;
    None when the peer closed the connection between messages. `head_timeout`: once the
    first bytes of a message arrive, the deadline comes at most this many seconds later
    (a kept-alive connection may idle long, but not trickle its next head)."""
    while True:
        event = parser.next_event()
        if event is not NEED_DATA:
            return event
        if parser.closed:
            return None
        parser.feed(await reader.read(READ_SIZE, deadline))
        if head_timeout is not None and deadline is not None and not parser.idle:
            deadline = min(deadline, reader.loop.time() + head_timeout)
            head_timeout = None


async def _send(writer: Connection, response: Response, close: bool = False,
                head_only: bool = False) -> None:
    """`head_only`: the answer to a HEAD, the head a GET would get (its Content-Length
    too, RFC 9110 9.3.2) without the body."""
    headers = [("content-type", response.content_type),
               ("content-length", str(len(response.body) if response.length is None
                                       else response.length)), *response.headers]
    if close:
        headers.append(("connection", "close"))
    _write_with_body(writer, response_head(response.status, headers),
                     b"" if head_only else response.body)
    await writer.drain()


def _write_with_body(writer: Connection, head: bytes, body: bytes) -> None:
    """A small body goes out in one piece with its head; a large one is not copied."""
    if len(body) < SMALL:
        writer.write(head + body)
    else:
        writer.writelines([head, body])


def _joined(chunks: list[bytes]) -> bytes:
    """The chunks as one bytes object; a lone chunk as it is (no copy)."""
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Tee:
    """A body read once from its source and kept, so it can be sent more than once (to the
    next node, when a target fails mid-upload). It is not hashed here: the node that stores
    it does that."""

    def __init__(self, source: AsyncIterator[bytes] | None, length: int | None = None) -> None:
        self._source = source  # None: nothing more to read (Tee.of)
        self.length = length  # the Content-Length announced, if any
        self._chunks: list[bytes] = []
        self.complete = False

    @classmethod
    def of(cls, data: bytes) -> Tee:
        """A body already read whole."""
        tee = cls(None, len(data))
        tee._chunks = [data] if data else []
        tee.complete = True
        return tee

    async def replay(self) -> AsyncIterator[bytes]:
        """What was read so far, then the rest as it arrives."""
        i = 0
        while True:
            if i < len(self._chunks):
                yield self._chunks[i]
                i += 1
            elif self.complete or self._source is None:
                return
            else:
                try:
                    chunk = await anext(self._source)
                except StopAsyncIteration:
                    self.complete = True
                    return
                self._chunks.append(chunk)

    async def read(self) -> bytes:
        async for _ in self.replay():
            pass
        return _joined(self._chunks)


class SourceFailed(Exception):
    """The body being passed on broke off (the uploading client went away or timed out);
    the node it was sent to is not to blame. `cause` is the original exception."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


# ---- client ---------------------------------------------------------------------------


class PeerUnreachable(Exception):
    """The request could not be delivered or no complete answer came back.

    `refused` is True when the peer's host said no (connection refused or reset): the
    process is gone. False means silence (a timeout), which may only be slowness.
    """

    def __init__(self, text: str, refused: bool = False, reason: str = "") -> None:
        super().__init__(text)
        self.refused = refused
        self.reason = reason or text  # what went wrong, without the address


@dataclass
class _Conn:
    reader: Connection
    writer: Connection
    parser: Parser = field(default_factory=lambda: Parser("response"))
    idle_since: float = 0.0
    sent: bool = False       # the whole request is on the wire
    answered: Head | None = None  # the final answer's head, once complete (see _finish)


class HttpClient:
    """Keep-alive connections to peers, reused across requests (a small pool per address)."""

    def __init__(self, connect_timeout: float = 1.0, max_idle: int = 16,
                 idle_seconds: float = 30.0) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    async def request(self, host: str, port: int, method: str, target: str,
                      body: bytes = b"", headers: Iterable[tuple[str, str]] = (),
                      timeout: float = 10.0, expect_continue: float | None = None) -> Response:
        """Send one request; raise PeerUnreachable if no complete response arrives."""
        key = (host, port)
        all_headers = [("host", f"{host}:{port}"), ("content-length", str(len(body))),
                       *headers]
        try:
            async with asyncio.timeout(timeout):
                conn = self._take_idle(key)
                if conn is not None:
                    try:
                        return await self._exchange(key, conn, method, target, body,
                                                    all_headers, expect_continue)
                    except (ConnectionError, ProtocolError, _StaleConnection):
                        pass  # the peer closed an idle connection: try a fresh one once
                conn = await self._connect(key)
                return await self._exchange(key, conn, method, target, body, all_headers,
                                            expect_continue)
        except _UNREACHABLE as exc:
            raise _unreachable(host, port, exc) from None

    async def stream(self, host: str, port: int, method: str, target: str, body: Tee,
                     headers: Iterable[tuple[str, str]] = (), timeout: float = 10.0,
                     wait: float = 1.0) -> Response:
        """Send `body` as it arrives (chunked). The head asks for `100 Continue`, which
        a live peer sends as soon as it reads the head: if neither it nor a final answer has
        come `wait` seconds after the body was sent, the peer is silent (PeerUnreachable).
        `timeout` bounds each wait on the peer, never the wait for the body's own source; a
        source that breaks off raises SourceFailed and the peer's connection is dropped."""
        key = (host, port)
        all_headers = [("host", f"{host}:{port}"), ("transfer-encoding", "chunked"),
                       *headers, ("expect", "100-continue")]
        idle = self._take_idle(key)
        for reuse in ([True] if idle is not None else []) + [False]:
            conn = idle if reuse else None
            try:
                if conn is None:
                    async with asyncio.timeout(wait):
                        conn = await self._connect(key)
                return await self._stream_on(key, conn, method, target, all_headers, body,
                                             timeout, wait)
            except SourceFailed:
                if conn is not None:
                    conn.writer.close()
                raise
            except _UNREACHABLE as exc:
                if conn is not None:
                    conn.writer.close()
                if reuse and isinstance(exc, ConnectionError | _StaleConnection):
                    continue  # the peer had closed that idle connection: once more, afresh
                raise _unreachable(host, port, exc) from None
        raise AssertionError("unreachable")

    async def _stream_on(self, key: tuple[str, int], conn: _Conn, method: str, target: str,
                         headers: list[tuple[str, str]], body: Tee, timeout: float,
                         wait: float) -> Response:
        # Pieces are written together: the head with the first chunk, and everything at
        # once when the body is already whole (one system call instead of three).
        pieces: list[bytes] = [request_head(method, target, headers)]
        chunks = body.replay()
        while True:
            try:
                data = await anext(chunks)
            except StopAsyncIteration:
                break
            except Exception as exc:
                raise SourceFailed(exc) from exc
            if conn.reader.at_eof():
                raise _StaleConnection("closed while the body was being sent")
            pieces += chunk(data)
            if not body.complete:  # more may take a while to come: send this much now
                conn.writer.writelines(pieces)
                pieces = []
                async with asyncio.timeout(timeout):
                    await conn.writer.drain()
        pieces.append(last_chunk([]))
        conn.writer.writelines(pieces)
        conn.sent = True
        first = await self._first_answer(conn, wait)
        async with asyncio.timeout(timeout):
            return self._finish(key, conn, await self._read_response(conn, first))

    def _finish(self, key: tuple[str, int], conn: _Conn, response: Response) -> Response:
        """Return a connection whose exchange is complete to the idle pool."""
        if conn.sent and conn.answered is not None and conn.answered.keep_alive \
                and conn.parser.idle:
            conn.sent = False
            conn.answered = None
            conn.idle_since = time.monotonic()
            pool = self._idle.setdefault(key, [])
            if len(pool) < self.max_idle:
                pool.append(conn)
                return response
        conn.writer.close()
        return response

    async def close(self) -> None:
        for conns in self._idle.values():
            for c in conns:
                c.writer.close()
        self._idle.clear()

    def _take_idle(self, key: tuple[str, int]) -> _Conn | None:
        conns = self._idle.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if now - conn.idle_since < self.idle_seconds and not conn.reader.at_eof():
                return conn
            conn.writer.close()
        return None

    async def _connect(self, key: tuple[str, int]) -> _Conn:
        async with asyncio.timeout(self.connect_timeout):
            conn = await open_connection(*key)
        return _Conn(conn, conn)

    async def _exchange(self, key: tuple[str, int], conn: _Conn, method: str, target: str,
                        body: bytes, headers: list[tuple[str, str]],
                        expect_continue: float | None = None) -> Response:
        ok = False
        try:
            if expect_continue is not None and body:
                response = await self._exchange_with_continue(conn, method, target, body,
                                                              headers, expect_continue)
            else:
                _write_message(conn, request_head(method, target, headers), body)
                await conn.writer.drain()
                response = await self._read_response(conn)
            ok = True
        finally:
            if not ok:
                conn.writer.close()
        return self._finish(key, conn, response)

    async def _exchange_with_continue(self, conn: _Conn, method: str, target: str,
                                      body: bytes, headers: list[tuple[str, str]],
                                      wait: float) -> Response:
        """Send the whole request marked `Expect: 100-continue`, and give up if neither the
        `100 Continue` nor a final answer comes back within `wait` seconds. A server that is
        alive sends the 100 as soon as it has read the head, so a peer that is paused or cut
        off is given up on after `wait`, not after the whole request timeout, and the caller
        can try another node. The body goes out with the head, not one round trip later: the
        check costs no latency (the peers are our own nodes, which always answer the 100)."""
        head = request_head(method, target, [*headers, ("expect", "100-continue")])
        _write_message(conn, head, body)
        first = await self._first_answer(conn, wait)
        if first is None:
            await conn.writer.drain()
        return await self._read_response(conn, first)

    @staticmethod
    async def _first_answer(conn: _Conn, wait: float) -> Head | None:
        """Wait `wait` seconds at most for the `100 Continue` (None) or an early final
        answer (its head): the sign that the peer is alive (TimeoutError if it is silent)."""
        deadline = conn.reader.loop.time() + wait
        while True:
            event = conn.parser.next_event()
            if isinstance(event, Head) and event.status >= 200:
                return event
            if isinstance(event, End):
                return None  # the end of the 100
            if event is NEED_DATA:
                data = await conn.reader.read(READ_SIZE, deadline)
                if not data:
                    raise _StaleConnection("closed before answering")
                conn.parser.feed(data)

    async def _read_response(self, conn: _Conn, head: Head | None = None) -> Response:
        """Read the final answer (after its head, if that has been read already)."""
        chunks: list[bytes] = []
        while True:
            event = conn.parser.next_event()
            if event is NEED_DATA:
                data = await conn.reader.read(READ_SIZE)
                if not data and head is None:
                    raise _StaleConnection("closed before answering")
                conn.parser.feed(data)
            elif isinstance(event, Head):
                if event.status >= 200:
                    head = event
            elif isinstance(event, bytes):
                chunks.append(event)
            elif head is not None:  # the end of the final answer (not of a 100)
                conn.answered = head
                ctype = head.headers.get("content-type", "")
                headers = [(k, v) for k, v in head.headers.items() if k not in _FRAMING]
                return Response(head.status, _joined(chunks), ctype, headers)


def _write_message(conn: _Conn, head: bytes, body: bytes) -> None:
    """A request with a Content-Length body."""
    _write_with_body(conn.writer, head, body)
    conn.sent = True


# Headers that describe a response's framing: not passed on when a node relays an answer.
_FRAMING = frozenset({"content-type", "content-length", "transfer-encoding", "connection",
                      "keep-alive", "trailer"})


class _StaleConnection(Exception):
    pass


# What a failed exchange with a peer can raise; all of it means "unreachable".
_UNREACHABLE = (OSError, TimeoutError, ProtocolError, _StaleConnection)


def _unreachable(host: str, port: int, exc: BaseException) -> PeerUnreachable:
    refused = isinstance(exc, ConnectionRefusedError | ConnectionResetError | _StaleConnection)
    # "connection refused", not "[Errno 111] Connect call failed ('10.0.0.1', 7001)": the
    # address is said once, in front.
    errno = exc.errno if isinstance(exc, OSError) else None
    reason = (os.strerror(errno).lower() if errno else str(exc)) or (
        "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__)
    return PeerUnreachable(f"{host}:{port}: {reason}", refused, reason)
