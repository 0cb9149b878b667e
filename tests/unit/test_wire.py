"""wire.Parser: bytes in, HTTP events out, with the limits a server needs."""

from __future__ import annotations

import pytest

from nodesvc import wire
from nodesvc.wire import NEED_DATA, End, Head, Parser, ProtocolError


def events(parser: Parser) -> list[object]:
    out: list[object] = []
    while (event := parser.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def test_a_request_in_pieces_gives_head_body_and_end() -> None:
    parser = Parser("request")
    raw = (b"PUT /images/a.jpg HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
           b"X-A: 1\r\nx-a: 2\r\n\r\nhello")
    for i in range(len(raw)):  # one byte at a time: nothing may depend on how data arrives
        parser.feed(raw[i:i + 1])
    got = events(parser)
    head = got[0]
    assert isinstance(head, Head)
    assert (head.method, head.target) == ("PUT", "/images/a.jpg")
    assert head.headers["x-a"] == "1, 2" and head.headers["content-length"] == "5"
    assert b"".join(e for e in got if isinstance(e, bytes)) == b"hello"
    assert isinstance(got[-1], End) and parser.idle


def test_pipelined_requests_come_out_in_order() -> None:
    parser = Parser("request")
    parser.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    heads = [e.target for e in events(parser) if isinstance(e, Head)]
    assert heads == ["/a", "/b"]


def test_chunked_trailers_reach_the_end_event() -> None:
    parser = Parser("request")
    parser.feed(wire.request_head("PUT", "/x", [("Transfer-Encoding", "chunked")]))
    for piece in wire.chunk(b"abc"):
        parser.feed(piece)
    parser.feed(wire.last_chunk([("X-Signature", "s1")]))
    got = events(parser)
    assert got[1] == b"abc"
    assert got[-1] == End({"x-signature": "s1"})


def test_connection_close_is_not_keep_alive() -> None:
    parser = Parser("response")
    parser.feed(wire.response_head(200, [("Content-Length", "0"), ("Connection", "close")]))
    head = events(parser)[0]
    assert isinstance(head, Head) and head.status == 200 and not head.keep_alive


def test_a_100_continue_is_its_own_message_before_the_answer() -> None:
    parser = Parser("response")
    parser.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    parser.feed(wire.response_head(201, [("Content-Length", "2")]) + b"ok")
    got = events(parser)
    assert [e.status for e in got if isinstance(e, Head)] == [100, 201]
    assert got[-2:] == [b"ok", End()]


def test_a_head_too_large_in_one_piece_is_refused_without_an_event() -> None:
    parser = Parser("request", max_head=1024)
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
    assert caught.value.status == 431
    with pytest.raises(ProtocolError):  # and ever after
        parser.next_event()


def test_a_head_trickling_in_is_refused_before_it_ends() -> None:
    parser = Parser("request", max_head=1024)
    parser.feed(b"GET / HTTP/1.1\r\nX-Big: ")
    with pytest.raises(ProtocolError) as caught:
        for _ in range(100):
            parser.feed(b"a" * 64)
    assert caught.value.status == 431


def test_garbage_is_a_400() -> None:
    parser = Parser("request")
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"\x16\x03\x01 not http\r\n\r\n")
    assert caught.value.status == 400


def test_a_request_before_garbage_is_still_delivered() -> None:
    parser = Parser("request")
    parser.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01garbage")
    assert isinstance(parser.next_event(), Head)
    assert isinstance(parser.next_event(), End)
    with pytest.raises(ProtocolError):
        parser.next_event()


def test_eof_mid_body_is_an_error_and_eof_between_messages_is_not() -> None:
    parser = Parser("request")
    parser.feed(b"PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    events(parser)
    parser.feed(b"")
    with pytest.raises(ProtocolError):
        parser.next_event()
    idle = Parser("request")
    idle.feed(b"")
    assert idle.closed and idle.next_event() is NEED_DATA


def test_a_body_after_its_head_is_passed_on_uncopied_and_the_next_request_parses() -> None:
    parser = Parser("request")
    parser.feed(b"PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    piece = b"defg"  # bytes fed after the head: the body itself, not a copy of it
    parser.feed(piece)
    parser.feed(b"hij" + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    got = events(parser)
    assert any(e is piece for e in got)
    assert b"".join(e for e in got if isinstance(e, bytes)) == b"abcdefghij"
    heads = [e for e in got if isinstance(e, Head)]
    assert [h.target for h in heads] == ["/a", "/b"]
    assert sum(isinstance(e, End) for e in got) == 2 and parser.idle


def test_a_chunked_body_and_a_response_body_still_go_through_llhttp() -> None:
    parser = Parser("request")
    parser.feed(b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    parser.feed(b"3\r\nabc\r\n0\r\n\r\n")
    got = events(parser)
    assert [e for e in got if isinstance(e, bytes)] == [b"abc"]
    assert isinstance(got[-1], End)
    response = Parser("response")
    response.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
    response.feed(b"ok!!HTTP/1.1 204 No Content\r\n\r\n")
    assert [getattr(e, "status", None) for e in events(response) if isinstance(e, Head)] \
        == [200, 204]


def test_a_body_longer_than_announced_is_the_next_request_and_is_refused_if_garbage() -> None:
    parser = Parser("request")
    parser.feed(b"PUT /a HTTP/1.1\r\nContent-Length: 3\r\n\r\n")
    parser.feed(b"abcXYZ garbage\r\n\r\n")
    got: list[object] = []
    with pytest.raises(ProtocolError):
        while (event := parser.next_event()) is not NEED_DATA:
            got.append(event)
    assert b"".join(e for e in got if isinstance(e, bytes)) == b"abc"
    assert isinstance(got[-1], End)


def test_line_breaks_cannot_be_smuggled_into_what_we_send() -> None:
    with pytest.raises(ValueError):
        wire.request_head("GET", "/x\r\nHost: evil", [])
    with pytest.raises(ValueError):
        wire.response_head(200, [("X-A", "1\r\nSet-Cookie: a")])
