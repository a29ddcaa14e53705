"""Standalone mode's downstream: the reverse proxy, its upstream pool of backends, their balancer and
health checks, and the HTTP/1.1 connections to them."""

from premier.proxy.pool import Backend, UpstreamPool
from premier.proxy.reverse_proxy import ReverseProxy

__all__ = ["Backend", "ReverseProxy", "UpstreamPool"]
