"""export: generator.onnx run in onnxruntime against PyTorch (both presets and a conditional model), the
safetensors weights loaded by load_generator, the bad input, and serve."""
import http.client
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dcgan
from digitgan.config import resolve
from digitgan.nets.networks import build_models
from digitgan.share.samples import load_generator
from runs import EXPORT_KINDS as KINDS

DCGAN = str(Path(__file__).resolve().parent.parent / "dcgan.py")
def _trained_generator(ck):
    """The sampling generator exactly as trained: the weight average, unfolded, in eval mode."""
    state = torch.load(sorted(ck.glob("ckpt_*.pt"))[-1], weights_only=True)
    cfg = resolve({}, state["config"])
    G, _ = build_models(cfg)
    G.load_state_dict(state.get("generator_ema", state["generator"]))
    return G.eval(), cfg


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_matches_pytorch_on_the_same_noise(exported, kind):
    import onnxruntime
    ck, site = exported[kind]
    G, cfg = _trained_generator(ck)
    session = onnxruntime.InferenceSession(str(site / "generator.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 37):  # the batch is dynamic
        z = torch.randn(n, cfg.z_dim, generator=torch.Generator().manual_seed(n))
        feeds, labels = {"z": z.numpy()}, None
        if cfg.conditional == "on":
            labels = torch.arange(n) % 10
            feeds["label"] = labels.numpy()
        with torch.no_grad():
            expected = (G(z) if labels is None else G(z, labels)).numpy()
        got = session.run(["images"], feeds)[0]
        assert got.shape == (n, 1, 32, 32)
        assert np.abs(got - expected).max() <= 1e-4
    assert sorted(i.name for i in session.get_inputs()) == (["label", "z"] if cfg.conditional == "on" else ["z"])


@pytest.mark.parametrize("kind", ["dcgan", "conditional", "spectral-norm"])
def test_safetensors_load_without_the_checkpoint(exported, kind):
    ck, site = exported[kind]
    meta = json.loads((site / "generator.json").read_text())
    last = KINDS[kind].get("steps", 4)
    assert meta["step"] == last and meta["config"]["conditional"] == ("off" if kind == "dcgan" else "on")
    G, cfg, step = load_generator(checkpoint=str(site / "generator.safetensors"), device="cpu")
    H, _, _ = load_generator(str(ck), device="cpu")
    z, y = torch.randn(5, cfg.z_dim), (None if kind == "dcgan" else torch.arange(5))
    with torch.no_grad():
        a, b = (G(z) if y is None else G(z, y)), (H(z) if y is None else H(z, y))
    assert step == last and torch.equal(a, b)


def test_the_folder_holds_the_page_its_runtime_and_the_record(exported):
    _, site = exported["conditional"]
    for name in ("index.html", "page.js", "style.css", "ort.wasm.min.js", "ort-wasm-simd-threaded.wasm",
                 "ort-wasm-simd-threaded.mjs", "run.json", "grids/step_0000040.png", "progress.gif", "real.png"):
        assert (site / name).is_file(), name
    run = json.loads((site / "run.json").read_text())
    assert [g["step"] for g in run["grids"]] == [20, 40]  # (its sample_every and steps)
    assert run["fixed"]["n"] == 100 and run["fixed"]["labels"] == [c for c in range(10) for _ in range(10)]
    assert len(run["fixed"]["z"]) == 100 * run["config"]["z_dim"]


def test_bad_input_is_one_line_and_exit_2(exported, tmp_path, capsys):
    ck, site = exported["dcgan"]
    assert dcgan.main(["export", "--checkpoint-dir", str(tmp_path / "none"), "--out", str(tmp_path / "s")]) == 2
    assert "no checkpoint in" in capsys.readouterr().err and not (tmp_path / "s").exists()
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*")}
    assert dcgan.main(["export", "--checkpoint-dir", str(ck), "--out", str(site)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not empty: pass --force" in err
    assert {p: p.stat().st_mtime_ns for p in site.rglob("*")} == before
    assert dcgan.main(["serve", str(tmp_path)]) == 2
    assert "has no index.html" in capsys.readouterr().err


def test_serve_shows_only_the_folder_with_the_right_types(exported, tmp_path):
    site = shutil.copytree(exported["dcgan"][1], tmp_path / "site")  # a copy: links are added to it
    (site.parent / "secret.txt").write_text("not for the web")
    (site / "etclink").symlink_to("/etc")  # a link out of the folder is not followed
    (site / "alias").symlink_to(site / "grids")  # one that stays inside is
    proc = subprocess.Popen([sys.executable, DCGAN, "serve", str(site), "--port", "0"], stdout=subprocess.PIPE,
                            text=True)
    try:
        m = re.match(r"serving .* at http://127\.0\.0\.1:(\d+)/", proc.stdout.readline())
        assert m, "serve prints its URL, on 127.0.0.1 by default"

        def get(path):
            conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=10)
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.getheader("Content-Type"), r.read()
        status, kind, body = get("/ort-wasm-simd-threaded.wasm")
        assert status == 200 and kind == "application/wasm" and body[:4] == b"\0asm"
        assert get("/index.html")[0] == 200 and get("/run.json")[1] == "application/json"
        for outside in ("/../secret.txt", "/%2e%2e/secret.txt", "/grids/../../secret.txt", "//etc/passwd",
                        "/etclink/passwd", "/etclink/"):
            status, _, body = get(outside)
            assert status == 404 and b"not for the web" not in body and b"root:" not in body, outside
        assert get("/alias/step_0000004.png")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
