"""Publishing a built site: the files a public host needs, a check before publishing, and a
`gh-pages` branch written with plain git.

- `site_url` (models.yaml `site_url:` or `--site-url`) is where the site will be served, e.g.
  `https://user.github.io/repo/`. With it a build writes `sitemap.xml` (every page, class pages
  included) and `robots.txt`, pages carry canonical links, and `404.html` links work under the
  URL's path (it is served at any depth, so its links cannot be relative).
- `check_site` lists what would break once published; `lens publish` refuses to go on while any.
- `write_branch` commits the site folder as the whole tree of a branch (default `gh-pages`) of a
  local git repository, without touching its work tree, index or current branch; nothing is pushed.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import escape as xml_escape

from ..errors import SiteError
from .paths import MARKER_FILE, write_if_changed

SITEMAP, ROBOTS, NOJEKYLL = "sitemap.xml", "robots.txt", ".nojekyll"


def normalize_site_url(url: str | None) -> str | None:
    """`https://host/path/` with its trailing slash, or None; raises SiteError for anything else."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise SiteError(f"site_url {url!r} must be an http(s) URL such as https://user.github.io/repo/")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"


def write_host_files(out_dir: Path, site_url: str | None, pages: list[str]) -> set[str]:
    """.nojekyll always (GitHub Pages would otherwise run Jekyll, which drops `_`-prefixed files);
    with a site_url, a sitemap of `pages` (paths relative to the site) and a robots.txt naming it."""
    write_if_changed(out_dir / NOJEKYLL, b"")
    if not site_url:
        return {NOJEKYLL}
    urls = "".join(f"<url><loc>{xml_escape(site_url + p)}</loc></url>\n" for p in sorted(pages))
    sitemap = ('<?xml version="1.0" encoding="UTF-8"?>\n'
               f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n{urls}</urlset>\n')
    write_if_changed(out_dir / SITEMAP, sitemap.encode())
    write_if_changed(out_dir / ROBOTS, f"User-agent: *\nAllow: /\nSitemap: {site_url}{SITEMAP}\n".encode())
    return {NOJEKYLL, SITEMAP, ROBOTS}


def site_pages(out_dir: Path) -> list[str]:
    """Every HTML page of a built site but 404.html, relative to it."""
    return sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.html") if p.name != "404.html")


def built_site_url(out_dir: Path) -> str | None:
    """The site_url a site was built with (read back from its robots.txt), or None."""
    try:
        m = re.search(r"^Sitemap: (\S+)" + re.escape(SITEMAP) + "$", (out_dir / ROBOTS).read_text(), re.M)
    except OSError:
        return None
    return m.group(1) if m else None


def check_site(out_dir: Path, site_url: str | None) -> list[str]:
    """What would break once `out_dir` is published at `site_url`; empty when ready."""
    if not (out_dir / "index.html").is_file() or not (out_dir / MARKER_FILE).is_file():
        return [f"{out_dir} is not a site built by `lens site`"]
    problems = []
    built = built_site_url(out_dir)
    if site_url and built != site_url:
        problems.append(f"the site was built for {built or 'no site_url'}, not {site_url}: rebuild it with --site-url {site_url}")
    page_404 = out_dir / "404.html"
    if page_404.is_file():
        base = urlsplit(site_url).path if site_url else "/"
        for link in re.findall(r'(?:href|src)="(/[^"]*)"', page_404.read_text(encoding="utf-8")):
            if not link.startswith(base):
                problems.append(f"404.html links to {link}, outside {base}: rebuild with --site-url")
                break
    home = str(Path.home())
    for p in out_dir.rglob("*"):
        if p.suffix in (".html", ".json", ".js", ".xml") and p.is_file():
            text = p.read_text(encoding="utf-8", errors="replace")
            leaked = [root for root in {str(out_dir.parent), home} if len(root) > 1 and root in text]
            if leaked:
                problems.append(f"{p.relative_to(out_dir)} shows a path of this machine ({leaked[0]})")
    return problems


def _git(repo: Path, *args: str, env: dict[str, str] | None = None, data: bytes | None = None) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], input=data, capture_output=True, env=env, check=False)
    except FileNotFoundError:
        raise SiteError("git is not installed; publish the site folder with your host's own tool") from None
    if done.returncode != 0:
        raise SiteError(f"git {args[0]} failed in {repo}: {done.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    return done.stdout.decode().strip()


def write_branch(out_dir: Path, repo: Path, branch: str = "gh-pages", message: str = "Publish the Lens gallery") -> str:
    """Commit the site as the whole tree of `branch` in the git repository `repo` (its parent is
    the branch's previous commit, if any); returns the commit id. The work tree, the index and
    HEAD are untouched, and nothing is pushed."""
    git_dir = _git(repo, "rev-parse", "--absolute-git-dir")
    ref = f"refs/heads/{branch}"
    _git(repo, "check-ref-format", ref)
    env = {"GIT_AUTHOR_NAME": "lens publish", "GIT_AUTHOR_EMAIL": "lens@localhost",
           "GIT_COMMITTER_NAME": "lens publish", "GIT_COMMITTER_EMAIL": "lens@localhost", **os.environ,
           "GIT_DIR": git_dir, "GIT_WORK_TREE": str(out_dir)}
    with tempfile.TemporaryDirectory() as tmp:
        # A throw-away index: the repository's own index and work tree are never touched.
        # -f: a site folder inside the repository may be git-ignored; the build marker stays out.
        env["GIT_INDEX_FILE"] = os.path.join(tmp, "index")
        _git(out_dir, "add", "-A", "-f", "--", ".", f":(exclude){MARKER_FILE}", env=env)
        tree = _git(out_dir, "write-tree", env=env)
    del env["GIT_INDEX_FILE"]
    parent = subprocess.run(["git", "rev-parse", "--verify", "--quiet", ref], capture_output=True, env=env, check=False)
    parents = ["-p", parent.stdout.decode().strip()] if parent.returncode == 0 else []
    if parents and _git(out_dir, "rev-parse", f"{ref}^{{tree}}", env=env) == tree:
        return parents[1]  # nothing changed since the last publish
    commit = _git(out_dir, "commit-tree", tree, *parents, "-m", message, env=env)
    _git(out_dir, "update-ref", ref, commit, env=env)
    return commit
