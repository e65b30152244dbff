"""One environment variable's kind and parsing: ``Setting``, ``SettingsError`` and ``mask``.

``churn_platform.settings`` declares the table (``SETTINGS``) and reads the environment; this
module only says how one variable's text becomes a value, and never reads the environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Setting", "SettingsError", "mask"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """An environment variable holds a value the platform cannot use; the message names it."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: how to parse it and what it means.

    ``kind`` is ``str``, ``int``, ``float``, ``bool``, ``choice`` or ``date`` (YYYY-MM-DD, kept
    as that text; empty means "not given", as for ``str``). ``default`` is the value
    when the variable is unset (a callable gets the environ, for defaults that depend on
    another setting). ``minimum``/``maximum`` bound numbers (inclusive unless
    ``exclusive_minimum``). ``secret`` masks the value when shown (URLs keep their host).
    An empty value is an error for every kind but ``str`` and ``date``, where it means "not
    given".
    """

    name: str
    kind: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    secret: bool = False

    def accepted(self) -> str:
        """What a valid value looks like, for error messages and the settings table."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "a boolean: 1/0, true/false, yes/no, on/off"
        if self.kind == "date":
            return "a date YYYY-MM-DD (empty: not given)"
        if self.kind in ("int", "float"):
            noun = "an integer" if self.kind == "int" else "a number"
            low, high = self.minimum, self.maximum
            if low is not None and high is not None:
                return f"{noun} in {_num(low)}..{_num(high)}"
            if low is not None:
                return f"{noun} {'>' if self.exclusive_minimum else '>='} {_num(low)}"
            return noun
        return "any text"

    def default_value(self, environ: Mapping[str, str]) -> Any:
        """The value when the variable is unset."""
        return self.default(environ) if callable(self.default) else self.default

    def parse(self, raw: str) -> Any:
        """``raw`` (the variable's text) as this setting's type, or ``SettingsError``."""
        text = raw.strip()
        if self.kind == "str" or (self.kind == "date" and not text):
            return text
        if self.kind == "date":
            try:
                return date.fromisoformat(text).isoformat()
            except ValueError:
                raise self._error(raw, "is not a date") from None
        if not text:
            raise self._error(raw, "is set but empty")
        if self.kind == "choice":
            if text not in self.choices:
                raise self._error(raw, "is not a known value")
            return text
        if self.kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise self._error(raw, "is not a boolean")
        number: float
        try:
            number = int(text) if self.kind == "int" else float(text)
        except ValueError:
            raise self._error(
                raw, "is not an integer" if self.kind == "int" else "is not a number"
            ) from None
        too_low = self.minimum is not None and (
            number <= self.minimum if self.exclusive_minimum else number < self.minimum
        )
        too_high = self.maximum is not None and number > self.maximum
        if not math.isfinite(number) or too_low or too_high:
            raise self._error(raw, "is out of range")
        return number

    def _error(self, raw: str, problem: str) -> SettingsError:
        shown = mask(raw) if self.secret else raw
        default = None if callable(self.default) else self.default
        hint = "" if default in (None, "") else f", or unset it for the default {default!r}"
        return SettingsError(f"{self.name}={shown!r} {problem}; set {self.accepted()}{hint}")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def mask(value: str) -> str:
    """A secret for display: a URL keeps scheme, host and path but loses user info and query
    (passwords, tokens); anything else shows only its length."""
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme and (parts.netloc or parts.path):
        netloc = parts.netloc
        if "@" not in netloc and not parts.query:
            return value
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        query = "***" if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    return f"*** ({len(value)} characters)"
