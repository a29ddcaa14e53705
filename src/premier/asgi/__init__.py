"""The ASGI face of Premier: ``ASGIGateway(config, app=app)`` and ``PremierMiddleware``."""

from premier.asgi.gateway import ASGIGateway, PremierMiddleware
from premier.config import GatewayConfig

__all__ = ["ASGIGateway", "GatewayConfig", "PremierMiddleware"]
