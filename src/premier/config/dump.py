"""A configuration back to YAML: what the dashboard shows when no file text is at hand.

Only values that differ from their defaults are written, so the output reads like a hand-written file;
``GatewayConfig.from_yaml(to_yaml(config)) == config`` holds for every valid configuration (tested),
except that secrets (the dashboard token) are left out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from premier.config.schema import FEATURE_NAMES, FeaturesConfig, GatewayConfig, ServerConfig

__all__ = ["to_dict", "to_yaml"]

_SECRETS = {("DashboardConfig", "token")}


def to_dict(config: GatewayConfig) -> dict[str, Any]:
    """``{"premier": {...}}`` with the non-default values of ``config`` (secrets left out)."""
    return {"premier": _plain(config)}


def to_yaml(config: GatewayConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False, allow_unicode=True)


def _plain(value: Any) -> Any:
    if isinstance(value, ServerConfig) and value.weight == 1:
        return value.url
    if isinstance(value, FeaturesConfig):
        out = {name: _plain(getattr(value, name)) for name in FEATURE_NAMES if getattr(value, name) is not None}
        out.update(dict.fromkeys(sorted(value.disabled)))  # `feature: null` switches a default off
        return out
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if (type(value).__name__, field.name) in _SECRETS:
                continue
            if field.default is not dataclasses.MISSING and item == field.default:
                continue
            out[field.name] = _plain(item)
        return out
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    return value
