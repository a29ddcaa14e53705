"""Path patterns and matching: the first pattern, in configuration order, that matches a request's
normalised path wins.

Globs: ``*`` matches any run of characters (``/`` included), ``?`` one character, ``{name}`` one path
segment (captured as a path parameter); every other character is literal. A glob ending in ``/*`` also
matches the path without it (``/api/users/*`` matches ``/api/users``). A pattern starting with ``^`` is a
regular expression searched in the path; its named groups are path parameters.

Paths are normalised before matching — ``//`` merged, ``/./`` and ``/../`` resolved — so
``/api//admin/`` or ``/api/x/../admin`` cannot slip past a policy for ``/api/admin/*``. (The ASGI server
has already percent-decoded the path once; ``/api/%61dmin`` arrives as ``/api/admin``.)

Every pattern, glob or regex, is compiled with ``re.DOTALL``: a decoded ``%0A`` is a character of the path
like any other, so ``/api/admin/x%0A`` is matched by ``/api/admin/*`` (frameworks route it: Starlette's
``{param}`` takes a newline, and its ``$`` matches before a final one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Generic, TypeVar

__all__ = ["Router", "compile_pattern", "normalize_path"]

T = TypeVar("T")

_MEMO_MAX_PATH = 1024

_GLOB_TOKEN = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}|\*+|\?|[^*?{]+|\{")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression a configured pattern stands for."""
    if pattern.startswith("^"):
        return re.compile(pattern, re.DOTALL)
    parts: list[str] = []
    body, optional_tail = (pattern[:-2], True) if pattern.endswith("/*") and len(pattern) > 2 else (pattern, False)
    for match in _GLOB_TOKEN.finditer(body):
        token = match.group(0)
        if match.group(1):
            parts.append(f"(?P<{match.group(1)}>[^/]+)")
        elif token.startswith("*"):
            parts.append(".*")
        elif token == "?":
            parts.append(".")
        else:
            parts.append(re.escape(token))
    if optional_tail:
        parts.append("(?:/.*)?")
    # A final newline is ignored, as Starlette's and FastAPI's routes ignore it (their regexes end in
    # ``$``): ``/admin%0A`` reaches the ``/admin`` route, so it must get the ``/admin`` policy too.
    return re.compile("".join(parts) + r"\n?\Z", re.DOTALL)


def _below_root(path: str, root_path: str) -> str:
    """``path`` with its part after the app's ``root_path`` resolved on its own: the app routes that
    part, so a ``..`` must not climb out of the root (``/v1/../api/x`` is ``/v1/api/x``, not ``/api/x``,
    which no policy written for ``/v1/api/*`` would match)."""
    root = root_path.rstrip("/")
    if ("//" not in path and "/." not in path) or not path.startswith(root + "/"):
        return normalize_path(path)  # (the path itself when there is nothing to resolve)
    return root + normalize_path(path[len(root):])


def normalize_path(path: str) -> str:
    """``path`` with empty, ``.`` and ``..`` segments resolved (never above the root)."""
    if "//" not in path and "/." not in path:
        return path
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and segments else ""
    return "/" + "/".join(segments) + trailing


class Router(Generic[T]):
    """Maps a path to the first matching target. Lookups of recently seen paths are one dict access;
    that memo holds at most ``memo_size`` paths and is emptied when full (clients choose paths)."""

    __slots__ = ("_default", "_memo", "_memo_size", "_routes")

    def __init__(self, routes: Sequence[tuple[str, T]], default: T | None, *, memo_size: int = 10_000) -> None:
        # A `^...` regex is searched (as documented: `^/a|/b` also matches `/x/b`); a glob ends in \Z
        # and is matched from the start, so it matches the whole path.
        self._routes = [
            (regex.search if pattern.startswith("^") else regex.match, target)
            for pattern, target in routes
            for regex in (compile_pattern(pattern),)
        ]
        self._default = default
        self._memo: dict[str, tuple[T | None, str, dict[str, str]]] = {}
        self._memo_size = memo_size

    def match(self, raw_path: str, root_path: str = "") -> tuple[T | None, str, dict[str, str]]:
        """``(target, normalised path, path parameters)``; the target is the default when nothing matches.
        ``root_path`` (ASGI's: where the app is mounted): dot segments resolve within the part after it.
        (A path that needed resolving under a root is not memoised: the memo holds what any root gives.)"""
        found = self._memo.get(raw_path)
        if found is not None:
            return found
        path = _below_root(raw_path, root_path) if root_path else normalize_path(raw_path)
        found = (self._default, path, {})
        for find, target in self._routes:
            m = find(path)
            if m is not None:
                found = (target, path, {k: v for k, v in m.groupdict().items() if v is not None})
                break
        if len(raw_path) <= _MEMO_MAX_PATH and (path is raw_path or not root_path):  # (not a client's 60 KB path)
            if len(self._memo) >= self._memo_size:
                self._memo.clear()
            self._memo[raw_path] = found
        return found
