"""Persons/s of `posecli eval` (the whole library path) against the limit this CPU's matmul peak sets.

    python benchmarks/eval_speed.py [--arch hrnet-w32] [--repeats 3] [--workers N] [--batch-size 32] [--no-flip] [--compile]

Runs ``posecli.engine.evaluate.evaluate`` on the bundled COCO sample with its 118 detector
boxes, exactly as ``posecli eval --sample`` does (decode, crops (in DataLoader workers if asked),
forward with flip test, decode, rescoring, OKS NMS, COCOeval), with a randomly initialised
model (speed does not depend on the weights). The limit is

    persons/s <= peak GFLOP/s / (2 * MACs per crop * forwards per crop)

with the matmul peak sampled before and after every timed run of the same process:
no pipeline built from these convolutions can go faster. Medians over repeats.
``--compile`` compiles the network first (as ``posecli eval --compile``, in place of
oneDNN's fused convolutions) and reports the compile time apart from the runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from posecli import sample
from posecli.engine.bench.machine import CpuUse, machine_info, peak_memory_mb
from posecli.engine.bench.peaks import MatmulProbe, conv_peak
from posecli.engine.bench.run import random_model
from posecli.engine.evaluate import evaluate
from posecli.engine.flops import count_macs
from posecli.engine.inference import InferenceSettings, Predictor

# MMPose 1.3.2's inference_topdown on the same boxes and weights, flip / no flip, measured by
# benchmarks/mmpose/infer_speed.py on this 2-core AVX-512 machine (2026-12-01).
MMPOSE_PERSONS_PER_S = {True: 7.2, False: 14.3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="hrnet-w32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: eval's, 0 on CPU)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network before the runs")
    args = parser.parse_args()

    net, info = random_model(args.arch, "coco")
    macs = count_macs(net, info.input_size)
    # eval's defaults (the auto network: on CPU oneDNN's fused convolutions), or the compiled one
    settings = InferenceSettings(flip=args.flip, batch_size=args.batch_size, network="compiled" if args.compile else "auto")
    start = time.perf_counter()
    predictor = Predictor.from_model(net, info, settings)
    print(f"built {predictor.settings.label} in {time.perf_counter() - start:.1f} s", flush=True)
    forwards = 2 if args.flip else 1
    probe = MatmulProbe(torch.device("cpu"), "fp32")
    cpu_use = CpuUse()

    def run():
        return evaluate(predictor, sample.COCO_ANN, sample.COCO_IMAGES, sample.COCO_DET, workers=args.workers)

    print(f"{args.arch}: {macs / 1e9:.2f} G multiply-adds per crop, flip={args.flip}, onednn={predictor.onednn}, "
          f"compiled={predictor.compiled}, batch {args.batch_size}, "
          f"{'default' if args.workers is None else args.workers} workers; warm-up run ...", flush=True)  # fmt: skip
    result = run()
    peaks, rates = [probe.peak().gflops], []
    for i in range(args.repeats):
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        peaks.append(probe.peak().gflops)
        rates.append(result.num_boxes / seconds)
        print(f"  run {i + 1}: {result.num_boxes} persons in {seconds:.1f} s = {rates[-1]:.2f} persons/s, "
              f"matmul peak {peaks[-1]:.0f} GFLOP/s", flush=True)  # fmt: skip
    memory = peak_memory_mb(torch.device("cpu"), run)
    conv = conv_peak(torch.device("cpu"))

    peak, rate = statistics.median(peaks), statistics.median(rates)
    def limit_at(gflops: float) -> float:  # persons/s if every multiply-add ran at this rate
        return gflops * 1e9 / (2 * macs * forwards)

    limit = limit_at(peak)
    mmpose = MMPOSE_PERSONS_PER_S[args.flip] if args.arch == "hrnet-w32" else None
    m = machine_info(torch.device("cpu"))
    taken = cpu_use.others() or {}
    print(f"\n{m['cpu']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} threads, {m['cpu_capability']})")
    print(f"matmul peak (median of {len(peaks)} samples): {peak:.1f} GFLOP/s -> limit {limit:.2f} persons/s")
    print(f"posecli eval (median of {len(rates)}):       {rate:.2f} persons/s = {rate / limit:.0%} of the limit")
    conv_limit = limit_at(conv.gflops)
    print(f"for comparison, a large 3x3 convolution ({conv.shape}) runs at {conv.gflops:.1f} GFLOP/s: "
          f"against that, the limit is {conv_limit:.2f} persons/s and eval reaches {rate / conv_limit:.0%}")
    if mmpose:
        print(f"MMPose inference_topdown (benchmarks/mmpose/infer_speed.py): {mmpose:.1f} persons/s -> posecli is {rate / mmpose:.2f}x")
    print(f"peak memory of one run (RSS high-water): {memory:.0f} MB")
    print(f"CPU time taken by other processes meanwhile: {taken.get('other_processes', float('nan')):.0%}")


if __name__ == "__main__":
    main()
