"""MACO throughput per model and batch size B, against the device's measured matmul peak.

    python benchmarks/bench_maco.py                       # lite0, B = 1, 4, 16 (64 on GPUs), default settings
    python benchmarks/bench_maco.py --variants base,nchw,compile --batch-sizes 8
    python benchmarks/bench_maco.py --settings demo --models efficientnet-lite0,efficientnet-lite2
    python benchmarks/bench_maco.py --batch-sizes 1,64,256,1024 --variants base,fp32,step-reduce-overhead,fp32+step-cuda-graph
    python benchmarks/bench_maco.py --tiny --batch-sizes 4,16,64 --ops   # operator calls per step, tiny random model

Per row: objectives/s (complete visualizations per second at the settings' step count),
crop-passes/s, achieved TFLOP/s = forward FLOPs per crop (torch's FLOP counter) x 3 (forward +
backward) x crop-passes/s, the fraction of the device's peak (a timed large matmul: bf16 on GPUs,
fp32 on CPUs), peak memory, and per step: host time (until the step's last launch returns, no
synchronisation) and device time (CUDA events; on a CPU both are the wall time), and with --ops the
operator calls per step (torch.profiler; all and top-level, see maco.operator_calls_per_step).
Variants, combined with '+': base (channels_last, bf16 autocast on CUDA), nchw (contiguous memory
format), fp32 (no autocast; the same as base on a CPU), compile (torch.compile of the model),
step-compile / step-reduce-overhead / step-cuda-graph (maco step modes, see maco.step_mode).
Rows stop at the first out-of-memory B. Writes JSON and markdown to benchmarks/results/ (--out).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator import maco  # noqa: E402
from generator.config import load_zoo  # noqa: E402
from generator.models import LoadedModel, build_module, resolve_device  # noqa: E402
from generator.spectrum import resolve_spectrum  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device) -> tuple[float, str]:
    """A practical roofline: the best of a few large matmuls (bf16 on CUDA, fp32 on CPU)."""
    dtype, n, reps = (torch.bfloat16, 8192, 10) if device.type == "cuda" else (torch.float32, 2048, 5)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12, f"{str(dtype).split('.')[-1]} matmul {n}^3"


def forward_flops(model: LoadedModel, input_size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, input_size, input_size, device=model.device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.forward(x)
    return counter.get_total_flops()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark (Linux: KiB)


class StepClock:
    """Progress callback of maco.render: host timestamps and (on CUDA) events after each step's launches, no sync."""

    def __init__(self, device: torch.device):
        self.device, self.host, self.events = device, [], []

    def __call__(self, n: int) -> None:  # noqa: ARG002
        self.host.append(time.perf_counter())
        if self.device.type == "cuda":
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.events.append(e)

    def per_step(self, skip: int) -> tuple[float, float]:
        """(host, device) seconds per step over the steps after the first `skip` (warm-up, graph capture)."""
        n = len(self.host) - 1 - skip
        host = (self.host[-1] - self.host[skip]) / n
        if self.device.type != "cuda":
            return host, host
        torch.cuda.synchronize(self.device)
        return host, self.events[skip].elapsed_time(self.events[-1]) / 1e3 / n


def bench_one(model: LoadedModel, settings, spectrum, batch: int, timed_steps: int, mode: str = "eager") -> dict:  # noqa: ANN001
    """Time `timed_steps` steps of a B-objective render after a warm-up."""
    objectives = [maco.class_objective(c % 1000) for c in range(batch)]
    warm = 5 if mode == "cuda-graph" else 2  # cuda-graph: 3 eager steps, then capture and replay
    maco.render(model, objectives, settings.model_copy(update={"steps": warm}), spectrum, mode=mode)  # warm-up (and compile)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    skip = 4 if mode == "cuda-graph" else 1  # time replays only
    clock = StepClock(model.device)
    sync(model.device)
    t = time.perf_counter()
    maco.render(model, objectives, settings.model_copy(update={"steps": timed_steps + skip + 1}), spectrum, progress=clock, mode=mode)
    sync(model.device)
    wall = time.perf_counter() - t
    host, per_step = clock.per_step(skip)
    return {"batch": batch, "mode": mode, "seconds_per_step": per_step, "host_seconds_per_step": host,
            "render_wall_s": wall, "objectives_per_s": batch / (per_step * settings.steps),
            "crop_passes_per_s": batch * settings.crops / per_step,
            "peak_memory_mb": peak_memory_mb(model.device)}


def tiny_zoo():  # noqa: ANN201
    """The test suite's tiny random model (tests/conftest.py), for operator counts independent of real weights."""
    import tempfile

    from tests.conftest import write_tiny_zoo

    return load_zoo(write_tiny_zoo(Path(tempfile.mkdtemp(prefix="lens-bench-"))))


def measure_row(model_name: str, variant: str, settings_name: str, device_name: str, batch: int, timed: int,
                tiny: bool = False, ops: bool = False, steps: int | None = None) -> dict | None:
    """One (model, variant, B) measurement, run in a fresh process."""
    flags = set(variant.split("+"))
    mode = next((f.removeprefix("step-") for f in flags if f.startswith("step-")), "eager")
    maco.step_mode(mode)  # checks the name
    zoo = tiny_zoo() if tiny else load_zoo(ROOT / "models.yaml")
    device = torch.device(device_name)
    entry = zoo.model("tiny" if tiny else model_name)
    settings = zoo.maco_settings(entry, zoo.preset("demo").maco if settings_name == "demo" and not tiny else {})
    if steps:
        settings = settings.model_copy(update={"steps": steps})
    spectrum = resolve_spectrum("powerlaw" if tiny else zoo.data.spectrum, ROOT / "artifacts" / "spectra")
    model = LoadedModel(entry, build_module(entry, zoo.root), device, channels_last="nchw" not in flags, compile="compile" in flags,
                        bf16="fp32" not in flags)
    input_size = settings.input_size or model.preprocess.input_size
    flops = forward_flops(model, input_size)
    try:
        r = bench_one(model, settings, spectrum, batch, timed, mode)
        if ops:
            objectives = [maco.class_objective(c % 1000) for c in range(batch)]
            r["ops_per_step"], r["top_level_ops_per_step"] = maco.operator_calls_per_step(model, objectives, settings, spectrum, mode)
    except torch.cuda.OutOfMemoryError:
        return None
    r.update(model="tiny" if tiny else model_name, variant=variant, settings=settings_name, steps=settings.steps, crops=settings.crops,
             image_size=settings.image_size, input_size=input_size, forward_gflops_per_crop=flops / 1e9,
             achieved_tflops=flops * 3 * r["crop_passes_per_s"] / 1e12)
    return r


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="efficientnet-lite0")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-sizes", default=None, help="default: 1,4,16 on CPU; 1,4,16,64 on GPU")
    p.add_argument("--settings", choices=["default", "demo"], default="default")
    p.add_argument("--timed-steps", type=int, default=None, help="steps timed per row (default: 3 on CPU, 20 on GPU)")
    p.add_argument("--variants", default="base", help="comma list of base, nchw, fp32, compile")
    p.add_argument("--tag", default="maco", help="name of the result files")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the result files")
    p.add_argument("--steps", type=int, default=None, help="override the settings' step count (objectives/s)")
    p.add_argument("--ops", action="store_true", help="also count operator calls per step (torch.profiler)")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny random model instead of --models (tiny settings)")
    args = p.parse_args()
    if args.tiny:
        args.models = "tiny"

    device = resolve_device(args.device)
    cpu = device.type == "cpu"
    batches = [int(b) for b in (args.batch_sizes or ("1,4,16" if cpu else "1,4,16,64")).split(",")]
    timed = args.timed_steps or (3 if cpu else 20)
    resolve_spectrum(load_zoo(ROOT / "models.yaml").data.spectrum, ROOT / "artifacts" / "spectra")  # cache it once
    peak, peak_how = matmul_peak_tflops(device)
    cpu_name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    name = cpu_name if cpu else torch.cuda.get_device_name(device)
    print(f"device: {name}; measured peak {peak:.3f} TFLOP/s ({peak_how})", flush=True)
    rows = []
    for model_name in args.models.split(","):
        for variant in args.variants.split(","):
            for b in batches:
                # One process per row: on the CPU the peak memory (RSS high-water mark) is then this row's own.
                with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
                    r = pool.submit(measure_row, model_name, variant, args.settings, str(device), b, timed, args.tiny, args.ops,
                                    args.steps).result()
                if r is None:
                    print(f"{model_name} B={b}: out of memory, skipped", flush=True)
                    break
                r["fraction_of_peak"] = r["achieved_tflops"] / peak
                rows.append(r)
                ops = f"  {r['ops_per_step']} ops/step ({r['top_level_ops_per_step']} top-level)" if args.ops else ""
                print(f"{r['model']:20s} {variant:8s} B={b:3d}  {r['objectives_per_s']:.4f} obj/s  "
                      f"{r['crop_passes_per_s']:8.1f} crops/s  {r['achieved_tflops']:.3f} TFLOP/s "
                      f"({100 * r['fraction_of_peak']:.1f}% of peak)  host {1e3 * r['host_seconds_per_step']:.1f} ms/step  "
                      f"device {1e3 * r['seconds_per_step']:.1f} ms/step  {r['peak_memory_mb']:.0f} MB{ops}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": name, "peak_tflops": peak, "peak_measured_with": peak_how, "torch": torch.__version__, "rows": rows}
    (args.out / f"{args.tag}.json").write_text(json.dumps(report, indent=1))
    md = [f"Device: {name}; measured peak {peak:.3f} TFLOP/s ({peak_how}); torch {torch.__version__}", "",
          "| model | variant | settings | B | host ms/step | device ms/step | objectives/s | s/visualization | crop-passes/s "
          "| TFLOP/s | % of peak | peak MB | ops/step (top-level) |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ops = f"{r['ops_per_step']} ({r['top_level_ops_per_step']})" if "ops_per_step" in r else "-"
        md.append(f"| {r['model']} | {r['variant']} | {r['settings']} ({r['steps']} steps, {r['crops']} crops, "
                  f"{r['image_size']} px, input {r['input_size']}) | {r['batch']} | {1e3 * r['host_seconds_per_step']:.1f} | "
                  f"{1e3 * r['seconds_per_step']:.1f} | {r['objectives_per_s']:.4f} | {1 / r['objectives_per_s']:.1f} | "
                  f"{r['crop_passes_per_s']:.1f} | {r['achieved_tflops']:.3f} | {100 * r['fraction_of_peak']:.1f} | "
                  f"{r['peak_memory_mb']:.0f} | {ops} |")
    (args.out / f"{args.tag}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
