"""The mapped cache (data/cache.py) and freezing into it (data/freeze.py): the same files on one process or a pool,
mapped not read, checked once after each write, made again when damaged, converted from the old format; and no
temporary file left behind by a freeze killed mid-way."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from digitgan.data.cache import read_frozen
from digitgan.data.emoji import EMOJI_PACKAGE
from digitgan.data.freeze import FREEZE_VERSION, holdout_split
from digitgan.data.sources import load_dataset
from digitgan.nets.efficientnet import WHEEL
from runs import wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_the_cache_is_the_same_whatever_the_workers_mapped_checked_and_made_again_when_damaged(cache_dir, tmp_path,
                                                                                                capsys):
    """Freezing on a pool of processes writes the very files one process writes; training maps the pixels (a view of
    the file, not a copy in memory); a flipped byte is noticed, said in one line, and the pictures frozen again."""
    from digitgan.data.emoji import EMOJI

    caches = {}
    for workers in (1, 2):
        caches[workers] = tmp_path / f"w{workers}"
        caches[workers].mkdir()
        (caches[workers] / EMOJI_PACKAGE.file).symlink_to(Path(cache_dir) / EMOJI_PACKAGE.file)
        EMOJI.frozen(32, 0, str(caches[workers]), say=lambda line: None, workers=workers)
    stem = f"emoji-{FREEZE_VERSION}-32-0"
    for suffix in (".pixels", ".labels", ".json"):
        assert (caches[1] / f"{stem}{suffix}").read_bytes() == (caches[2] / f"{stem}{suffix}").read_bytes(), suffix
    import digitgan.data.cache as cache_format

    from digitgan.errors import WriteError

    def unwritable(path, write):
        raise WriteError(path, PermissionError(13, "Permission denied"))

    cache_format._VERIFIED.clear()
    (caches[1] / f"{stem}.checked").unlink()
    with pytest.MonkeyPatch.context() as patch:  # a cache directory that cannot be written to: checked, not noted
        patch.setattr(cache_format, "atomic_write", unwritable)
        assert read_frozen(caches[1] / stem) is not None and not (caches[1] / f"{stem}.checked").exists()
    cache_format._VERIFIED.clear()  # as in a new process: the cache is known intact from STEM.checked, not hashed again
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache_format, "_chunk_digests", lambda *a: pytest.fail("hashed a cache known to be intact"))
        train = load_dataset("emoji", "train", cache_dir=str(caches[2]), resolution=32)
    assert str(caches[2] / f"{stem}.pixels") in Path("/proc/self/maps").read_text()  # mapped, not read
    assert train.pixels.numpy().base is not None  # a view of the map, not a copy
    before = train.pixels.clone()
    pixels = caches[2] / f"{stem}.pixels"
    blob = bytearray(pixels.read_bytes())
    blob[len(blob) // 2] ^= 1
    pixels.write_bytes(bytes(blob))
    capsys.readouterr()
    again = load_dataset("emoji", "train", cache_dir=str(caches[2]), resolution=32)
    err = capsys.readouterr().err
    assert "does not match the SHA-256 recorded when it was written" in err and "freezing the images again" in err
    assert torch.equal(again.pixels, before) and read_frozen(caches[2] / stem) is not None  # made again


def test_an_old_compressed_cache_is_converted_once(cache_dir, tmp_path, capsys):
    """The cache format before the mapped one (one compressed .npz and its SHA-256) is converted with one line, to
    the files a fresh freeze writes."""
    import json

    from digitgan.core.files import write_cache

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / EMOJI_PACKAGE.file).symlink_to(Path(cache_dir) / EMOJI_PACKAGE.file)
    load_dataset("emoji", "train", cache_dir=str(fresh), resolution=32)
    frozen = read_frozen(fresh / f"emoji-{FREEZE_VERSION}-32-0")
    order = np.argsort(np.concatenate(holdout_split(len(frozen.labels))))  # back to file order, as it was kept
    record = json.dumps({"classes": frozen.classes, "converted": frozen.converted, "skipped": frozen.skipped})
    old = tmp_path / "old"
    old.mkdir()
    write_cache(old / f"emoji-{FREEZE_VERSION}-32-0.npz", lambda f: np.savez(f, pixels=np.asarray(frozen.pixels)[order],
                                                             labels=frozen.labels[order], record=np.array(record)))
    capsys.readouterr()
    load_dataset("emoji", "train", cache_dir=str(old), resolution=32)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"note: {old}/emoji-{FREEZE_VERSION}-32-0.npz is in the old cache format: converting it to the mapped one (once)"
    assert sorted(p.name for p in old.iterdir()) == [f"emoji-{FREEZE_VERSION}-32-0.checked", f"emoji-{FREEZE_VERSION}-32-0.json", f"emoji-{FREEZE_VERSION}-32-0.labels", f"emoji-{FREEZE_VERSION}-32-0.pixels"]
    for suffix in (".pixels", ".labels", ".json"):
        assert (old / f"emoji-{FREEZE_VERSION}-32-0{suffix}").read_bytes() == (fresh / f"emoji-{FREEZE_VERSION}-32-0{suffix}").read_bytes()


def test_a_freeze_killed_mid_way_leaves_nothing_once_run_again(tmp_path, emoji_files, cache_dir):
    """kill -9 while pictures are being written into the cache's temporary file, then the same command again: the
    rerun removes the killed writer's file (saying so) and freezes a whole cache; nothing else is left in the cache
    folder. A FIFO named as the folder's last picture holds the freeze mid-way (reading it waits for a writer that
    never comes) so that the kill lands mid-write whatever the machine's load."""
    folder, cache = tmp_path / "pictures", tmp_path / "cache"
    folder.mkdir()
    cache.mkdir()
    (cache / WHEEL.file).symlink_to(Path(cache_dir) / WHEEL.file)  # the hold-out's ImageNet features: no download
    pictures = [blob for category in emoji_files.values() for _, blob in category][:40]
    for i, blob in enumerate(pictures):
        (folder / f"{i:03d}.png").write_bytes(blob)
    os.mkfifo(folder / "zzz.png")
    command = [sys.executable, str(ROOT / "dcgan.py"), "data", "--dataset", str(folder), "--cache-dir", str(cache),
               "--workers", "1"]
    freezing = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # every picture but the FIFO written: the temporary file holds 40 of them
        wait_for(lambda: any(p.stat().st_size >= 40 * 3 * 32 * 32 for p in cache.glob(".*.placed.tmp*")))
    finally:
        freezing.kill()
    assert freezing.wait() == -signal.SIGKILL
    (orphan,) = cache.glob(".*.tmp*")  # what the killed freeze left
    os.unlink(folder / "zzz.png")
    (folder / "zzz.png").write_bytes(pictures[0])  # the folder's last picture, a real one now

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"note: removed {orphan.name} from {cache}/" in again.stderr
    assert "fetching" not in again.stderr and not [p for p in cache.iterdir() if ".tmp" in p.name]
    (stem,) = {p.with_suffix("") for p in cache.glob("folder-*.json")}
    frozen = read_frozen(stem)
    assert frozen is not None and len(frozen.labels) == 41


def test_a_sweep_removes_a_dead_writers_temporary_and_leaves_a_live_ones(tmp_path, capsys):
    """A temporary that a live writer holds (here, one in this very process) stays, whatever PID its name says; one
    that nobody holds (its writer was killed) goes, and a line says so."""
    from digitgan.core.files import sweep, temporary

    dead = tmp_path / f".cache.pixels.tmp{os.getpid()}"  # a killed writer's, with a PID that lives (reused)
    dead.write_bytes(b"x" * 1000)
    with temporary(tmp_path / "cache", "labels") as live:  # sweeps the dead one on the way in
        assert live.exists() and not dead.exists()
        live.write_bytes(b"y")
        assert sweep(tmp_path) == 0 and live.exists()
        with temporary(tmp_path / "other", folder=True) as folder:
            (folder / "part").write_bytes(b"z" * 10)
            assert sweep(tmp_path) == 0 and folder.is_dir()
    assert list(tmp_path.iterdir()) == []
    assert f"note: removed {dead.name} from {tmp_path}/ (0.0 MB)" in capsys.readouterr().err
