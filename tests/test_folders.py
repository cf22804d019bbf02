"""Your own pictures: the emoji of npm's emoji-datasource-google, a folder of real emoji files with broken ones
among them, networks built from the data's shape (32 and 64 pixels, grey and RGB, plain and conditional), and
what follows the shape downstream (grids, the animation, sampling, walks)."""
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
import digitgan
from digitgan.data.freeze import FREEZE_VERSION, holdout_split
from digitgan.data.sources import load_dataset
from digitgan.data.emoji import EMOJI_PACKAGE
from digitgan.quality.evaluator import classifier_file
from digitgan.training.records import read_rows
from runs import cli_flags


def test_the_emoji_come_with_their_categories_on_white_and_a_tenth_held_out(cache_dir):
    data = load_dataset("emoji", cache_dir=cache_dir, resolution=64)
    held = load_dataset("emoji", "test", cache_dir=cache_dir, resolution=64)
    assert data.pixels.shape == (3407, 3, 64, 64) and data.pixels.dtype == torch.uint8  # uint8: 42 MB, not 167
    assert len(held) == data.held_out == 379  # 3,786 in all
    assert data.shape.classes[0] == "Smileys & Emotion" and len(data.shape.classes) == 10
    labels = torch.cat([data.labels, held.labels])
    assert torch.bincount(labels).tolist()[:2] == [169, 2261]  # skin tones are People & Body's
    assert (data.pixels[:, :, 0, 0] == 255).float().mean() > 0.9  # transparent corners shown on white
    train, out = holdout_split(3786)
    assert len(np.intersect1d(train, out)) == 0 and len(np.union1d(train, out)) == 3786
    assert np.array_equal(holdout_split(3786)[1], out)  # the same images held out in every run
    small = load_dataset("emoji", cache_dir=cache_dir, resolution=32, channels=1)
    assert small.pixels.shape == (3407, 1, 32, 32) and small.fingerprint != data.fingerprint


def test_a_jpeg_is_decoded_scaled_yet_as_sharp_as_a_full_decode(cache_dir):
    """A JPEG decodes at a reduced scale (in its DCT) only down to twice the resolution: the picture is
    within a few levels of a full decode's, not a blurred enlargement of a smaller one."""
    from collections import Counter

    from photos import skimage_photos

    from digitgan.data.pictures import read_image, square

    for name, photo in skimage_photos(cache_dir, ["chelsea.png", "coffee.png"]).items():  # 451x300, 600x400
        jpeg = io.BytesIO()
        photo.save(jpeg, "JPEG", quality=92)
        for resolution in (32, 64, 128):
            scaled = read_image(jpeg.getvalue(), resolution, Counter()).astype(int)
            full = square(Image.open(io.BytesIO(jpeg.getvalue())).convert("RGB"), resolution).astype(int)
            assert scaled.shape == full.shape == (resolution, resolution, 3)
            assert np.abs(scaled - full).mean() < 2, (name, resolution)  # at 1x (not 2x) the scale: up to 6.3


def build_folder(root, emoji_files):
    """Two class folders of real emoji, with every kind of odd file among them (the GIF is a palette image too)."""
    cats, flags = root / "cats", root / "flags"
    for folder, category in ((cats, "Animals & Nature"), (flags, "Flags")):
        folder.mkdir(parents=True)
        for name, blob in emoji_files[category]:
            (folder / name).write_bytes(blob)
    sample = Image.open(io.BytesIO(emoji_files["Flags"][0][1])).convert("RGB")
    sample.convert("CMYK").save(flags / "cmyk.jpg")
    sample.convert("P", palette=Image.Palette.ADAPTIVE).save(flags / "palette.png")
    Image.fromarray((np.asarray(sample.convert("L"), np.uint16) * 257)).save(flags / "deep.png")  # 16-bit grey
    frames = [sample, sample.rotate(90), sample.rotate(180)]
    frames[0].save(cats / "anim.gif", save_all=True, append_images=frames[1:])
    (cats / "broken.png").write_bytes(emoji_files["Animals & Nature"][0][1][:300])  # truncated
    (cats / "text.png").write_text("not a picture")
    Image.new("RGB", (1, 1)).save(cats / "tiny.png")
    Image.new("1", (9000, 9000)).save(flags / "bomb.png")  # 81 megapixels in a few kilobytes
    os.symlink("loop.png", cats / "loop.png")  # a link to itself
    os.symlink("..", cats / "up")  # a link to a folder above: not followed
    (root / "readme.txt").write_text("about these pictures")
    sample.save(root / "stray.png")  # beside the class folders
    return 12 + 12 + 4  # the usable ones: the real emoji, the CMYK, palette, 16-bit and animated ones


def test_a_folder_is_frozen_once_with_its_classes_and_every_odd_file_counted(tmp_path, emoji_files, capsys):
    usable = build_folder(tmp_path / "pics", emoji_files)
    cache = str(tmp_path / "cache")
    data = load_dataset(str(tmp_path / "pics"), cache_dir=cache)
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    held = load_dataset(str(tmp_path / "pics"), "test", cache_dir=cache)
    assert data.pixels.shape == (usable - 3, 3, 32, 32) and len(held) == data.held_out == 3  # a tenth held out
    assert data.shape.classes == ("cats", "flags")
    assert torch.bincount(torch.cat([data.labels, held.labels])).tolist() == [13, 15]
    for part in (f"{usable} images used", "1 CMYK", "2 palette", "1 16-bit", "1 animated (its first frame used)",
                 "8 skipped", "2 unreadable (not an image, or damaged)", "1 smaller than 8 pixels on a side",
                 "1 larger than 64 megapixels (decompression-bomb guard)", "1 a symbolic link loop",
                 "1 a link to a folder (not followed)", "1 not an image file (by its name)",
                 "1 beside the class folders", "2 classes: cats 13, flags 15"):
        assert part in summary, part
    again = load_dataset(str(tmp_path / "pics"), cache_dir=cache)  # from the cache: no freezing, no summary
    assert capsys.readouterr().err == "" and torch.equal(again.pixels, data.pixels)
    (tmp_path / "pics" / "flags" / "cmyk.jpg").unlink()  # a changed folder is frozen again
    skipping = [load_dataset(str(tmp_path / "pics"), split, cache_dir=cache) for split in ("train", "test")]
    assert len(skipping[0]) == usable - 1 - 3
    for name in ("cats/broken.png", "cats/text.png", "cats/tiny.png", "flags/bomb.png", "cats/loop.png"):
        (tmp_path / "pics" / name).unlink()
    # every file usable: each picture is written in its place at once, not rewritten in split order after skips
    for split, before in zip(("train", "test"), skipping):
        after = load_dataset(str(tmp_path / "pics"), split, cache_dir=cache)
        assert torch.equal(after.pixels, before.pixels) and torch.equal(after.labels, before.labels)
        assert after.fingerprint == before.fingerprint


def test_an_unreadable_picture_whose_place_is_last_in_the_cache(tmp_path, emoji_files):
    """Pictures are written to their places as they come; when the one whose place ends the file cannot be read,
    the file is short of it, and the pictures are still rewritten in split order."""
    from collections import Counter

    from digitgan.data.freeze import freeze

    blobs = [blob for _, blob in emoji_files["Flags"]]
    _, held = holdout_split(len(blobs))
    blobs[held[-1]] = b"not a picture"  # the last held-out picture: its place is the last in the file
    frozen = freeze([(b, 0) for b in blobs], len(blobs), 32, 0, (), Counter(), "flags", tmp_path / "c", workers=1)
    assert len(frozen.labels) == len(blobs) - 1 and frozen.skipped == Counter({"unreadable (not an image, or damaged)": 1})


def test_a_script_without_a_main_guard_freezes_on_a_pool_and_processes_share_the_mapped_pixels(cache_dir, tmp_path):
    """A user's script that freezes at its top level (no `if __name__ == "__main__":`) is not run again by the
    spawned workers (it would freeze again in each, forever); a second process that maps the cache holds none of
    its pixels as private memory: its pages are the ones the first process mapped."""
    import subprocess
    import sys

    (tmp_path / EMOJI_PACKAGE.file).symlink_to(Path(cache_dir) / EMOJI_PACKAGE.file)
    script = tmp_path / "mine.py"
    script.write_text(
        "import re, sys\n"
        "from digitgan.data.emoji import EMOJI\n"
        "from digitgan.data.sources import load_dataset\n"
        f"EMOJI.frozen(32, 0, {str(tmp_path)!r}, say=print, workers=2)\n"
        f"data = load_dataset('emoji', cache_dir={str(tmp_path)!r}, resolution=32)\n"
        "print('sum', int(data.pixels.sum()))  # every page read\n"
        "maps = open('/proc/self/smaps').read().split('\\n')\n"
        f"at = next(i for i, line in enumerate(maps) if line.endswith('emoji-{FREEZE_VERSION}-32-0.pixels'))\n"
        "fields = dict(re.match(r'(\\w+):\\s+(\\d+) kB', line).groups() for line in maps[at + 1 : at + 20]\n"
        "              if re.match(r'\\w+:\\s+\\d+ kB', line))\n"
        "print('mapping', fields['Rss'], fields['Shared_Clean'], fields['Anonymous'])\n"
    )
    first = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("3786 images used") == 1  # frozen once: the workers did not run the script
    data = load_dataset("emoji", cache_dir=str(tmp_path), resolution=32)
    total = int(data.pixels.sum())  # this process maps the file and reads every page
    second = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "images used" not in second.stdout, second.stderr  # from the cache
    assert f"sum {total}" in second.stdout
    rss, shared, anonymous = map(int, re.search(r"mapping (\d+) (\d+) (\d+)", second.stdout).groups())
    size_kb = data.pixels.numel() // 1024
    assert rss >= size_kb * 0.9 and shared >= size_kb * 0.9  # every page read, and shared with this process
    assert anonymous == 0  # no private copy of a single page

    from digitgan.training.steps import copied

    for chunk_bytes in (1, 5 * 3 * 32 * 32 + 7, 1 << 40):  # one picture, five and a bit, all at once
        assert torch.equal(copied(data.pixels, torch.device("cpu"), chunk_bytes), data.pixels)  # as to a GPU


def test_bad_folders_are_one_line_and_exit_2_with_nothing_written(tmp_path, capsys, emoji_files):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_text("no picture")
    (tmp_path / "few").mkdir()
    for name, blob in emoji_files["Flags"][:3]:
        (tmp_path / "few" / name).write_bytes(blob)
    cases = [(["nothere"], "no such folder"), (["empty"], "holds no image files"),
             (["junk"], "none of its 1 image files could be read (1 unreadable"),
             (["few"], "3 usable images (1 to train on, 2 held out to measure quality), fewer than a batch"),
             (["few", "--conditional", "on"], "--conditional on needs classes, and")]  # unlabelled: no classes
    for (folder, *extra), says in cases:
        run = tmp_path / "run"
        argv = ["train", "--dataset", str(tmp_path / folder), *extra, "--steps", "2", "--batch-size", "8",
                "--cache-dir", str(tmp_path / "cache"), "--checkpoint-dir", str(run / "ck"), "--sample-dir", str(run / "s")]
        assert dcgan.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], (folder, err)
        assert not run.exists()


@pytest.mark.parametrize("resolution, channels, conditional",
                         [(32, 3, "off"), (64, 3, "on"), (64, 1, "off"), (128, 3, "off")],
                         ids=["32-rgb", "64-rgb-conditional", "64-grey", "128-rgb-from-the-font"])
def test_networks_and_pictures_follow_the_datas_shape(resolution, channels, conditional, tmp_path, cache_dir, capsys):
    measured = channels == 3  # the emoji's hold-out in ImageNet features is cached at each side by `make emoji`
    settings = dict(dataset="emoji", resolution=resolution, channels=channels, conditional=conditional, steps=4,
                    batch_size=8, width=4, log_every=2, sample_every=2, checkpoint_every=2,
                    eval_every=2 if measured else 0, eval_num=20,
                    tensorboard="on" if conditional == "on" else "off", device="cpu", cache_dir=cache_dir,
                    checkpoint_dir=str(tmp_path / "ck"), sample_dir=str(tmp_path / "s"))
    run = digitgan.train(**settings)
    said = capsys.readouterr()
    err = said.out + said.err
    mode, n = ("RGB" if channels == 3 else "L"), (10 if conditional == "on" else 8)
    side = n * (resolution + 2) + 2
    for name in ("real.png", "step_0000004.png"):
        picture = Image.open(tmp_path / "s" / name)
        assert (picture.mode, picture.size) == (mode, (side, side)), name
    assert Image.open(tmp_path / "s" / "progress.gif").n_frames == 2
    generator = digitgan.load(run, device="cpu")
    classes = "Flags" if conditional == "on" else None
    images = generator.sample(5, classes=classes)
    assert images.shape == (5, channels, resolution, resolution)
    assert dcgan.main(["interpolate", "--checkpoint-dir", str(run.dir), "--rows", "2", "--steps", "3",
                       "--out", str(tmp_path / "walk.png")]) == 0
    assert Image.open(tmp_path / "walk.png").size == (3 * (resolution + 2) + 2, 2 * (resolution + 2) + 2)
    each = tmp_path / "each"
    assert dcgan.main(["sample", "--checkpoint-dir", str(run.dir), "--num", "3", "--out", f"{each}/"]) == 0
    names = sorted(p.name for p in each.iterdir())
    assert names == (["00000-Smileys-Emotion.png", "00001-Animals-Nature.png", "00002-Activities.png"]
                     if conditional == "on" else ["00000.png", "00001.png", "00002.png"])  # classes: spread evenly
    assert all((Image.open(each / n).mode, Image.open(each / n).size) == (mode, (resolution,) * 2) for n in names)
    assert dcgan.main(["sample", "--checkpoint-dir", str(run.dir), "--out", f"{each}/"]) == 2  # not empty now
    if measured:
        classifier = classifier_file(load_dataset("emoji", cache_dir=cache_dir, resolution=resolution), cache_dir)
        assert_measured_in_imagenet_features(run.dir, err, tmp_path, conditional == "on", capsys, resolution,
                                             classifier.exists())
    else:  # the digits' evaluator cannot read emoji: one line
        capsys.readouterr()
        assert dcgan.main(["evaluate", "--checkpoint-dir", str(run.dir), "--features", "evaluator"]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert ("--features evaluator: the shipped evaluators read MNIST or Fashion-MNIST at 32x32 grey, Stacked MNIST "
                "at 32x32 RGB, not emoji at 64x64 grey" in line)


def assert_measured_in_imagenet_features(run_dir, err, tmp_path, conditional, capsys, resolution, classifier):
    """Training's evaluations and `evaluate --json` on an emoji run: KID the headline (379 held-out images; 378 of
    the font's 3,778 at 128 pixels), every figure beside its real-data reference, the feature space named
    everywhere, the same figures both ways; the classifier's columns filled exactly when train-evaluator has made
    one for this shape (a cache that has trained one keeps it)."""
    held, rest = (379, 3407) if resolution <= 64 else (378, 3400)
    assert err.count(": KID") == 2 and "step 4: KID" in err
    # the hint to evaluate less often follows the share of the time the evaluations took, as the run measured it
    share = float(re.search(r"records: 2 evaluations took [\d.]+ s \(([\d.]+) % of this session", err).group(1))
    assert ("pass a larger --eval-every (now 2)" in err) == (share > 10) or abs(share - 10) < 0.1, err
    rows = [r for r in read_rows(run_dir / "metrics.csv") if r["kid"] != ""]
    assert [r["step"] for r in rows] == [2, 4] and all((r["classes_covered"] != "") == classifier for r in rows)
    assert all(r["augment_p"] != "" for r in read_rows(run_dir / "metrics.csv"))  # --augment auto: ADA on the emoji
    reference = json.loads((run_dir / "real_reference.json").read_text())
    space = reference["features"]
    assert space.startswith("imagenet-efficientnet-lite0:") and reference["headline"] == "kid"
    assert (reference["real_images"], reference["num_samples"]) == (held, rest)  # the hold-out; the rest, real
    assert json.loads((run_dir / "best.json").read_text())["features"] == space
    assert (run_dir / "metrics.png").exists()
    out = tmp_path / "q.json"
    assert dcgan.main(["evaluate", "--checkpoint-dir", str(run_dir), "--num", "20", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert f"in EfficientNet-Lite0's 1280-d ImageNet features ({space}; not Inception" in table
    result = json.loads(out.read_text())
    assert (result["features"], result["headline"], result["real_images"]) == (space, "kid", held)
    for key in ("fid", "kid", "precision", "recall", "density", "coverage"):
        assert np.isfinite(result[key]) and np.isfinite(result["real_reference"][key]), key
    assert result["kid"] == pytest.approx(rows[-1]["kid"], rel=1e-6)  # as training measured step 4
    assert ("intra_fid" in result) == conditional and ("class_accuracy" in result) == (conditional and classifier)


def test_a_checkpoint_written_before_shapes_were_recorded_still_draws_and_resumes(shared_run, tmp_path):
    """Checkpoints from before this change hold no "data" record and no resolution or channels in their config:
    they are MNIST's 32x32 grey, and load, draw and resume as they did."""
    from digitgan.training import checkpoints
    from runs import copy_run
    run = copy_run(shared_run, tmp_path)
    ck = Path(run["checkpoint_dir"])
    for path in checkpoints.list_checkpoints(ck):
        state = checkpoints.load(path)
        del state["data"]
        state["config"] = {k: v for k, v in state["config"].items() if k not in ("resolution", "channels")}
        torch.save(state, path)
    before = digitgan.load(ck, device="cpu")
    assert before.shape.describe() == "32x32 grey" and before.class_names == tuple("0123456789")
    step = before.step
    digitgan.train(**{**run, "steps": step + 2})
    assert digitgan.load(ck, device="cpu").step == step + 2


def test_a_resume_on_changed_pictures_and_the_seed_preset_on_colour_are_refused(tmp_path, emoji_files, capsys):
    build_folder(tmp_path / "pics", emoji_files)
    settings = dict(dataset=str(tmp_path / "pics"), steps=2, batch_size=8, width=4, eval_every=0, tensorboard="off",
                    device="cpu", cache_dir=str(tmp_path / "cache"), checkpoint_dir=str(tmp_path / "ck"),
                    sample_dir=str(tmp_path / "s"))
    digitgan.train(**settings)
    (tmp_path / "pics" / "flags" / "palette.png").unlink()
    capsys.readouterr()
    assert dcgan.main(["train", *cli_flags({**settings, "steps": 4})]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "is not the data this run began with (25 images then, 24 now" in line
    assert dcgan.main(["train", *cli_flags({**settings, "preset": "seed", "checkpoint_dir": str(tmp_path / "ck2")})]) == 2
    assert "the seed preset is the 2019 network, for 32x32 grey images" in capsys.readouterr().err


def test_a_labelled_folder_gets_class_figures_from_a_classifier_trained_on_it(tmp_path, emoji_files, capsys):
    """train-evaluator on a folder keeps a classifier in the cache (tested on the hold-out); with it a conditional
    run's evaluations and `evaluate --cas` give class accuracy, intra-class FID and CAS, each beside real data's."""
    build_folder(tmp_path / "pics", emoji_files)
    cache = str(tmp_path / "cache")
    assert dcgan.main(["train-evaluator", "--dataset", str(tmp_path / "pics"), "--epochs", "3", "--cache-dir", cache]) == 0
    (record,) = [json.loads(p.read_text()) for p in Path(cache).glob("classifier-*.json")]
    assert record["test_images"] == "3 held-out images" and 0 <= record["test_accuracy"] <= 1
    settings = dict(dataset=str(tmp_path / "pics"), conditional="on", steps=2, batch_size=8, width=4, eval_every=2,
                    eval_num=20, tensorboard="off", device="cpu", cache_dir=cache, checkpoint_dir=str(tmp_path / "ck"),
                    sample_dir=str(tmp_path / "s"))
    digitgan.train(**settings)
    (row,) = [r for r in read_rows(tmp_path / "ck" / "metrics.csv") if r["kid"] != ""]
    assert 0 <= row["class_accuracy"] <= 1 and row["classes_covered"] in (1, 2)
    out = tmp_path / "q.json"
    assert dcgan.main(["evaluate", "--checkpoint-dir", str(tmp_path / "ck"), "--num", "20", "--cas", "--cas-num", "16",
                       "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["classifier"].startswith("classifier:") and result["real_images"] == 3
    assert result["class_accuracy"] == pytest.approx(row["class_accuracy"])
    assert len(result["per_class_accuracy"]) == 2 and "class_accuracy" in result["real_reference"]
    assert len(result["per_class_recall"]) == 2 and 0 <= result["class_recall"] <= 1  # each class's diversity
    assert (result["cas_num"], result["cas_real_num"]) == (16, 16) and 0 <= result["cas"] <= 1
    assert "CAS" in capsys.readouterr().out
    # the same classifier as a feature space of its own: a space no ImageNet network made
    assert dcgan.main(["evaluate", "--checkpoint-dir", str(tmp_path / "ck"), "--num", "20", "--features", "classifier",
                       "--json", str(out)]) == 0
    mine = json.loads(out.read_text())
    assert mine["features"] == f"pics-{result['classifier']}" and mine["headline"] == "kid"
    assert "classifier train-evaluator trained on pics's classes" in mine["features_about"]
    assert mine["real_reference"]["features"] == mine["features"] and 0 <= mine["precision"] <= 1


def test_train_images_trains_on_a_fixed_pick_and_keeps_the_hold_out_whole(tmp_path, cache_dir, tiny, capsys):
    """--train-images N: the small-data regime from any data. The same N images whatever the run's seed, the
    hold-out (what quality is measured on) untouched, the pick recorded; too many or fewer than a batch refused."""
    full = load_dataset("emoji", "train", cache_dir=cache_dir, resolution=32)
    pick = full.subset(200)
    assert len(pick) == 200 and torch.equal(pick.pixels, full.subset(200).pixels)
    rows = {bytes(p.numpy()) for p in full.pixels}
    held = {bytes(p.numpy()) for p in load_dataset("emoji", "test", cache_dir=cache_dir, resolution=32).pixels}
    assert all(bytes(p.numpy()) in rows and bytes(p.numpy()) not in held for p in pick.pixels)  # none held out
    rest = full.subset(-200)  # the others, to pretrain on before fine-tuning on the pick
    assert sorted(bytes(p.numpy()) for p in torch.cat([pick.pixels, rest.pixels])) == sorted(
        bytes(p.numpy()) for p in full.pixels)  # together, each training image once (some emoji look alike)
    run = digitgan.train(**tiny(dataset="emoji", train_images=200, seed=5, steps=2))
    saved = torch.load(run.dir / "ckpt_0000002.pt", weights_only=False)
    assert saved["data"]["images"] == 200 and saved["data"]["held_out"] == len(load_dataset("emoji", "test",
                                                                                             cache_dir=cache_dir))
    assert saved["data"]["fingerprint"] == pick.fingerprint
    capsys.readouterr()
    for n, says in ((4000, "emoji has 3407 training images; pass at most"), (-4000, "pass at most"),
                    (6, "fewer than a batch"), (-3400, "fewer than a batch")):
        argv = ["train", *cli_flags(tiny(dataset="emoji", train_images=n, checkpoint_dir=str(tmp_path / "no")))]
        assert dcgan.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    assert not (tmp_path / "no").exists()
