"""The Python API (digitgan.train, load, evaluate; Run, Generator): what the command line does, from Python."""
import json
from pathlib import Path

import pytest
import torch

import digitgan
from digitgan.errors import UsageError


def test_train_returns_the_run_and_load_draws_the_classes_asked_for(tiny):
    run = digitgan.train(**tiny(conditional="on"))
    assert isinstance(run, digitgan.Run) and run.config.conditional == "on" and run.config.steps == 4
    assert [r["step"] for r in run.metrics()] == [1, 2, 3, 4]
    assert [s for s, _ in run.grids()] == [2, 4] and [p.name for p in run.checkpoints()][-1] == "ckpt_0000004.pt"
    assert digitgan.Run(str(run.dir)).metrics() == run.metrics()  # a run trained earlier, opened by its directory
    G = digitgan.load(run)  # a Run goes wherever a run directory goes
    assert isinstance(G, digitgan.Generator) and G.step == 4 and G.conditional
    sevens = G.sample(6, classes=7, seed=3)
    assert sevens.shape == (6, 1, 32, 32) and sevens.abs().max() <= 1
    assert torch.equal(sevens, G.sample(6, classes="7", seed=3))  # the same seed, the same images
    assert not torch.equal(sevens, G.sample(6, classes=3, seed=3))  # the class matters
    mixed = G.sample(3, classes=[7, 3, 7], seed=3)  # one class per image (other batch sizes: other rounding)
    threes = G.sample(3, classes=3, seed=3)
    assert torch.allclose(mixed[[0, 2]], G.sample(3, classes=7, seed=3)[[0, 2]], atol=1e-6)
    assert torch.allclose(mixed[1], threes[1], atol=1e-6) and (mixed[0] - threes[0]).abs().max() > 1e-5
    assert torch.equal(G.labels(20), torch.arange(10).repeat_interleave(2))  # no class: a balanced set
    with pytest.raises(UsageError, match="mnist has the classes 0-9"):
        G.sample(2, classes="sneaker")
    with pytest.raises(UsageError, match="2 classes for 3 images"):
        G.sample(3, classes=[1, 2])


def test_load_reads_a_checkpoint_file_or_best_and_refuses_a_class_to_an_unconditional_model(shared_run):
    ck = shared_run["checkpoint_dir"]
    newest, first = digitgan.load(ck), digitgan.load(f"{ck}/ckpt_0000002.pt")
    assert (newest.step, first.step) == (4, 2) and not newest.conditional
    best = digitgan.load(ck, best=True)
    scored = {r["step"]: r["fid"] for r in digitgan.Run(ck).metrics() if r["fid"] != ""}
    assert sorted(scored) == [2, 4] and best.step == min(scored, key=scored.get)  # the lowest FID measured
    same_step = digitgan.load(f"{ck}/ckpt_{best.step:07d}.pt")
    assert torch.equal(best.sample(4, seed=1), same_step.sample(4, seed=1))  # its weights, not the newest's
    z = newest.noise(4, seed=1)
    assert torch.equal(newest.draw(z), newest.sample(4, seed=1)) and not torch.equal(newest.draw(z), first.draw(z))
    with pytest.raises(UsageError, match="trained without --conditional on"):
        newest.sample(2, classes=7)
    with pytest.raises(UsageError, match="best=True reads a run directory"):
        digitgan.load(f"{ck}/ckpt_0000002.pt", best=True)


def test_evaluate_takes_a_run_or_a_generator_and_gives_the_same_figures(shared_run):
    by_path = digitgan.evaluate(shared_run["checkpoint_dir"], num=200, device="cpu")
    by_generator = digitgan.evaluate(digitgan.load(shared_run["checkpoint_dir"], device="cpu"), num=200)
    assert by_path == by_generator and by_path["step"] == 4 and by_path["num_samples"] == 200
    # beside them the real-data reference the run recorded, and in the feature space it names
    recorded = json.loads((Path(shared_run["checkpoint_dir"]) / "real_reference.json").read_text())
    assert by_path["real_reference"] == {k: v for k, v in recorded.items() if k not in ("eval_num", "headline")}
    assert by_path["features"] == recorded["features"] and by_path["headline"] == recorded["headline"] == "fid"
