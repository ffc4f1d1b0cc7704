"""`lens`: render, inspect and publish the gallery.

    lens build   [filters]          render, score, then build the site (the one command)
    lens render  [filters]          MACO + CRAFT renders into the artifact store
    lens quality [filters]          (re)compute quality figures of existing renders
    lens site    --artifacts DIR    static site from whatever the store holds
    lens serve                      serve the site locally
    lens status  [filters]          done / pending / failed per model and part
    lens models                     the zoo and whether each model's weights are available
    lens spectrum --images DIR      compute and cache a magnitude spectrum

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
from .errors import ConfigError, LensError, PlanError, SiteError

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


def _add_selection(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("selection")
    g.add_argument("--config", type=Path, default=None, help="models.yaml (default: ./models.yaml)")
    g.add_argument("--model", "--models", dest="model", default=None, help="NAME[,NAME...] (default: all models)")
    g.add_argument("--classes", default=None, help="all | 0-99 | 281,967 | n02123045 | a preset name such as demo (default: all)")
    g.add_argument("--preset", default=None, help="a preset of models.yaml: its classes and settings")
    g.add_argument("--out", "--artifacts", dest="out", type=Path, default=None, help="artifact store (default: `out:` of models.yaml)")
    g.add_argument("--images", type=Path, default=None, help="ImageNet-layout folder for CRAFT (default: `images:` or the demo photos)")
    g.add_argument("--spectrum", default=None, help="photos | powerlaw | images | path to a .npy from `lens spectrum`")
    g.add_argument("--what", default="maco,craft", help="parts to render: maco, craft or both (default)")
    s = p.add_argument_group("settings (override models.yaml)")
    s.add_argument("--steps", type=int, default=None, help="MACO optimisation steps")
    s.add_argument("--image-size", type=int, default=None, help="MACO image side in pixels")
    s.add_argument("--crops", type=int, default=None, help="MACO crops per step")
    s.add_argument("--seed", type=int, default=None, help="base seed")
    s.add_argument("--rank", type=int, default=None, help="CRAFT concepts per class")


_POSITIVE = {"steps": "--steps", "image_size": "--image-size", "crops": "--crops", "rank": "--rank",
             "batch_size": "--batch-size", "port": "--port"}
_NON_NEGATIVE = {"seed": "--seed", "retries": "--retries"}
_NON_EMPTY = {"model": "--model", "classes": "--classes", "preset": "--preset", "spectrum": "--spectrum", "what": "--what",
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
        raise PlanError(f"--port {port}: must be between 1 and 65535")


def _selection(args: argparse.Namespace) -> Selection:
    from .plan import parse_parts

    check_values(args)
    zoo = load_zoo(args.config)
    preset_name = args.preset
    spec = args.classes
    if spec is not None and spec in zoo.data.presets and preset_name is None:
        preset_name, spec = spec, None
    preset = zoo.preset(preset_name) if preset_name else None
    spec = spec or (preset.classes if preset else "all")
    classes = parse_class_spec(spec)
    models = [m.name for m in zoo.select_models(args.model or (preset.models if preset else None))]
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
    return Selection(zoo, models, classes, args.out or zoo.resolve_path(zoo.data.out), images, spectrum,
                     parse_parts(args.what), maco, craft, preset_name)


# ----------------------------------------------------------------------------- commands


def cmd_render(args: argparse.Namespace) -> int:
    from .plan import RenderJob, parse_shard
    from .workers import default_devices, run_render

    sel = _selection(args)
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
    from .models import weights_status

    zoo = load_zoo(args.config)
    for m in zoo.models.values():
        print(f"{m.name:24s} {m.arch:28s} {weights_status(m, zoo.root)}")
    return 0


def cmd_spectrum(args: argparse.Namespace) -> int:
    from .spectrum import save_spectrum, spectrum_from_folder

    if not args.images.is_dir():
        raise ConfigError(f"--images '{args.images}' is not a folder")
    spectrum = spectrum_from_folder(args.images)
    out = args.output or Path("artifacts") / "spectra" / f"{spectrum.id}.npy"
    save_spectrum(spectrum, out)
    print(f"spectrum {spectrum.id} saved to {out}; use it with --spectrum {out} or `spectrum: {out}` in models.yaml")
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    from .site import build_site

    zoo = load_zoo(args.config)
    out = args.site_out or zoo.resolve_path(zoo.data.site)
    store = args.out or zoo.resolve_path(zoo.data.out)
    report = build_site(zoo, store, out, progress=not args.no_progress)
    print(report)
    print(f"lens: site written to {out}; browse it with `lens serve`")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .quality import run_quality
    from .site import build_site

    code = cmd_render(args)
    if code == 130:
        return code
    sel = _selection(args)
    scored = run_quality(sel.zoo, sel.out, sel.models, sel.classes, sel.images, device=args.device,
                         progress=not args.no_progress, judges=_judges(args))
    code = max(code, scored)
    out = args.site_out or sel.zoo.resolve_path(sel.zoo.data.site)
    # Same filters as the render (`lens site` alone publishes everything in the store).
    print(build_site(sel.zoo, sel.out, out, models=sel.models, classes=sel.classes, progress=not args.no_progress))
    print(f"lens: gallery written to {out}; browse it with `lens serve` (or open {out}/index.html)")
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    from .site import serve

    check_values(args)
    zoo = load_zoo(args.config)
    try:
        serve(args.site_out or zoo.resolve_path(zoo.data.site), host=args.host, port=args.port)
    except OSError as e:  # port in use, no permission for a low port, unknown host
        raise SiteError(f"--host {args.host} --port {args.port}: cannot serve there ({e.strerror or e})") from None
    return 0


# ----------------------------------------------------------------------------- parser


def _render_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto, GPUs if any)")
    g.add_argument("--devices", default=None, help="GPU indices for one worker each, e.g. 0,1 (default: all visible)")
    g.add_argument("--batch-size", type=int, default=None, help="objectives per pass (default: from free memory)")
    g.add_argument("--shard", default=None, help="K/N: render only shard K of N (0 <= K < N), e.g. a Slurm array task")
    g.add_argument("--retries", type=int, default=2, help="retries of a failing unit before it is recorded as failed")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: worker processes on this machine (default); ray: one task per GPU of a Ray cluster (docs/cluster.md)")
    g.add_argument("--ray-address", default=None,
                   help="with --executor ray: cluster address (auto, ray://HOST:10001) or `local` for a new local instance "
                        "(default: $RAY_ADDRESS, else a `ray start` cluster on this machine, else a new local one)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="lens", description="MACO and CRAFT galleries for ImageNet models.")
    parser.add_argument("--version", action="version", version=f"lens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Any, help: str) -> argparse.ArgumentParser:  # noqa: A002
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        return p

    p = command("render", cmd_render, "render MACO visualizations and CRAFT concepts into the artifact store")
    _add_selection(p)
    _render_options(p)
    p = command("build", cmd_build, "render, score quality, then build the static site")
    _add_selection(p)
    _render_options(p)
    p.add_argument("--site-out", type=Path, default=None, help="site folder (default: `site:` of models.yaml)")
    p.add_argument("--judges", default=None, help="models that score the renders, NAME[,NAME...] (default: the embedded models)")
    p = command("quality", cmd_quality, "compute quality figures (self, transfer, plausibility) of existing renders")
    _add_selection(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--judges", default=None, help="models that score the renders, NAME[,NAME...] (default: the embedded models)")
    p = command("status", cmd_status, "done, pending and failed units per model and part, with failure reasons")
    _add_selection(p)
    p.add_argument("--json", action="store_true", help="print the counts, failures and problems as one JSON object")
    p = command("models", cmd_models, "list the zoo and whether each model's weights are available")
    p.add_argument("--config", type=Path, default=None)
    p = command("spectrum", cmd_spectrum, "compute a MACO magnitude spectrum from a folder of natural images")
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--output", type=Path, default=None, help=".npy path (default: artifacts/spectra/<id>.npy)")
    p = command("site", cmd_site, "build the static site from the artifact store")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--artifacts", "--store", dest="out", type=Path, default=None)
    p.add_argument("--out", dest="site_out", type=Path, default=None, help="site folder (default: `site:` of models.yaml)")
    p = command("serve", cmd_serve, "serve the built site locally")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--dir", dest="site_out", type=Path, default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
