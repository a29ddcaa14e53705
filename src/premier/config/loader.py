"""Turning YAML text, files and mappings into a validated :class:`GatewayConfig`.

Validation is driven by the dataclasses in ``schema.py``: their type hints say what each field accepts,
their metadata which checks apply. Every problem is collected (not only the first) and reported with the
field's path, e.g. ``premier.paths[1].features.rate_limit.quota: must be greater than 0, got 0``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from premier.config.schema import FeaturesConfig, GatewayConfig, ServerConfig, without_password
from premier.errors import ConfigError, ConfigIssue

__all__ = ["build", "load_dict", "load_file", "load_yaml", "require"]

_INVALID: Any = object()
_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _EnvStr(str):
    """A string produced by ``${VAR}`` substitution: numeric and boolean fields may parse it; error
    messages name its variables (``names``) but never show it (a value from the environment may be a
    secret, and messages reach logs and the dashboard)."""

    names: tuple[str, ...] = ()

    def shown(self) -> str:
        return f"the value of {', '.join('${' + name + '}' for name in self.names)} (not shown)"


class _UnsetEnv(_EnvStr):
    """A value whose ``${VAR}`` is not set: already reported, so its field reports nothing more."""


def load_file(path: str | os.PathLike[str]) -> GatewayConfig:
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file: {exc.strerror or exc}", source=source) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"configuration file is not UTF-8 text ({exc.reason})", source=source) from exc
    return load_yaml(text, source=source)


def safe_load(text: str) -> Any:
    """``yaml.safe_load``, but counting the document's values first, on the node graph — where an alias
    or a merge key (``<<``) is one node, however often it is used: a few lines of nested aliases or
    merges (a "billion laughs") would otherwise expand to billions while loading. More than
    ``_MAX_VALUES`` values, or nesting past ``_MAX_DEPTH``: a :class:`ConfigError`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problem = _too_large(node, _node_children)
        if problem:
            raise ConfigError(problem)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(text: str, *, source: str | None = None) -> GatewayConfig:
    try:
        data = safe_load(text)
    except ConfigError as exc:
        raise ConfigError(list(exc.issues), source=source) from None
    except RecursionError:
        raise ConfigError(ConfigIssue("YAML", "nested too deeply"), source=source) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        reason = " ".join(filter(None, [exc.context, exc.problem]))
        raise ConfigError(ConfigIssue(where, f"YAML syntax error: {reason}"), source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML syntax error: {exc}", source=source) from None
    return load_dict(data, source=source)


def issue_line(text: str, path: str, node: yaml.Node | None = None) -> int | None:
    """The 1-based line of ``path`` (``premier.paths[0].features.rate_limit.quota``) in the YAML
    ``text`` (or its ``node``, ``yaml.compose(text)``, composed once for many paths): the deepest part of
    the path found, or ``None``."""
    if node is None:
        try:
            node = yaml.compose(text)
        except (yaml.YAMLError, RecursionError):
            return None
    line = None
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if isinstance(node, yaml.MappingNode):
            found = next((value for key, value in node.value if getattr(key, "value", None) == part), None)
            key = next((key for key, _ in node.value if getattr(key, "value", None) == part), None)
            if found is None or key is None:
                break
            line, node = key.start_mark.line + 1, found
        elif isinstance(node, yaml.SequenceNode) and part.startswith("["):
            index = int(part[1:-1])
            if index >= len(node.value):
                break
            node = node.value[index]
            line = node.start_mark.line + 1
        else:
            break
    return line


def load_dict(data: Any, *, source: str | None = None, allowed_env: Collection[str] | None = None) -> GatewayConfig:
    """The configuration in ``data`` (what ``yaml.safe_load`` gives), validated. ``allowed_env``: the only
    environment variables ``${VAR}`` may read (``None``: any; the dashboard's edits may read only those
    the configuration file already uses)."""
    issues: list[ConfigIssue] = []
    problem = _too_large(data, _value_children)
    if problem:
        raise ConfigError(problem, source=source)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"the configuration must be a mapping with a top-level 'premier:' key, got {_kind(data)}",
            source=source,
        )
    _reject_unknown(data, ("premier",), "", issues)
    if "premier" not in data:
        issues.append(ConfigIssue("premier", "required top-level key is missing"))
        raise ConfigError(issues, source=source)
    body = data["premier"]
    if body is None:
        body = {}
    substitution = _Substitution(issues, allowed_env)
    body = substitution(body, "premier")
    config = _convert(body, GatewayConfig, "premier", issues)
    if isinstance(body, Mapping) and isinstance(body.get("paths"), list):
        seen: dict[Any, int] = {}
        for i, path in enumerate(body["paths"]):
            pattern = path.get("pattern") if isinstance(path, Mapping) else None
            if isinstance(pattern, str) and pattern in seen:
                issues.append(ConfigIssue(
                    f"premier.paths[{i}].pattern",
                    f"{pattern!r} is already the pattern of paths[{seen[pattern]}] (the first match wins; merge them)",
                ))
            elif isinstance(pattern, str):
                seen[pattern] = i
    dashboard = getattr(config, "dashboard", None)
    if dashboard is not None and dashboard.token is None and not dashboard.open_on_loopback:
        issues.append(ConfigIssue(
            "premier.dashboard.token",
            "required (e.g. \"${PREMIER_DASHBOARD_TOKEN}\"), unless open_on_loopback is true and the gateway "
            "listens on loopback only",
        ))
    if issues:
        raise ConfigError(substitution.scrub(issues[:_MAX_ISSUES]), source=source)
    return typing.cast(GatewayConfig, config)


_MAX_ISSUES = 200  # problems reported at most (a text can make millions: one per reference, aliases fanning out)
_MAX_SUBSTITUTED = 1024 * 1024  # characters ${VAR} substitution may produce in all


class _Substitution:
    """One configuration's ``${VAR}`` substitution: the variables it may read, a bound on what it makes,
    and the values it read, for error messages to leave out (a value may be a secret)."""

    def __init__(self, issues: list[ConfigIssue], allowed: Collection[str] | None) -> None:
        self.issues = issues
        self.allowed = allowed
        self.made = 0
        self.secrets: dict[str, str] = {}  # value read -> how messages show it

    def report(self, path: str, message: str) -> None:
        if len(self.issues) < _MAX_ISSUES:
            self.issues.append(ConfigIssue(path, message))

    def __call__(self, value: Any, path: str) -> Any:
        if isinstance(value, str):
            return self._string(value, path) if "${" in value else value
        if isinstance(value, Mapping):
            return {k: self(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    def _string(self, value: str, path: str) -> _EnvStr:
        failed = False
        refused: set[str] = set()

        def replace(match: re.Match[str]) -> str:
            nonlocal failed
            escaped, name, default = match.groups()
            if escaped:
                return match.group(0)[1:]
            if self.allowed is not None and name not in self.allowed:
                failed = True
                if name not in refused:  # (once per variable and value)
                    refused.add(name)
                    self.report(path, f"${{{name}}}: only environment variables the configuration file already "
                                      "uses can be referenced here")
                return ""
            found = os.environ.get(name)
            if found is None or (found == "" and default is not None):
                if default is None:
                    failed = True
                    if name not in refused:
                        refused.add(name)
                        self.report(path, f"environment variable {name} is not set (and no ${{{name}:-default}})")
                    return ""
                return default
            if found:
                self.secrets[found] = "the value of ${" + name + "} (not shown)"
            return found

        substituted = _ENV_REF.sub(replace, value)
        self.made += len(substituted)
        if self.made > _MAX_SUBSTITUTED:
            failed = True
            self.report(path, f"environment variables expand the configuration past {_MAX_SUBSTITUTED} characters")
            substituted = ""
        result = _UnsetEnv(substituted) if failed else _EnvStr(substituted)
        result.names = tuple(name for escaped, name, _ in _ENV_REF.findall(value) if not escaped)
        return result

    def scrub(self, issues: list[ConfigIssue]) -> list[ConfigIssue]:
        """``issues`` with every value read from the environment left out of their messages."""
        secrets = sorted(((v, shown) for v, shown in self.secrets.items() if len(v) >= 3), key=lambda item: -len(item[0]))
        if not secrets:
            return issues
        scrubbed = []
        for issue in issues:
            message = issue.message
            for value, shown in secrets:
                for form in (value, repr(value)[1:-1], without_password(value)):
                    message = message.replace(form, shown)
            scrubbed.append(ConfigIssue(issue.path, message))
        return scrubbed


_MAX_VALUES = 100_000  # values in a configuration, YAML aliases counted each time they are used
_MAX_DEPTH = 64


def _too_large(root: Any, children: Callable[[Any], Iterable[Any]]) -> str | None:
    """Why a document is refused before anything walks it — more than ``_MAX_VALUES`` values (a few lines
    of nested YAML aliases or merges, a "billion laughs", expand to billions) or nesting past
    ``_MAX_DEPTH`` — counted from ``root`` down through ``children`` (of a loaded value, or of a YAML
    node: a shared one counts each time it is reached)."""
    stack: list[tuple[Any, int]] = [(root, 0)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > _MAX_VALUES:
            return f"the configuration has more than {_MAX_VALUES} values (YAML aliases and merges count each time they are used)"
        if depth > _MAX_DEPTH:
            return f"the configuration is nested deeper than {_MAX_DEPTH} levels"
        stack.extend((child, depth + 1) for child in children(value))
    return None


def _value_children(value: Any) -> Iterable[Any]:
    if isinstance(value, Mapping):
        return value.values()
    return value if isinstance(value, list) else ()


def _node_children(node: yaml.Node) -> Iterable[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return (part for pair in node.value for part in pair)
    return node.value if isinstance(node, yaml.SequenceNode) else ()


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, _EnvStr):
        return value.shown()
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _reject_unknown(data: Mapping[Any, Any], known: tuple[str, ...], path: str, issues: list[ConfigIssue]) -> None:
    for key in data:
        if key in known:
            continue
        where = f"{path}.{key}" if path else str(key)
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; valid fields: {', '.join(known)}"
        issues.append(ConfigIssue(where, f"unknown field{hint}"))


def _convert(value: Any, tp: Any, path: str, issues: list[ConfigIssue]) -> Any:
    if isinstance(value, _UnsetEnv):
        return _INVALID
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _convert_union(value, typing.get_args(tp), path, issues)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        issues.append(ConfigIssue(path, f"must be one of {', '.join(map(repr, choices))}, got {_kind(value)}{hint}"))
        return _INVALID
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            issues.append(ConfigIssue(path, f"must be a list, got {_kind(value)}"))
            return _INVALID
        items = tuple(_convert(v, item_type, f"{path}[{i}]", issues) for i, v in enumerate(value))
        return _INVALID if _INVALID in items else items
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(value, typing.cast(type, tp), path, issues)
    return _convert_scalar(value, tp, path, issues)


def _convert_union(value: Any, members: tuple[Any, ...], path: str, issues: list[ConfigIssue]) -> Any:
    if value is None:
        if type(None) in members:
            return None
        issues.append(ConfigIssue(path, "must not be null"))
        return _INVALID
    candidates = [m for m in members if m is not type(None)]
    if len(candidates) == 1:
        return _convert(value, candidates[0], path, issues)
    # Pick the member that fits the value's shape, so the error speaks of the right type.
    for member in candidates:
        if _shape_fits(value, member):
            return _convert(value, member, path, issues)
    names = " or ".join(_type_name(m) for m in candidates)
    issues.append(ConfigIssue(path, f"must be {names}, got {_kind(value)}"))
    return _INVALID


def _shape_fits(value: Any, tp: Any) -> bool:
    if dataclasses.is_dataclass(tp):
        return isinstance(value, Mapping)
    if typing.get_origin(tp) is tuple:
        return isinstance(value, (list, tuple))
    if tp is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or isinstance(value, _EnvStr)
    if tp is str:
        return isinstance(value, str)
    return False


def _type_name(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if typing.get_origin(tp) is tuple:
        return "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}.get(tp, str(tp))


def _convert_scalar(value: Any, tp: Any, path: str, issues: list[ConfigIssue]) -> Any:
    if isinstance(value, _EnvStr) and tp is not str:
        value = _parse_env(value, tp)
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        hint = ""
        if tp in (int, float) and isinstance(value, str) and _looks_numeric(value):
            hint = " (YAML reads 1e3 as text: write 1000 or 1.0e+3)"
        issues.append(ConfigIssue(path, f"must be {_type_name(tp)}, got {_kind(value)}{hint}"))
        return _INVALID
    if tp is float:
        return float(value)
    if tp is str:
        return str(value)
    return value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_env(value: str, tp: Any) -> Any:
    text = value.strip()
    try:
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
    except ValueError:
        return value
    if tp is bool and text.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
        return text.lower() in ("true", "yes", "on", "1")
    return value


def _convert_dataclass(value: Any, cls: type, path: str, issues: list[ConfigIssue]) -> Any:
    if cls is ServerConfig:
        if isinstance(value, str):
            value = {"url": value}
        elif not isinstance(value, Mapping):
            issues.append(ConfigIssue(path, f"must be a URL or a mapping with 'url' and 'weight', got {_kind(value)}"))
            return _INVALID
    if not isinstance(value, Mapping):
        issues.append(ConfigIssue(path, f"must be a mapping, got {_kind(value)}"))
        return _INVALID
    fields = [f for f in dataclasses.fields(cls) if f.init and not (cls is FeaturesConfig and f.name == "disabled")]
    names = tuple(f.name for f in fields)
    before = len(issues)
    _reject_unknown(value, names, path, issues)
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    failed = False
    for f in fields:
        where = f"{path}.{f.name}"
        if f.name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                issues.append(ConfigIssue(where, "required field is missing"))
            continue
        raw = value[f.name]
        if cls is FeaturesConfig and raw is None:
            continue  # `feature: null` switches a default off; recorded in `disabled` below
        converted = _convert(raw, hints[f.name], where, issues)
        if converted is _INVALID:
            failed = True
            continue
        for check in f.metadata.get("checks", ()):
            if converted is not None and (problem := check(converted)):
                if isinstance(raw, _EnvStr):  # (an environment variable's value may be a secret: never echoed)
                    shown = repr(converted) if isinstance(converted, str) else f"got {converted!r}"
                    problem = problem.replace(shown, raw.shown() if isinstance(converted, str) else f"got {raw.shown()}")
                issues.append(ConfigIssue(where, problem))
                break
        kwargs[f.name] = converted
    if cls is FeaturesConfig:
        kwargs["disabled"] = frozenset(k for k, v in value.items() if v is None and k in names)
    if failed or len(issues) > before:
        return _INVALID
    return cls(**kwargs)


_T = typing.TypeVar("_T")


def build(cls: type[_T], values: Mapping[str, Any], *, path: str) -> _T:
    """One section of the schema from Python values, validated like YAML (used by the decorators)."""
    issues: list[ConfigIssue] = []
    result = _convert(dict(values), cls, path, issues)
    if issues:
        raise ConfigError(issues)
    return typing.cast(_T, result)


def require(ok: bool, path: str, message: str) -> None:
    """Raise a :class:`ConfigError` for ``path`` unless ``ok`` (the decorators' own argument checks)."""
    if not ok:
        raise ConfigError(ConfigIssue(path, message))
