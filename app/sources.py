"""What a drop or a paste holds, and the bytes of an image on the web: no window, no worker.

``read_mime`` turns what a drag from another application or the clipboard carries (files,
image data, web addresses, HTML with an image in it, text naming either) into the one thing to
open, or says why there is none. ``fetch_url`` downloads a web address; the window runs it on
the worker's io thread.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QMimeData, QUrl
from PySide6.QtGui import QImage

from mlx_inception.errors import ImageError

from .widgets import qimage_to_array

# Images fetched from a browser drop larger than this are refused (a page, not a picture).
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
WEB_SCHEMES = ("http", "https", "data")
_IMG_SRC = re.compile(r"""<img[^>]+src\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
# Where a dragged HTML fragment came from: a <base href>, or the "SourceURL:" line of the
# clipboard's HTML format on Windows. Relative image addresses are resolved against it.
_BASE_HREF = re.compile(r"""<base[^>]+href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_SOURCE_URL = re.compile(r"^SourceURL:(\S+)", re.MULTILINE)


class NothingToOpen(ValueError):
    """Raised by ``read_mime`` with the sentence the window shows."""


@dataclass(frozen=True)
class Dropped:
    """The one thing to open from a drop or a paste: a file, pixels or a web address."""

    path: str | None = None
    pixels: np.ndarray | None = None  # uint8 RGB or RGBA (H, W, 3|4)
    url: str | None = None
    name: str = ""  # what pixels are called ("dropped image", "pasted image")


def may_hold_an_image(mime: QMimeData) -> bool:
    """Return True if ``mime`` is worth accepting as a drop (``read_mime`` decides on release)."""
    return mime.hasUrls() or mime.hasImage() or mime.hasText() or mime.hasHtml()


def read_mime(mime: QMimeData, origin: str = "dropped") -> Dropped:
    """Return what to open from ``mime``: a local file first, then image data, then an address.

    ``origin`` ("dropped", "pasted") names it in messages. Raises ``NothingToOpen`` saying why
    when nothing in it is an image or an image's address.
    """
    urls = mime.urls() if mime.hasUrls() else []
    for url in urls:
        if url.isLocalFile():
            return Dropped(path=url.toLocalFile())
    if mime.hasImage():
        image = mime.imageData()
        if isinstance(image, QImage) and not image.isNull():
            # Transparency kept: the package composites it on white, as for files.
            return Dropped(pixels=qimage_to_array(image), name=f"{origin} image")
    for url in urls:
        if url.scheme() in WEB_SCHEMES:
            return Dropped(url=url.toString())
    skipped = None
    if mime.hasHtml():
        address, skipped = html_image_url(mime.html())
        if address:
            return Dropped(url=address)
    if mime.hasText():
        text = mime.text().strip()
        if text.startswith(("http://", "https://", "data:image")):
            return Dropped(url=text)
        local = QUrl(text).toLocalFile() if text.startswith("file:") else text
        if local and len(local) < 4096 and Path(os.path.expanduser(local)).is_file():
            return Dropped(path=local)
    if skipped:
        raise NothingToOpen(
            f"Cannot open {short_address(skipped)}: the {origin} HTML gives the image's address "
            "relative to a page it does not name; drag the image itself or copy its full address"
        )
    raise NothingToOpen(f"Nothing to open in what was {origin}: use an image file, image data "
                        "or an image's web address")


def html_image_url(html: str) -> tuple[str | None, str | None]:
    """Return (the address of the first image in ``html`` that can be fetched, a skipped one).

    A relative ``src`` is resolved against the page's address when the fragment names it
    (``<base href>`` or a ``SourceURL:`` header) and skipped otherwise: a dragged fragment
    alone does not say which server it came from.
    """
    found = _BASE_HREF.search(html) or _SOURCE_URL.search(html)
    base = found.group(1) if found else None
    if base and urllib.parse.urlparse(base).scheme not in ("http", "https"):
        base = None
    skipped = None
    for match in _IMG_SRC.finditer(html):
        src = match.group(1).strip()
        if urllib.parse.urlparse(src).scheme in WEB_SCHEMES:
            return src, skipped
        if base:
            return urllib.parse.urljoin(base, src), skipped
        skipped = skipped or src
    return None, skipped


def url_name(url: str) -> str:
    """Return a short name for an image's web address: its file name, or what it is."""
    if url.startswith("data:"):
        return "dropped image"
    return Path(urllib.parse.urlparse(url).path).name or "image from the web"


def short_address(text: str | None, limit: int = 120) -> str:
    """Return ``text`` cut to ``limit`` characters (a data: URL can be megabytes)."""
    if text is None:
        return "the image"
    if text.startswith("data:"):
        return "the dropped image"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fetch_url(url: str, timeout: float = 20.0) -> bytes:
    """Return the bytes at an http(s) or data: URL (an image dragged from a web page)."""
    if urllib.parse.urlparse(url).scheme not in WEB_SCHEMES:
        raise ImageError(f"{url}: not a web address (http, https or data)")
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        try:
            if header.endswith(";base64"):
                return base64.b64decode(payload, validate=False)
            return urllib.parse.unquote_to_bytes(payload)
        except (binascii.Error, ValueError) as error:
            raise ImageError(f"dropped data URL cannot be decoded ({error})") from None
    request = urllib.request.Request(url, headers={"User-Agent": "mlx-inception-app"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except OSError as error:
        reason = getattr(error, "reason", None) or error
        raise ImageError(f"{url}: cannot download ({reason})") from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise ImageError(f"{url}: more than {MAX_DOWNLOAD_BYTES >> 20} MB, not opened")
    return data
