"""The HTTP cache step: a shared cache in the sense of RFC 9111.

- Only GET and HEAD are served from the cache (HEAD from a stored GET); only complete GET responses
  are stored, and only with a status that is cacheable by default (200, 203, 204, 300, 301, 308, 404,
  405, 410, 414, 501).
- The key holds the keyspace, the method, the path and the query (byte for byte) — or the rendered
  ``cache_key`` template, when every ``{name}`` in it is found among the path parameters and the query
  (otherwise the default key is used, so distinct requests never share an entry; the query is read as
  the app reads it — blank values kept, the last of a name wins — and each value is filled in
  percent-encoded) — and the values of the request headers the response ``Vary``s on. ``Vary: *`` is
  never stored. A part of the key past 200 characters (path, query, template, Vary'd values) is keyed
  by its SHA-256, so a client's long URL or header makes no long key.
- Not stored: responses with ``no-store``, ``private`` or ``no-cache``, or with ``Set-Cookie`` (unless
  ``public``, and then without the cookie), and responses to requests with ``Authorization`` unless the
  response says ``public``, ``s-maxage`` or ``must-revalidate``.
- Freshness: ``s-maxage``, else ``max-age``, else ``Expires``; when the response says nothing, the
  configured ``expire_s`` (``None``: until evicted). A response's own ``Age`` (it came through another
  cache) counts: it is stored as old as it says, and its ``Age`` on a hit grows from there.
- A hit carries ``Age`` and ``X-Cache: HIT``; a miss ``X-Cache: MISS``. ``If-None-Match`` matching a
  fresh entry's ``ETag`` answers 304. A request's ``Cache-Control: no-cache`` (or ``max-age`` older
  than the entry) goes downstream and refreshes the entry; ``no-store`` bypasses the cache.
- Concurrent misses for one key make one downstream call; the others wait for it and are served its
  entry — or go downstream themselves as soon as its head (or a body past ``max_entry_bytes``) shows it
  will not be stored (a ``no-store`` stream holds no one; a storable one is waited for whole).
- A successful unsafe request (POST, PUT, PATCH, DELETE) removes the stored entries of its path — in a
  store shared between processes, every process's: those recorded in the path's group in the store
  (a ``GroupingProvider``: Redis), else by the path's prefix — as soon as the app's head shows success
  (2xx, 3xx), before it goes on to the client.
- Bodies larger than ``max_entry_bytes`` stream through and are not stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, quote

from premier.asgi.chain import Step
from premier.asgi.exchange import Exchange, Message, Rejection, Send, error_body
from premier.config.schema import CacheConfig
from premier.errors import BackendError

__all__ = ["CacheIndex", "HttpCacheStep"]

_STORABLE_STATUS = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_NOT_STORED_HEADERS = frozenset({b"set-cookie", b"connection", b"keep-alive", b"transfer-encoding", b"x-cache", b"age"})
_NOT_MODIFIED_HEADERS = frozenset({b"etag", b"cache-control", b"expires", b"vary", b"content-location", b"date"})
_MAX_INDEXED_PATHS = 10_000
_MAX_KEYS_PER_PATH = 64
_MAX_INDEX_BYTES = 16 * 1024 * 1024
_INDEXED_OVERHEAD = 100  # about what CPython spends on a string and its slot in a set, beyond its characters
# A key's parts — path, query, rendered template, Vary'd header values — are the client's to make long;
# one past this many characters is keyed by its SHA-256 instead, so every key is a few hundred at most.
_LONG_PART = 200
# A digest starts with a character no query, header value or rendered template can hold (servers refuse
# control characters in them); a path can, but its length, written first, tells it from a long one's digest.
_DIGEST = "\x01"
# Named in every key: entries stored before shared stores recorded each path's keys (``GET:`` and on,
# cleared by prefix) are in no path's record, so an unsafe request would leave them to be served; this
# layout never reads them. (A clear of the keyspace still removes them.)
_LAYOUT = "2:GET:"
_ABSENT: Any = object()
# Single flight across processes (a provider with locks, e.g. Redis): how long the fetching process
# holds the lock at most, how long the others wait for its entry, and how often they look.
_LOCK_TTL = 10.0
_LOCK_WAIT = 5.0
_LOCK_POLL = 0.02
_LOCK_SUFFIX = "\x01lock"  # (not "\x00lock": that is the key of the entry Vary'd on one header whose value is "lock")
_NOT_CACHED = error_body(504, "Not in cache (only-if-cached)")
_NO_DIRECTIVES: dict[str, str] = {}


_REQUEST_HEADERS = frozenset({b"cache-control", b"range", b"pragma", b"authorization", b"if-none-match"})
_NONE_OF_THEM: dict[bytes, bytes] = {}  # (shared, never written: most requests carry none of those)
_AGES = [str(age).encode() for age in range(3600)]
_HIT_LINES = [b"age: %d\r\nx-cache: HIT\r\n" % age for age in range(3600)]
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_NO_BODY_STATUS = frozenset({204, 304})

# How a response is stored (``HttpCacheStep.storage_rules``): whether it may answer requests with
# Authorization, the request headers it varies on, its age on arrival, what is left of its freshness.
_Rules = tuple[bool, tuple[bytes, ...], float, float | None]


def _request_headers(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The request headers the cache looks at, in one pass over the list."""
    found = _NONE_OF_THEM
    for name, value in headers:
        if name in _REQUEST_HEADERS:
            if found is _NONE_OF_THEM:
                found = {}
            found[name] = value
    return found


def _directives(value: bytes | None) -> dict[str, str]:
    """``Cache-Control`` directives as a dict (names lower-cased; valueless ones map to ``""``)."""
    if not value:
        return {}
    found: dict[str, str] = {}
    for part in value.decode("latin-1").split(","):
        name, _, arg = part.strip().partition("=")
        if name:
            found[name.lower()] = arg.strip().strip('"')
    return found


def _seconds(value: str | None) -> float | None:
    if value is None or not value.isdigit():
        return None
    return float(value)


class CacheIndex:
    """The keys stored for each path, so that an unsafe request removes its path's entries from an
    in-process store by name (a clear by prefix scans the whole store). The gateway keeps one for all
    its configurations: it outlives reloads, as the entries do.

    Bounded whatever the keys' lengths: at most ``_MAX_INDEXED_PATHS`` paths and ``_MAX_INDEX_BYTES``
    (characters, and ``_INDEXED_OVERHEAD`` for each path and key) — the paths stored least recently
    leave first — and a path of more than ``_MAX_KEYS_PER_PATH`` keys is marked (``None``) and
    invalidated by prefix."""

    __slots__ = ("nbytes", "paths")

    def __init__(self) -> None:
        self.paths: dict[str, set[str] | None] = {}
        self.nbytes = 0

    def add(self, path: str, key: str) -> list[tuple[str, set[str] | None]]:
        """Remember that ``key`` holds an entry of ``path``. Returns the paths that left the index to
        make room, with their keys (as ``pop``): their entries must leave the store too, so that no
        entry outlives the record that lets an unsafe request remove it."""
        paths = self.paths
        keys: set[str] | None = paths.pop(path, _ABSENT)  # (put back last: the least recently stored leaves first)
        if keys is _ABSENT:
            keys = set()
            self.nbytes += len(path) + _INDEXED_OVERHEAD
        paths[path] = keys
        if keys is not None and key not in keys:
            if len(keys) < _MAX_KEYS_PER_PATH:
                keys.add(key)
                self.nbytes += len(key) + _INDEXED_OVERHEAD
            else:
                paths[path] = None
                self.nbytes -= sum(len(known) + _INDEXED_OVERHEAD for known in keys)
        dropped = []
        while paths and (len(paths) > _MAX_INDEXED_PATHS or self.nbytes > _MAX_INDEX_BYTES):
            oldest = next(iter(paths))
            dropped.append((oldest, self.pop(oldest)))
        return dropped

    def pop(self, path: str) -> set[str] | None:
        """Forget ``path``: the keys recorded for it (none: nothing of it is stored), or ``None`` when it
        had too many to list."""
        keys: set[str] | None = self.paths.pop(path, _ABSENT)
        if keys is _ABSENT:
            return set()
        self.nbytes -= len(path) + _INDEXED_OVERHEAD + sum(len(key) + _INDEXED_OVERHEAD for key in keys or ())
        return keys

    def clear(self) -> None:
        self.paths.clear()
        self.nbytes = 0


class _TemplateValues(dict[str, str]):
    """The names a ``cache_key`` template may hold, each value percent-encoded as the template reads it
    (only the names it holds are encoded): a value's ``:`` (or any other character) can then never pass
    for the template's own, so ``a=x:y&b=z`` and ``a=x&b=y:z`` fill ``{a}:{b}`` differently."""

    __slots__ = ()

    def __getitem__(self, name: str) -> str:
        return quote(dict.__getitem__(self, name), safe="")


class CachedResponse:
    """A stored response. ``vary`` names the request headers it varies on; ``variant`` their values."""

    __slots__ = (
        "auth_ok",
        "body",
        "etag",
        "expires_at",
        "headers",
        "nbytes",
        "status",
        "stored_at",
        "vary",
        "wire",
    )

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        stored_at: float,
        expires_at: float,
        etag: bytes | None,
        vary: tuple[bytes, ...],
        auth_ok: bool,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stored_at = stored_at
        self.expires_at = expires_at
        self.etag = etag
        self.vary = vary
        self.auth_ok = auth_ok
        self.nbytes = len(body) + sum(len(k) + len(v) for k, v in headers)  # what a memory provider counts
        self.wire: bytes | None = None  # the header lines as a server writes them (``wire_lines``)

    def wire_lines(self) -> bytes | None:
        """The stored header lines as a server writes them, serialized once: the body's
        ``content-length``, no other framing header (``None`` when one holds a line break: then the
        server's own checks must see every header)."""
        wire = self.wire
        if wire is None:
            lines = [b"%s: %s\r\n" % header for header in self.headers if header[0] not in _FRAMING]
            lines.append(b"content-length: %d\r\n" % len(self.body))
            wire = self.wire = b"".join(lines)
            if wire.count(b"\n") != len(lines) or wire.count(b"\r") != len(lines):
                wire = self.wire = b""
        return wire or None


class _Flight:
    """One fetch of a key that concurrent misses wait for: in this process (``inflight``'s event) and, with
    a store shared between processes, in the others too (the lock's ``token``)."""

    __slots__ = ("event", "key", "step", "token")

    def __init__(self, step: HttpCacheStep, key: str) -> None:
        self.step = step
        self.key = key
        self.token: str | None = None
        self.event = step.inflight[key] = asyncio.Event()

    async def land(self) -> None:
        """Let the waiters go, once: the entry is stored, or the response turned out not to be storable
        (then as soon as that shows — its head, or a body past the limit — not when it ends: a stream
        under a cached route must not hold the next clients until it finishes)."""
        if self.event.is_set():
            return
        self.event.set()
        inflight = self.step.inflight
        if inflight.get(self.key) is self.event:
            del inflight[self.key]
        if self.token:
            token, self.token = self.token, None
            await self.step.provider.unlock(self.key + _LOCK_SUFFIX, token)


class _Capture:
    """The send of a request that missed: passes the response on and keeps a copy to store if the
    response turns out storable and complete; lands the flight the moment it cannot be stored."""

    __slots__ = ("body", "complete", "flight", "has_auth", "headers", "limit", "rules", "send", "size", "status")

    def __init__(self, send: Send, limit: int, flight: _Flight, has_auth: bool) -> None:
        self.send = send
        self.limit = limit
        self.flight = flight
        self.has_auth = has_auth  # the request carried Authorization
        self.rules: _Rules | None = None  # how the response may be stored; None: it will not be
        self.complete = False  # the app sent its last body message (not cut short mid-stream)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
            if self.status in _STORABLE_STATUS:
                self.rules = self.flight.step.storage_rules(self.headers, self.has_auth)
        elif message["type"] == "http.response.body":
            if self.rules is not None:
                chunk = message.get("body", b"")
                self.size += len(chunk)
                if self.size > self.limit:
                    self.rules = None
                    self.body = []
                else:
                    self.body.append(chunk)
            if not message.get("more_body", False):
                self.complete = True
        await self.send(message)
        if self.rules is None:  # (after the message went on: a shared lock's release is a round trip)
            await self.flight.land()  # (once: landed already, it returns at once)


class _Invalidation:
    """The send of an unsafe request: removes the path's entries as soon as the app's head shows success
    (RFC 9111 4.4: a 2xx or 3xx), before the client sees it — so the client's next request, sent the
    moment it has the answer, cannot be served the entry the request just made stale (after the app
    returned was too late: a Starlette background task runs before it returns)."""

    __slots__ = ("done", "error", "path", "send", "step")

    def __init__(self, step: HttpCacheStep, path: str, send: Send) -> None:
        self.step = step
        self.path = path
        self.send = send
        self.done = False
        self.error: BackendError | None = None  # the store's failure, raised once the app is done

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and 200 <= message["status"] < 400:
            await self._invalidate()
        await self.send(message)

    async def after(self, ex: Exchange) -> None:
        """Once the app is done: a request stopped by its deadline may have made its change all the
        same — its answer was dropped (``Exchange.from_app``), its outcome is unknown — so its path's
        entries go too, before the timeout's answer reaches the client."""
        if ex.timed_out and not self.done:
            await self._invalidate()

    async def _invalidate(self) -> None:
        self.done = True
        try:
            await self.step._invalidate(self.path)
        except BackendError as error:
            # The app's answer stands (its change is made): the client gets it, and the error is
            # raised after it, as when invalidation came last.
            self.error = error


class HttpCacheStep:
    __slots__ = (
        "clock", "config", "default_ttl", "grouped", "index", "inflight", "key_template", "local", "max_entry_bytes",
        "next", "prefix", "provider", "shared",
    )

    def __init__(
        self, next: Step, config: CacheConfig, *, provider: Any, keyspace: str, clock: Callable[[], float] = time.time,
        index: CacheIndex | None = None,
    ) -> None:
        from premier.providers import GroupingProvider, LocalProvider

        self.next = next
        self.config = config
        self.provider = provider
        self.local = isinstance(provider, LocalProvider)
        self.shared = not self.local and callable(getattr(provider, "lock", None))
        # A store shared between processes records each path's keys itself, or is cleared by prefix.
        self.grouped = not self.local and isinstance(provider, GroupingProvider)
        self.prefix = f"{keyspace}:http:"
        self.default_ttl = config.expire_s
        self.key_template = config.cache_key
        self.max_entry_bytes = config.max_entry_bytes
        self.clock = clock
        self.inflight: dict[str, asyncio.Event] = {}
        self.index = CacheIndex() if index is None else index  # (used with an in-process provider only)

    # -- keys and storage ------------------------------------------------------------------------
    def _path_prefix(self, path: str) -> str:
        # The path's length makes the key unambiguous: no path/query split can imitate another (nor a
        # short path a long one's digest: the length written is the path's own). It names the path's group
        # in a store that keeps groups: no key is the prefix itself (each goes on with "?" or "#").
        return f"{self.prefix}{_LAYOUT}{len(path)}:{_bounded(path)}"

    def _base_key(self, ex: Exchange) -> str:
        return self._key(ex.scope.get("query_string", b""), ex.path, ex.params)

    def _key(self, raw_query: bytes, path: str, params: dict[str, str]) -> str:
        query = raw_query.decode("latin-1")
        if self.key_template:
            # The query as Starlette, FastAPI and Django read it — blank values kept, the last of a name
            # wins — or a request could be stored under the key of one that its app answers otherwise.
            values = _TemplateValues(parse_qsl(query, keep_blank_values=True)) if query else _TemplateValues()
            values.update(params)
            try:
                # The template picks what distinguishes entries *within* the path (which query
                # parameters matter); it never lets two paths share an entry.
                return f"{self._path_prefix(path)}#{_bounded(self.key_template.format_map(values))}"
            except (KeyError, IndexError, ValueError, AttributeError):
                pass  # the request lacks a {name}: fall back to the full key, never share wrongly
        if len(query) > _LONG_PART or len(path) > _LONG_PART:
            return f"{self._path_prefix(path)}?{_bounded(query)}"
        return f"{self.prefix}{_LAYOUT}{len(path)}:{path}?{query}"  # (_path_prefix's, inline: the hit's hot path)

    async def _lookup(self, ex: Exchange, base_key: str) -> CachedResponse | None:
        """The stored entry for this request, from a provider that must be awaited (the in-process
        lookup, the same steps without awaiting, is ``_lookup_now``)."""
        found = await self.provider.get(base_key)
        if isinstance(found, tuple):  # a Vary marker: the entry is at a key with the request's values
            found = await self.provider.get(_variant_key(base_key, found, ex.scope["headers"]))
        return found if isinstance(found, CachedResponse) else None

    # -- the step ----------------------------------------------------------------------------------
    async def __call__(self, ex: Exchange) -> None:
        method = ex.scope["method"]
        if method != "GET" and method != "HEAD":
            if method in _SAFE:
                await self.next(ex)
                return
            outer_send = ex.send
            ex.send = invalidation = _Invalidation(self, ex.path, outer_send)
            try:
                await self.next(ex)
            except Exception:  # (Starlette's ClientDisconnect when told "disconnect" at the deadline)
                await invalidation.after(ex)
                raise
            finally:
                ex.send = outer_send
            await invalidation.after(ex)
            if invalidation.error is not None:
                raise invalidation.error
            return
        request = _request_headers(ex.scope["headers"])
        request_cc = _directives(request.get(b"cache-control"))
        if "no-store" in request_cc or b"range" in request:
            ex.cache_status = "BYPASS"
            await self.next(ex)
            return
        base_key = self._base_key(ex)
        revalidate = "no-cache" in request_cc or request.get(b"pragma") == b"no-cache"
        has_auth = b"authorization" in request
        if not revalidate:
            served = await self._serve_fresh(ex, base_key, request_cc, request)
            if served:
                return
            event = self.inflight.get(base_key)
            if event is not None:  # someone is already fetching it: wait, then look again
                await event.wait()
                if await self._serve_fresh(ex, base_key, request_cc, request):
                    return
        if "only-if-cached" in request_cc:
            # The cache's own answer, not the app's: a Rejection, so retry and breaker ignore it.
            raise Rejection(504, _NOT_CACHED)
        ex.cache_status = "MISS"
        ex.add_header(b"x-cache", b"MISS")
        if method == "HEAD" or base_key in self.inflight:
            await self.next(ex)
            return
        flight = _Flight(self, base_key)
        try:
            if self.shared:
                lock_key = base_key + _LOCK_SUFFIX
                flight.token = await self.provider.lock(lock_key, ttl=_LOCK_TTL)
                if flight.token is None:  # another process is fetching it
                    flight.token = await self._wait_for_other_process(ex, base_key, lock_key, request_cc, request)
                    if flight.token is None:
                        return  # served from its entry
            await self._fetch_and_store(ex, base_key, flight, has_auth)
        finally:
            await flight.land()

    async def _wait_for_other_process(
        self, ex: Exchange, base_key: str, lock_key: str, request_cc: dict[str, str], request: dict[bytes, bytes]
    ) -> str | None:
        """Wait (briefly) for the process holding the lock to store the entry, then serve it (returns
        ``None``). If the holder finishes without storing — or takes too long — take the lock (or go
        ahead without it) and fetch: returns the token to release, or ``""`` for none."""
        deadline = time.monotonic() + _LOCK_WAIT
        while time.monotonic() < deadline:
            await asyncio.sleep(_LOCK_POLL)
            if await self._serve_fresh(ex, base_key, request_cc, request):
                return None
            token: str | None = await self.provider.lock(lock_key, ttl=_LOCK_TTL)
            if token is not None:
                # The holder may have stored its entry and let go between our look and our lock.
                if await self._serve_fresh(ex, base_key, request_cc, request):
                    await self.provider.unlock(lock_key, token)
                    return None
                return token
        return ""

    async def _serve_fresh(
        self, ex: Exchange, base_key: str, request_cc: dict[str, str], request: dict[bytes, bytes]
    ) -> bool:
        # answered without awaiting from this process's memory: a hit is the path that must be fast
        entry = self._lookup_now(base_key, ex.scope["headers"]) if self.local else await self._lookup(ex, base_key)
        age = self._fresh(entry, request_cc, request)
        if age is None or entry is None:
            return False
        answer = self.render(entry, age, request, ex.scope["method"])
        if ex.cache_status == "MISS" and ex.extra_headers:  # marked a miss, then served another process's entry
            ex.extra_headers.pop(b"x-cache", None)
        ex.cache_status = "HIT"
        status, headers, body = answer
        await ex.send({"type": "http.response.start", "status": status, "headers": headers})
        await ex.send({"type": "http.response.body", "body": body})
        return True

    def hit_now(
        self, method: str, headers: list[tuple[bytes, bytes]], query: bytes, path: str, params: dict[str, str]
    ) -> tuple[CachedResponse, float, dict[bytes, bytes]] | None:
        """The fresh entry in this process's memory that answers the request (to ``path``, with the
        route's ``params``), found without awaiting: the entry, its age, the request's cache-related
        headers (for ``wire`` or ``render``). ``None``: the step must run — a miss, a revalidation,
        another method, a store shared with other processes."""
        if not self.local or (method != "GET" and method != "HEAD"):
            return None
        request = _request_headers(headers)
        request_cc = _NO_DIRECTIVES
        if request:
            request_cc = _directives(request.get(b"cache-control"))
            if ("no-store" in request_cc or "no-cache" in request_cc or b"range" in request
                    or request.get(b"pragma") == b"no-cache"):
                return None
        entry = self._lookup_now(self._key(query, path, params), headers)
        age = self._fresh(entry, request_cc, request)
        return None if age is None or entry is None else (entry, age, request)

    def wire_now(
        self, method: str, headers: list[tuple[bytes, bytes]], query: bytes, path: str, params: dict[str, str]
    ) -> tuple[int, bytes, bytes] | None:
        """``hit_now``, then ``wire``: the usual hit as a server writes it, or ``None``."""
        hit = self.hit_now(method, headers, query, path, params)
        return None if hit is None else self.wire(*hit, method)

    def wire(
        self, entry: CachedResponse, age: float, request: dict[bytes, bytes], method: str
    ) -> tuple[int, bytes, bytes] | None:
        """A hit as a server writes it: ``(status, header lines, body)`` — the lines serialized once
        per entry, ``content-length`` among them, ``Age`` and ``X-Cache`` added — or ``None`` for
        anything but the usual hit (a 304, a status without a body, a header that needs the server's
        own checks: ``render`` then)."""
        status = entry.status
        if status < 200 or status in _NO_BODY_STATUS or (request and self.not_modified(entry, request)):
            return None
        lines = entry.wire_lines()
        if lines is None:
            return None
        return status, lines + self.hit_lines(age), b"" if method == "HEAD" else entry.body

    @staticmethod
    def hit_lines(age: float) -> bytes:
        """The ``Age`` and ``X-Cache: HIT`` lines of a hit."""
        seconds = int(age)
        return _HIT_LINES[seconds] if seconds < 3600 else b"age: %d\r\nx-cache: HIT\r\n" % seconds

    def _lookup_now(self, base_key: str, headers: list[tuple[bytes, bytes]]) -> CachedResponse | None:
        found = self.provider.get_nowait(base_key)
        if isinstance(found, tuple):  # a Vary marker: the entry is at a key with the request's values
            found = self.provider.get_nowait(_variant_key(base_key, found, headers))
        return found if isinstance(found, CachedResponse) else None

    def _fresh(self, entry: CachedResponse | None, request_cc: dict[str, str], request: dict[bytes, bytes]) -> float | None:
        """The age of ``entry`` if it may answer this request (``None``: absent, stale, not for it)."""
        if entry is None:
            return None
        now = self.clock()
        age = now - entry.stored_at
        if now >= entry.expires_at or (request and b"authorization" in request and not entry.auth_ok):
            return None
        if request_cc:
            max_age = _seconds(request_cc.get("max-age"))
            if max_age is not None and age > max_age:
                return None
        return age

    @staticmethod
    def not_modified(entry: CachedResponse, request: dict[bytes, bytes]) -> bool:
        """Whether the request's ``If-None-Match`` matches the entry: the hit answers 304."""
        return entry.etag is not None and bool(request) and _etag_matches(request.get(b"if-none-match"), entry.etag)

    def render(
        self, entry: CachedResponse, age: float, request: dict[bytes, bytes], method: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """A hit as ASGI sends it: ``(status, headers, body)`` (a 304 for a matching ``If-None-Match``)."""
        seconds = int(age)
        extra = ((b"age", _AGES[seconds] if seconds < 3600 else str(seconds).encode()), (b"x-cache", b"HIT"))
        if entry.etag is not None and request and _etag_matches(request.get(b"if-none-match"), entry.etag):
            return 304, [*(item for item in entry.headers if item[0] in _NOT_MODIFIED_HEADERS), *extra], b""
        return entry.status, [*entry.headers, *extra], b"" if method == "HEAD" else entry.body

    async def _fetch_and_store(self, ex: Exchange, base_key: str, flight: _Flight, has_auth: bool) -> None:
        outer_send = ex.send
        capture = _Capture(outer_send, self.max_entry_bytes, flight, has_auth)
        ex.send = capture
        try:
            await self.next(ex)
        finally:
            ex.send = outer_send
        if capture.rules is not None and capture.complete:
            await self._store(ex, base_key, capture, capture.rules)

    def storage_rules(self, headers: list[tuple[bytes, bytes]], has_auth: bool) -> _Rules | None:
        """How a response with these headers (and a storable status) is stored: whether it may answer
        requests with ``Authorization``, the request headers it varies on, its ``Age`` on arrival and
        the seconds of freshness it has left (``None``: no end). ``None``: it is not stored (read from
        its head, before any of its body)."""
        response_cc = _directives(b",".join(v for k, v in headers if k.lower() == b"cache-control"))
        if "no-store" in response_cc or "private" in response_cc or "no-cache" in response_cc:
            return None
        public = "public" in response_cc
        if not public and any(k.lower() == b"set-cookie" for k, _ in headers):
            return None
        auth_ok = public or "s-maxage" in response_cc or "must-revalidate" in response_cc
        if has_auth and not auth_ok:
            return None
        vary = tuple(sorted({
            name.strip().lower().encode("latin-1")
            for k, v in headers if k.lower() == b"vary"
            for name in v.decode("latin-1").split(",") if name.strip()
        }))
        if b"*" in vary:
            return None
        age = _age_value(headers)  # it arrives as old as it says (RFC 9111 4.2.3), and is stored so
        lifetime = _freshness(response_cc, headers, self.default_ttl, self.clock())
        if lifetime is not None:
            lifetime -= age  # what is left of its freshness
            if lifetime <= 0:
                return None  # stale already
        return auth_ok, vary, age, lifetime

    async def _store(self, ex: Exchange, base_key: str, capture: _Capture, rules: _Rules) -> None:
        headers = capture.headers
        auth_ok, vary, age, lifetime = rules
        now = self.clock()
        stored = [(k.lower(), v) for k, v in headers if k.lower() not in _NOT_STORED_HEADERS]
        etag = next((v for k, v in stored if k == b"etag"), None)
        expires_at = float("inf") if lifetime is None else now + lifetime
        entry = CachedResponse(capture.status, stored, b"".join(capture.body), now - age, expires_at, etag, vary, auth_ok)
        key = base_key
        if vary:
            await self._put(ex.path, base_key, vary, lifetime)
            key = _variant_key(base_key, vary, ex.scope["headers"])
        await self._put(ex.path, key, entry, lifetime)

    async def _put(self, path: str, key: str, value: Any, ttl: float | None) -> None:
        """Store an entry (or a Vary marker) of ``path`` where an unsafe request to it will find it."""
        if self.grouped:  # (recorded in the store: other processes' entries of the path are there too)
            await self.provider.set_in_group(self._path_prefix(path), key, value, ttl=ttl)
            return
        await self.provider.set(key, value, ttl=ttl)
        if self.local:  # (a shared store without groups is invalidated by prefix: no index here could list it)
            await self._index(path, key)

    async def _index(self, path: str, key: str) -> None:
        for left, keys in self.index.add(path, key):
            await self._remove(left, keys)

    async def _remove(self, path: str, keys: set[str] | None) -> None:
        """Remove ``path``'s entries, given the keys the index had for it (``None``: too many to list)."""
        if keys is None:
            await self.provider.clear(self._path_prefix(path))
        else:
            for key in keys:
                await self.provider.delete(key)

    async def _invalidate(self, path: str) -> None:
        if self.grouped:
            # Every process's keys of the path are recorded in its group (see _put): a round trip or so,
            # however large the store. An entry stored before is gone when this returns; one stored
            # meanwhile is removed or stays recorded, for the next unsafe request to find. (A GET that
            # read the app before its change and stores after this still leaves its entry to be served,
            # as with a clear by prefix or the index: until its TTL or the next unsafe request.)
            await self.provider.clear_group(self._path_prefix(path))
        elif not self.local:
            # Other processes store there too, under keys this one never saw: remove the path's keys by
            # prefix (a scan of the store).
            await self.provider.clear(self._path_prefix(path))
        else:
            await self._remove(path, self.index.pop(path))

    async def clear(self) -> None:
        await self.provider.clear(self.prefix)
        self.index.clear()


def _variant_key(base_key: str, vary: tuple[bytes, ...], headers: list[tuple[bytes, bytes]]) -> str:
    values = [next((v for k, v in headers if k == name), b"").decode("latin-1") for name in vary]
    return base_key + "\x00" + _bounded("\x00".join(values))


def _bounded(part: str) -> str:
    """A key's ``part`` as it is, or past ``_LONG_PART`` characters ``_DIGEST`` and its SHA-256 in hex."""
    if len(part) <= _LONG_PART:
        return part
    return _DIGEST + hashlib.sha256(part.encode("utf-8", "surrogatepass")).hexdigest()


def _freshness(
    cc: dict[str, str], headers: list[tuple[bytes, bytes]], default: float | None, now: float
) -> float | None:
    """Seconds the response stays fresh; ``None`` when it never goes stale by itself."""
    for directive in ("s-maxage", "max-age"):
        if directive in cc:
            return _seconds(cc[directive]) or 0.0
    expires = next((v for k, v in headers if k.lower() == b"expires"), None)
    if expires is not None:
        date = next((v for k, v in headers if k.lower() == b"date"), None)
        try:
            end = parsedate_to_datetime(expires.decode("latin-1")).timestamp()
            start = parsedate_to_datetime(date.decode("latin-1")).timestamp() if date else now
        except (TypeError, ValueError):
            return 0.0  # an invalid Expires means "already expired" (RFC 9111 5.3)
        return end - start
    return default


def _age_value(headers: list[tuple[bytes, bytes]]) -> float:
    """The response's own ``Age``: seconds it spent in caches before it came here (0 if absent or invalid)."""
    value = next((v for k, v in headers if k.lower() == b"age"), b"").strip()
    return float(value) if value.isdigit() else 0.0


def _etag_matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """Weak comparison (RFC 9110 13.1.2): ``W/"x"`` matches ``"x"``."""
    if not if_none_match:
        return False
    if if_none_match.strip() == b"*":
        return True
    opaque = etag.removeprefix(b"W/")
    return any(tag.strip().removeprefix(b"W/") == opaque for tag in if_none_match.split(b","))
