"""Real photos for the feature-space test: the sample images of Debian's python3-skimage package, read straight
from its .deb (an ar archive holding data.tar.xz), which `make photos` fetches with `apt-get download`."""
import hashlib
import io
import tarfile
from pathlib import Path

from PIL import Image

DEB = "python3-skimage_0.19.3-8_all.deb"
DEB_SHA256 = "728d88c3e3440f1f3712de0805dc834d29248ff07e1eec8c0f3da07606f752f9"
INSIDE = "./usr/lib/python3/dist-packages/skimage/data/"


def ar_members(blob):
    """name -> bytes of the members of an ar archive (the .deb container: a 60-byte header before each)."""
    assert blob[:8] == b"!<arch>\n", "not an ar archive"
    members, at = {}, 8
    while at + 60 <= len(blob):
        header = blob[at:at + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        members[name] = blob[at + 60:at + 60 + size]
        at += 60 + size + size % 2  # members start on even offsets
    return members


def skimage_photos(cache_dir, names):
    """name -> RGB PIL image of the named files of skimage's data folder, from the checksummed .deb."""
    blob = (Path(cache_dir) / DEB).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == DEB_SHA256, f"{DEB} is not the pinned package"
    data = next(v for k, v in ar_members(blob).items() if k.startswith("data.tar"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {n: Image.open(io.BytesIO(tar.extractfile(INSIDE + n).read())).convert("RGB") for n in names}
