"""Max |ONNX - PyTorch| of an exported folder against its checkpoint's sampling generator (unfolded), on 1000 z.

    python bench/export_parity.py CHECKPOINT_DIR SITE_DIR
"""
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from digitgan.training import checkpoints  # noqa: E402
from digitgan.config import resolve  # noqa: E402
from digitgan.nets.networks import build_models, call  # noqa: E402
from digitgan.nets.drawing import class_labels  # noqa: E402

if __name__ == "__main__":
    ck, site = sys.argv[1], sys.argv[2]
    state = checkpoints.load_latest(ck)[0]
    cfg = resolve({}, state["config"])
    G, _ = build_models(cfg)
    G.load_state_dict(state.get("generator_ema", state["generator"]))
    z = torch.randn(1000, cfg.z_dim, generator=torch.Generator().manual_seed(0))
    labels = class_labels(cfg, 1000)
    with torch.no_grad():
        expected = call(G.eval(), z, labels).numpy()
    session = onnxruntime.InferenceSession(f"{site}/generator.onnx", providers=["CPUExecutionProvider"])
    got = session.run(None, {"z": z.numpy(), **({"label": labels.numpy()} if labels is not None else {})})[0]
    print(f"max |onnxruntime - pytorch| over 1000 samples: {np.abs(got - expected).max():.2e}")
