"""The CUDA path as a user meets it: both presets, plain and conditional, with the `auto` defaults (float32 eager,
channels_last, data and noise on the device: read back from the line the trainer prints), and the default preset
with bf16 autocast and torch.compile asked for; train, resume (Adam's step counts go on from the checkpoint's),
sample, evaluate, export, with the pictures, the figures and the exported ONNX model of the same checkpoint
agreeing with the CPU's; a resume that repeats bit for bit under --deterministic on; torchrun with NCCL.

Skipped where there is no CUDA. bench/gpu.py runs this module on the GPU machine, and its --dry-run runs it on
the CPU with a few steps (DCGAN_TEST_DEVICE=cpu, DCGAN_TEST_STEPS), so that the module itself is known to work
before GPU time is spent on it; there `auto` means the CPU's defaults, the evaluations are smaller, and the
torchrun launch is left to tests/test_distributed.py.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dcgan
import digitgan
from digitgan.training import checkpoints
from runs import cli_flags, same_state, training_state

DEVICE = os.environ.get("DCGAN_TEST_DEVICE", "cuda")
STEPS = int(os.environ.get("DCGAN_TEST_STEPS", "200"))  # a run's steps; it stops halfway and resumes
DCGAN = str(Path(__file__).resolve().parent.parent / "dcgan.py")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL = {"width": 8, "batch_size": 16}  # the dry run on the CPU: every preset this small
# pictures per evaluation in training and for the GPU-against-CPU comparison; the dry run's are fewer (on the CPU
# both sides are the CPU: it shows that the module runs, and KID's subsets of 1,000 would cost most of its time)
EVAL_NUM, COMPARE_NUM = (500, 1000) if DEVICE == "cuda" else (100, 200)
KINDS = {"dcgan": {}, "seed": {"preset": "seed"}, "conditional": {"conditional": "on"},
         # the dry run on the CPU leaves compiling to the GPU: Inductor's C++ build would take minutes here
         "bf16-compile": {"autocast": "bf16", "compile": "on" if DEVICE == "cuda" else "off"}}
# the kinds whose export is checked against onnxruntime: all on the GPU; in the dry run the one with both inputs
# (tests/test_export.py checks every kind's export on the CPU)
EXPORTED = tuple(KINDS) if DEVICE == "cuda" else ("conditional",)


def run_settings(tmp_path, cache_dir, **extra):
    half = max(STEPS // 2, 1)
    return {**dict(steps=half, eval_every=half, eval_num=EVAL_NUM, sample_every=half, checkpoint_every=half,
                   log_every=min(50, half), device=DEVICE, cache_dir=cache_dir,
                   checkpoint_dir=str(tmp_path / "ck"), sample_dir=str(tmp_path / "samples"),
                   **(SMALL if DEVICE == "cpu" else {})), **extra}


# What `auto` decides on each kind of run: float32 eager channels_last, unless the kind asks otherwise
SPEED = {"bf16-compile": f"bf16 autocast, channels_last, {'compiled' if DEVICE == 'cuda' else 'eager'}"}
SAME_PIXELS = 1e-3  # the same checkpoint drawn here and on the CPU, float32 both: kernels round differently


@pytest.mark.parametrize("kind", KINDS)
def test_train_resume_sample_evaluate_export_with_the_auto_defaults(kind, tmp_path, cache_dir, capsys):
    settings = run_settings(tmp_path, cache_dir, **KINDS[kind])
    half = settings["steps"]
    run = digitgan.train(**settings)
    said = capsys.readouterr().err
    assert f"training on {DEVICE} (" in said
    speed = SPEED.get(kind, "float32, channels_last, eager")
    assert f": {speed}, data on the device, noise drawn on the device" in said
    run = digitgan.train(**{**settings, "steps": 2 * half})  # resumes
    assert f"(step {half} of {2 * half})" in capsys.readouterr().err
    # it continued: Adam's step counts went on from the checkpoint's, they did not start over
    cfg = run.config
    state = checkpoints.load(run.checkpoints()[-1])
    assert state["step"] == 2 * half
    assert int(state["opt_d"]["state"][0]["step"]) == 2 * half * cfg.d_steps
    assert int(state["opt_g"]["state"][0]["step"]) == 2 * half * cfg.g_steps
    rows = run.metrics()
    assert rows[-1]["step"] == 2 * half
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"]) for r in rows)
    scored = [r for r in rows if r["fid"] != ""]
    assert len(scored) == 2 and all(math.isfinite(r["fid"]) for r in scored)
    generator = digitgan.load(run, device=DEVICE)
    classes = list(range(10)) * 2 if kind == "conditional" else None
    images = generator.sample(20, classes=classes, seed=1)
    assert images.shape == (20, 1, 32, 32) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, generator.sample(20, classes=classes, seed=1))  # a seed draws the same images
    # the same checkpoint on the CPU: the same pictures and figures (FID within 1 %, the k-NN figures within a
    # few of the samples changing sides)
    on_cpu = digitgan.load(run, device="cpu")
    assert (images - on_cpu.sample(20, classes=classes, seed=1)).abs().max() <= SAME_PIXELS
    figures = digitgan.evaluate(generator, num=COMPARE_NUM, device=DEVICE)
    # (in the dry run both sides are the CPU: the same computation, made once)
    there = digitgan.evaluate(on_cpu, num=COMPARE_NUM, device="cpu") if DEVICE != "cpu" else figures
    assert math.isfinite(figures["fid"]) and 0 <= figures["precision"] <= 1
    assert math.isclose(figures["fid"], there["fid"], rel_tol=0.01)
    assert all(abs(figures[k] - there[k]) <= 0.01 for k in ("precision", "recall", "coverage"))
    if kind not in EXPORTED:
        return
    site = tmp_path / "site"
    assert dcgan.main(["export", "--checkpoint-dir", str(run.dir), "--out", str(site)]) == 0
    # the exported model, run by onnxruntime on the CPU, draws what the trained one draws here
    import onnxruntime

    session = onnxruntime.InferenceSession(str(site / "generator.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"z": generator.noise(20, seed=1).numpy()}
    if kind == "conditional":
        feeds["label"] = generator.labels(20, classes).numpy()
    assert abs(session.run(["images"], feeds)[0] - images.numpy()).max() <= SAME_PIXELS


def test_a_deterministic_resume_repeats_the_uninterrupted_run_bit_for_bit(tmp_path, cache_dir):
    straight = run_settings(tmp_path / "a", cache_dir, deterministic="on", eval_every=0)
    both = {**straight, "steps": 2 * straight["steps"]}
    digitgan.train(**both)
    halves = {**straight, "checkpoint_dir": str(tmp_path / "b" / "ck"), "sample_dir": str(tmp_path / "b" / "s")}
    digitgan.train(**halves)
    digitgan.train(**{**halves, "steps": both["steps"]})
    name = f"ckpt_{both['steps']:07d}.pt"
    assert same_state(training_state(tmp_path / "a" / "ck" / name),
                      training_state(tmp_path / "b" / "ck" / name))


@pytest.mark.skipif(DEVICE == "cpu", reason="the dry run: tests/test_distributed.py launches torchrun with gloo")
def test_torchrun_trains_with_nccl(tmp_path, cache_dir):
    settings = run_settings(tmp_path, cache_dir, eval_every=0, tensorboard="off")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                           DCGAN, "train", "--backend", "nccl", *cli_flags(settings)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"done: step {settings['steps']}" in done.stderr
    assert digitgan.Run(settings["checkpoint_dir"]).checkpoints()[-1].name == f"ckpt_{settings['steps']:07d}.pt"
