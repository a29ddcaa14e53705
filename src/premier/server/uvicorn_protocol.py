"""uvicorn's httptools protocol, as ``premier serve --server uvicorn`` (and plugin mode under ``premier
serve``) runs it: less its one habit a gateway cannot have.

uvicorn appends a chunked body's trailer fields to the request's header list — the very list in the
scope — so a trailer ``Authorization``, ``Cookie`` or ``X-Forwarded-For`` would reach the app, the rate
limit's client identity and a backend as a request header. Here the scope keeps the headers of the head
only. (``uvicorn app:gateway`` run directly keeps uvicorn's own protocol: pass
``--http premier.server.uvicorn_protocol:HttpToolsProtocol`` to get this one.)
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _UvicornHttpToolsProtocol

__all__ = ["HttpToolsProtocol"]


class HttpToolsProtocol(_UvicornHttpToolsProtocol):
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # The scope gets a list of its own: what uvicorn appends to ``self.headers`` from now on (a
        # chunked body's trailers) stays out of it. (The app's task, created above, has not run yet;
        # uvicorn still reads ``self.headers`` for an upgrade.)
        self.scope["headers"] = list(self.headers)
