"""Sharing a trained generator: a folder with generator.onnx (for any ONNX runtime), generator.safetensors and
generator.json (for PyTorch: digitgan.load reads them), the run's record, and a static page (web/) that draws its
pictures in the browser with onnxruntime-web. `serve` shows such a folder on a local web server."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import io
import json
import logging
import os
import shutil
import sys
import tarfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ..core.fetch import Download, fetch, member_bytes
from ..core.files import atomic_write
from ..data.sources import saved_shape
from ..errors import UsageError
from ..nets.convs import set_conv_impl
from ..training.records import Damaged, grids, read_record, read_rows
from ..training.state import fixed_noise
from .samples import load_generator

WEB = Path(__file__).resolve().parent / "web"  # the page's sources
PAGE = ("index.html", "page.js", "style.css")
# The page's runtime: onnxruntime-web's published package, fetched with npm pack into the data cache when an export
# first needs it; of it the page takes the wasm backend's three files
RUNTIME = Download(
    "onnxruntime-web@1.22.0",
    "onnxruntime-web-1.22.0.tgz",
    "e293551f9d36d003e293d0f2937fee7b3dfdcef76d71d1449b55e2d4157c7aea",
    "npm",
    size="20 MB",
)
RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
MIME = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript", ".json": "application/json"}


class _Named(torch.nn.Module):
    """The generator with named inputs for the exporter: z, and for a conditional model its class."""

    def __init__(self, generator: torch.nn.Module, conditional: bool):
        super().__init__()
        self.generator, self.conditional = generator, conditional

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, label) if self.conditional else self.generator(z)


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """The exporter's warnings and log lines (torchvision's operators skipped, an axis name shared by z and label,
    deprecations inside torch) are about torch, not about this export: the user sees none of them. A failed
    export still raises."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(generator: torch.nn.Module, z_dim: int, conditional: bool, path: Path) -> None:
    """generator (eval mode, batch norm folded) as ONNX opset 18 with a dynamic batch: inputs z (B, z_dim) float32
    and, for a conditional model, label (B,) int64; output images (B, C, R, R) in [-1, 1]."""
    model = _Named(generator, conditional).eval()
    set_conv_impl(model, "direct")  # plain ConvTranspose nodes: the FFT and matmul forms are for training speed
    batch = torch.export.Dim("batch", min=1, max=4096)
    args = (torch.zeros(2, z_dim),) + ((torch.zeros(2, dtype=torch.long),) if conditional else ())
    shapes = {"z": {0: batch}, **({"label": {0: batch}} if conditional else {})}
    with _exporter_quiet():
        program = torch.onnx.export(
            model,
            args,
            dynamo=True,
            opset_version=18,
            dynamic_shapes=shapes,
            input_names=["z", *(["label"] if conditional else [])],
            output_names=["images"],
            verbose=False,
        )
    assert program is not None  # the dynamo exporter returns its program
    atomic_write(path, lambda f: f.write(program.model_proto.SerializeToString()))


def export(
    out: str, checkpoint_dir: str, checkpoint: str | None = None, best: bool = False, force: bool = False
) -> Path:
    """Write the folder: model files, the page with its runtime, and the run's record."""
    dest = Path(out)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--out {dest} is a file: pass a directory to export into")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise UsageError(f"--out {dest}/ is not empty: pass --force to write over what is there, or another --out")
    if checkpoint and Path(checkpoint).suffix != ".pt":
        raise UsageError(
            f"--checkpoint {checkpoint}: export reads a training checkpoint (.pt), which holds the "
            f"run's fixed noise too"
        )
    generator, cfg, step, state = load_generator(checkpoint_dir, checkpoint, "cpu", best, with_state=True)
    runtime = runtime_files(cfg.cache_dir)  # before anything is written: a failed fetch leaves --out as it was
    conditional, shape = cfg.conditional == "on", saved_shape(state)
    dest.mkdir(parents=True, exist_ok=True)
    export_onnx(generator, cfg.z_dim, conditional, dest / "generator.onnx")

    # Weights for PyTorch: the sampling generator as trained (unfolded), with what rebuilds it
    from safetensors.torch import save as safetensors_bytes

    weights = {k: v.contiguous() for k, v in state.get("generator_ema", state["generator"]).items()}
    atomic_write(dest / "generator.safetensors", lambda f: f.write(safetensors_bytes(weights)))
    run_dir, sample_dir = Path(cfg.checkpoint_dir), Path(cfg.sample_dir)
    record = {k: _record(run_dir / k, read_record, None) for k in ("real_reference.json", "best.json")}
    scored = [
        {k: v for k, v in r.items() if v != ""}
        for r in _record(run_dir / "metrics.csv", read_rows, [])
        if r.get("fid", "") != "" and r["step"] <= step
    ]
    info = {
        "format": "dcgan-generator/1",
        "step": step,
        "config": dataclasses.asdict(cfg),
        "conditional": conditional,
        "classes": list(shape.classes),
        "shape": shape.to_dict(),
        "resolution": shape.resolution,
        "channels": shape.channels,
        "inputs": ["z", "label"] if conditional else ["z"],
        "metrics": scored[-1] if scored else None,
        "reference": record.get("real_reference.json"),
        "best": record.get("best.json"),
    }
    atomic_write(dest / "generator.json", lambda f: f.write(json.dumps(info, indent=1).encode()))

    # The run's record for the page: the grids by step, the curves, and the fixed noise of the grids
    shutil.rmtree(dest / "grids", ignore_errors=True)  # (--force) an earlier export's grids are not this run's
    (dest / "grids").mkdir()
    found = grids(sample_dir, up_to=step) if sample_dir.is_dir() else []
    for _, p in found:
        shutil.copyfile(p, dest / "grids" / p.name)
    pictures = {"progress.gif": sample_dir, "real.png": sample_dir, "losses.png": run_dir, "metrics.png": run_dir}
    for name, folder in pictures.items():
        if (folder / name).is_file():
            shutil.copyfile(folder / name, dest / name)
    layout = shape.grid(conditional)
    _, y = fixed_noise(cfg, torch.device("cpu"), layout)  # the grid's classes (its noise is the checkpoint's)
    z = state["fixed_noise"].float()
    run = {
        **info,
        "grids": [{"step": s, "file": f"grids/{p.name}"} for s, p in found],
        "fixed": {
            "z": z.flatten().tolist(),
            "labels": None if y is None else y.tolist(),
            "n": len(z),
            "cols": layout.cols,
        },
        "layout": {"n": shape.grid(conditional=False).count, "cols": shape.grid(conditional=False).cols},
        "files": {n: (dest / n).is_file() for n in pictures},
    }
    atomic_write(dest / "run.json", lambda f: f.write(json.dumps(run).encode()))
    for name in PAGE:
        shutil.copyfile(WEB / name, dest / name)
    for name, data in runtime.items():
        atomic_write(dest / name, functools.partial(_write, data))
    return dest


def _write(data: bytes, f: BinaryIO) -> None:
    f.write(data)


def runtime_files(cache_dir: str) -> dict[str, bytes]:
    """The page runtime's files by name, from onnxruntime-web's package in cache_dir (fetched with npm if missing,
    its SHA-256 checked)."""
    blob = fetch(RUNTIME, cache_dir, lambda line: print(line, file=sys.stderr), f" (npm pack {RUNTIME.spec})")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {name: member_bytes(tar, f"package/dist/{name}") for name in RUNTIME_FILES}


def _record(path: Path, read: Callable[[Path], Any], damaged: Any) -> Any:
    """A record of the run for the page; a damaged one is left out, with a line saying so."""
    try:
        return read(path)
    except Damaged as e:
        print(f"warning: {path} is damaged ({e}): the page goes without it", file=sys.stderr)
        return damaged


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files from one folder (SimpleHTTPRequestHandler maps every path inside it and drops `..`), with the
    types the page needs, and no caching so that a re-export shows at once."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME}  # noqa: RUF012  # the base's

    def send_head(self) -> Any:
        """404 for a path that, once every link in it is resolved, lands outside the folder (the base class drops
        `..` from URLs but follows links anywhere)."""
        root, target = os.path.realpath(self.directory), os.path.realpath(self.translate_path(self.path))
        if target != root and not target.startswith(root + os.sep):
            self.send_error(404, "File not found")
            return None
        return super().send_head()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the URL is what the user needs
        pass


def serve(folder: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve an exported folder until Ctrl-C, printing its URL."""
    root = Path(folder)
    if not (root / "index.html").is_file():
        raise UsageError(f"{root}/ has no index.html: pass a folder written by `python dcgan.py export --out DIR`")
    handler = functools.partial(_Handler, directory=str(root.resolve()))
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror}): pass another --port") from None
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {root}/ at http://{shown}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
