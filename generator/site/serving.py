"""`lens serve`: a local HTTP server for a built site, as a static host serves it.

Guarantees: only regular files inside the site folder are served (a symbolic link that leaves it is
a 404, as is anything outside the URL prefix); no directory is ever listed; a missing file gets the
site's `404.html` with status 404, as GitHub Pages does. `prefix` serves the site under a sub-path
(`/repo/`), to preview a GitHub project page before publishing it.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import posixpath
import urllib.parse
from pathlib import Path
from typing import Any

from ..errors import SiteError


class _SiteHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".webp": "image/webp", ".json": "application/json",
                      ".js": "text/javascript"}
    site_root = ""  # realpath of the site folder, set per server
    prefix = "/"
    quiet = False

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if not self.quiet:
            super().log_message(format, *args)

    def _site_file(self) -> str | None:
        """The file a request names, or None when it is not a regular file inside the site."""
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if not path.startswith(self.prefix):
            return None
        parts = [p for p in posixpath.normpath("/" + path[len(self.prefix):]).split("/") if p]
        if any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
            return None
        target = os.path.join(self.site_root, *parts)
        if path.endswith("/") or os.path.isdir(target):
            target = os.path.join(target, "index.html")
        real = os.path.realpath(target)
        if not real.startswith(self.site_root + os.sep) or not os.path.isfile(real):
            return None
        return real

    def send_head(self):  # noqa: ANN201 - stdlib signature
        path = urllib.parse.urlsplit(self.path).path
        if path + "/" == self.prefix:  # /repo -> /repo/, as static hosts do
            self.send_response(301)
            self.send_header("Location", self.prefix)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        real = self._site_file()
        if real is not None and real.endswith(os.sep + "index.html") and not path.endswith(("/", "index.html")):
            self.send_response(301)  # a folder's index, asked without its slash: relative links need it
            self.send_header("Location", path + "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if real is None:
            return self._not_found()
        try:
            f = open(real, "rb")  # noqa: SIM115 - the base class closes it after copying
        except OSError:
            return self._not_found()
        st = os.fstat(f.fileno())
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(real))
        self.send_header("Content-Length", str(st.st_size))
        self.send_header("Last-Modified", self.date_time_string(int(st.st_mtime)))
        self.end_headers()
        return f

    def _not_found(self):  # noqa: ANN202
        page = os.path.join(self.site_root, "404.html")
        body = b"Not found\n"
        ctype = "text/plain; charset=utf-8"
        if os.path.isfile(page) and os.path.realpath(page).startswith(self.site_root + os.sep):
            with open(page, "rb") as f:
                body, ctype = f.read(), "text/html; charset=utf-8"
        self.send_response(404)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return None

    def list_directory(self, path: str | os.PathLike[str]):  # noqa: ANN201 - never list a folder
        return self._not_found()


def make_server(site_dir: Path, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False,
                prefix: str = "/") -> http.server.ThreadingHTTPServer:
    """An HTTP server for the site (port 0 picks a free one) under the URL `prefix`; call serve_forever() on it."""
    site_dir = Path(site_dir)
    if not (site_dir / "index.html").is_file():
        raise SiteError(f"{site_dir} has no index.html: build it first with `lens site`")
    prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
    handler = type("_Handler", (_SiteHandler,), {"site_root": os.path.realpath(site_dir), "prefix": prefix, "quiet": quiet})
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise SiteError(f"--host {host} --port {port}: cannot serve there ({e.strerror or e}); choose another --port") from None


def serve(site_dir: Path, host: str = "127.0.0.1", port: int = 8000, prefix: str = "/") -> None:
    """Serve the site until Ctrl-C, printing its URL."""
    with make_server(site_dir, host, port, prefix=prefix) as httpd:
        print(f"Serving {site_dir} at http://{host}:{httpd.server_address[1]}{httpd.RequestHandlerClass.prefix} (Ctrl-C to stop)",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever()
