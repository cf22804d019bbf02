import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from digitgan.data import mnist as data
from digitgan.data.sampler import BatchSampler
from digitgan.data.sources import load_dataset
from digitgan.errors import UsageError

FASHION = Path(data.FASHION_DIR)
needs_fashion = pytest.mark.needs(FASHION.is_dir(), "Fashion-MNIST", "apt-get install dataset-fashion-mnist")

# The well-known per-class counts of MNIST's 60,000 training and 10,000 test digits.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("split,counts", [("train", MNIST_TRAIN_COUNTS), ("test", MNIST_TEST_COUNTS)])
def test_mnist_shapes_range_and_labels(cache_dir, split, counts):
    ds = load_dataset("mnist", split, cache_dir=cache_dir)
    assert ds.images.shape == (sum(counts), 1, 32, 32) and ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    # padded with the background value: a two-pixel border of -1 all round
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (ds.images[:, 0][:, border] == -1).all()
    assert ds.labels.bincount().tolist() == counts


def test_cache_holds_the_exact_pickle_bytes(cache_dir):
    images, _ = data.MNIST.uint8("test", cache_dir=cache_dir)
    assert images.dtype == np.uint8 and images.shape == (10000, 28, 28)
    wheel = Path(cache_dir) / data.MNIST_WHEEL.file
    import zipfile
    with zipfile.ZipFile(wheel) as zf:
        _, _, (x_test, _) = data.load_arrays_pickle(gzip.decompress(zf.read(data.MNIST_PICKLE)))
    assert np.array_equal(images.reshape(10000, -1).astype(np.float32) / 256, x_test)


def test_checksum_mismatch_is_reported_and_nothing_deleted(tmp_path):
    fake = tmp_path / data.MNIST_WHEEL.file
    fake.write_bytes(b"not the wheel")
    with pytest.raises(UsageError, match="SHA-256"):
        data.prepare_mnist(tmp_path)
    assert fake.read_bytes() == b"not the wheel"
    assert not (tmp_path / data.MNIST_CACHE).exists()


class _RunsCode:
    def __reduce__(self):
        return (print, ("this ran",))


def test_restricted_unpickler_admits_arrays_only():
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    back = data.load_arrays_pickle(pickle.dumps(arrays))
    assert all(np.array_equal(a, b) for a, b in zip(arrays, back))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        data.load_arrays_pickle(pickle.dumps(_RunsCode()))


@needs_fashion
def test_idx_reader_on_real_fashion_mnist():
    for split, n in (("train", 60000), ("test", 10000)):
        ds = load_dataset("fashion-mnist", split)
        assert ds.images.shape == (n, 1, 32, 32)
        assert ds.labels.bincount().tolist() == [n // 10] * 10


@needs_fashion
def test_data_dir_reads_plain_and_gzipped_idx(tmp_path):
    for i, stem in enumerate(data.IDX_FILES["test"]):
        raw = gzip.decompress((FASHION / f"{stem}.gz").read_bytes())
        if i == 0:
            (tmp_path / stem).write_bytes(raw)  # images uncompressed
        else:
            shutil.copy(FASHION / f"{stem}.gz", tmp_path)  # labels gzipped
    images, labels = data.MNIST.uint8("test", data_dir=str(tmp_path))
    ref_images, ref_labels = data.FASHION_MNIST.uint8("test")
    assert np.array_equal(images, ref_images) and np.array_equal(labels, ref_labels)


@needs_fashion
@pytest.mark.parametrize("damage,message", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:6], "header cut short"),
    (lambda b: b"\x01" + b[1:], "bad magic"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "only unsigned bytes"),
    (lambda b: b + b"\x00" * 10, "truncated or padded"),
])
def test_idx_reader_rejects_malformed_files(tmp_path, damage, message):
    raw = gzip.decompress((FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes())
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    bad.write_bytes(damage(raw))
    with pytest.raises(UsageError, match=message):
        data.read_idx(bad)


def test_idx_reader_rejects_a_broken_gzip(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abcde")[:-8])
    with pytest.raises(UsageError, match="cannot read"):
        data.read_idx(bad)


def test_missing_idx_files_name_what_is_needed(tmp_path):
    with pytest.raises(UsageError, match="train-images-idx3-ubyte"):
        data.MNIST.uint8("train", data_dir=str(tmp_path))


def test_batch_sampler_covers_an_epoch_and_resumes_exactly():
    s = BatchSampler(10, 3, seed=1)
    epoch = torch.cat([s.next() for _ in range(3)])
    assert len(set(epoch.tolist())) == 9  # without replacement; the tail of one is dropped
    state = s.state_dict()
    ahead = [s.next() for _ in range(5)]
    t = BatchSampler(10, 3, seed=99)
    t.load_state_dict(state)
    assert all(torch.equal(a, t.next()) for a in ahead)
    with pytest.raises(UsageError, match="larger than the dataset"):
        BatchSampler(10, 11, seed=0)
