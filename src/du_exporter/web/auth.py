"""Basic auth at request time: ``Authorization`` headers against bcrypt.

The hashes were checked when the web config was loaded
(:mod:`du_exporter.web.webconfig`); this module only verifies them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import secrets
import threading

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


# bcrypt only ever reads this many bytes of a password.
_BCRYPT_MAX = 72


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    bcrypt is slow on purpose (tens of milliseconds at cost 10), and
    Prometheus sends the same credentials on every scrape.  So a success
    is remembered: per user, a keyed digest of user, password and hash,
    compared with :func:`hmac.compare_digest` on the next request.  One
    entry per configured user bounds the cache; a failure is never
    cached.  An unknown user is checked against a dummy hash, so the
    answer takes as long as for a wrong password.

    bcrypt releases the GIL, so checks run in parallel on a small pool
    of threads (*workers*: what a flood of bad passwords can cost).
    :meth:`check_async` runs one check per distinct credential at a time
    (single flight): a thousand clients sending the same wrong password
    cost one bcrypt; and it starts the newest check first, so a valid
    user's first login is not queued behind a flood of distinct ones.
    """

    def __init__(self, users: Iterable[tuple[str, str]], workers: int = 4) -> None:
        self._users = {user: hashed.encode() for user, hashed in users}
        self._key = secrets.token_bytes(32)
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._dummy: bytes | None = None
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        # Only touched from the event loop that calls check_async.
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}
        self._waiting: list[tuple[_Claim, asyncio.Future[bool]]] = []
        self._running = 0

    def check(self, authorization: str | None) -> bool:
        """Whether the header carries a configured user's password."""
        claim = self._claim(authorization)
        if claim is None:
            return False
        return claim.known or self._verify(claim)

    async def check_async(self, authorization: str | None) -> bool:
        """:meth:`check` on the pool, one bcrypt per credential at a time,
        newest first."""
        claim = self._claim(authorization)
        if claim is None:
            return False
        if claim.known:
            return True
        future = self._inflight.get(claim.digest)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._inflight[claim.digest] = future
            self._waiting.append((claim, future))
            self._pump()
        # A client that goes away must not cancel the others' answer.
        return await asyncio.shield(future)

    def _pump(self) -> None:
        """Start waiting checks, newest first, while a worker is free.

        Last in, first out: under a flood of wrong passwords the queue
        is long, and a client arriving now (a valid user's first login)
        is served within a round of bcrypt, not behind the whole flood;
        the flood's own oldest requests wait instead.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self._workers, thread_name_prefix="du-exporter-bcrypt"
            )
        loop = asyncio.get_running_loop()
        while self._waiting and self._running < self._workers:
            claim, future = self._waiting.pop()
            self._running += 1
            job = loop.run_in_executor(self._pool, self._verify, claim)
            job.add_done_callback(
                functools.partial(self._finished, claim.digest, future)
            )

    def _finished(
        self,
        digest: bytes,
        future: asyncio.Future[bool],
        job: asyncio.Future[bool],
    ) -> None:
        self._running -= 1
        self._inflight.pop(digest, None)
        if not future.done():
            if job.cancelled():
                future.cancel()
            elif (error := job.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(job.result())
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._pump()

    def close(self) -> None:
        """Stop the pool's threads (queued checks are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _claim(self, authorization: str | None) -> _Claim | None:
        credentials = _credentials(authorization)
        if credentials is None:
            return None
        user, password = credentials
        hashed = self._users.get(user)
        digest = hmac.new(
            self._key,
            b"\0".join(
                (user.encode(), hashlib.sha256(password).digest(), hashed or b"")
            ),
            hashlib.sha256,
        ).digest()
        with self._lock:
            cached = self._cache.get(user)
        known = cached is not None and hmac.compare_digest(cached, digest)
        return _Claim(user, password, hashed, digest, known)

    def _verify(self, claim: _Claim) -> bool:
        if claim.hashed is None:
            _checkpw(claim.password, self._dummy_hash())
            return False
        ok = _checkpw(claim.password, claim.hashed)
        if ok:
            with self._lock:
                self._cache[claim.user] = claim.digest
        return ok

    def _dummy_hash(self) -> bytes:
        # Made on first use, at the cost of the configured hashes, so an
        # unknown user takes as long as a known one.
        with self._lock:
            if self._dummy is None:
                cost = max((int(h[4:6]) for h in self._users.values()), default=10)
                password = secrets.token_urlsafe(16).encode()
                import bcrypt  # noqa: PLC0415 - loaded by the first check only

                self._dummy = bcrypt.hashpw(password, bcrypt.gensalt(cost))
            return self._dummy


@dataclass(frozen=True)
class _Claim:
    """What an ``Authorization`` header claims, before bcrypt says."""

    user: str
    password: bytes = field(repr=False)
    #: None for an unknown user (checked against the dummy hash).
    hashed: bytes | None
    #: Keyed digest of user, password and hash: cache and flight key.
    digest: bytes = field(repr=False)
    #: The cache already vouches for it.
    known: bool


def _credentials(authorization: str | None) -> tuple[str, bytes] | None:
    """(user, password) from a ``Basic`` header, or None."""
    if authorization is None:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, sep, password = decoded.partition(b":")
        return (user.decode(), password) if sep else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    # bcrypt reads 72 bytes at most; Go's bcrypt (and htpasswd) silently
    # ignore the rest, while Python's bcrypt 5 raises: cut it here.
    import bcrypt  # noqa: PLC0415 - loaded by the first check only

    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX], hashed)
    except ValueError:
        return False
