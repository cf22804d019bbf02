import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
from digitgan.training import checkpoints

ROOT = Path(__file__).resolve().parent.parent


def _args(overrides):
    out = []
    for k, v in overrides.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


@pytest.fixture
def trained(tiny, tmp_path):
    """A 4-step run's checkpoint dir, trained through the CLI's default command (no subcommand)."""
    assert dcgan.main(_args(tiny())) == 0
    return tmp_path / "ck"


def test_sample_png_and_npy_are_deterministic_per_seed(trained, tmp_path):
    a, b, c = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy"
    for out, seed in ((a, 0), (b, 0), (c, 1)):
        assert dcgan.main(["sample", "--checkpoint-dir", str(trained), "--num", "5", "--seed", str(seed),
                           "--out", str(out), "--device", "cpu"]) == 0
    x = np.load(a)
    assert x.shape == (5, 1, 32, 32) and x.dtype == np.float32 and np.abs(x).max() <= 1
    assert np.array_equal(x, np.load(b)) and not np.array_equal(x, np.load(c))
    png = tmp_path / "g.png"
    assert dcgan.main(["sample", "--checkpoint", str(trained / "ckpt_0000002.pt"), "--num", "64",
                       "--out", str(png)]) == 0
    assert Image.open(png).size == (274, 274)


def test_data_command_reports_what_it_has(cache_dir, capsys):
    assert dcgan.main(["data", "--cache-dir", cache_dir]) == 0
    out = capsys.readouterr().out
    assert "mnist train: 60000 images 28x28, 10 classes" in out and "mnist test: 10000" in out


@pytest.mark.parametrize("argv,message", [
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--steps", "-5"], "--steps must be a positive integer"),
    (["--steps", "ten"], "invalid int value"),
    (["--preset", "big"], "--preset must be one of dcgan, seed"),
    (["--lr-g", "0"], "--lr-g must be positive"),
    (["--device", "tpu"], "--device must be one of"),
    (["--batch-size", "70000"], "larger than the dataset"),
    (["--dataset", "mnist", "--data-dir", "{tmp}/nowhere"], "has no train-images-idx3-ubyte"),
    (["--checkpoint-dir", "{tmp}/afile/ck"], "--checkpoint-dir .* is not a writable directory"),
    (["--sample-dir", "{tmp}/afile/s"], "--sample-dir .* is not a writable directory"),
    (["sample", "--checkpoint-dir", "{tmp}/empty"], "no checkpoint in"),
    (["sample", "--checkpoint", "{tmp}/missing.pt"], "does not exist"),
    (["sample", "--checkpoint", "{tmp}/afile"], "cannot be used"),
    (["sample", "--num", "0"], "must be a positive integer"),
    (["sample", "--out", "{tmp}/grid.jpg"], "must end in .png"),
    (["sample", "--best", "--checkpoint-dir", "{tmp}/empty"], "no best.pt in"),
    (["evaluate", "--best", "--checkpoint", "{tmp}/afile"], "--best and --checkpoint"),
    (["animate", "--sample-dir", "{tmp}/empty"], "no grids"),
    (["animate", "--fps", "-2"], "--fps: must be above 0"),
    (["animate", "--fps", "0"], "--fps: must be above 0"),
    (["animate", "--out", "{tmp}/afile/progress.gif"], "does not exist"),
    (["animate", "--out", "/proc/progress.gif"], "cannot write in /proc/"),
    (["animate", "--out", "{tmp}/progress.png"], "must end in .gif"),
    (["interpolate", "--checkpoint-dir", "{tmp}/empty", "--out", "{tmp}/walk.png"], "no checkpoint in"),
    (["interpolate", "--out", "{tmp}/afile/walk.png"], "does not exist"),
    (["interpolate", "--out", "/proc/walk.png"], "cannot write in /proc/"),
    (["interpolate", "--out", "{tmp}/walk.gif"], "must end in .png"),
    (["interpolate", "--steps", "1", "--out", "{tmp}/walk.png"], "--steps must be at least 2"),
    (["interpolate", "--rows", "0"], "must be a positive integer"),
])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, cache_dir, capsys, argv, message):
    (tmp_path / "afile").write_text("precious")
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] not in dcgan.COMMANDS:
        argv = ["train", "--checkpoint-dir", str(tmp_path / "ck"), "--sample-dir", str(tmp_path / "s"),
                "--cache-dir", cache_dir, "--steps", "1"] + argv
    before = sorted(p.name for p in tmp_path.rglob("*"))
    try:
        code = dcgan.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert (tmp_path / "afile").read_text() == "precious"
    assert not any(checkpoints.list_checkpoints(d) for d in tmp_path.rglob("*") if d.is_dir())
    # nothing removed; the checkpoint/sample dirs themselves may have been created empty
    assert set(before) <= {p.name for p in tmp_path.rglob("*")}


def test_exit_code_2_from_a_real_process(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "dcgan.py"), "--batch-size", "0",
                           "--checkpoint-dir", str(tmp_path / "ck")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "--batch-size" in done.stderr
    assert list(tmp_path.iterdir()) == []  # not even the checkpoint dir was made


def test_evaluate_prints_the_table_writes_every_key_and_repeats_exactly(trained, tmp_path, capsys):
    out1, out2 = tmp_path / "e1.json", tmp_path / "e2.json"
    for out in (out1, out2):
        assert dcgan.main(["evaluate", "--checkpoint-dir", str(trained), "--num", "500", "--json", str(out),
                           "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "not Inception" in table and "fid" in table and "real data" in table
    import json
    result = json.loads(out1.read_text())
    keys = {"fid", "kid", "kid_std", "inception_score", "precision", "recall", "density", "coverage",
            "classes_covered", "class_kl", "mean_confidence"}
    assert keys | {"num_samples", "step", "features", "real_reference"} <= set(result)
    assert keys <= set(result["real_reference"]) and result["num_samples"] == 500 and result["step"] == 4
    assert result["features"].startswith("mnist-evaluator:") and result["headline"] == "fid"
    assert result["real_images"] == 10_000 and result["classifier_accuracy"] > 0.99
    assert result == json.loads(out2.read_text())  # fixed seed: two evaluations agree exactly


def test_evaluate_in_a_torchscript_feature_space_of_ones_own(trained, tmp_path, capsys):
    """--features FILE.pt: the user's network gives the features, named by its file's hash; a file that is no
    TorchScript is one line and exit 2."""
    import hashlib
    import json

    class Pooled(torch.nn.Module):  # a stand-in for a user's feature network: 4x4 average-pooled pixels
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
    net = tmp_path / "pooled.pt"
    torch.jit.script(Pooled()).save(str(net))
    out = tmp_path / "e.json"
    assert dcgan.main(["evaluate", "--checkpoint-dir", str(trained), "--num", "200", "--features", str(net),
                       "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["features"] == f"torchscript:{hashlib.sha256(net.read_bytes()).hexdigest()[:12]}"
    assert result["real_reference"]["features"] == result["features"] and "inception_score" not in result
    assert "the features of pooled.pt (TorchScript)" in capsys.readouterr().out
    (tmp_path / "junk.pt").write_text("not a network")
    assert dcgan.main(["evaluate", "--checkpoint-dir", str(trained), "--features", str(tmp_path / "junk.pt")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "not a TorchScript module" in line


@pytest.mark.needs(Path("/usr/share/datasets/fashion-mnist").is_dir(), "Fashion-MNIST",
                   "apt-get install dataset-fashion-mnist")
def test_evaluate_a_seed_preset_fashion_run(tiny, tmp_path, capsys):
    assert dcgan.main(_args(tiny(preset="seed", width=2, dataset="fashion-mnist", steps=2))) == 0
    out = tmp_path / "fashion.json"
    assert dcgan.main(["evaluate", "--checkpoint-dir", str(tmp_path / "ck"), "--num", "300", "--json", str(out)]) == 0
    import json
    result = json.loads(out.read_text())
    assert result["dataset"] == "fashion-mnist" and result["step"] == 2
    assert result["real_reference"]["fid"] < result["fid"]
    assert "fashion-mnist evaluator" in capsys.readouterr().out
