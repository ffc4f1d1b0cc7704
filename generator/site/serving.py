"""`lens serve`: a local HTTP server for a built site (WebP and JSON with their types)."""

from __future__ import annotations

import contextlib
import functools
import http.server
from pathlib import Path
from typing import Any

from ..errors import SiteError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".webp": "image/webp", ".json": "application/json"}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


def make_server(site_dir: Path, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the site (port 0 picks a free one); call serve_forever() on it."""
    site_dir = Path(site_dir)
    if not (site_dir / "index.html").is_file():
        raise SiteError(f"{site_dir} has no index.html: build it first with `lens site`")
    base = _QuietHandler if quiet else type("_Handler", (_QuietHandler,), {"log_message": http.server.SimpleHTTPRequestHandler.log_message})
    handler = functools.partial(base, directory=str(site_dir))
    return http.server.ThreadingHTTPServer((host, port), handler)


def serve(site_dir: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the site until Ctrl-C, printing its URL."""
    with make_server(site_dir, host, port) as httpd:
        print(f"Serving {site_dir} at http://{host}:{httpd.server_address[1]}/ (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever()
