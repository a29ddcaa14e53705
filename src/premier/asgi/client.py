"""Who is calling: the client address (``X-Forwarded-For`` believed only from trusted proxies) and the
rate-limit key derived from it, a header, or nothing."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Sequence
from functools import lru_cache

from premier.asgi.exchange import Scope

__all__ = ["ClientIdentity"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_KEY_VALUE = 128  # a header value longer than this is keyed by its digest


class ClientIdentity:
    """Finds a request's client address. With no trusted proxies configured, that is the peer address
    and ``X-Forwarded-For`` is ignored (anyone can send it). From a trusted peer, the header is read
    right to left and the first address that is not itself a trusted proxy is the client."""

    __slots__ = ("_is_trusted", "_networks")

    def __init__(self, trusted_proxies: Sequence[str] = ()) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self._is_trusted: Callable[[str], bool] = lru_cache(maxsize=4096)(self._trusted)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is a configured trusted proxy (whose forwarding headers are believed)."""
        return bool(self._networks) and self._is_trusted(address)

    def address(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = client[0] if client else ""
        if not self._networks or not self._is_trusted(peer):
            return peer
        forwarded = b",".join(value for key, value in scope["headers"] if key == b"x-forwarded-for")
        if not forwarded:
            return peer
        hops = [hop.strip() for hop in forwarded.decode("latin-1").split(",")]
        for hop in reversed(hops):
            if hop and not self._is_trusted(hop):
                return hop
        return hops[0] or peer

    def key_function(self, key: str) -> Callable[[Scope], str]:
        """The rate-limit key of a request, for a ``rate_limit.key`` setting."""
        if key == "global":
            return lambda scope: "*"
        if key.startswith("header:"):
            header = key[7:].lower().encode("latin-1")

            def by_header(scope: Scope) -> str:
                for name, value in scope["headers"]:
                    if name == header:
                        if len(value) > _MAX_KEY_VALUE:  # (a client's 100 KB value is not kept as a key)
                            return "h#" + hashlib.sha256(value).hexdigest()
                        return "h:" + bytes(value).decode("latin-1")
                return "ip:" + self.address(scope)  # no header: still limited, by address

            return by_header
        if not self._networks:
            return _peer_key  # the common case: no proxy to look behind
        return lambda scope: "ip:" + self.address(scope)


def _peer_key(scope: Scope) -> str:
    client = scope.get("client")
    return "ip:" + client[0] if client else "ip:"
