"""posecli benchmark: the multiply-add count, BatchNorm folding, the JSON report's fields, bad input.

No timings are asserted: figures vary by machine; only their definitions are checked.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch import nn
from conftest import CKPT17
from typer.testing import CliRunner

import posecli.cli.benchmark as cli_benchmark
from posecli.cli import app
from posecli.choices import Backend, Network, Precision
from posecli.engine.bench.peaks import MatmulPeak
from posecli.engine.bench.run import fastest, requested_settings, run_benchmark
from posecli.engine.bench.timing import ModelRun, bench_pipeline, sample_images_and_boxes, skip_reason
from posecli.engine.inference import InferenceSettings, Predictor
from posecli.engine import runtimes
from posecli.models import onednn
from posecli.engine.flops import count_macs
from posecli.models.fuse import count_batchnorms, fuse_conv_bn
from posecli.models.hrnet import build_model
from posecli.weights import ModelInfo, load_model

runner = CliRunner()


def test_count_macs_of_a_known_net():
    # input (3, h=4, w=6)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # out (4, 4, 6): 96 outputs x 3*3*3 = 2592
        nn.BatchNorm2d(4), nn.ReLU(),  # not counted
        nn.Conv2d(4, 8, 1, stride=2, bias=False),  # out (8, 2, 3): 48 x 4 = 192
        nn.Conv2d(8, 8, 3, padding=1, groups=4),  # out (8, 2, 3): 48 x (8/4)*9 = 864
        nn.Upsample(scale_factor=2),  # not counted
        nn.Flatten(), nn.Linear(8 * 4 * 6, 10),  # 10 x 192 = 1920
    )  # fmt: skip
    assert count_macs(net, input_size=(6, 4)) == 2592 + 192 + 864 + 1920
    assert net.training  # restored


def test_count_macs_hrnet_w32():
    # Convolutions of HRNet-W32 at 256x192, counted by hand per stage: 7,645,003,776.
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        net = build_model("hrnet-w32", 17)
    assert count_macs(net) == 7_645_003_776


def _randomised_bn(net: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that folding has something to fold."""
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.5)
    return net.eval()


def test_fuse_conv_bn_keeps_outputs_to_1e5():
    net = _randomised_bn(build_model("hrnet-small", 17))
    fused = fuse_conv_bn(net)
    assert count_batchnorms(fused) == 0 and count_batchnorms(net) == 40  # the original is untouched
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        expected, got = net(x), fused(x)
    assert (got - expected).abs().max() / expected.abs().max() < 1e-5


def test_fuse_conv_bn_on_the_reference_checkpoint():
    net, _ = load_model(CKPT17)
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        assert torch.allclose(fuse_conv_bn(net)(x), net(x), rtol=0, atol=1e-5)


def test_json_report_fields(tmp_path, monkeypatch):
    # every network but compiled (inductor's compile takes most of a minute; --compare's list is tested below),
    # and peaks sampled for 0.2 s, not 2: the report's fields and their relations are what is tested here
    monkeypatch.setattr(cli_benchmark, "run_benchmark", functools.partial(run_benchmark, peak_s=0.2))
    networks = "plain,folded,onednn" if onednn.available() else "plain,folded"
    out = tmp_path / "bench.json"
    args = ["benchmark", "--arch", "hrnet-small", "--batch-sizes", "1", "--repeats", "1", "--warmup", "1",
            "--flip", "--chunk", "8", "--network", networks, "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "model", "options", "matmul_peaks", "conv_peak", "model_runs", "pipeline", "notes"}
    assert report["conv_peak"]["gflops"] > 0 and "3x3" in report["conv_peak"]["shape"]
    assert report["pipeline"] == []  # not asked
    assert report["machine"]["torch_threads"] == torch.get_num_threads()
    assert report["model"]["arch"] == "hrnet-small" and report["model"]["weights"].startswith("random")
    assert report["model"]["macs_per_crop"] == count_macs(build_model("hrnet-small", 17))
    assert [p["precision"] for p in report["matmul_peaks"]] == ["fp32"] and report["matmul_peaks"][0]["gflops"] > 0
    networks = networks.split(",")
    assert [run["setting"] for run in report["model_runs"]] == [f"fp32 {n} chunk8 flip" for n in networks]
    for run in report["model_runs"]:
        assert run["batch_size"] == 1 and run["skipped"] is None and run["repeats"] == 1
        assert run["precision"] == "fp32" and run["network"] in networks
        assert set(run["latency_ms"]) == {"p50", "p90", "p99"}
        # achieved = 2 FLOPs x multiply-adds x 2 forwards (flip) x crops/s; share = achieved / sampled peak
        assert run["gflops"] == pytest.approx(2 * report["model"]["macs_per_crop"] * 2 * run["crops_per_s"] / 1e9)
        assert run["share_of_peak"] == pytest.approx(run["gflops"] / run["peak_gflops"])
        assert run["peak_memory_mb"] > 0 and run["max_rel_diff"] < 1e-4
    assert report["model_runs"][0]["max_rel_diff"] == 0.0  # the plain network is the reference


def test_requested_settings_compare_every_network_and_keep_onednn_to_cpu_fp32():
    base = InferenceSettings(device="cpu")
    fp32, bf16 = Precision.FP32, Precision.BF16
    default = requested_settings(base, [fp32, bf16], [Network.AUTO], compare=False)
    assert [(s.precision, s.network) for s in default] == [(fp32, Network.AUTO), (bf16, Network.AUTO)]
    compared = requested_settings(base, [fp32, bf16], [Network.AUTO], compare=True)
    assert [(s.precision, str(s.network)) for s in compared] == [
        (fp32, "plain"), (fp32, "folded"), (fp32, "onednn"), (fp32, "compiled"), (fp32, "auto"),
        (bf16, "plain"), (bf16, "folded"), (bf16, "compiled"), (bf16, "auto"),
    ]  # fmt: skip


def test_auto_resolves_to_onednn_on_cpu_fp32_and_folded_otherwise():
    net, info = build_model("hrnet-small", 17).eval(), ModelInfo("hrnet-small", "coco")
    auto = Predictor.from_model(net, info, InferenceSettings(device="cpu"))
    assert auto.settings.network == (Network.ONEDNN if onednn.available() else Network.FOLDED)
    if runtimes.precision_problem(Backend.TORCH, Precision.BF16, torch.device("cpu")) is None:  # a CPU with bf16 units
        bf16 = Predictor.from_model(net, info, InferenceSettings(device="cpu", precision="bf16"))
        assert bf16.settings.network == Network.FOLDED and bf16.settings.precision == Precision.BF16


def test_pipeline_stages_on_one_sample_image():
    net = build_model("hrnet-small", 17).eval()
    predictor = Predictor.from_model(net, ModelInfo("hrnet-small", "coco"), InferenceSettings(flip=False, device="cpu"))
    samples = sample_images_and_boxes()
    assert len(samples) == 4 and sum(len(xyxy) for _, xyxy in samples) == 118  # the bundled detector boxes
    pipe = bench_pipeline(predictor, samples[:1], repeats=1)
    assert pipe.images == 1 and pipe.crops == len(samples[0][1])
    assert set(pipe.ms_per_crop) == {"decode_image", "crop_warp", "forward", "decode_heatmaps"}
    assert sum(pipe.share.values()) == pytest.approx(1.0)
    assert pipe.crops_per_s == pytest.approx(1e3 / sum(pipe.ms_per_crop.values()), rel=1e-6)


def test_emulated_precision_is_reported_not_run():
    # bf16 on a CPU without native support: 0.3 GFLOP/s would make one w32 batch take hours
    bf16, fp32 = InferenceSettings(precision="bf16"), InferenceSettings()
    reason = skip_reason(bf16, MatmulPeak("bf16", 256, 0.3, 3), 7_645_003_776, 32, budget_s=60)
    assert reason and "0.3 GFLOP/s" in reason
    assert skip_reason(fp32, MatmulPeak("fp32", 2048, 200.0, 20), 7_645_003_776, 32, budget_s=60) is None


def test_fastest_is_the_fastest_setting_that_matches_plain_fp32():
    runs = [
        ModelRun("fp32 plain", "fp32", "plain", 1, crops_per_s=1.0, max_rel_diff=0.0),
        ModelRun("fp32 plain", "fp32", "plain", 32, crops_per_s=2.0),
        ModelRun("fp32 folded", "fp32", "folded", 1, crops_per_s=1.5, max_rel_diff=2e-6),
        ModelRun("fp32 folded", "fp32", "folded", 32, crops_per_s=3.0),
        ModelRun("bf16 folded", "bf16", "folded", 1, crops_per_s=9.0, max_rel_diff=3e-3),  # faster, not the same heatmaps
        ModelRun("bf16 folded", "bf16", "folded", 32, crops_per_s=9.0),
    ]
    best, exact = fastest(runs)
    assert (best.setting, best.batch_size, exact) == ("fp32 folded", 32, True)
    assert fastest(runs[4:]) == (runs[5], False)


def test_settings_label_names_what_changes():
    assert InferenceSettings(network="folded", chunk=8).label == "fp32 folded chunk8 flip"
    assert InferenceSettings(flip=False, chunk=0, precision="bf16").label == "bf16 auto chunkall"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "hrnet-w99"], "architecture 'hrnet-w99' is unknown"),
        (["--layout", "mpii"], "layout 'mpii' is unknown"),
        (["--batch-sizes", "1,x"], "'x' is not a positive integer"),
        (["--batch-sizes", "0"], "'0' is not a positive integer"),
        (["--precision", "fp8"], "choose one of fp32, bf16, fp16"),
        (["--network", "fast"], "choose one of auto, plain"),
        (["--device", "tpu"], "--device tpu: not a device name; valid here: auto"),
        (["--weights", "no/such/file.safetensors"], "no such weights file"),
    ],
)
def test_bad_input_is_a_user_error(args, message):
    result = runner.invoke(app, ["benchmark", "--batch-sizes", "1", *args])
    assert result.exit_code == 1
    assert message in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_user_error():
    result = runner.invoke(app, ["benchmark", "--device", "cuda"])
    assert result.exit_code == 1 and "no CUDA device" in result.output
