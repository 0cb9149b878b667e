"""Peer authentication: an HMAC over a shared cluster secret, with a replay window.

Every node-to-node request carries `x-cloud-p2p-auth: <node>:<ms>:<nonce>:<hex mac>`, the MAC
covering the sender, the time, a nonce never used before, the method, the target and the
body's sha256.
A receiver accepts it only if the MAC matches, the time is within `window` seconds of its own
clock, and it has not seen the nonce before (within the window). So an outside process cannot
forge an election message, and a captured message cannot be replayed.

An image passed on to the node that stores it is signed over its head only (the value ends in
`:head`, and the MAC covers that choice), like S3's unsigned payloads: hashing a 1 MiB image on
every hop cost more CPU than anything else the leader does. The storing node hashes the image
once, for its own record, and returns that digest; the uploading client compares it with its
own (`cloud-p2p-stress` does), so the image is still checked end to end. The receiver accepts
a head-only signature only where the caller allows it (image stores), never for election
messages.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Callable

from nodesvc.digits import ascii_digits

HEADER = "x-cloud-p2p-auth"
SCHEME = "CloudP2P-Peer"  # the 401 challenge's scheme: sign with the cluster secret
MIN_SECRET_BYTES = 16
HEAD_ONLY = "head"  # the signature's last field when it does not cover the body
# What the MAC covers in place of the body's 32-byte digest: another length, so no body can
# make a head-only MAC equal a body-covering one.
_NO_BODY = b"head-only"


class PeerAuth:
    def __init__(self, secret: bytes, node_id: int, window: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the cluster secret must have at least {MIN_SECRET_BYTES} bytes")
        # Each MAC starts from a copy of this keyed state: hmac.digest() would be one C call,
        # but it lets go of the GIL, and on a busy node taking it back costs a thread switch
        # (up to 5 ms) per message; copy, update and digest of a short head keep it.
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)
        self.node_id = node_id
        self.window = window
        self._clock = clock
        # nonce -> when it may be forgotten, oldest first (all get the same lifetime)
        self._seen: OrderedDict[str, float] = OrderedDict()
        # Nonces are unique without a system call per message: a random prefix drawn once per
        # process, then a counter.
        self._nonce_prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def _mac(self, sender: int, ms: int, nonce: str, method: str, target: str,
             covered: bytes) -> str:
        """`covered`: the body's sha256, or _NO_BODY."""
        head = f"{sender}\n{ms}\n{nonce}\n{method}\n{target}\n".encode()
        mac = self._keyed.copy()
        mac.update(head + covered)
        return mac.hexdigest()

    def sign(self, method: str, target: str, body: bytes = b"",
             body_sha256: bytes | None = None, *, head_only: bool = False) -> str:
        """`body_sha256`: the body's digest when the caller has it already. `head_only`: the
        signature does not cover the body (see the module's docstring)."""
        ms = int(self._clock() * 1000)
        nonce = f"{self._nonce_prefix}{next(self._counter):x}"
        if head_only:
            mac = self._mac(self.node_id, ms, nonce, method, target, _NO_BODY)
            return f"{self.node_id}:{ms}:{nonce}:{mac}:{HEAD_ONLY}"
        digest = body_sha256 or hashlib.sha256(body).digest()
        mac = self._mac(self.node_id, ms, nonce, method, target, digest)
        return f"{self.node_id}:{ms}:{nonce}:{mac}"

    def verify(self, value: str | None, method: str, target: str, body: bytes = b"",
               digest: Callable[[], bytes] | None = None, *,
               head_only_ok: bool = False) -> str | None:
        """None if the request is authentic; else the reason it is refused. `digest`: what
        gives the body's sha256 if the caller keeps it (called only if the signature covers
        the body). `head_only_ok`: accept a signature over the head only."""
        if not value:
            return "missing peer signature"
        parts = value.split(":")
        head_only = len(parts) == 5 and parts[4] == HEAD_ONLY
        if (len(parts) != 4 and not head_only) or not ascii_digits(parts[0]) \
                or not ascii_digits(parts[1]):
            return "malformed peer signature"
        if head_only and not head_only_ok:
            return "this request must be signed over its body"
        sender, ms, nonce, mac = int(parts[0]), int(parts[1]), parts[2], parts[3]
        now = self._clock()
        if abs(now - ms / 1000) > self.window:
            return (f"peer signature outside the time window (clocks out of sync, or a "
                    f"replay): node {sender}'s clock reads {ms / 1000 - now:+.1f} s from ours")
        if head_only:
            covered = _NO_BODY
        else:
            covered = digest() if digest is not None else hashlib.sha256(body).digest()
        if not hmac.compare_digest(mac, self._mac(sender, ms, nonce, method, target, covered)):
            return "bad peer signature (wrong cluster secret?)"
        self._forget_old(now)
        if nonce in self._seen:
            return "replayed peer message"
        self._seen[nonce] = now + 2 * self.window
        return None

    def _forget_old(self, now: float) -> None:
        """Drop the nonces past their lifetime: from the oldest, so each costs O(1) once
        (rebuilding the whole table per request made a busy node's CPU grow with its load)."""
        while self._seen:
            nonce, until = next(iter(self._seen.items()))
            if until > now:
                return
            del self._seen[nonce]


def check_token(token: bytes, where: str) -> bytes:
    """A client token goes in an HTTP header: one word of visible ASCII."""
    if not token or not all(33 <= b <= 126 for b in token):
        raise ValueError(f"{where}: the client token must be one line of visible ASCII "
                         "characters (no spaces or control characters)")
    return token


def load_secret(path: str, what: str = "the cluster secret") -> bytes:
    """Read a secret file (`what` names it in messages); raise ValueError with a reason a
    user can act on."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read {what}: {exc.strerror}") from None
    if st.st_mode & 0o007:
        raise ValueError(f"{path}: {what} must not be readable by others "
                         f"(mode {st.st_mode & 0o777:o}; use chmod 0640 or 0600)")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path}: {what} is too short (at least {MIN_SECRET_BYTES} bytes)")
    return secret
