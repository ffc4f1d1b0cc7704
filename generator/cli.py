"""`lens`: render, inspect and publish the gallery.

    lens init                       write a starter models.yaml (the embedded zoo) into this folder
    lens build   [filters]          render, score, then build the site (the one command)
    lens render  [filters]          MACO + CRAFT renders into the artifact store
    lens quality [filters]          (re)compute quality figures of existing renders
    lens site                       static site from whatever the store holds
    lens serve                      serve the site locally
    lens publish --site-url URL     build for a public URL, check, optionally commit a gh-pages branch
    lens status  [filters]          done / pending / failed per model and part
    lens figure  [filters]          a classes x models grid as PNG and PDF, for papers
    lens models                     the zoo and whether each model's weights are available
    lens layers MODEL               a model's concept layers (clean cut, shape, non-negative)
    lens spectrum --images DIR      compute and cache a magnitude spectrum

One meaning per option, in every command: --config (models.yaml), --store (the artifact store),
--site (the site folder), --models and --classes (the selection). Every command says on stderr
which config it read.

Exit codes: 0 everything selected is done; 1 some units failed or remain undone (e.g. held by a
run that died; a re-run finishes them); 2 bad usage, config or an unwritable store (one line);
130 interrupted (Ctrl-C; a second Ctrl-C aborts without a traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .classes import parse_class_spec
from .config import Zoo, load_zoo
from .errors import ConfigError, LensError, PlanError

log = logging.getLogger("lens")


@dataclass
class Selection:
    """The filters and settings shared by render, status, quality and build, resolved against models.yaml."""

    zoo: Zoo
    models: list[str]
    classes: list[int]
    out: Path
    images: Path | None
    spectrum: str
    parts: frozenset[str]
    maco: dict[str, Any] = field(default_factory=dict)
    craft: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None


CONFIG_HELP = ("models.yaml, or a folder holding one (default: ./models.yaml if present, else the embedded default zoo "
               "with the store and site in the current folder)")
WHAT_CHOICES = {"maco": "maco", "craft": "craft", "maco,craft": "maco,craft", "craft,maco": "maco,craft", "both": "maco,craft"}


class _Deprecated(argparse.Action):
    """An old spelling kept working: stores into the new option's dest and says what to use instead."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: Any):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"lens: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


class _Removed(argparse.Action):
    """An old spelling whose meaning changed: refuse it with the one-line fix, never guess."""

    def __init__(self, option_strings: list[str], dest: str, hint: str = "", **kwargs: Any):
        self.hint = hint
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string} was removed here: {self.hint}")


def _what(text: str) -> str:
    key = ",".join(p.strip() for p in text.split(","))
    if key not in WHAT_CHOICES:
        raise argparse.ArgumentTypeError(f"'{text}': choose maco, craft or maco,craft")
    return WHAT_CHOICES[key]


def path_arg(text: str) -> Path:
    """The type of every path flag: an empty value is refused (as a Path it would silently mean the
    current folder), and so is a NUL byte, which no file name can hold."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path (name a file or folder; '.' means the current folder)")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r}: a path cannot hold a NUL byte")
    return Path(text)


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=path_arg, default=None, metavar="PATH", help=CONFIG_HELP)


def _store_option(p: argparse.ArgumentParser, old_out: bool = True) -> None:
    p.add_argument("--store", type=path_arg, default=None, metavar="DIR", help="the artifact store (default: `out:` of the config)")
    old = ("--out", "--artifacts") if old_out else ("--artifacts",)
    p.add_argument(*old, dest="store", type=path_arg, action=_Deprecated, new="--store", help=argparse.SUPPRESS)


def _site_option(p: argparse.ArgumentParser, old: str | None = None) -> None:
    p.add_argument("--site", "--site-dir", dest="site", type=path_arg, default=None, metavar="DIR",
                   help="the site folder (default: `site:` of the config)")
    if old:
        p.add_argument(old, dest="site", type=path_arg, action=_Deprecated, new="--site", help=argparse.SUPPRESS)


def _models_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", dest="models", default=None, metavar="NAME[,NAME...]",
                   help="models of the zoo to use (default: all, or the preset's)")
    p.add_argument("--model", dest="models", help=argparse.SUPPRESS)  # the singular, as typed


def _add_selection(p: argparse.ArgumentParser, what: bool = True) -> None:
    g = p.add_argument_group("selection")
    _config_option(g)
    _store_option(g)
    _models_option(g)
    g.add_argument("--classes", default=None, metavar="SPEC",
                   help="all | 0-99 | 281,967 | n02123045 | espresso,tabby | a preset name such as demo (default: all)")
    g.add_argument("--preset", default=None, metavar="NAME", help="a preset of the config: its classes, models and settings")
    g.add_argument("--images", type=path_arg, default=None, metavar="DIR",
                   help="ImageNet-layout folder (nXXXXXXXX/*.jpg) for CRAFT and quality (default: `images:` or the demo photos)")
    g.add_argument("--spectrum", default=None, metavar="KIND",
                   help="MACO magnitude spectrum: photos | powerlaw | images | a .npy from `lens spectrum` (default: `spectrum:`)")
    if what:
        g.add_argument("--what", type=_what, default="maco,craft", metavar="PARTS",
                       help="parts: maco (class visualizations), craft (concepts and their visualizations) or maco,craft "
                            "(default; `both` is accepted)")
    s = p.add_argument_group("settings (override the preset, the model's entry and `defaults:`)")
    s.add_argument("--steps", type=int, default=None, help="MACO optimisation steps")
    s.add_argument("--image-size", type=int, default=None, help="MACO image side in pixels")
    s.add_argument("--crops", type=int, default=None, help="MACO crops per step")
    s.add_argument("--seed", type=int, default=None, help="base seed of MACO and CRAFT")
    s.add_argument("--rank", type=int, default=None, help="CRAFT concepts per class")


_printed_configs: set[str] = set()


def _load_zoo(args: argparse.Namespace) -> Zoo:
    """The config of this command, announced once on stderr (which file, and where paths resolve)."""
    zoo = load_zoo(args.config)
    key = f"{zoo.path}|{zoo.root}"
    if key not in _printed_configs:
        _printed_configs.add(key)
        print(f"lens: config: {zoo.describe()}", file=sys.stderr)
    return zoo


_POSITIVE = {"steps": "--steps", "image_size": "--image-size", "crops": "--crops", "rank": "--rank",
             "batch_size": "--batch-size", "samples": "--samples"}
_NON_NEGATIVE = {"seed": "--seed", "retries": "--retries", "port": "--port"}  # port 0: any free one
_NON_EMPTY = {"models": "--models", "classes": "--classes", "preset": "--preset", "spectrum": "--spectrum", "what": "--what",
              "shard": "--shard", "devices": "--devices", "device": "--device", "host": "--host", "ray_address": "--ray-address"}


def check_values(args: argparse.Namespace) -> None:
    """Values argparse lets through but that can only fail later (or silently mean something else):
    empty strings, zero or negative counts, ports out of range. One line naming the flag."""
    for key, flag in _POSITIVE.items():
        v = getattr(args, key, None)
        if v is not None and v < 1:
            raise PlanError(f"{flag} {v}: must be a positive integer")
    for key, flag in _NON_NEGATIVE.items():
        v = getattr(args, key, None)
        if v is not None and v < 0:
            raise PlanError(f"{flag} {v}: must be 0 or more")
    for key, flag in _NON_EMPTY.items():
        v = getattr(args, key, None)
        if isinstance(v, str) and not v.strip(" ,"):
            raise PlanError(f"{flag} '{v}': empty value")
    port = getattr(args, "port", None)
    if port is not None and port > 65535:
        raise PlanError(f"--port {port}: must be between 0 (any free port) and 65535")


def _selection(args: argparse.Namespace) -> Selection:
    from .plan import parse_parts

    check_values(args)
    zoo = _load_zoo(args)
    preset_name = args.preset
    spec = args.classes
    if spec is not None and spec in zoo.data.presets and preset_name is None:
        preset_name, spec = spec, None
    preset = zoo.preset(preset_name) if preset_name else None
    spec = spec or (preset.classes if preset else "all")
    classes = parse_class_spec(spec)
    models = [m.name for m in zoo.select_models(args.models or (preset.models if preset else None))]
    images = args.images or (zoo.resolve_path(preset.images) if preset and preset.images else zoo.resolve_path(zoo.data.images))
    if images is not None and not images.is_dir():
        raise ConfigError(f"images folder '{images}' does not exist (from --images or `images:` in {zoo.path})")
    maco = dict(preset.maco) if preset else {}
    given = {"steps": args.steps, "image_size": args.image_size, "crops": args.crops, "seed": args.seed}
    maco.update({k: v for k, v in given.items() if v is not None})
    craft = dict(preset.craft) if preset else {}
    craft.update({k: v for k, v in {"rank": args.rank, "seed": args.seed}.items() if v is not None})
    for m in models:  # validate overrides now, with their names in the message
        zoo.maco_settings(zoo.model(m), maco)
        zoo.craft_settings(zoo.model(m), craft)
    spectrum = args.spectrum or zoo.data.spectrum
    if spectrum not in ("photos", "powerlaw", "images"):
        spectrum = str(zoo.resolve_path(spectrum)) if args.spectrum is None else spectrum
    return Selection(zoo, models, classes, args.store or zoo.resolve_path(zoo.data.out), images, spectrum,
                     parse_parts(getattr(args, "what", "maco,craft")), maco, craft, preset_name)


# ----------------------------------------------------------------------------- commands


def cmd_render(args: argparse.Namespace) -> int:
    from .plan import RenderJob, parse_shard
    from .workers import default_devices, run_render

    sel = _selection(args)
    if args.dry_run or args.force:
        from .runopts import dry_run, force_parts

        if args.dry_run:
            print(dry_run(sel.zoo, sel.out, sel.models, sel.classes, sel.parts, sel.maco, sel.craft, sel.images, sel.spectrum,
                          shard=parse_shard(args.shard) if args.shard else None, force=args.force, device=args.device))
            return 0
        n = force_parts(sel.zoo, sel.out, sel.models, sel.classes, sel.parts, shard=parse_shard(args.shard) if args.shard else None)
        print(f"lens: --force: {n} parts marked for re-rendering", file=sys.stderr)
    ray = args.executor == "ray"
    if ray and args.devices:
        raise ConfigError("--devices applies to --executor local; with --executor ray, Ray assigns one GPU per task")
    devices = ["ray"] if ray else default_devices(args.device, args.devices)  # Ray tasks pick their own device
    job = RenderJob(
        config=sel.zoo.path, out=sel.out, models=sel.models, classes=sel.classes, parts=sel.parts,
        maco_overrides=sel.maco, craft_overrides=sel.craft, images=sel.images, spectrum=sel.spectrum,
        devices=devices, batch_size=args.batch_size, shard=parse_shard(args.shard) if args.shard is not None else None,
        retries=args.retries, progress=not args.no_progress,
    )
    print(f"lens: rendering {len(sel.classes)} classes x {len(sel.models)} models ({', '.join(sorted(sel.parts))}) "
          f"on {', '.join(devices)} into {sel.out}" + (f", preset '{sel.preset}'" if sel.preset else ""), file=sys.stderr)
    if ray:
        from .executors import run_render_ray

        summary = run_render_ray(job, address=args.ray_address, device=args.device)
    else:
        summary = run_render(job)
    report_render(summary)
    return summary.exit_code


def report_render(summary: Any) -> None:
    """The run's summary on stderr: counts, failures grouped by reason, no-images, undone units."""
    from collections import Counter

    from .store import CLAIM_TTL_S

    print(f"lens: {summary.done} done, {summary.failed} failed, {summary.no_images} without images, {summary.skipped} skipped"
          + (" (stopped early)" if summary.stopped else ""), file=sys.stderr)
    reasons = Counter((f.unit.split("/")[0], f.error) for f in summary.failures)
    for (model, error), n in list(reasons.items())[:20]:
        example = next(f.unit for f in summary.failures if f.error == error and f.unit.startswith(model + "/"))
        print(f"  failed {example}" + (f" and {n - 1} more units of {model}" if n > 1 else "") + f": {error}", file=sys.stderr)
    if summary.failed:
        print("lens: some units failed; `lens status` lists them, and re-running retries them", file=sys.stderr)
    if summary.no_images:
        print(f"lens: CRAFT found no usable image for {summary.no_images} classes in {summary.images_source}; "
              "set `images:` in models.yaml (or --images) to an ImageNet-layout folder (<wnid>/*.jpg)", file=sys.stderr)
    for problem in summary.problems[:20]:
        print(f"lens: {problem}", file=sys.stderr)
    if summary.undone:
        print(f"lens: {len(summary.undone)} selected units are not done (e.g. {summary.undone[0]}): held by other "
              f"workers that may have died (claims expire after {int(CLAIM_TTL_S // 60)} minutes); re-run to finish them",
              file=sys.stderr)


def cmd_quality(args: argparse.Namespace) -> int:
    from .quality import run_quality

    sel = _selection(args)
    return run_quality(sel.zoo, sel.out, sel.models, sel.classes, sel.images, device=args.device,
                       progress=not args.no_progress, judges=_judges(args))


def _judges(args: argparse.Namespace) -> list[str] | None:
    text = getattr(args, "judges", None)
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise PlanError(f"--judges '{text}': empty value")
    return names


def cmd_status(args: argparse.Namespace) -> int:
    from .status import render_status

    sel = _selection(args)
    text, code = render_status(sel.zoo, sel.out, sel.models, sel.classes, sel.parts, sel.maco, sel.craft, sel.images,
                               sel.spectrum, as_json=args.json)
    print(text)
    return code


def cmd_models(args: argparse.Namespace) -> int:
    from .errors import ModelError
    from .models import check_weights, weights_status

    zoo = _load_zoo(args)
    unusable = 0
    for m in zoo.models.values():
        if args.check:
            try:
                status = check_weights(m, zoo.root)
            except ModelError as e:
                status, unusable = f"unusable: {e}", unusable + 1
        else:
            status = weights_status(m, zoo.root)
        print(f"{m.name:24s} {m.arch:28s} {status}")
    if unusable:
        print(f"lens: {unusable} of {len(zoo.models)} models cannot load their weights", file=sys.stderr)
    return 1 if unusable else 0


def cmd_layers(args: argparse.Namespace) -> int:
    import torch

    from .images import demo_photos
    from .models import build_module, layer_table, preprocess_of

    check_values(args)
    zoo = _load_zoo(args)
    entry = zoo.model(args.name)
    module = build_module(entry, zoo.root)
    preprocess = preprocess_of(entry, module)
    transform = preprocess.transform()
    photos = demo_photos()[: args.samples]
    x = torch.stack([transform(p.image) for p in photos])
    rows = layer_table(module, x, include_unclean=args.all)
    print(f"{entry.name} ({entry.arch}): concept layers at a {preprocess.input_size} px input, on {len(x)} demo photos; "
          f"concept_layer: now '{entry.concept_layer}'")
    print(f"{'layer':40s} {'clean cut':9s} {'shape':16s} {'non-negative':18s} {'craft auto':10s} module")
    for r in rows:
        sign = "yes" if r.non_negative else f"no (min {r.minimum:.3g})"
        print(f"{r.name:40s} {'yes' if r.clean else 'no':9s} {'x'.join(map(str, r.shape)):16s} {sign:18s} "
              f"{'nmf' if r.non_negative else 'semi-nmf':10s} {r.module or ''}")
    return 0


def cmd_spectrum(args: argparse.Namespace) -> int:
    from .errors import output_errors
    from .spectrum import save_spectrum, spectrum_from_folder

    if not args.images.is_dir():
        raise ConfigError(f"--images '{args.images}' is not a folder")
    spectrum = spectrum_from_folder(args.images)
    zoo = _load_zoo(args)
    out = args.output or (args.store or zoo.resolve_path(zoo.data.out)) / "spectra"
    if out.is_dir() or args.output is None:  # a folder: the spectrum goes into it under its id
        out = out / f"{spectrum.id}.npy"
    with output_errors(out):
        save_spectrum(spectrum, out)
    print(f"spectrum {spectrum.id} saved to {out}; use it with --spectrum {out} or `spectrum: {out}` in models.yaml")
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from .site import build_site

    zoo = _load_zoo(args)
    out = args.site or zoo.resolve_path(zoo.data.site)
    store = args.store or zoo.resolve_path(zoo.data.out)
    report = build_site(zoo, store, out, progress=not args.no_progress, **_site_options(args))
    print(report)
    print(f"lens: site {'in' if report.up_to_date else 'written to'} {out}; browse it with `lens serve`")
    return 0


def _site_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"cache_dir": args.cache, "site_url": args.site_url, "full_res": True if args.full_res else None}


def cmd_publish(args: argparse.Namespace) -> int:
    from .site import build_site
    from .site.publish import check_site, normalize_site_url, write_branch

    zoo = _load_zoo(args)
    out = args.site or zoo.resolve_path(zoo.data.site)
    store = args.store or zoo.resolve_path(zoo.data.out)
    site_url = normalize_site_url(args.site_url or zoo.data.site_url)
    if not site_url:
        raise ConfigError("publish needs the public URL of the site: "
                          "--site-url https://USER.github.io/REPO/ (or `site_url:` in models.yaml)")
    print(build_site(zoo, store, out, progress=not args.no_progress, **{**_site_options(args), "site_url": site_url}))
    problems = check_site(out.resolve(), site_url)
    for p in problems:
        print(f"lens: publish: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"lens: {out} is ready to serve at {site_url} (see docs/publishing.md)")
    if args.gh_pages:
        commit = write_branch(out.resolve(), args.repo, args.branch)
        print(f"lens: committed the site as branch `{args.branch}` ({commit[:12]}) of {args.repo.resolve()}; nothing was pushed.")
        print(f"  next: git -C {args.repo} push origin {args.branch}")
        print(f"  then, once: GitHub > Settings > Pages > Deploy from a branch > {args.branch} / (root)")
    else:
        print(f"  GitHub Pages: lens publish --site-url {site_url} --gh-pages, then git push origin gh-pages")
        print(f"  any static host or bucket: upload the contents of {out}/ to the folder served at {site_url}, e.g.")
        print(f"    aws s3 sync {out}/ s3://BUCKET/PATH/ --delete   or   rsync -a --delete {out}/ HOST:/var/www/PATH/")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .quality import run_quality
    from .site import build_site

    code = cmd_render(args)
    if code == 130 or args.dry_run:
        return code
    sel = _selection(args)
    scored = run_quality(sel.zoo, sel.out, sel.models, sel.classes, sel.images, device=args.device,
                         progress=not args.no_progress, judges=_judges(args))
    code = max(code, scored)
    out = args.site or sel.zoo.resolve_path(sel.zoo.data.site)
    # Same filters as the render (`lens site` alone publishes everything in the store).
    print(build_site(sel.zoo, sel.out, out, models=sel.models, classes=sel.classes, progress=not args.no_progress,
                     **_site_options(args)))
    print(f"lens: gallery written to {out}; browse it with `lens serve` (or open {out}/index.html)")
    return code


def cmd_init(args: argparse.Namespace) -> int:
    from .config import CONFIG_FILENAME
    from .resources import default_zoo_path

    from .errors import output_errors
    from .store import write_whole

    folder: Path = args.folder
    target = folder / CONFIG_FILENAME
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a folder: name a folder to write {CONFIG_FILENAME} into")
    if target.is_dir():
        raise ConfigError(f"{target} is a folder; move it away or name another folder")
    if target.exists() and not args.force:
        raise ConfigError(f"{target} already exists; edit it, or pass --force to overwrite it with the default zoo")
    with output_errors(target):  # a read-only folder, a file where a parent folder must be, a full disk
        write_whole(target, default_zoo_path().read_bytes())
    print(f"lens: wrote {target}: the embedded zoo (three EfficientNet-Lite models, the `demo` preset). Add models under "
          f"`models:`, then run `lens build --classes demo` in {folder.resolve()}; the store and site go next to models.yaml")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from .figure import make_figure

    sel = _selection(args)
    written = make_figure(sel.out, sel.classes, sel.models, args.output, overlay=args.overlay, concepts=args.concepts,
                          cell=args.cell, dpi=args.dpi)
    print(f"lens: figure written to {', '.join(str(w) for w in written)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .site import serve

    check_values(args)
    zoo = _load_zoo(args)
    serve(args.site or zoo.resolve_path(zoo.data.site), host=args.host, port=args.port, prefix=args.prefix)
    return 0


# ----------------------------------------------------------------------------- parser


def _render_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, GPUs if any)")
    g.add_argument("--devices", default=None, metavar="I,J", help="GPU indices for one worker each, e.g. 0,1 (default: all visible)")
    g.add_argument("--batch-size", type=int, default=None, help="objectives per pass (default: from free memory)")
    g.add_argument("--shard", default=None, metavar="K/N", help="render only shard K of N (0 <= K < N), e.g. a Slurm array task")
    g.add_argument("--retries", type=int, default=2, help="retries of a failing unit before it is recorded as failed (default: 2)")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: worker processes on this machine (default); ray: one task per GPU of a Ray cluster (docs/cluster.md)")
    g.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="with --executor ray: cluster address (auto, ray://HOST:10001) or `local` for a new local instance "
                        "(default: $RAY_ADDRESS, else a `ray start` cluster on this machine, else a new local one)")
    g.add_argument("--dry-run", action="store_true", help="print the units to do and an estimate of the time, render nothing")
    g.add_argument("--force", action="store_true",
                   help="re-render the selected parts even where the store holds them with the same settings")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="lens", description="MACO and CRAFT galleries for ImageNet models.")
    parser.add_argument("--version", action="version", version=f"lens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Any, help: str, progress: str | None = "no progress bars (for batch logs)") -> argparse.ArgumentParser:  # noqa: A002
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        if progress:
            p.add_argument("--no-progress", action="store_true", help=progress)
        return p

    lines = "no progress bars; instead, a progress line per model every minute (for batch logs; $LENS_PROGRESS_EVERY seconds)"

    p = command("init", cmd_init, "write a starter models.yaml (the embedded zoo, commented) into a folder", None)
    p.add_argument("folder", nargs="?", type=path_arg, default=Path("."), help="where to write models.yaml (default: here)")
    p.add_argument("--force", action="store_true", help="overwrite an existing models.yaml")
    p = command("render", cmd_render, "render MACO visualizations and CRAFT concepts into the artifact store", lines)
    _add_selection(p)
    _render_options(p)
    p = command("build", cmd_build, "render, score quality, then build the static site", lines)
    _add_selection(p)
    _render_options(p)
    _site_option(p, old="--site-out")
    _site_flags(p)
    p.add_argument("--judges", default=None, help="models that score the renders, NAME[,NAME...] (default: the embedded models)")
    p = command("quality", cmd_quality, "compute quality figures (self, transfer, plausibility) of existing renders")
    _add_selection(p, what=False)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, a GPU if any)")
    p.add_argument("--judges", default=None, help="models that score the renders, NAME[,NAME...] (default: the embedded models)")
    p = command("status", cmd_status, "done, pending and failed units per model and part, with failure reasons", None)
    _add_selection(p)
    p.add_argument("--json", action="store_true", help="print the counts, failures and problems as one JSON object")
    p = command("figure", cmd_figure, "a grid of classes x models (optionally overlays or top concepts) as PNG and PDF", None)
    _add_selection(p, what=False)
    p.add_argument("--output", "-o", type=path_arg, default=Path("lens-figure.png"), metavar="FILE",
                   help="the figure to write: FILE.png and FILE.pdf side by side (default: lens-figure.png)")
    p.add_argument("--overlay", action="store_true", help="show the attribution map as transparency (over a white page)")
    p.add_argument("--concepts", type=int, default=0, metavar="K",
                   help="add the K most important concepts' visualizations after each model's class visualization")
    p.add_argument("--cell", type=float, default=1.4, metavar="INCHES", help="side of one image in the figure (default: 1.4)")
    p.add_argument("--dpi", type=int, default=200, help="resolution of the PNG (default: 200; the PDF embeds the images)")
    p = command("models", cmd_models, "list the zoo and whether each model's weights are available", None)
    _config_option(p)
    p.add_argument("--check", action="store_true", help="load every model's weights; exit 1 if one cannot be used")
    p = command("layers", cmd_layers, "list a model's concept layers: clean cut or not, output shape, sign", None)
    p.add_argument("name", metavar="MODEL", help="a model name of models.yaml")
    _config_option(p)
    p.add_argument("--all", action="store_true", help="also list layers inside blocks (not clean cuts)")
    p.add_argument("--samples", type=int, default=4, help="demo photos used to test each layer's sign (default: 4)")
    p = command("spectrum", cmd_spectrum, "compute a MACO magnitude spectrum from a folder of natural images", None)
    _config_option(p)
    p.add_argument("--images", type=path_arg, required=True, metavar="DIR", help="folder of natural images (searched recursively)")
    _store_option(p)
    p.add_argument("--output", "-o", type=path_arg, default=None, metavar="FILE", help="the .npy to write, or a folder to write <id>.npy into (default: STORE/spectra/<id>.npy)")
    p = command("site", cmd_site, "build the static site from the artifact store")
    _config_option(p)
    _store_option(p, old_out=False)
    _site_option(p)
    # `lens site --out` named the site folder; everywhere else --out was the store: refuse it here.
    p.add_argument("--out", action=_Removed, hint="use --site DIR for the site folder (and --store DIR for the artifact store)",
                   help=argparse.SUPPRESS)
    _site_flags(p)
    p = command("publish", cmd_publish, "build the site for its public URL, check it, and optionally commit it as a gh-pages branch")
    _config_option(p)
    _store_option(p, old_out=False)
    _site_option(p)
    _site_flags(p)
    p.add_argument("--gh-pages", action="store_true", help="commit the site as a branch of the git repository --repo (no push)")
    p.add_argument("--repo", type=path_arg, default=Path("."), help="git repository for --gh-pages (default: the current folder)")
    p.add_argument("--branch", default="gh-pages", help="branch for --gh-pages (default: gh-pages)")
    p = command("serve", cmd_serve, "serve the built site locally", None)
    _config_option(p)
    _site_option(p, old="--dir")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--prefix", default="/", help="serve under this URL path, e.g. /repo/ as GitHub project pages do (default: /)")
    return parser


def _site_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("site")
    g.add_argument("--cache", type=path_arg, default=None,
                   help="cache of encoded images and the MkDocs shell "
                        "(default: .SITE-cache beside the site folder; never inside the store)")
    g.add_argument("--site-url", default=None,
                   help="public URL of the site, e.g. https://user.github.io/repo/ (default: `site_url:`)")
    g.add_argument("--full-res", action="store_true",
                   help="also publish lossless full-resolution PNGs with alpha (heavy; default: `site_full_res:`)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _printed_configs.clear()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="lens: %(message)s")
    try:
        return args.fn(args)
    except LensError as e:
        print(f"lens: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C (the first one stops renders cleanly): no traceback
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\nlens: interrupted", file=sys.stderr)
        return 130
