"""A message's content: a string, or parts in OpenAI's shapes.

A part is `{"type": "text", "text": ...}` or `{"type": "image_url", "image_url": {"url":
...}}`, where the url is a `data:image/...;base64,...` URL, a `file://` URL or a local
path. Images are read and checked when the message is made, so that a message holds the
image's bytes (a remote server is sent the bytes, never a path) and a missing file, an
empty one, or one that is no image a server decodes is an `InvalidValue` naming the part
before anything is sent. An `http(s)` URL is refused, not fetched: this library reads
nothing from the network on a message's behalf (llama-server would fetch it itself).

Every image part is kept as a data URL whose media type is the one its bytes show; the
formats are those llama-server's image decoder reads (measured on the pinned build:
PNG, JPEG, GIF, BMP and binary PPM/PGM; WebP and TIFF are refused there).
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InvalidValue

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_PARTS",
    "Content",
    "checked_content",
    "content_images",
    "content_text",
    "image",
    "shown_content",
]

MAX_IMAGE_BYTES = 16 * 2**20  # beyond any picture a projector resizes; llama-server's own
# downloads stop at 10 MB
MAX_PARTS = 256  # parts in one message

Content = str | tuple[dict[str, Any], ...]

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"P5", "image/x-portable-graymap"),
    (b"P6", "image/x-portable-pixmap"),
)
_UNDECODED = (  # formats people have that llama-server does not read: where, what, name
    (8, b"WEBP", "WebP"),  # after "RIFF" and a size
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (4, b"ftyp", "HEIF/AVIF"),  # after a box size
)
_FORMATS = "PNG, JPEG, GIF, BMP or binary PPM/PGM"


def _media_type(data: bytes, where: str) -> str:
    """The media type the bytes show, or an InvalidValue saying why they are no image."""
    if not data:
        raise InvalidValue("content", f"{where} is empty")
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    for offset, signature, name in _UNDECODED:
        if data.startswith(signature, offset):
            raise InvalidValue(
                "content", f"{where} looks like {name}, which llama-server does not decode: "
                f"convert it to {_FORMATS}",
            )  # fmt: skip
    raise InvalidValue("content", f"{where} is not an image in a format read here ({_FORMATS})")


def _read_file(path: str, where: str) -> bytes:
    """A regular file's bytes, up to one past the limit (a FIFO or a device is refused
    before it could block or never end)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise InvalidValue(
            "content", f"{where}: cannot read {path}: {error.strerror or error}"
        ) from None
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise InvalidValue("content", f"{where}: {path} is not a regular file")
        try:
            return file.read(MAX_IMAGE_BYTES + 1)
        except OSError as error:
            raise InvalidValue(
                "content", f"{where}: cannot read {path}: {error.strerror or error}"
            ) from None


def _decoded(url: str, where: str) -> bytes:
    """The bytes of a `data:` URL (base64 only)."""
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise InvalidValue(
            "content", f"{where}: a data URL must be base64, as data:image/...;base64,..."
        )
    if len(payload) > (MAX_IMAGE_BYTES + 2) // 3 * 4 + 4:
        raise InvalidValue("content", f"{where} is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue("content", f"{where}: its data URL is not valid base64") from None


def _image_bytes(url: str, where: str) -> bytes:
    """The bytes of an image at `url`: a data URL, a file URL or a local path."""
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else ""
    if url.startswith("data:"):
        data = _decoded(url, where)
    elif scheme in ("http", "https"):
        raise InvalidValue(
            "content",
            f"{where} is at {url}: images are not downloaded here; download it first and "
            "pass its path or bytes (inference_core.image)",
        )
    elif scheme == "file":
        data = _read_file(urllib.parse.unquote(urllib.parse.urlsplit(url).path), where)
    elif scheme:
        raise InvalidValue(
            "content",
            f"{where}: {scheme}:// URLs are not read; give a path, a file:// or data: URL",
        )
    else:
        data = _read_file(url, where)
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidValue("content", f"{where} is larger than {MAX_IMAGE_BYTES} bytes")
    return data


def _image_part(data: bytes, where: str) -> dict[str, Any]:
    media_type = _media_type(data, where)
    url = f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}


def image(source: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """An image part for a message's content, from a file's path, its bytes, or a `file:`
    or `data:` URL: read and checked now (see the module's docstring)."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if len(data) > MAX_IMAGE_BYTES:
            raise InvalidValue("content", f"the image is larger than {MAX_IMAGE_BYTES} bytes")
        return _image_part(data, "the image")
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise InvalidValue(
            "content", f"an image is a path, a URL or bytes, got {type(source).__name__}"
        )
    where = "the image" if source.startswith("data:") else f"the image {source}"
    return _image_part(_image_bytes(source, where), where)


def _part(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidValue(
            "content", f"{where} must be a dict in OpenAI's shape, got {value!r:.80}"
        )
    kind = value.get("type")
    if kind == "text" and isinstance(value.get("text"), str) and set(value) == {"type", "text"}:
        return {"type": "text", "text": value["text"]}
    if kind == "image_url":
        inner = value.get("image_url")
        url = inner.get("url") if isinstance(inner, Mapping) else None
        if isinstance(url, str):
            described = (
                f"{where} (an image)" if url.startswith("data:") else f"{where} ({url:.200})"
            )
            return _image_part(_image_bytes(url, described), described)
    raise InvalidValue(
        "content",
        f"{where} must be {{'type': 'text', 'text': str}} or {{'type': 'image_url', "
        f"'image_url': {{'url': str}}}}, got {value!r:.200}",
    )


def checked_content(value: object) -> Content:
    """A message's content, checked: a string, or its parts as a tuple of fresh dicts."""
    if isinstance(value, str):
        return value
    if not isinstance(value, Sequence) or isinstance(value, bytes | bytearray):
        raise InvalidValue(
            "content", f"content must be a string or a list of parts, got {type(value).__name__}"
        )
    if len(value) > MAX_PARTS:
        raise InvalidValue(
            "content", f"a message holds at most {MAX_PARTS} parts, got {len(value)}"
        )
    return tuple(_part(part, f"content part {index}") for index, part in enumerate(value))


def shown_content(value: Content) -> str:
    """The content for a repr: an image as its media type and size, never its bytes."""
    if isinstance(value, str):
        return repr(value)
    parts = []
    for part in value:
        if part["type"] == "text":
            parts.append(repr(part))
        else:
            header, _, payload = part["image_url"]["url"].partition(",")
            size = len(payload) * 3 // 4 - payload.count("=")
            parts.append(
                f"<image {header.removeprefix('data:').removesuffix(';base64')}, {size} bytes>"
            )
    return f"({', '.join(parts)}{',' if len(parts) == 1 else ''})"


def content_text(value: Content) -> str:
    """The content's text: its text parts joined by newlines, as llama-server joins them."""
    if isinstance(value, str):
        return value
    return "\n".join(part["text"] for part in value if part["type"] == "text")


def content_images(value: Content) -> list[str]:
    """The content's images, in order, as plain base64 (what llama-server's
    `multimodal_data` takes)."""
    if isinstance(value, str):
        return []
    return [
        part["image_url"]["url"].partition(",")[2] for part in value if part["type"] == "image_url"
    ]
