"""Peer message signatures: forged, tampered, stale and replayed messages are refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from nodesvc.auth import PeerAuth, load_secret

SECRET = b"s" * 32


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_a_signed_request_verifies_once() -> None:
    clock = Clock()
    a, b = PeerAuth(SECRET, 1, clock=clock), PeerAuth(SECRET, 2, clock=clock)
    sig = a.sign("POST", "/peer/msg", b"body")
    assert b.verify(sig, "POST", "/peer/msg", b"body") is None
    assert b.verify(sig, "POST", "/peer/msg", b"body") == "replayed peer message"


def test_the_mac_is_hmac_sha256_of_the_documented_fields() -> None:
    """What other releases compute (the rolling upgrade depends on it): HMAC-SHA256 over
    sender, ms, nonce, method and target, one per line, then the body's digest; the same
    for every message an instance signs (its keyed state is copied, never used up)."""
    import hmac
    auth = PeerAuth(SECRET, 1, clock=Clock())
    for body in (b"data", b"other data"):
        sig = auth.sign("PUT", "/peer/store/a.png", body)
        sender, ms, nonce, mac = sig.split(":")
        fields = f"{sender}\n{ms}\n{nonce}\nPUT\n/peer/store/a.png\n".encode()
        expected = hmac.digest(SECRET, fields + hashlib.sha256(body).digest(), "sha256")
        assert mac == expected.hex()


@pytest.mark.parametrize(("method", "target", "body"), [
    ("PUT", "/peer/msg", b"body"), ("POST", "/peer/names", b"body"), ("POST", "/peer/msg", b"x")])
def test_any_change_breaks_the_signature(method: str, target: str, body: bytes) -> None:
    clock = Clock()
    sig = PeerAuth(SECRET, 1, clock=clock).sign("POST", "/peer/msg", b"body")
    reason = PeerAuth(SECRET, 2, clock=clock).verify(sig, method, target, body)
    assert reason is not None and "bad peer signature" in reason


def test_another_secret_or_no_signature_is_refused() -> None:
    clock = Clock()
    sig = PeerAuth(b"x" * 32, 1, clock=clock).sign("POST", "/peer/msg", b"")
    b = PeerAuth(SECRET, 2, clock=clock)
    assert "bad peer signature" in (b.verify(sig, "POST", "/peer/msg", b"") or "")
    assert b.verify(None, "POST", "/peer/msg", b"") == "missing peer signature"
    assert b.verify("1:2:3", "POST", "/peer/msg", b"") == "malformed peer signature"
    # (str.isdigit() takes a superscript two, int() does not: that was a 500)
    assert b.verify("\u00b2:2:ab:cd", "POST", "/peer/msg", b"") == "malformed peer signature"
    forged_sender = sig.replace("1:", "3:", 1)
    assert "bad peer signature" in (b.verify(forged_sender, "POST", "/peer/msg", b"") or "")


def test_old_messages_are_refused_after_the_window() -> None:
    clock = Clock()
    sig = PeerAuth(SECRET, 1, clock=clock).sign("POST", "/peer/msg", b"")
    clock.t += 31
    reason = PeerAuth(SECRET, 2, clock=clock).verify(sig, "POST", "/peer/msg", b"")
    assert reason is not None and "time window" in reason


def test_secret_files_must_be_private_and_long_enough(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text(os.urandom(32).hex())
    f.chmod(0o640)
    assert len(load_secret(str(f))) == 64
    f.chmod(0o644)
    with pytest.raises(ValueError, match="must not be readable by others"):
        load_secret(str(f))
    f.write_text("short")
    f.chmod(0o600)
    with pytest.raises(ValueError, match="too short"):
        load_secret(str(f))
    with pytest.raises(ValueError, match="cannot read"):
        load_secret(str(tmp_path / "missing"))
    with pytest.raises(ValueError):
        PeerAuth(b"short", 1)


def test_seen_nonces_are_forgotten_after_their_lifetime_and_replays_still_refused() -> None:
    clock = Clock()
    a, b = PeerAuth(SECRET, 1, clock=clock), PeerAuth(SECRET, 2, clock=clock)
    first = a.sign("POST", "/peer/msg", b"x")
    assert b.verify(first, "POST", "/peer/msg", b"x") is None
    for _ in range(3000):  # a busy minute and more: 20 messages a second
        clock.t += 0.05
        assert b.verify(a.sign("POST", "/peer/msg", b"x"), "POST", "/peer/msg", b"x") is None
        sig = a.sign("POST", "/peer/msg", b"x")
    assert b.verify(sig, "POST", "/peer/msg", b"x") is None
    assert b.verify(sig, "POST", "/peer/msg", b"x") == "replayed peer message"
    # Only the last 2 x window seconds are remembered (60 s x 20/s, plus the one above).
    assert 1150 <= len(b._seen) <= 1202
    assert b.verify(first, "POST", "/peer/msg", b"x") is not None  # long gone, and stale


def test_nonces_differ_between_messages_and_between_restarts() -> None:
    clock = Clock()
    first, restarted = PeerAuth(SECRET, 1, clock=clock), PeerAuth(SECRET, 1, clock=clock)
    receiver = PeerAuth(SECRET, 2, clock=clock)
    # Same sender, same time, same message: only the nonce tells them apart.
    sigs = [first.sign("POST", "/peer/msg", b"x") for _ in range(3)]
    sigs.append(restarted.sign("POST", "/peer/msg", b"x"))
    assert len({s.split(":")[2] for s in sigs}) == 4
    assert all(receiver.verify(s, "POST", "/peer/msg", b"x") is None for s in sigs)


def test_a_head_only_signature_is_accepted_only_where_allowed() -> None:
    clock = Clock()
    a, b = PeerAuth(SECRET, 1, clock=clock), PeerAuth(SECRET, 2, clock=clock)
    sig = a.sign("PUT", "/peer/store/x.png", head_only=True)
    assert sig.endswith(":head")
    assert b.verify(sig, "PUT", "/peer/store/x.png") == "this request must be signed over its body"

    def never() -> bytes:
        raise AssertionError("a head-only signature needs no digest")

    assert b.verify(sig, "PUT", "/peer/store/x.png", b"any body", never,
                    head_only_ok=True) is None
    other = a.sign("PUT", "/peer/store/x.png", head_only=True)
    assert "bad peer signature" in (b.verify(other, "PUT", "/peer/store/y.png",
                                             head_only_ok=True) or "")


def test_the_choice_of_head_only_is_covered_by_the_mac() -> None:
    clock = Clock()
    a, b = PeerAuth(SECRET, 1, clock=clock), PeerAuth(SECRET, 2, clock=clock)
    covered = a.sign("PUT", "/peer/store/x.png", b"body")
    assert "bad peer signature" in (b.verify(covered + ":head", "PUT", "/peer/store/x.png",
                                             b"other", head_only_ok=True) or "")
    head_only = a.sign("PUT", "/peer/store/x.png", head_only=True)
    stripped = head_only.removesuffix(":head")
    assert "bad peer signature" in (b.verify(stripped, "PUT", "/peer/store/x.png", b"",
                                             head_only_ok=True) or "")


def test_a_body_covering_signature_uses_the_digest_function() -> None:
    clock = Clock()
    a, b = PeerAuth(SECRET, 1, clock=clock), PeerAuth(SECRET, 2, clock=clock)
    sig = a.sign("PUT", "/peer/store/x.png", b"body")
    calls: list[int] = []

    def digest() -> bytes:
        calls.append(1)
        return hashlib.sha256(b"body").digest()

    assert b.verify(sig, "PUT", "/peer/store/x.png", b"", digest) is None
    assert calls == [1]
