"""Where a model is: a file path, or a URL (`https://host:8443`, `hf://owner/repo/file`)."""

from __future__ import annotations

__all__ = ["redacted", "url_scheme"]


def url_scheme(location: str) -> str | None:
    """The scheme of a URL ("https" for "https://host/..."), or None for a file path."""
    scheme, separator, _ = location.partition("://")
    valid = scheme[:1].isalpha() and all(c.isalnum() or c in "+.-" for c in scheme)
    return scheme.lower() if separator and scheme.isascii() and valid else None


def redacted(location: str) -> str:
    """The location as it may be shown in a message or a log: a URL loses the user name
    and password it may carry (`https://***@host/`)."""
    if url_scheme(location) is None:
        return location
    scheme, separator, rest = location.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{separator}{authority}{slash}{path}"
