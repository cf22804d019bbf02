"""Past 64 pixels: networks that grow a block per doubling under a channel cap, the emoji at 128 drawn by Debian's
Noto Color Emoji font (none lost without a word), and a folder of real photos at 256 that trains, resumes bit for
bit, samples, evaluates and exports. (The emoji at 128 train, sample and evaluate in tests/test_folders.py; the page
draws a 128-pixel model in tests/test_site.py.)"""
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
import digitgan
from digitgan.config import RESOLUTIONS, resolve
from digitgan.data.emoji import EMOJI, EMOJI_FONT, EMOJI_PACKAGE, NOT_IN_FONT, emoji_font, emoji_items, font_items
from digitgan.data.shape import Shape
from digitgan.errors import UsageError
from digitgan.nets.networks import build_models
from photos import DEB, skimage_photos
from runs import same_state, training_state

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ["astronaut.png", "brick.png", "camera.png", "coffee.png", "coins.png", "color.png", "grass.png",
          "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "phantom.png",
          "retina.jpg", "rocket.jpg", "chelsea.png"]


def convs(model, kind):
    return [m for m in model.modules() if type(m).__name__ == kind]


def test_the_networks_grow_a_block_per_doubling_with_their_widest_layers_capped():
    width = 4
    for resolution in RESOLUTIONS:
        G, D = build_models(resolve({"resolution": resolution, "width": width, "dataset": "x"}), Shape(resolution, 3))
        levels = resolution.bit_length() - 3  # 3 at 32 pixels, one more per doubling
        assert len(convs(G, "ConvTranspose2d")) == levels + 1 and len(convs(D, "Conv2d")) == levels + 1
        widest = max(c.out_channels for c in convs(G, "ConvTranspose2d"))
        assert widest == width * min(2 ** (levels - 1), 8)  # 32: 4w, 64: 8w (Radford et al.'s), then capped at 8w
        assert widest == max(c.out_channels for c in convs(D, "Conv2d"))
        with torch.no_grad():
            images = G.eval()(torch.randn(2, 100))
            assert images.shape == (2, 3, resolution, resolution) and D.eval()(images).shape == (2,)
    with pytest.raises(UsageError, match="--resolution must be one of 32, 64, 128, 256"):
        resolve({"resolution": 512})


def test_each_kind_of_data_refuses_a_side_past_its_own_in_one_line(tmp_path, capsys):
    for dataset, side, says in (("mnist", 128, "MNIST, at most 64 pixels (28-pixel digits"),
                                ("emoji", 256, "the emoji, at most 128 pixels (64 from npm's PNGs, 128 from Debian")):
        argv = ["train", "--dataset", dataset, "--resolution", str(side), "--checkpoint-dir", str(tmp_path / "ck")]
        assert dcgan.main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert says in line and line.endswith("pass --resolution 64 or less" if side == 128 else "128 or less")
    assert not (tmp_path / "ck").exists()  # refused before the disk is touched


@pytest.mark.needs((Path(digitgan.config.cache_home()) / EMOJI_FONT.file).exists(), EMOJI_FONT.file,
                   "`make emoji` fetches it with apt-get download")
def test_the_emoji_at_128_are_the_fonts_and_each_one_is_used_or_counted(cache_dir):
    """Every emoji the npm package lists is in the 128-pixel cache or among its counted skips: a picture the font
    route lost without a count fails this."""
    with tarfile.open(Path(cache_dir) / EMOJI_PACKAGE.file) as tar:
        items, classes = emoji_items(tar)
        drawn, classes_drawn, lacking = font_items(tar, emoji_font(cache_dir))
    assert len(drawn) + sum(lacking.values()) == len(items) == 3786 and classes_drawn == classes
    assert [name for name, _, _ in drawn] == [name for name, _, _ in items if name in {n for n, _, _ in drawn}]
    assert Image.open(io.BytesIO(drawn[0][1]())).size == (136, 136)  # the font's 136x128, padded to a square
    frozen = EMOJI.frozen(128, 0, cache_dir, say=lambda line: None)
    assert len(frozen.labels) == len(drawn) and frozen.skipped == lacking
    assert set(frozen.skipped) == {NOT_IN_FONT} and 0 < frozen.skipped[NOT_IN_FONT] < 20  # newer than the font
    assert frozen.classes == classes and frozen.pixels.shape[1:] == (3, 128, 128)
    assert (np.asarray(frozen.pixels[:, :, 0, :]) == 255).mean() > 0.9  # padded to a square: white along the top


@pytest.fixture(scope="module")
def photos(tmp_path_factory, cache_dir):
    """16 real photos of Debian's python3-skimage (from 300 to 1,411 pixels a side), as a folder of PNG files."""
    folder = tmp_path_factory.mktemp("photos")
    for name, image in skimage_photos(cache_dir, PHOTOS).items():
        image.save(folder / f"{Path(name).stem}.png")
    return folder


@pytest.mark.needs((Path(digitgan.config.cache_home()) / DEB).exists(), f"data/{DEB}",
                   "`make photos` fetches it with apt-get download")
def test_a_folder_of_photos_at_256_trains_resumes_exactly_samples_evaluates_and_exports(photos, tmp_path, cache_dir):
    import onnxruntime

    settings = dict(dataset=str(photos), resolution=256, width=4, batch_size=8, steps=4, checkpoint_every=2,
                    sample_every=2, log_every=1, eval_every=0, tensorboard="off", device="cpu", cache_dir=cache_dir)
    straight = digitgan.train(**settings, checkpoint_dir=str(tmp_path / "a"), sample_dir=str(tmp_path / "a-s"))
    digitgan.train(**{**settings, "steps": 2}, checkpoint_dir=str(tmp_path / "b"), sample_dir=str(tmp_path / "b-s"))
    resumed = digitgan.train(**settings, checkpoint_dir=str(tmp_path / "b"), sample_dir=str(tmp_path / "b-s"))
    assert same_state(training_state(straight.dir / "ckpt_0000004.pt"), training_state(resumed.dir / "ckpt_0000004.pt"))
    saved = torch.load(straight.dir / "ckpt_0000004.pt", weights_only=False)
    assert saved["data"]["shape"]["resolution"] == 256 and saved["data"]["images"] == 14  # 2 of 16 held out
    grid = Image.open(tmp_path / "a-s" / "step_0000004.png")
    assert (grid.mode, grid.size) == ("RGB", (4 * 258 + 2,) * 2)  # 4 x 4 at 256 pixels: about 1,000 wide
    G = digitgan.load(straight, device="cpu")
    assert G.sample(3, seed=0).shape == (3, 3, 256, 256)
    out = tmp_path / "q.json"
    assert dcgan.main(["evaluate", "--checkpoint-dir", str(straight.dir), "--num", "20", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["headline"] == "kid" and figures["real_images"] == 2 and np.isfinite(figures["kid"])
    site = tmp_path / "site"
    assert dcgan.main(["export", "--checkpoint-dir", str(straight.dir), "--out", str(site)]) == 0
    assert json.loads((site / "generator.json").read_text())["resolution"] == 256
    session = onnxruntime.InferenceSession(str(site / "generator.onnx"), providers=["CPUExecutionProvider"])
    z = torch.randn(3, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = G.draw(z).numpy()
    got = session.run(["images"], {"z": z.numpy()})[0]
    assert got.shape == (3, 3, 256, 256) and np.abs(got - expected).max() <= 1e-4
