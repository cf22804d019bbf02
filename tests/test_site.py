"""The exported page in a real browser: Debian's chromium, driven through its chromedriver by selenium, against
`dcgan.py serve` of a folder exported from a short real run. `make test` installs both when run as root."""
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
from digitgan.core.pictures import grid
from digitgan.nets.drawing import draw
from digitgan.share.samples import load_generator
from digitgan.training.loop import train
from runs import wait_for

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.needs(bool(CHROMIUM and DRIVER), "Debian's chromium and chromium-driver",
                               "`make test` installs them when run as root (apt-get install chromium chromium-driver)")
DCGAN = str(Path(__file__).resolve().parent.parent / "dcgan.py")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,2000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _serve(site):
    proc = subprocess.Popen([sys.executable, DCGAN, "serve", str(site), "--port", "0"], stdout=subprocess.PIPE,
                            text=True)
    return re.search(r"http://\S+/", proc.stdout.readline()).group(0), proc


def _site(tmp_path_factory, cache_dir, **extra):
    d = tmp_path_factory.mktemp("site")
    train({**dict(steps=6, batch_size=8, width=8, sample_every=3, checkpoint_every=3, log_every=1, eval_every=0,
                  tensorboard="off", device="cpu", cache_dir=cache_dir, checkpoint_dir=str(d / "ck"),
                  sample_dir=str(d / "samples")), **extra})
    assert dcgan.main(["export", "--checkpoint-dir", str(d / "ck"), "--out", str(d / "site")]) == 0
    url, proc = _serve(d / "site")
    return d, url, proc


def _served(exported, kind):
    """The page of a model tests/test_export.py exports too (conftest.py's `exported`): its checkpoint directory,
    its trainer's grids, its export, its URL, and the server."""
    ck, site = exported[kind]
    url, proc = _serve(site)
    return ck, Path(json.loads((ck / "config.json").read_text())["sample_dir"]), site, url, proc


@pytest.fixture(scope="module")
def plain(exported):
    *served, proc = _served(exported, "dcgan")  # the suite's shared run
    yield served
    proc.terminate()


@pytest.fixture(scope="module")
def conditional(exported):
    *served, proc = _served(exported, "conditional")
    yield served
    proc.terminate()


def load(driver, url):
    driver.get_log("browser")  # drop what an earlier page logged
    driver.get(url)
    deadline = time.time() + 60
    while not driver.execute_script("return window.pageReady"):
        assert time.time() < deadline, driver.execute_script("return document.getElementById('error').textContent")
        time.sleep(0.05)


def canvas(driver, id):
    """A canvas's grey levels as a (H, W) uint8 array (its red channel: the page paints grey)."""
    w, h, red = driver.execute_script(
        "const c = document.getElementById(arguments[0]), d = c.getContext('2d').getImageData(0, 0, c.width, "
        "c.height).data; return [c.width, c.height, Array.from(d.filter((_, i) => i % 4 === 0))];", id)
    return np.array(red, np.uint8).reshape(h, w)


def pick(driver, picker, text):
    """Choose a class in the page's picker and wait until the page has drawn it."""
    n = driver.execute_script("return window.timings.length")
    picker.select_by_visible_text(text)
    deadline = time.time() + 20
    while driver.execute_script("return window.timings.length") == n:
        assert time.time() < deadline
        time.sleep(0.05)


def test_the_page_draws_the_trainers_grid_and_new_digits(browser, plain):
    ck, samples, site, url = plain
    load(browser, url)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    # The fixed-noise grid drawn in the browser is the trainer's PNG of that step, within 2 grey levels
    mine = canvas(browser, "fixed")
    step = json.loads((site / "generator.json").read_text())["step"]
    trainers = np.asarray(Image.open(samples / f"step_{step:07d}.png").convert("L"))
    assert mine.shape == trainers.shape
    assert np.abs(mine.astype(int) - trainers.astype(int)).max() <= 2
    # "new pictures" draws another grid, from new noise: what PyTorch draws from that noise
    first = browser.execute_script("return window.lastDraw.z")
    browser.find_element("id", "new").click()
    deadline = time.time() + 20
    while browser.execute_script("return window.timings.length") < 2:
        assert time.time() < deadline
        time.sleep(0.05)
    z = browser.execute_script("return window.lastDraw.z")
    assert z != first
    G, cfg, _ = load_generator(str(ck), device="cpu")
    expected = grid(draw(G, torch.tensor(z, dtype=torch.float32).view(64, cfg.z_dim)), 8)
    assert np.abs(canvas(browser, "live").astype(int) - expected).max() <= 2
    # the walk's slider redraws it
    walk = canvas(browser, "walk")
    browser.execute_script("const t = document.getElementById('t'); t.value = 100; t.dispatchEvent(new Event('input'));")
    wait_for(lambda: (canvas(browser, "walk") != walk).any(), timeout=20)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_class_picker_passes_the_class_it_shows(browser, conditional):
    from selenium.webdriver.support.select import Select
    ck, _, site, url = conditional
    load(browser, url)
    picker = Select(browser.find_element("id", "class"))
    assert [o.text for o in picker.options] == ["every class"] + [f"{c}s" for c in range(10)]
    pick(browser, picker, "7s")
    shown = canvas(browser, "live")
    last = browser.execute_script("return window.lastDraw")
    assert last["labels"] == [7] * 64
    # What `sample --class 7` draws from the same noise, laid out as the page does
    G, cfg, _ = load_generator(str(ck), device="cpu")
    z = torch.tensor(last["z"], dtype=torch.float32).view(64, cfg.z_dim)
    sevens = grid(draw(G, z, torch.full((64,), 7)), 8)
    threes = grid(draw(G, z, torch.full((64,), 3)), 8)
    assert np.abs(shown.astype(int) - sevens).max() <= 2
    assert np.abs(shown.astype(int) - threes).max() > 2  # the class matters: a page that ignored it would fail
    # the 10x10 grid: row c drawn as class c from 10 shared z
    assert canvas(browser, "styles").shape == (10 * 34 + 2, 10 * 34 + 2)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    assert json.loads((site / "generator.json").read_text())["conditional"] is True


@pytest.fixture(scope="module")
def colour(tmp_path_factory, cache_dir):
    d, url, proc = _site(tmp_path_factory, cache_dir, dataset="emoji", resolution=128, conditional="on", width=4,
                         steps=6, sample_every=3)
    yield d, url
    proc.terminate()


def canvas_rgb(driver, id):
    """A canvas as a (H, W, 3) uint8 array."""
    w, h, data = driver.execute_script(
        "const c = document.getElementById(arguments[0]), d = c.getContext('2d').getImageData(0, 0, c.width, "
        "c.height).data; return [c.width, c.height, Array.from(d)];", id)
    return np.array(data, np.uint8).reshape(h, w, 4)[..., :3]


def test_the_page_draws_a_colour_128_pixel_model_and_names_its_classes(browser, colour):
    from selenium.webdriver.support.select import Select
    d, url = colour
    load(browser, url)
    info = json.loads((d / "site" / "generator.json").read_text())
    assert (info["resolution"], info["channels"], info["classes"][0]) == (128, 3, "Smileys & Emotion")
    mine = canvas_rgb(browser, "fixed")  # the trainer's RGB grid of that step, within 2 levels
    trainers = np.asarray(Image.open(d / "samples" / "step_0000006.png").convert("RGB"))
    assert mine.shape == trainers.shape == (10 * 130 + 2, 8 * 130 + 2, 3)  # a row per class, 8 a row at 128 px
    assert np.abs(mine.astype(int) - trainers.astype(int)).max() <= 2
    picker = Select(browser.find_element("id", "class"))
    assert [o.text for o in picker.options] == ["every class", *info["classes"]]
    pick(browser, picker, "Flags")
    last = browser.execute_script("return window.lastDraw")
    assert last["labels"] == [9] * 64
    G, cfg, _ = load_generator(str(d / "ck"), device="cpu")
    flags = grid(draw(G, torch.tensor(last["z"], dtype=torch.float32).view(64, cfg.z_dim), torch.full((64,), 9)), 8)
    assert np.abs(canvas_rgb(browser, "live").astype(int) - flags).max() <= 2
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
