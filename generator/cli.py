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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .classes import parse_class_spec
from .config import Zoo, load_zoo
from .errors import ConfigError, LensError, PlanError

if TYPE_CHECKING:
    from .plan import Request

log = logging.getLogger("lens")


CONFIG_HELP = ("models.yaml, or a folder holding one (default: ./models.yaml if present, else the embedded default zoo "
               "with the store and site in the current folder)")
WHAT_CHOICES = {"maco": "maco", "craft": "craft", "maco,craft": "maco,craft", "craft,maco": "maco,craft", "both": "maco,craft",
                "dictionary": "dictionary", "maco,craft,dictionary": "maco,craft,dictionary"}


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
        raise argparse.ArgumentTypeError(f"'{text}': choose maco, craft or maco,craft (or dictionary, maco,craft,dictionary)")
    return WHAT_CHOICES[key]


def _image_quality(text: str) -> int:
    """`lens figure --quality`: an integer 1-100 (argparse reports anything else on one line, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"'{text}': a JPEG/WebP quality is an integer from 1 to 100")
    return value


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


def _judges_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judges", default=None, metavar="NAME[,NAME...]",
                   help="models that score the renders (default: the packaged models efficientnet-lite0,1,2, whether or not "
                        "the zoo lists them; the zoo's own models judge only when named here); each judge embeds the "
                        "reference images once, then they are cached")


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
        g.add_argument("--what", type=_what, default=None, metavar="PARTS",
                       help="parts: maco (class visualizations), craft (concepts and their visualizations), maco,craft "
                            "(default, or the preset's `what`; `both` is accepted), dictionary (the model-wide concept "
                            "dictionary and its atom visualizations) or maco,craft,dictionary")
    s = p.add_argument_group("settings (override the preset, the model's entry and `defaults:`)")
    s.add_argument("--steps", type=int, default=None, help="MACO optimisation steps")
    s.add_argument("--image-size", type=int, default=None, help="MACO image side in pixels")
    s.add_argument("--crops", type=int, default=None, help="MACO crops per step")
    s.add_argument("--seed", type=int, default=None, help="base seed of MACO and CRAFT")
    s.add_argument("--rank", type=int, default=None, help="CRAFT concepts per class")
    s.add_argument("--settings", choices=["last"], default=None,
                   help="last: the settings of the store's most recent renders of these models (the flags above still override)")


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


def _selection(args: argparse.Namespace) -> tuple[Zoo, Request]:
    """The config and the request of render, status, quality, figure and build: the filters and
    settings resolved against models.yaml (preset < command line), validated once."""
    from .plan import Request, parse_parts, parse_shard

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
    if getattr(args, "settings", None) == "last":
        maco, craft = _last_settings(zoo, args.store or zoo.resolve_path(zoo.data.out), models, maco, craft, given, args.rank)
    dictionary = dict(preset.dictionary) if preset else {}
    for m in models:  # validate overrides now, with their names in the message
        zoo.maco_settings(zoo.model(m), maco)
        zoo.craft_settings(zoo.model(m), craft)
        zoo.dictionary_settings(zoo.model(m), dictionary)
    what = getattr(args, "what", None) or (preset.what if preset and preset.what else "maco,craft")
    spectrum = args.spectrum or zoo.data.spectrum
    if spectrum not in ("photos", "powerlaw", "images"):
        spectrum = str(zoo.resolve_path(spectrum)) if args.spectrum is None else spectrum
    shard = getattr(args, "shard", None)
    return zoo, Request(config=zoo.path, out=args.store or zoo.resolve_path(zoo.data.out), models=models, classes=classes,
                        parts=parse_parts(what), maco_overrides=maco, craft_overrides=craft, dictionary_overrides=dictionary,
                        images=images, spectrum=spectrum, shard=parse_shard(shard) if shard is not None else None,
                        preset=preset_name)


def _last_settings(zoo: Zoo, out: Path, models: list[str], maco: dict[str, Any], craft: dict[str, Any],
                   given: dict[str, Any], rank: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--settings last`: where the store's most recent record differs from what its model would
    get now, those values become overrides (the flags given still win)."""
    from .plan import describe_settings, last_settings, settings_diff
    from .store import Store

    last = last_settings(Store(out), models)
    if not last:
        raise PlanError(f"--settings last: the store {out} holds no finished render of {', '.join(models)}")
    out_maco, out_craft = dict(maco), dict(craft)
    if "maco" in last:
        model, recorded = last["maco"]
        out_maco.update(settings_diff(recorded, zoo.maco_settings(zoo.model(model), maco)))
    if "craft" in last:
        model, recorded = last["craft"]
        out_craft.update(settings_diff(recorded, zoo.craft_settings(zoo.model(model), craft)))
    out_maco.update({k: v for k, v in given.items() if v is not None})
    out_craft.update({k: v for k, v in {"rank": rank, "seed": given["seed"]}.items() if v is not None})
    changed = {**{k: v for k, v in out_maco.items() if maco.get(k) != v}, **{k: v for k, v in out_craft.items() if craft.get(k) != v}}
    print(f"lens: --settings last: {describe_settings(changed) or 'the settings of the config'}", file=sys.stderr)
    return out_maco, out_craft


# ----------------------------------------------------------------------------- commands


def cmd_render(args: argparse.Namespace) -> int:
    zoo, request = _selection(args)
    return _render(args, zoo, request)


def _render(args: argparse.Namespace, zoo: Zoo, request: Request) -> int:
    from .plan import RenderJob, resolve
    from .workers import default_devices, run_render

    if args.dry_run:
        from .runopts import dry_run

        print(dry_run(resolve(request, zoo, cache_spectrum=False), force=args.force, device=args.device))
        return 0
    ray = args.executor == "ray"
    if ray and args.devices:
        raise ConfigError("--devices applies to --executor local; with --executor ray, Ray assigns one GPU per task")
    devices = ["ray"] if ray else default_devices(args.device, args.devices)  # Ray tasks pick their own device
    resolved = resolve(request, zoo)
    if args.force:
        from .runopts import force_parts

        print(f"lens: --force: {force_parts(resolved)} parts marked for re-rendering", file=sys.stderr)
    job = RenderJob(resolved, devices=devices, batch_size=args.batch_size, retries=args.retries,
                    progress=not args.no_progress)
    print(f"lens: rendering {_scope(resolved)} ({', '.join(sorted(request.parts))}) on {', '.join(devices)} into "
          f"{request.out}" + (f", preset '{request.preset}'" if request.preset else ""), file=sys.stderr)
    if ray:
        from .executors import run_render_ray

        summary = run_render_ray(job, address=args.ray_address, device=args.device)
    else:
        summary = run_render(job)
    report_render(summary)
    return summary.exit_code


def _scope(resolved: Any) -> str:
    """What a render covers: classes x models, and for a shard how many of them it holds and how many units it owes."""
    from .plan import pending_units

    request = resolved.request
    text = f"{len(request.classes)} classes x {len(request.models)} models"
    if request.shard is None:
        return text
    k, n = request.shard
    pairs = sum(len(p.classes) for p in resolved.plans)
    todo = sum(len(pending_units(resolved.store, p)) for p in resolved.plans)
    return f"shard {k}/{n}: {pairs} of {len(request.classes) * len(request.models)} (class, model) pairs, {todo} units to do"


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
    zoo, request = _selection(args)
    return _quality(args, zoo, request)


def _quality(args: argparse.Namespace, zoo: Zoo, request: Request) -> int:
    from .quality import run_quality

    return run_quality(zoo, request.out, request.models, request.classes, request.images, device=args.device,
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
    from .plan import resolve
    from .status import render_status

    zoo, request = _selection(args)
    text, code = render_status(resolve(request, zoo, cache_spectrum=False), as_json=args.json)  # a report writes nothing
    print(text)
    return code


def cmd_models(args: argparse.Namespace) -> int:
    from .errors import ModelError
    from .models import check_weights, weights_status

    zoo = _load_zoo(args)
    unusable = 0
    selected = zoo.select_models(args.models)
    for m in selected:
        if args.check:
            try:
                status = check_weights(m, zoo.root)
            except ModelError as e:
                status, unusable = f"unusable: {e}", unusable + 1
        else:
            status = weights_status(m, zoo.root)
        print(f"{m.name:24s} {m.architecture:28s} {status}")
    if unusable:
        print(f"lens: {unusable} of {len(selected)} models cannot load their weights", file=sys.stderr)
    return 1 if unusable else 0


def cmd_layers(args: argparse.Namespace) -> int:
    from .api import sample_layers
    from .models import build_module, preprocess_of

    check_values(args)
    zoo = _load_zoo(args)
    entry = zoo.model(args.name)
    module = build_module(entry, zoo.root)
    preprocess = preprocess_of(entry, module)
    rows, n = sample_layers(module, preprocess.transform(), args.samples, include_unclean=args.all)
    print(f"{entry.name} ({entry.architecture}): concept layers at a {preprocess.input_size} px input, on {n} demo photos; "
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
    return {"cache_dir": args.cache, "site_url": args.site_url, "full_res": True if args.full_res else None,
            "verify": args.verify}


def cmd_publish(args: argparse.Namespace) -> int:
    from .site import build_site
    from .site.publish import branch_ref, check_site, normalize_site_url, private_paths, write_branch

    zoo = _load_zoo(args)
    out = args.site or zoo.resolve_path(zoo.data.site)
    store = args.store or zoo.resolve_path(zoo.data.out)
    site_url = normalize_site_url(args.site_url or zoo.data.site_url)
    if not site_url:
        raise ConfigError("publish needs the public URL of the site: "
                          "--site-url https://USER.github.io/REPO/ (or `site_url:` in models.yaml)")
    if args.gh_pages:
        branch_ref(args.repo, args.branch)  # a branch that would be refused is refused before the build
    print(build_site(zoo, store, out, progress=not args.no_progress, **{**_site_options(args), "site_url": site_url}))
    problems = check_site(out.resolve(), site_url, private_paths(zoo, Path(store).resolve(), out.resolve()))
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
    from .site import build_site

    zoo, request = _selection(args)
    code = _render(args, zoo, request)
    if code == 130 or args.dry_run:
        return code
    code = max(code, _quality(args, zoo, request))
    out = args.site or zoo.resolve_path(zoo.data.site)
    # Same filters as the render (`lens site` alone publishes everything in the store).
    print(build_site(zoo, request.out, out, models=request.models, classes=request.classes, progress=not args.no_progress,
                     **_site_options(args)))
    print(f"lens: gallery written to {out}; browse it with `lens serve` (or open {out}/index.html)")
    return code


def cmd_init(args: argparse.Namespace) -> int:
    from .config import CONFIG_FILENAME
    from .errors import output_errors
    from .resources import default_zoo_path
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

    _, request = _selection(args)
    written = make_figure(request.out, request.classes, request.models, args.output, overlay=args.overlay, concepts=args.concepts,
                          cell=args.cell, dpi=args.dpi, fmt=args.format, quality=args.quality, pdf=not args.no_pdf)
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
    from .version import __version__

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

    _pipeline_commands(command, lines)
    _tool_commands(command)
    _site_commands(command)
    return parser


# `command(name, fn, help, progress)` of build_parser: a subcommand's parser, with --no-progress unless progress is None.
Command = Callable[..., argparse.ArgumentParser]


def _pipeline_commands(command: Command, lines: str) -> None:
    """init, render, build, quality, status: making and inspecting the store."""
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
    _judges_option(p)
    p = command("quality", cmd_quality, "compute quality figures (self, transfer, plausibility) of existing renders")
    _add_selection(p, what=False)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, a GPU if any)")
    _judges_option(p)
    p = command("status", cmd_status, "done, pending and failed units per model and part, with failure reasons", None)
    _add_selection(p)
    p.add_argument("--json", action="store_true", help="print the counts, failures and problems as one JSON object")


def _tool_commands(command: Command) -> None:
    """figure, models, layers, spectrum: tools beside the pipeline."""
    p = command("figure", cmd_figure, "a grid of classes x models (optionally overlays or top concepts) as PNG and PDF", None)
    _add_selection(p, what=False)
    p.add_argument("--output", "-o", type=path_arg, default=Path("lens-figure.png"), metavar="FILE",
                   help="the figure to write: FILE.png and FILE.pdf side by side (default: lens-figure.png)")
    p.add_argument("--overlay", action="store_true", help="show the attribution map as transparency (over a white page)")
    p.add_argument("--concepts", type=int, default=0, metavar="K",
                   help="add the K most important concepts' visualizations after each model's class visualization")
    p.add_argument("--cell", type=float, default=1.4, metavar="INCHES", help="side of one image in the figure (default: 1.4)")
    p.add_argument("--dpi", type=int, default=200, help="resolution of the PNG (default: 200; the PDF embeds the images)")
    p.add_argument("--format", choices=("png", "jpeg", "webp"), default="png",
                   help="the raster beside the PDF: png (lossless, papers; default), jpeg or webp (lossy, slides: a fraction of the bytes)")
    p.add_argument("--quality", type=_image_quality, default=85, metavar="Q", help="JPEG/WebP quality, 1-100 (default: 85)")
    p.add_argument("--no-pdf", action="store_true", help="write the raster only")
    p = command("models", cmd_models, "list the zoo and whether each model's weights are available", None)
    _config_option(p)
    _models_option(p)
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
    p.add_argument("--output", "-o", type=path_arg, default=None, metavar="FILE",
                   help="the .npy to write, or a folder to write <id>.npy into (default: STORE/spectra/<id>.npy)")


def _site_commands(command: Command) -> None:
    """site, publish, serve: the static site."""
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


def _site_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("site")
    g.add_argument("--cache", type=path_arg, default=None,
                   help="cache of encoded images and the MkDocs shell "
                        "(default: .SITE-cache beside the site folder; never inside the store)")
    g.add_argument("--verify", action="store_true",
                   help="trust no file's size and modification time: hash every source, render every page, compare every "
                        "image with the cache's (repairs anything edited in the site or the cache)")
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
