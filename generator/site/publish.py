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

import ipaddress
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit
from xml.sax.saxutils import escape as xml_escape

from ..config import Zoo
from ..errors import SiteError
from .paths import MARKER_FILE, write_if_changed

SITEMAP, ROBOTS, NOJEKYLL = "sitemap.xml", "robots.txt", ".nojekyll"


_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# Kept as they are in a path: RFC 3986 unreserved and sub-delimiters, but for the quote ' which
# would end an attribute. Everything else (spaces, ", <, Unicode) is percent-encoded.
_PATH_SAFE = "/%-._~!$&()*+,;=:@"


def normalize_site_url(url: str | None) -> str | None:
    """The one parser of a site URL (`--site-url`, `site_url:`): `https://host[:port]/path/` with its
    trailing slash, or None for none. Refused (SiteError, one line): a scheme other than http(s), no
    host or an invalid one, credentials (`user:pass@`), a bad port, a query or a fragment. The host
    is IDNA-encoded and the path percent-encoded, so what pages and the sitemap get is plain ASCII
    with no quote, space or angle bracket: it can never end an attribute or start an element."""
    if not url or not url.strip():
        return None
    text = url.strip()
    hint = "must be an http(s) URL such as https://user.github.io/repo/"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:  # a port that is not a number in 0-65535, a bad IPv6 address
        raise SiteError(f"site_url {text!r} {hint} ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SiteError(f"site_url {text!r} {hint}")
    if parts.username is not None or parts.password is not None:
        raise SiteError(f"site_url {text!r} holds credentials (user:password@): they would be published on every page")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise SiteError(f"site_url {text!r} has a query or a fragment; {hint}")
    if port == 0 or (parts.netloc.endswith(":") and port is None):
        raise SiteError(f"site_url {text!r} has a bad port; {hint}")
    host = _ascii_host(parts.hostname, text)
    path = quote(re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", parts.path), safe=_PATH_SAFE)
    return f"{parts.scheme}://{host}{f':{port}' if port is not None else ''}{path.rstrip('/')}/"


def _ascii_host(hostname: str, url: str) -> str:
    """The host as DNS names it: IDNA for Unicode names, brackets for IPv6; SiteError if invalid."""
    try:
        return f"[{ipaddress.IPv6Address(hostname).compressed}]"
    except ValueError:
        pass
    try:
        host = hostname.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError as e:
        raise SiteError(f"site_url {url!r} has an invalid host name {hostname!r} ({e})") from None
    if not host or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        raise SiteError(f"site_url {url!r} has an invalid host name {hostname!r}")
    return host


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


def private_paths(zoo: Zoo | None, store_root: Path, out_dir: Path) -> list[str]:
    """Folders and files of the building machine that no published file may name: the store's root,
    the config's folder, the site's parent, $HOME and every absolute path models.yaml names (found
    anywhere in it, so a new path key is covered too), each as written and resolved."""
    paths = {str(store_root), str(out_dir.parent), str(Path.home())}
    if zoo is not None:
        paths.add(str(zoo.root))
        paths |= {p for p in _strings(zoo.data.model_dump(mode="json")) if Path(p).is_absolute()}
    resolved = set()
    for p in paths:
        resolved.add(p)
        try:
            resolved.add(str(Path(p).resolve()))
        except (OSError, RuntimeError):
            pass
    return sorted(p.rstrip("/") for p in resolved if len(p.rstrip("/")) > 1)


def _strings(data: object) -> Iterator[str]:
    """Every string in parsed YAML, with `~` and $VARS expanded as the config does for paths."""
    if isinstance(data, str):
        yield os.path.expandvars(os.path.expanduser(data))
    elif isinstance(data, dict):
        for v in data.values():
            yield from _strings(v)
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v)


def _path_pattern(root: str) -> re.Pattern[str]:
    """`root` as a whole path (not the tail of `../data`, nor the head of `/data2`), also as JSON
    writes it when it escapes "/" as "\\/"."""
    spellings = "|".join(re.escape(root.rstrip("/").replace("/", sep)) for sep in ("/", "\\/"))
    return re.compile(rf"(?<![\w.~/\\-])(?:{spellings})(?![\w-]|\.\w)")


def check_site(out_dir: Path, site_url: str | None, private: list[str] | None = None) -> list[str]:
    """What would break once `out_dir` is published at `site_url`, or would show `private` paths of
    this machine (default: the site's parent and $HOME; see `private_paths`); empty when ready.
    Every page, JSON file, script and the search index are searched."""
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
    roots = private if private is not None else [str(out_dir.parent), str(Path.home())]
    needles = {root: _path_pattern(root) for root in roots if len(root.rstrip("/")) > 1}
    for p in sorted(out_dir.rglob("*")):
        if p.suffix in (".html", ".json", ".js", ".xml", ".txt") and p.is_file():
            text = p.read_text(encoding="utf-8", errors="replace")
            leaked = [root for root, pattern in needles.items() if pattern.search(text)]
            if leaked:
                problems.append(f"{p.relative_to(out_dir)} shows a path of this machine ({leaked[0]})")
    return problems


SITE_TRAILER = "Lens-Site: gallery"  # marks the commits `write_branch` makes
LEGACY_MESSAGE = "Publish the Lens gallery"  # the subject of those made before the trailer


def _git(repo: Path, *args: str, env: dict[str, str] | None = None, data: bytes | None = None) -> str:
    """git's stdout; SiteError with git's own last line of stderr when it fails."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], input=data, capture_output=True, env=env, check=False)
    except FileNotFoundError:
        raise SiteError("git is not installed; publish the site folder with your host's own tool") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise SiteError(f"git {args[0]} failed in {repo}: {said[-1] if said else f'exit status {done.returncode}'}")
    return done.stdout.decode().strip()


def branch_ref(repo: Path, branch: str) -> str:
    """`refs/heads/NAME` for `--branch NAME` (or `refs/heads/NAME`), refused (SiteError) when git
    refuses the name (with git's message), for HEAD, and for a branch checked out in any work tree
    of `repo`: publishing replaces the branch's tree, which would rewrite the user's work."""
    name = branch.removeprefix("refs/heads/")
    if name == "HEAD":
        raise SiteError(f"--branch {branch} names no branch; give the branch to publish to, e.g. --branch gh-pages")
    _git(repo, "check-ref-format", "--branch", name)
    ref = f"refs/heads/{name}"
    where = str(repo)
    for line in _git(repo, "worktree", "list", "--porcelain").splitlines():
        where = line.removeprefix("worktree ") if line.startswith("worktree ") else where
        if line == f"branch {ref}":
            raise SiteError(f"--branch {name} is checked out in {where}; lens publish writes a branch of its own "
                            f"(e.g. gh-pages), never the one you work on")
    return ref


def _foreign_commit(repo: Path, ref: str, env: dict[str, str]) -> str | None:
    """The first commit of `ref` that `write_branch` did not make ("id subject"), or None."""
    log = _git(repo, "log", "--format=%H%x1f%s%x1f%B%x1e", ref, env=env)
    for entry in filter(None, (e.strip() for e in log.split("\x1e"))):
        commit, subject, body = (entry.split("\x1f") + ["", ""])[:3]
        if SITE_TRAILER not in body.splitlines() and subject != LEGACY_MESSAGE:
            return f"{commit[:12]} {subject!r}"
    return None


def write_branch(out_dir: Path, repo: Path, branch: str = "gh-pages", message: str = LEGACY_MESSAGE) -> str:
    """Commit the site as the whole tree of `branch` in the git repository `repo` (its parent is
    the branch's previous commit, if any); returns the commit id. The work tree, the index and
    HEAD are untouched, and nothing is pushed. The branch is only ever made of site commits: one
    checked out (see `branch_ref`) or holding a commit this function did not make is refused, and
    the update fails rather than overwrite a commit made meanwhile."""
    git_dir = _git(repo, "rev-parse", "--absolute-git-dir")
    ref = branch_ref(repo, branch)
    env = {"GIT_AUTHOR_NAME": "lens publish", "GIT_AUTHOR_EMAIL": "lens@localhost",
           "GIT_COMMITTER_NAME": "lens publish", "GIT_COMMITTER_EMAIL": "lens@localhost", **os.environ,
           "GIT_DIR": git_dir, "GIT_WORK_TREE": str(out_dir)}
    parent = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], capture_output=True, env=env,
                            check=False)
    old = parent.stdout.decode().strip() if parent.returncode == 0 else ""
    foreign = _foreign_commit(out_dir, ref, env) if old else None
    if foreign:
        raise SiteError(f"branch {ref.removeprefix('refs/heads/')} holds commits lens publish did not make ({foreign}); "
                        f"it writes a branch of its own: choose another --branch")
    with tempfile.TemporaryDirectory() as tmp:
        # A throw-away index: the repository's own index and work tree are never touched.
        # -f: a site folder inside the repository may be git-ignored; the build marker stays out.
        env["GIT_INDEX_FILE"] = os.path.join(tmp, "index")
        _git(out_dir, "add", "-A", "-f", "--", ".", f":(exclude){MARKER_FILE}", env=env)
        tree = _git(out_dir, "write-tree", env=env)
    del env["GIT_INDEX_FILE"]
    if old and _git(out_dir, "rev-parse", f"{old}^{{tree}}", env=env) == tree:
        return old  # nothing changed since the last publish
    commit = _git(out_dir, "commit-tree", tree, *(["-p", old] if old else []), "-m", message, "-m", SITE_TRAILER, env=env)
    _git(out_dir, "update-ref", ref, commit, old, env=env)  # `old` ("" when new): fails if the branch moved meanwhile
    return commit
