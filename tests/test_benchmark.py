"""The benchmark (tools/benchmark.py, dfkd_jax.bench) and its PyTorch round.

The PyTorch round must compute what the JAX round computes: with the same weights
(converted with ``dfkd_jax.convert``) and the same latent batches, one whole DFAD round
gives the same generator loss, the same student losses and the same parameters after
the round in both frameworks; the PyTorch Wide ResNet gives the JAX one's logits.
The suite's table and Markdown writer are checked on synthetic reports (no timing).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os

import jax
import numpy as np
import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

from dfkd_jax import bench  # noqa: E402
from dfkd_jax.bench import bench_config, format_report, random_teacher, run_benchmark, torch_round  # noqa: E402
from dfkd_jax.bench import peak as peak_lib  # noqa: E402
from dfkd_jax.convert import convert_state_dict  # noqa: E402
from dfkd_jax.core import sharding  # noqa: E402
from dfkd_jax.engine.distiller import Distiller  # noqa: E402
from dfkd_jax.core.state import ModelState  # noqa: E402
from dfkd_jax.engine.state import DistillState  # noqa: E402
from dfkd_jax.models import build_model  # noqa: E402
from dfkd_jax.teacher import Teacher  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, NZ, NGF = 8, 16, 4


def _load_cli():
    spec = importlib.util.spec_from_file_location("benchmark_tool", os.path.join(REPO, "tools", "benchmark.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow  # ~20 s: compiles a bf16 round; the pieces it wires are tested below
def test_benchmark_cli_tiny(tmp_path, capsys):
    # bfloat16 on both sides and the peak measurement: the flags of the suite, on one tiny case
    path = tmp_path / "bench.json"
    report = _load_cli().main(["--batch", str(B), "--ngf", str(NGF), "--nz", str(NZ), "--rounds", "2",
                               "--warmup", "1", "--threads", "1", "--quiet", "--json", str(path),
                               "--dtype", "bfloat16", "--torch-autocast", "bfloat16", "--peak", "--peak-size", "32"])
    out = capsys.readouterr().out
    assert "ratio torch/jax" in out and "median s/round" in out
    assert "peak memory" in out and "% of matmul peak" in out and "JAX bfloat16" in out
    saved = json.loads(path.read_text())
    for side in ("jax", "torch"):
        assert len(saved[side]["round_s"]) == 2
        assert saved[side]["median_s"] > 0 and saved[side]["mean_s"] > 0 and saved[side]["images_per_s"] > 0
        assert all(np.isfinite(v) for v in saved[side]["last_losses"].values())
    assert saved["jax"]["compile_s"] > 0
    assert saved["ratio_torch_over_jax"] > 0
    assert saved["images_per_round"] == B * 6
    assert saved["config"]["order"] == ["jax", "torch", "torch", "jax"]
    assert saved["versions"]["jax"] == jax.__version__ and saved["versions"]["torch"] == torch.__version__
    if saved["jax"]["flops_per_round"] is not None:  # XLA:CPU implements the cost analysis
        assert saved["jax"]["flops_per_round"] > 0 and saved["jax"]["flops_per_s"] > 0
    assert saved["torch"]["flops_per_round"] > 0
    assert report["config"] == saved["config"]
    assert saved["config"]["dtype"] == "bfloat16" and saved["config"]["torch_autocast"] == "bfloat16"
    assert saved["config"]["teacher_dtype"] == "float32"

    # memory: XLA's buffers of the compiled round (and the allocator's peak where the backend keeps one)
    jm, tm = saved["jax"]["memory"], saved["torch"]["memory"]
    assert set(jm["xla"]) >= {"argument_bytes", "output_bytes", "temp_bytes", "alias_bytes", "total_bytes"}
    assert jm["peak_source"] in ("xla", "dev", None)
    if jm["xla"]["total_bytes"] is not None:
        assert jm["xla"]["total_bytes"] > 0 and jm["xla"]["argument_bytes"] > 0
    if jax.default_backend() == "cpu":
        assert jm["device"] is None and jm["peak_source"] == "xla"
    assert jm["host_max_rss_increase_bytes"] >= 0 and tm["host_max_rss_increase_bytes"] >= 0
    assert tm["peak_source"] == "rss" and tm["peak_bytes"] == tm["host_max_rss_increase_bytes"]
    assert tm["cuda_max_allocated_bytes"] is None

    # the peaks, per framework and dtype
    for framework in ("jax", "torch"):
        for dtype in ("float32", "bfloat16"):
            entry = saved["peaks"][framework][dtype]
            assert entry["n"] == 32 and entry["dtype"] == dtype and entry["flops_per_s"] > 0


def test_benchmark_rejects_bad_arguments():
    with pytest.raises(ValueError, match="TEACHER:STUDENT"):
        run_benchmark(pair="lenet5", rounds=1)
    with pytest.raises(ValueError, match="dfad"):
        bench_config(method="dafl")
    with pytest.raises(ValueError, match="Valid names"):
        torch_round.build_model("vgg8")


def _torch_models(seed=0):
    torch.manual_seed(seed)
    teacher = torch_round.build_model("lenet5", 10, 1)
    student = torch_round.build_model("lenet5_half", 10, 1)
    generator = torch_round.build_generator(NZ, NGF, 1, 32)
    with torch.no_grad():  # a teacher whose logits differ clearly from the student's
        for p in teacher.parameters():
            p.mul_(3.0)
    return teacher, student, generator


def _model_state(variables, tx):
    params = variables["params"]
    return ModelState(params=params, batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def _assert_close_tree(jax_tree, torch_tree, rtol, atol, skip=(), norm_rtol=None):
    """Elementwise ``allclose`` per leaf, and optionally ``|a - b| / |b| <= norm_rtol`` per leaf.

    The elementwise tolerance must allow for the odd unit whose pre-activation sits at a
    ReLU kink, where rounding differences flip its gradient; the norm check stays tight.
    """
    flat_j = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(jax_tree)}
    flat_t = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(torch_tree)}
    assert flat_j.keys() == flat_t.keys()
    for k in flat_j:
        if any(s in k for s in skip):
            continue
        np.testing.assert_allclose(flat_j[k], flat_t[k], rtol=rtol, atol=atol, err_msg=k)
        if norm_rtol is not None:
            assert np.linalg.norm(flat_j[k] - flat_t[k]) <= norm_rtol * np.linalg.norm(flat_t[k]), k


@pytest.mark.slow  # 14 s, out of the default suite to keep it under 10 minutes on 2 cores
def test_torch_round_computes_the_jax_round():
    cfg = bench_config(batch=B, ngf=NGF, nz=NZ)
    t_mod, s_mod, g_mod = _torch_models()
    t_vars = convert_state_dict(t_mod.state_dict(), "lenet5")
    s_vars = convert_state_dict(s_mod.state_dict(), "lenet5_half")
    g_vars = convert_state_dict(g_mod.state_dict(), "dafl")
    meta = random_teacher("lenet5").meta
    d = Distiller.from_config(cfg, Teacher(build_model("lenet5", 10), t_vars, meta))
    from dfkd_jax.synthesis.online import OnlineState
    state = DistillState(round=np.zeros((), np.int32), rng=np.asarray(jax.random.PRNGKey(0)),
                         synth=OnlineState(generator=_model_state(g_vars, d.tx_g)), student=_model_state(s_vars, d.tx_s))
    state = sharding.replicate_tree(state, d.mesh)  # as Distiller.init makes it (without compiling an init)

    # the latent batches the JAX round draws (engine/round.py: fold_in(rng, round), one key per step)
    key = jax.random.fold_in(state.rng, state.round)
    keys = jax.random.split(key, 1 + int(cfg.student.steps))
    zs = [np.array(jax.random.normal(k, (B, NZ), np.float32)) for k in keys]

    r = torch_round.DFADRound.from_config(cfg, t_mod, s_mod, g_mod)
    out = r.round(zs=[torch.from_numpy(z) for z in zs])
    new_state, metrics = d.round(state)
    metrics = jax.device_get(metrics)

    g_loss, s_losses = float(out["generator/loss"]), out["student/loss"].numpy()
    assert abs(g_loss) > 1e-2 and s_losses.shape == (5,)
    np.testing.assert_allclose(float(metrics["generator/loss"]), g_loss, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["student/loss"]), float(np.mean(s_losses)), rtol=1e-4)

    # the parameters after the round: 5 SGD (momentum, weight decay) steps on S, one Adam step on G
    s_after = convert_state_dict(r.student.state_dict(), "lenet5_half")["params"]
    _assert_close_tree(jax.device_get(new_state.student.params), s_after, rtol=1e-4, atol=1e-5, norm_rtol=1e-5)
    g_after = convert_state_dict(r.generator.state_dict(), "dafl")["params"]
    # Biases right before a train-mode BatchNorm have a zero gradient up to rounding, which Adam's
    # first step (about lr * sign(g)) turns into noise of size lr; they do not change any output.
    before_bn = ("'l1_0']['bias'", "'conv_blocks1_0']['bias'", "'conv_blocks2_0']['bias'")
    _assert_close_tree(jax.device_get(new_state.generator.params), g_after, rtol=1e-4, atol=1e-5, skip=before_bn,
                       norm_rtol=1e-5)
    _assert_close_tree(jax.device_get(new_state.generator.params), g_after, rtol=0, atol=2.01e-3)


def test_format_report_handles_missing_flops():
    report = {
        "config": {"method": "dfad", "teacher": "a", "student": "b", "ngf": 4, "nz": 8, "input_shape": [32, 32, 1],
                   "batch": 8, "generator_steps": 1, "student_steps": 5, "rounds": 2, "blocks": 2, "warmup": 0},
        "device": {"jax_backend": "cpu", "jax_device_count": 1, "jax_device_kind": "cpu", "torch_device": "cpu",
                   "torch_device_name": "x", "torch_threads": 1},
        "versions": {"jax": "0", "torch": "0"}, "images_per_round": 48, "ratio_torch_over_jax": 2.0,
        "jax": {"compile_s": 1.0, "median_s": 1.0, "mean_s": 1.0, "images_per_s": 48.0, "flops_per_round": None,
                "flops_per_s": None},
        "torch": {"median_s": 2.0, "mean_s": 2.0, "images_per_s": 24.0, "flops_per_round": None, "flops_per_s": None},
    }
    text = format_report(report)
    assert "2.000" in text and "GFLOP/s" in text


def test_matmul_peak_is_a_positive_finite_rate_on_cpu():
    for dtype in ("float32", "bfloat16"):
        r = peak_lib.jax_matmul_peak(dtype, n=32, repeats=2, target_s=1e-3, max_iters=4)
        assert r["backend"] == "cpu" and r["n"] == 32 and r["dtype"] == dtype
        assert math.isfinite(r["flops_per_s"]) and r["flops_per_s"] > 0
        assert r["median_flops_per_s"] <= r["flops_per_s"] * (1 + 1e-9)  # the best repeat is the peak
        assert r["flops_per_product"] == 2 * 32**3
        t = peak_lib.torch_matmul_peak(dtype, n=32, device="cpu", repeats=2, target_s=1e-3, max_iters=4)
        assert t["backend"] == "cpu" and math.isfinite(t["flops_per_s"]) and t["flops_per_s"] > 0
    assert peak_lib.default_size("gpu") == 8192 and peak_lib.default_size("cpu") <= 2048
    with pytest.raises(ValueError, match="dtype"):
        peak_lib.jax_matmul_peak("float16", n=8)


def test_xla_memory_of_a_compiled_function():
    f = jax.jit(lambda a, b: (a @ b, a + 1.0), donate_argnums=(0,))
    x = jax.numpy.ones((16, 16))
    m = bench.xla_memory(f.lower(x, x).compile())
    if m["argument_bytes"] is None:
        pytest.skip("this backend has no memory analysis")
    assert m["argument_bytes"] >= 2 * 16 * 16 * 4 and m["output_bytes"] >= 2 * 16 * 16 * 4  # (+ tuple tables)
    assert m["total_bytes"] == m["argument_bytes"] + m["output_bytes"] + m["temp_bytes"] - (m["alias_bytes"] or 0)

    class NoAnalysis:
        def memory_analysis(self):
            return None

    assert bench.xla_memory(NoAnalysis())["total_bytes"] is None
    assert bench.max_rss_bytes() > 0


def test_torch_wide_resnet_matches_the_jax_one():
    torch.manual_seed(0)
    m = torch_round.build_model("wrn16_1", 10, 3)
    with torch.no_grad():  # BatchNorm layers that do something in eval mode
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    m.eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = m(torch.from_numpy(x)).numpy()
    variables = convert_state_dict(m.state_dict(), "wrn16_1")  # the key names are the JAX model's
    model = build_model("wrn16_1", 10)
    logits, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)


def _synthetic_report(dtype="float32", autocast=None):
    return {
        "config": {"method": "dfad", "teacher": "lenet5", "student": "lenet5_half", "dataset": "fashion_mnist",
                   "ngf": 16, "nz": 100, "input_shape": [32, 32, 1], "batch": 64, "generator_steps": 1,
                   "student_steps": 5, "rounds": 10, "blocks": 2, "warmup": 2, "dtype": dtype,
                   "teacher_dtype": "float32", "torch_autocast": autocast},
        "device": {"jax_backend": "gpu", "jax_device_count": 1, "jax_device_kind": "Fake GPU 9000",
                   "torch_device": "cuda:0", "torch_device_name": "Fake GPU 9000", "torch_threads": 16,
                   "cpu": "Fake CPU", "cpu_cores": 16, "platform": "Linux", "jax_matmul_precision": None,
                   "torch_settings": {"cudnn_allow_tf32": True}, "env": {}},
        "versions": {"python": "3.11", "jax": "0.11.0", "torch": "2.13.0"}, "images_per_round": 384,
        "ratio_torch_over_jax": 2.5,
        "jax": {"compile_s": 12.0, "median_s": 0.01, "mean_s": 0.011, "images_per_s": 38400.0,
                "flops_per_round": 2e10, "flops_per_s": 2e12, "mesh_devices": 1,
                "memory": {"peak_bytes": 3 * 2**30, "peak_source": "dev", "xla": {"total_bytes": 2**30}}},
        "torch": {"median_s": 0.025, "mean_s": 0.026, "images_per_s": 15360.0, "flops_per_round": 1.8e10,
                  "flops_per_s": 7.2e11, "memory": {"peak_bytes": 5 * 2**20, "peak_source": "cuda"}},
    }


def _synthetic_suite():
    cases = [bench.SuiteCase("dfad", "lenet5:lenet5_half", "fashion_mnist", 64, 16, 100, d)
             for d in ("float32", "bfloat16")] + [bench.SuiteCase(pair="wrn40_2:wrn16_1", dataset="cifar10")]
    reports = {"float32": _synthetic_report(), "bfloat16": _synthetic_report("bfloat16", "bfloat16")}

    def run_case(case):
        if case.pair.startswith("wrn"):
            raise RuntimeError("exit status 1: out of memory")
        return reports[case.dtype]

    peaks = {"jax": {"float32": {"n": 8192, "flops_per_s": 4e13, "median_flops_per_s": 3.9e13, "device": "Fake"},
                     "bfloat16": {"n": 8192, "flops_per_s": 8e13, "median_flops_per_s": 7.9e13, "device": "Fake"}},
             "torch": {"float32": {"n": 8192, "flops_per_s": 2e13, "median_flops_per_s": 1.9e13, "device": "Fake"},
                       "bfloat16": {"error": "RuntimeError: no kernel"}}}
    suite = bench.run_suite(cases, run_case, name="gpu", peaks=peaks, settings={"rounds": 10}, log=lambda m: None)
    suite["command"] = "python tools/benchmark.py --suite gpu --markdown docs/performance.md"
    return suite


def test_suite_table_from_a_synthetic_report():
    suite = _synthetic_suite()
    assert [r["error"] for r in suite["results"]] == [None, None, "RuntimeError: exit status 1: out of memory"]
    rows = bench.suite_rows(suite)
    assert rows[0]["dtype"] == "fp32/fp32" and rows[1]["dtype"] == "bf16/bf16-ac"
    assert rows[0]["jax_fps"] == pytest.approx(2e12) and rows[0]["torch_fps"] == pytest.approx(8e11)
    assert rows[0]["jax_frac_fp32"] == pytest.approx(0.05) and rows[0]["jax_frac_bf16"] == pytest.approx(0.025)
    assert rows[0]["torch_frac"] == pytest.approx(0.04)  # over torch's float32 peak
    assert rows[1]["torch_frac"] is None  # torch's bfloat16 peak failed
    assert rows[0]["jax_mem"] == "3.00 GiB dev" and rows[0]["torch_mem"] == "5.0 MiB cuda"

    text = bench.format_suite_table(suite)
    lines = text.splitlines()
    assert len(lines) == 2 + 3 and "torch/jax" in lines[0] and "jax % fp32 peak" in lines[0]
    assert "dfad lenet5:lenet5_half fashion_mnist b64 ngf16 nz100" in lines[2]
    assert "2.50" in lines[2] and "5.0%" in lines[2] and "2.5%" in lines[2] and "20 G" in lines[2]
    assert "error: RuntimeError: exit status 1: out of memory" in lines[4]
    md = bench.format_suite_table(suite, markdown=True).splitlines()
    assert len(md) == 2 + 3 and all(line.startswith("| ") and line.endswith(" |") for line in md)
    assert len({line.count(" | ") for line in md}) == 1  # every row has every column

    section = bench.suite_markdown(suite)
    assert suite["command"] in section and "Fake GPU 9000" in section and "jax 0.11.0" in section
    assert "| jax | float32 | 8192 | 40 TFLOP/s" in section and "error: RuntimeError: no kernel" in section


def test_suite_cases_and_format_report_with_peaks():
    gpu = bench.suite_cases("gpu")
    assert bench.SuiteCase("dfad", "resnet34:resnet18", "cifar10", 256, 64, 256, "float32") in gpu
    assert bench.SuiteCase("dfad", "resnet34:resnet18", "cifar10", 256, 64, 256, "bfloat16") in gpu
    assert {c.pair for c in gpu} == {"resnet34:resnet18", "wrn40_2:wrn16_1", "lenet5:lenet5_half"}
    assert len(gpu) == 6 and {c.dtype for c in bench.suite_cases("cpu-small")} == {"float32"}
    assert all(c.dtype == "bfloat16" for c in bench.suite_cases("cpu-small", ["bfloat16"]))
    with pytest.raises(ValueError, match="suite"):
        bench.suite_cases("tpu")
    for case in gpu + bench.suite_cases("cpu-small"):  # every suite model exists on both sides
        for arch in case.pair.split(":"):
            assert arch in torch_round.ARCHITECTURES

    report = _synthetic_report()
    report["peaks"] = _synthetic_suite()["peaks"]
    text = format_report(report)
    assert "% of matmul peak" in text and "5.0%" in text and "3.00 GiB dev" in text


def test_markdown_writer_replaces_only_its_section(tmp_path):
    path = str(tmp_path / "docs" / "performance.md")
    first = bench.write_markdown_section(path, "cpu-small", "CPU table one")
    assert first.startswith("# Performance\n") and "CPU table one" in first
    with open(path, "a") as f:
        f.write("\nNotes written by hand.\n")
    bench.write_markdown_section(path, "gpu", "GPU table")
    text = bench.write_markdown_section(path, "cpu-small", "CPU table two")
    assert "CPU table one" not in text and "CPU table two" in text and "GPU table" in text
    assert "Notes written by hand." in text and text.count("# Performance") == 1
    assert text.index("CPU table two") < text.index("Notes written by hand.") < text.index("GPU table")
    with open(path) as f:
        assert f.read() == text
    again = bench.write_markdown_section(path, "cpu-small", "CPU table two")
    assert again == text  # idempotent

    # a file without the markers keeps all of its text and gets the section at the end
    other = tmp_path / "other.md"
    other.write_text("# Mine\n\nIntro.\n")
    out = bench.write_markdown_section(str(other), "gpu", "T")
    assert out.startswith("# Mine\n\nIntro.\n") and out.rstrip().endswith("<!-- benchmark-suite:gpu:end -->")


def test_cpu_speed_alternates_variants_and_tabulates():
    """The cpu-speed suite's order (A B C, C B A, ...), its medians, ratios and Markdown, on toy variants."""
    from dfkd_jax.bench import cpu_speed

    calls = []

    def variant(name, seconds):
        def run():
            calls.append(name)
            return seconds
        return cpu_speed.Variant(name, run, compile_s=1.0 if name != "torch" else None, xla_bytes=2**20)

    variants = [variant("xla", 4.0), variant("dfkd_jax", 1.0), variant("torch", 2.0)]
    times = cpu_speed.alternate(variants, reps=3, warmup=1, log=lambda m: None)
    assert calls == ["xla", "dfkd_jax", "torch",  # warmup
                     "xla", "dfkd_jax", "torch", "torch", "dfkd_jax", "xla", "xla", "dfkd_jax", "torch"]
    result = cpu_speed._result("toy conv", "call", 8e9, variants, times)
    report = {"date": "2026-12-01T00:00:00+00:00", "cpu": "test cpu", "cores": 2, "torch_threads": 2,
              "loadavg_1min": [0.1, 0.2], "versions": {"jax": "x", "torch": "y"}, "reps": 3, "warmup": 1,
              "cases": [dataclasses.asdict(result)]}
    row = cpu_speed.cpu_speed_rows(report)[0]
    assert row[:7] == ["toy conv", "call", "4.000", "1.000", "2.000", "4.00x", "2.00x"]
    assert row[7] == "2.0 / 8.0 / 4.0"  # GFLOP/s before / after / torch
    md = cpu_speed.cpu_speed_markdown(report, "python tools/benchmark.py --suite cpu-speed")
    assert "| toy conv | call | 4.000 | 1.000 | 2.000 | 4.00x | 2.00x |" in md
    assert len(cpu_speed.method_configs()) >= 7  # every method's Fashion-MNIST config
