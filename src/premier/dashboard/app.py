"""The dashboard: an ASGI app the gateway serves under ``dashboard.path`` (and ``/metrics``), ahead of
every policy.

- ``GET {path}/``: the page (``{path}`` redirects there); ``{path}/static/<file>``: its assets, all from the
  package (works offline).
- ``{path}/api/...``: ``session``, ``login``, ``stats``, ``stream`` (Server-Sent Events, about once a
  second), ``config`` (GET the running YAML; POST to validate-then-apply through hot reload, optionally
  saving it to the file with a backup) and ``config/validate``.
- ``GET {metrics_path}``: the Prometheus exposition.

Security: everything but the page and its assets needs the token — as ``Authorization: Bearer`` or
through ``api/login``, which sets an HttpOnly, SameSite=Strict session cookie; a POST authenticated by
that cookie must also carry the session's CSRF token in ``X-CSRF-Token``. Only with ``open_on_loopback``,
and only for a loopback client talking to a loopback address, is no token needed. The token is compared
in constant time, never logged and never shown (the configuration view leaves it out). Ten wrong tokens
(login or bearer) in a minute lock the client's address out of the API and metrics for the minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from premier.asgi.client import ClientIdentity
from premier.asgi.exchange import Receive, Scope, Send, error_body, send_error
from premier.config.dump import to_yaml
from premier.config.loader import issue_line, load_dict, safe_load
from premier.config.schema import DashboardConfig, GatewayConfig, without_password
from premier.errors import ConfigError
from premier.observability.prometheus import CONTENT_TYPE, exposition
from premier.observability.stats import StatsCollector

__all__ = ["DashboardApp"]

logger = logging.getLogger("premier")

MAX_BODY = 1024 * 1024
SESSION_SECONDS = 12 * 3600
FAILURES_PER_MINUTE = 10
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]
_LOOPBACK = ("127.", "::1", "localhost")
_FORWARDING = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip"})
_MASK = "********"  # stands for the running token in the configuration view
_ENV_NAME = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


class DashboardApp:
    """One per gateway (sessions and statistics survive reloads); it reads the running configuration's
    ``dashboard`` section on every request. ``source``: the configuration file, if there is one."""

    stream_interval = 1.0

    def __init__(
        self, gateway: Any, settings: DashboardConfig, *, source: str | os.PathLike[str] | None = None
    ) -> None:
        self.gateway = gateway
        self.source = Path(source) if source is not None else None
        self.stats = StatsCollector(slow_threshold=settings.slow_threshold)
        gateway.events.subscribe(self.stats)
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._identity: tuple[Any, ClientIdentity] | None = None
        self._applied: tuple[GatewayConfig, str] | None = None  # the last Apply: its config and its text

    def _settings(self) -> DashboardConfig:
        return self.gateway.config.dashboard or DashboardConfig()  # (not served then: nothing is authorized)

    def serves(self, path: str) -> bool:
        settings = self._settings()
        return path == settings.path or path.startswith(settings.path + "/") or path == settings.metrics_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self._settings()
        path: str = scope["path"]
        method: str = scope["method"]
        if self._locked_out(scope) and not path.startswith(settings.path + "/static/") and path != settings.path + "/":
            return await _error(send, 429, "too many failed attempts; try again in a minute")
        if method == "POST" and (refusal := _cross_site(scope)):
            return await _error(send, 403, refusal)
        if path == settings.metrics_path:
            if not self._authorized(scope, settings, csrf_checked=False):
                return await _error(send, 401, "a bearer token is required")
            body = exposition(self.stats, self.gateway).encode()
            return await _respond(send, 200, body, CONTENT_TYPE)
        local = path[len(settings.path):]
        if not local and method in ("GET", "HEAD"):
            # the page's assets are relative to it: it lives at the path with a trailing slash
            query = scope.get("query_string", b"")
            location = settings.path.encode() + b"/" + (b"?" + query if query else b"")
            await send({"type": "http.response.start", "status": 308, "headers": [
                (b"location", location), (b"content-length", b"0"), *_SECURITY_HEADERS]})
            return await send({"type": "http.response.body", "body": b""})
        if local == "/" and method in ("GET", "HEAD"):
            return await self._static(send, "index.html")
        if local.startswith("/static/") and method in ("GET", "HEAD"):
            return await self._static(send, local[len("/static/"):])
        if not local.startswith("/api/"):
            return await _error(send, 404, "not found")
        endpoint = local[len("/api/"):]
        if endpoint == "login" and method == "POST":
            return await self._login(scope, receive, send, settings)
        if endpoint == "session" and method == "GET":
            authenticated = self._authorized(scope, settings, csrf_checked=False)
            return await _json(send, 200, {"authenticated": authenticated, "token_required": not self._open(scope, settings)})
        if not self._authorized(scope, settings, csrf_checked=method == "POST"):
            if method == "POST" and self._session(scope) is not None:
                return await _error(send, 403, "missing or wrong X-CSRF-Token")
            return await _error(send, 401, "authentication required (a bearer token or a login)")
        if endpoint == "stats" and method == "GET":
            return await _json(send, 200, self.stats.snapshot(self.gateway))
        if endpoint == "stream" and method == "GET":
            return await self._stream(receive, send)
        if endpoint == "config" and method == "GET":
            return await _json(send, 200, {"yaml": self._config_text(), "source": str(self.source) if self.source else None,
                                           "can_save": self._can_save(settings)})
        if endpoint in ("config", "config/validate") and method == "POST":
            request = await _read_json(receive, send)
            if request is None:
                return None
            text = request.get("yaml")
            if not isinstance(text, str):
                return await _error(send, 400, "the body must be JSON with a 'yaml' string")
            config, errors, unsaveable = self._validate(text)
            if endpoint == "config/validate":
                return await _json(send, 200, {"ok": not errors, "errors": errors} if errors else {"ok": True})
            if config is None:
                return await _json(send, 400, {"ok": False, "errors": errors})
            save = bool(request.get("save"))
            if save and not self._can_save(settings):
                return await _error(send, 403, "saving is not enabled (dashboard.save_config and a configuration file)")
            if save:
                problem = unsaveable
                if problem is None:
                    try:
                        self._save(text)
                    except OSError as exc:
                        problem = f"could not save {self.source}: {exc.strerror or exc}"
                if problem is not None:  # nothing applied either: what runs is what the file says
                    return await _json(send, 400, {"ok": False, "errors": [{"path": "", "message": problem, "line": None}]})
            self.gateway.reload(config)
            self._applied = (config, text)
            logger.info("configuration applied from the dashboard (%d path policies)", len(config.paths))
            return await _json(send, 200, {"ok": True, "saved": save})
        return await _error(send, 404 if method == "GET" else 405, "no such endpoint")

    # authentication ----------------------------------------------------------------------------------

    def _open(self, scope: Scope, settings: DashboardConfig) -> bool:
        """Whether this request needs no token: ``open_on_loopback``, a loopback client on a loopback
        address, and nothing forwarded (a local proxy may be relaying anyone)."""
        if not settings.open_on_loopback:
            return False
        server, client = scope.get("server"), scope.get("client")
        if not (server and client and str(server[0]).startswith(_LOOPBACK) and str(client[0]).startswith(_LOOPBACK)):
            return False
        if self._client_identity().trusts(str(client[0])):
            return False
        if not _loopback_host(_header(scope, b"host")):
            return False  # a page of another name resolving to 127.0.0.1 (DNS rebinding) needs the token
        return not any(name in _FORWARDING for name, _ in scope["headers"])

    def _client_identity(self) -> ClientIdentity:
        config = self.gateway.config
        if self._identity is None or self._identity[0] is not config:
            self._identity = (config, ClientIdentity(config.trusted_proxies))
        return self._identity[1]

    def _address(self, scope: Scope) -> str:
        """The client's address as the rate limits see it (behind trusted proxies, the forwarded one)."""
        return self._client_identity().address(scope)

    def _authorized(self, scope: Scope, settings: DashboardConfig, *, csrf_checked: bool) -> bool:
        if self._open(scope, settings):
            return True
        token = settings.token
        authorization = _header(scope, b"authorization")
        if token and authorization and authorization[:7].lower() == "bearer ":
            if hmac.compare_digest(authorization[7:].strip().encode(), token.encode()):
                return True
            self._failed(scope)
            return False
        csrf = self._session(scope)
        if csrf is None:
            return False
        if csrf_checked:
            return hmac.compare_digest((_header(scope, b"x-csrf-token") or "").encode(), csrf.encode())
        return True

    def _session(self, scope: Scope) -> str | None:
        """The CSRF token of the request's valid session cookie, if it has one. Sessions are signed with
        the dashboard token, not stored: every worker process accepts them, and changing the token ends
        them all."""
        sid = _cookies(scope).get("premier_session")
        token = self._settings().token
        if not sid or not token or sid.count(".") != 2:
            return None
        expires, nonce, signature = sid.split(".")
        if not hmac.compare_digest(signature.encode(), _sign(token, f"{expires}.{nonce}").encode()):
            return None
        if not expires.isdigit() or int(expires) < time.time():
            return None
        return _sign(token, "csrf:" + sid)

    def _locked_out(self, scope: Scope) -> bool:
        failures = self._failures.get(self._address(scope))
        if not failures:
            return False
        recent = [t for t in failures if t > time.time() - 60]
        failures[:] = recent
        return len(recent) >= FAILURES_PER_MINUTE

    def _failed(self, scope: Scope) -> None:
        """Counts a wrong token (login or bearer) against the client's address."""
        address = self._address(scope)
        self._failures.setdefault(address, []).append(time.time())
        self._failures.move_to_end(address)
        while len(self._failures) > 10_000:
            self._failures.popitem(last=False)
        logger.warning("dashboard: wrong token from %s", address or "-")

    async def _login(self, scope: Scope, receive: Receive, send: Send, settings: DashboardConfig) -> None:
        request = await _read_json(receive, send)
        if request is None:
            return None
        given = request.get("token")
        now = time.time()
        if not (isinstance(given, str) and settings.token
                and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), settings.token.encode())):
            self._failed(scope)
            return await _error(send, 401, "wrong token")
        payload = f"{int(now + SESSION_SECONDS)}.{secrets.token_urlsafe(16)}"
        sid = f"{payload}.{_sign(settings.token, payload)}"
        csrf = _sign(settings.token, "csrf:" + sid)
        cookie_path = settings.path.encode()
        body = json.dumps({"ok": True, "csrf": csrf}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"set-cookie", b"premier_session=%s; Path=%s; HttpOnly; SameSite=Strict; Max-Age=%d"
             % (sid.encode(), cookie_path, SESSION_SECONDS)),
            (b"set-cookie", b"premier_csrf=%s; Path=%s; SameSite=Strict; Max-Age=%d"
             % (csrf.encode(), cookie_path, SESSION_SECONDS)),
            *_SECURITY_HEADERS,
        ]})
        await send({"type": "http.response.body", "body": body})

    # content -----------------------------------------------------------------------------------------

    async def _static(self, send: Send, name: str) -> None:
        if "/" in name or name.startswith(".") or Path(name).suffix not in _STATIC_TYPES:
            return await _error(send, 404, "not found")
        resource = resources.files("premier.dashboard") / "static" / name
        try:
            body = resource.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return await _error(send, 404, "not found")
        return await _respond(send, 200, body, _STATIC_TYPES[Path(name).suffix])

    async def _stream(self, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"x-accel-buffering", b"no"), *_SECURITY_HEADERS,
        ]})

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.ensure_future(disconnected())
        try:
            while not watcher.done():
                data = json.dumps(self.stats.snapshot(self.gateway), separators=(",", ":"))
                await send({"type": "http.response.body", "body": b"data: " + data.encode() + b"\n\n", "more_body": True})
                await asyncio.wait([watcher], timeout=self.stream_interval)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await send({"type": "http.response.body", "body": b""})

    def _config_text(self) -> str:
        """The running configuration as text: the file as written, or the text of the last Apply, if that
        is what runs (comments and ``${VAR}`` references kept, the values behind them not shown); else
        the configuration written out, passwords in URLs left out. Never the token itself."""
        running: GatewayConfig = self.gateway.config
        text = None
        if self.source is not None:
            try:
                text = self.source.read_text(encoding="utf-8")
                if GatewayConfig.from_yaml(text) != running:
                    text = None
            except (OSError, ValueError):
                text = None
        if text is None and self._applied is not None and self._applied[0] == running:
            text = self._applied[1]
        if text is None:
            text = without_password(to_yaml(running))
        token = running.dashboard.token if running.dashboard else None
        if not token:
            return text
        # every occurrence that is not part of a longer word (a quoted or block scalar, a ${VAR:-default})
        return re.sub(r"(?<!\w)" + re.escape(token) + r"(?!\w)", _MASK, text)

    def _validate(self, text: str) -> tuple[GatewayConfig | None, list[dict[str, Any]], str | None]:
        """The configuration ``text`` stands for, or its errors; and why the text must not be saved (it
        would not load back as that configuration: the view left a secret out, which the running
        configuration filled in), or ``None``."""
        try:
            data = safe_load(text)
        except ConfigError as exc:
            return None, [{"path": i.path, "message": i.message, "line": None} for i in exc.issues], None
        except RecursionError:
            return None, [{"path": "", "message": "YAML nested too deeply", "line": None}], None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            return None, [{"path": "", "message": f"YAML syntax error: {getattr(exc, 'problem', exc)}",
                           "line": mark.line + 1 if mark else None}], None
        allowed = self._env_names()
        unknown = sorted(set(_ENV_NAME.findall(text)) - allowed)  # (with their lines; the loader checks the values)
        if unknown:
            return None, [{"path": "", "line": text[:text.index("${" + name)].count("\n") + 1,
                           "message": f"${{{name}}}: only environment variables the configuration file already "
                                      "uses can be referenced from the dashboard"} for name in unknown], None
        section = data.get("premier") if isinstance(data, dict) else None
        dashboard = section.get("dashboard") if isinstance(section, dict) else None
        storage = section.get("storage") if isinstance(section, dict) else None
        # The view leaves the token and a storage URL's password out; an edit keeps the running ones.
        running = self.gateway.config
        token_left_out = isinstance(dashboard, dict) and dashboard.get("token", _MASK) == _MASK
        if token_left_out and isinstance(dashboard, dict) and running.dashboard is not None and running.dashboard.token:
            dashboard["token"] = running.dashboard.token
        url = storage.get("url") if isinstance(storage, dict) else None
        password_left_out = isinstance(url, str) and "***@" in url
        if (password_left_out and isinstance(storage, dict) and running.storage is not None
                and url == without_password(running.storage.url)):
            storage["url"] = running.storage.url
        try:
            config = load_dict(data, allowed_env=allowed)
        except ConfigError as exc:
            node = yaml.compose(text)  # (once, for every issue's line)
            return None, [{"path": i.path, "message": i.message, "line": issue_line(text, i.path, node) if i.path else None}
                          for i in exc.issues], None
        unsaveable = None
        if token_left_out and config.dashboard is not None and config.dashboard.token:
            unsaveable = ('the text has no dashboard token of its own (the view hides it): write one, e.g. '
                          'token: "${PREMIER_DASHBOARD_TOKEN}", before saving')
        elif password_left_out:
            unsaveable = ('the storage URL has no password of its own (the view hides it): write it, e.g. '
                          'url: "${REDIS_URL}", before saving')
        return config, [], unsaveable

    def _env_names(self) -> set[str]:
        """The environment variables the configuration file references (the dashboard may use those,
        and no others: an edit must not read the server's environment)."""
        try:
            return set(_ENV_NAME.findall(self.source.read_text(encoding="utf-8"))) if self.source else set()
        except OSError:
            return set()

    def _can_save(self, settings: DashboardConfig) -> bool:
        return settings.save_config and self.source is not None

    def _save(self, text: str) -> None:
        assert self.source is not None
        mode = 0o644
        if self.source.exists():
            mode = stat.S_IMODE(self.source.stat().st_mode)
            shutil.copy2(self.source, self.source.with_name(self.source.name + ".bak"))
        handle, temporary = tempfile.mkstemp(dir=self.source.parent, prefix=f".{self.source.name}.")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
            os.chmod(temporary, mode)  # the file keeps its permissions (mkstemp makes it 0600)
            os.replace(temporary, self.source)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        logger.info("configuration saved to %s (previous version in %s.bak)", self.source, self.source.name)


def _cross_site(scope: Scope) -> str | None:
    """Why a POST must be refused as one a browser sent for another site (CSRF, or a page on a name
    rebound to this address), or ``None``. The dashboard's own page sends JSON from its own origin; a
    cross-site page can send neither ``application/json`` nor an ``Authorization`` header (both need a
    CORS preflight, never granted here), nor its origin as this one. A request with a bearer token is a
    script's (curl, a deploy job), never a browser's on its own: it is not asked for any of this."""
    authorization = _header(scope, b"authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return None
    content_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        return "a POST to the dashboard must be application/json"
    site = _header(scope, b"sec-fetch-site")
    if site is not None:  # (the browser's own word: right behind a proxy that rewrites Host, too)
        return None if site.lower() in ("same-origin", "none") else "cross-site request refused"
    origin = _header(scope, b"origin")
    if origin is not None and _origin_host(origin) != _origin_host(f"{origin.split('://', 1)[0]}://{_header(scope, b'host')}"):
        return "cross-origin request refused"
    return None


def _origin_host(origin: str) -> str:
    """``scheme://host:port`` of an origin, lower-case, its port written out (80, 443 when left out)."""
    scheme, _, host = origin.lower().partition("://")
    if not host.endswith("]") and ":" in host.rsplit("]", 1)[-1]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{443 if scheme == 'https' else 80}"


def _loopback_host(host: str | None) -> bool:
    """Whether a ``Host`` header names this machine's loopback (``localhost``, 127.x, ``[::1]``)."""
    if not host:
        return False
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[: host.find("]") + 1]
    name = name.lower()
    return name in ("localhost", "[::1]") or (name.startswith("127.") and name.replace(".", "").isdigit())


def _sign(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _cookies(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in bytes(value).decode("latin-1").split(";"):
                name, _, item = part.strip().partition("=")
                found.setdefault(name, item)
    return found


async def _read_json(receive: Receive, send: Send) -> dict[str, Any] | None:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            await _error(send, 413, f"the body is larger than {MAX_BODY} bytes")
            return None
        if not message.get("more_body"):
            break
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        await _error(send, 400, "the body must be JSON (nested no deeper than Python's recursion limit)")
        return None
    if not isinstance(data, dict):
        await _error(send, 400, "the body must be a JSON object")
        return None
    return data


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *_SECURITY_HEADERS,
    ]})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, data: Any) -> None:
    await _respond(send, status, json.dumps(data).encode(), "application/json")


async def _error(send: Send, status: int, message: str) -> None:
    await send_error(send, status, error_body(status, message), list(_SECURITY_HEADERS))
