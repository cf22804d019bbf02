#!/usr/bin/env python3
"""dcgan: teach a DCGAN to draw pictures (MNIST digits, the emoji, a folder of yours), sample, measure and share it.

python dcgan.py                       # = train: trains, or resumes from checkpoints/
python dcgan.py sample --num 64 --out grid.png
python dcgan.py evaluate --json out.json   # FID, precision, recall, ... against the test set
python dcgan.py animate               # sample_image/progress.gif: the grids in step order
python dcgan.py interpolate           # latent walks: interpolation.png and .gif
python dcgan.py export --out site     # generator.onnx, .safetensors and a web page that draws pictures
python dcgan.py serve site            # show that page at http://127.0.0.1:8000/
python dcgan.py data                  # fetch and verify the dataset
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from digitgan.config import BACKENDS, PRESETS, TrainConfig, about, cache_home, choices, flag
from digitgan.errors import ProcessLost, TrainingStopped, UsageError, WriteError

if TYPE_CHECKING:
    from digitgan.nets.drawing import Generator

COMMANDS = ("train", "sample", "evaluate", "animate", "interpolate", "export", "serve", "data", "train-evaluator")
TYPES = {"int": int, "float": float, "str": str}  # dataclass field types are strings (postponed annotations)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def _fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected frames per second, not {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 100 frames per second, not {value:g}")
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit code 2
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def field_note(name: str) -> str:
    """What a train flag's help ends with: its choices, its default and the seed preset's value where it differs."""
    default, seed = getattr(TrainConfig, name), PRESETS["seed"]
    note = f"default: {default}" + (f"; seed preset: {seed[name]}" if seed.get(name, default) != default else "")
    return (f"{' | '.join(map(str, choices(name)))}; " if choices(name) else "") + note


def program() -> str:
    """How the user called us: `dcgan` (the command pip installs) or `python dcgan.py`."""
    return "dcgan" if os.path.basename(sys.argv[0]) == "dcgan" else "python dcgan.py"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=program(), description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", parser_class=Parser)
    for add in (
        _train_command,
        _sample_command,
        _evaluate_command,
        _animate_command,
        _interpolate_command,
        _export_command,
        _serve_command,
        _train_evaluator_command,
        _data_command,
    ):
        add(sub)
    return parser


def _train_command(sub: Any) -> None:
    train = sub.add_parser("train", help="train, or resume from the newest checkpoint (the default command)")
    for f in dataclasses.fields(TrainConfig):
        # Flags default to None so that only what the user typed overrides a preset or a saved run; TrainConfig
        # checks the values, so that the API and the command line refuse them in the same words.
        train.add_argument(
            f"--{flag(f.name)}",
            dest=f.name,
            type=TYPES[str(f.type)],
            default=None,
            metavar=f.name.upper(),
            help=f"{f.metadata['help']} ({field_note(f.name)})",
        )
    train.add_argument(
        "--fresh",
        action="store_true",
        help="start over instead of resuming (needs an empty --checkpoint-dir, or --force)",
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="with --fresh: move the existing run aside into CHECKPOINT_DIR/previous-<time>/ (nothing is deleted)",
    )
    train.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="under torchrun: how the processes talk "
        "(auto: nccl on CUDA, gloo on the CPU; nccl needs one GPU per process)",
    )
    train.add_argument(
        "--dist-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="under torchrun: how "
        "long a process waits for the others before the run stops instead of hanging (default: 300)",
    )


def _sample_command(sub: Any) -> None:
    sample = sub.add_parser("sample", help="write a grid (.png) or raw array (.npy) of generated pictures")
    _generator_flags(sample, num=64)
    sample.add_argument(
        "--out",
        default="grid.png",
        help="output: .png (a grid), .npy (N,C,R,R float32 in "
        "[-1, 1]), .npz (arrays `images` and, for a conditional model, `labels`), or a folder "
        "ending in / (one PNG per image)",
    )
    sample.add_argument(
        "--class",
        dest="cls",
        default=None,
        metavar="CLASS",
        help="conditional models: draw this "
        "class only, by label (7) or Fashion-MNIST name (sneaker); default: a balanced set",
    )


def _evaluate_command(sub: Any) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="score generated images against the test set (the emoji's or a "
        "folder's held-out images) in a named feature space (FID, KID, precision, recall, ...), "
        "beside the real-data reference",
    )
    _generator_flags(evaluate, num=10000)
    evaluate.add_argument(
        "--features",
        default=None,
        help="auto, evaluator, imagenet, classifier or a TorchScript .pt file (default: the run's --features; see "
        "docs/quality.md)",
    )
    evaluate.add_argument("--json", default=None, help="also write the figures to this JSON file")
    evaluate.add_argument(
        "--cas",
        action="store_true",
        help="conditional models: also the Classification Accuracy "
        "Score, a classifier trained on generated digits only and tested on real ones (minutes)",
    )
    evaluate.add_argument(
        "--cas-num",
        type=_positive,
        default=60_000,
        help="generated images CAS trains on (default: 60000, the size of the real training set)",
    )


def _animate_command(sub: Any) -> None:
    animate = sub.add_parser(
        "animate",
        help="an animated GIF of the run's grids in step order, each with its step "
        "(training writes one at its end too)",
    )
    animate.add_argument("--sample-dir", default=TrainConfig.sample_dir, help="where the run's grids are")
    animate.add_argument("--out", default=None, help="the GIF to write (default: SAMPLE_DIR/progress.gif)")
    animate.add_argument("--fps", type=_fps, default=4.0, help="frames (grids) per second (default: 4)")


def _interpolate_command(sub: Any) -> None:
    walk = sub.add_parser(
        "interpolate",
        help="latent walks: spherical interpolation between random noise "
        "vectors, as a grid (one walk per row) and an animated GIF; conditional models also "
        "get the style grid (z per column, class per row)",
    )
    _checkpoint_flags(walk)
    walk.add_argument("--rows", type=_positive, default=8, help="how many walks (default: 8)")
    walk.add_argument("--steps", type=_positive, default=10, help="images along each walk, ends included (default: 10)")
    walk.add_argument("--fps", type=_fps, default=20.0, help="GIF frames per second (default: 20)")
    walk.add_argument(
        "--out",
        default="interpolation.png",
        help="the grid (.png); the GIF is written beside it as .gif, a conditional model's style grid as _style.png",
    )


def _export_command(sub: Any) -> None:
    export = sub.add_parser(
        "export",
        help="a folder to share: generator.onnx, generator.safetensors + .json, and "
        "a static web page (index.html) that draws pictures in the browser",
    )
    export.add_argument("--out", required=True, help="the folder to write (must be empty, unless --force)")
    export.add_argument("--force", action="store_true", help="write into a non-empty --out, replacing its files")
    export.add_argument("--checkpoint-dir", default=TrainConfig.checkpoint_dir, help="use its newest checkpoint")
    export.add_argument("--checkpoint", default=None, help="this checkpoint file instead")
    export.add_argument("--best", action="store_true", help="CHECKPOINT_DIR/best.pt instead")


def _serve_command(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve an exported folder on a local web server and print its URL")
    serve.add_argument("folder", help="a folder written by export")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 shares it with the network)",
    )
    serve.add_argument("--port", type=int, default=8000, help="the port to listen on (0: any free one)")


def _train_evaluator_command(sub: Any) -> None:
    trainer = sub.add_parser(
        "train-evaluator",
        help="train the classifier that gives class figures: for MNIST and "
        "Fashion-MNIST the shipped evaluator (developers only); for the emoji or a labelled "
        "folder one kept in --cache-dir, which conditional runs' evaluations then use",
    )
    _setting(trainer, "dataset", "mnist, fashion-mnist, stacked-mnist, emoji or a folder with a subfolder per class")
    _setting(trainer, "resolution")
    _setting(trainer, "channels")
    trainer.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="default: 6 for a shipped evaluator (MNIST, "
        "Fashion-MNIST); for smaller data about 3,000 steps' worth (at most 60)",
    )
    trainer.add_argument(
        "--out-dir",
        default=None,
        help="MNIST and Fashion-MNIST: default digitgan/quality/evaluators/ (the shipped files)",
    )
    _setting(trainer, "cache_dir")


def _data_command(sub: Any) -> None:
    data = sub.add_parser(
        "data",
        help="fetch, verify and cache a dataset, and the evaluator's test-set features and real-data "
        "reference that quality figures compare with, printing what was done",
    )
    _setting(
        data,
        "dataset",
        "mnist, fashion-mnist, stacked-mnist, emoji or a folder of pictures (frozen at --resolution into "
        "--cache-dir, with a summary of what was used and skipped)",
    )
    _setting(data, "resolution")
    _setting(data, "channels")
    _setting(data, "data_dir")
    _setting(data, "cache_dir")
    _setting(data, "workers")


def _setting(p: argparse.ArgumentParser, name: str, help: str = "") -> None:
    """A subcommand's flag that is also a TrainConfig field: its type, default, choices and (unless given) help."""
    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    p.add_argument(
        f"--{flag(name)}",
        type=TYPES[str(field.type)],
        default=field.default,
        choices=choices(name) or None,
        help=help or about(name)["help"],
    )


def _generator_flags(p: argparse.ArgumentParser, num: int) -> None:
    _checkpoint_flags(p)
    p.add_argument("--num", type=_positive, default=num, help=f"how many images (default: {num})")


def _checkpoint_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint-dir", default=TrainConfig.checkpoint_dir, help="use its newest checkpoint")
    p.add_argument("--checkpoint", default=None, help="this checkpoint file instead")
    p.add_argument(
        "--best",
        action="store_true",
        help="CHECKPOINT_DIR/best.pt instead: the best headline figure (FID, or KID on small data) training measured",
    )
    p.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same images")
    _setting(p, "device", "where to draw (auto: the accelerator torch.accelerator finds, else the CPU)")


def _generator(args: argparse.Namespace) -> Generator:
    """The generator --checkpoint, --best or --checkpoint-dir names."""
    from digitgan import load

    if args.best and args.checkpoint:
        raise UsageError("--best and --checkpoint name two checkpoints: pass one of them")
    return load(args.checkpoint or args.checkpoint_dir, best=args.best, device=args.device)


def cmd_train(args: argparse.Namespace) -> None:
    from digitgan import train

    settings = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None
    }
    train(fresh=args.fresh, force=args.force, backend=args.backend, dist_timeout=args.dist_timeout, **settings)


def cmd_sample(args: argparse.Namespace) -> None:
    from digitgan.share.samples import samples_path, save_samples

    path = samples_path(args.out)  # before the generator is loaded: a bad --out costs nothing
    G = _generator(args)
    labels = G.labels(args.num, args.cls)
    images = G.draw(G.noise(args.num, args.seed), labels)
    save_samples(
        path,
        images,
        labels,
        nrow=10 if labels is not None and args.cls is None and args.num % 10 == 0 else None,
        class_names=G.class_names,
    )
    print(f"wrote {args.num} samples from step {G.step} to {path}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from digitgan import evaluate
    from digitgan.core.files import atomic_write
    from digitgan.quality.judge import format_table

    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UsageError(f"--json {args.json}: the directory {Path(args.json).parent}/ does not exist")
    if args.features is not None:
        dataclasses.replace(TrainConfig(), features=args.features)  # checked before the generator is loaded
    result = evaluate(
        _generator(args), args.num, args.seed, cas=args.cas_num if args.cas else 0, features=args.features
    )
    print(format_table(result))
    if args.json:
        atomic_write(Path(args.json), lambda f: f.write(json.dumps(result, indent=2).encode() + b"\n"))
        print(f"wrote {args.json}")


def cmd_animate(args: argparse.Namespace) -> None:
    from digitgan.training.records import animate

    path, steps = animate(args.sample_dir, args.out, args.fps)
    print(f"wrote {path}: {len(steps)} grids, from step {steps[0]} to {steps[-1]}")


def cmd_interpolate(args: argparse.Namespace) -> None:
    from digitgan.share.walks import check_walk, interpolate

    check_walk(args.out, args.steps)  # before the generator is loaded
    paths = interpolate(args.out, _generator(args), args.rows, args.steps, args.seed, args.fps)
    print("wrote " + ", ".join(map(str, paths)))


def cmd_export(args: argparse.Namespace) -> None:
    from digitgan.share.export import export

    path = export(args.out, args.checkpoint_dir, args.checkpoint, args.best, args.force)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(
        f"wrote {path}/ ({size / 1e6:.1f} MB): generator.onnx, generator.safetensors, generator.json and "
        f"index.html; view it with `python dcgan.py serve {path}`"
    )


def cmd_serve(args: argparse.Namespace) -> None:
    from digitgan.share.export import serve

    serve(args.folder, args.host, args.port)


def cmd_train_evaluator(args: argparse.Namespace) -> None:
    from digitgan.quality.evaluator import SHIPPED, train_evaluator

    weights = train_evaluator(
        args.dataset,
        args.epochs,
        out_dir=args.out_dir or SHIPPED,
        cache_dir=args.cache_dir,
        resolution=args.resolution,
        channels=args.channels,
    )
    print(f"wrote {weights} and {weights.with_suffix('.json')}:\n{weights.with_suffix('.json').read_text()}")


def cmd_data(args: argparse.Namespace) -> None:
    from digitgan.data.source import Request
    from digitgan.data.sources import source
    from digitgan.quality.judge import Judge

    src, cache = source(args.dataset, args.resolution), cache_home(args.cache_dir)
    src.prepare(Request(args.resolution, args.channels, cache, args.data_dir, args.workers), print)
    if args.data_dir:  # files of the user's: nothing of them is cached
        return
    judge = Judge(args.dataset, cache, resolution=args.resolution, channels=args.channels)
    right = (
        f" (it classifies {100 * judge.test_accuracy:.2f} % of them right)" if judge.test_accuracy is not None else ""
    )
    print(
        f"the features of the {args.dataset} {src.test_set} in {judge.space.name} and the real-data reference are "
        f"in {cache}/{right}"
    )


def flags_markdown() -> str:
    """docs/flags.md: every subcommand's flags, from TrainConfig and the parsers themselves (`make flags`)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = {a.dest: a.help or "" for a in sub._choices_actions}
    seed = PRESETS["seed"]
    fields = {f"--{flag(f.name)}": f for f in dataclasses.fields(TrainConfig)}
    cell = lambda v: "(none)" if v in ("", None) else f"`{v}`"
    text = lambda t: t.replace("|", "\\|")  # a | inside a Markdown table's cell
    out = [
        "# Every flag",
        "",
        "Generated by `make flags` from `TrainConfig` (digitgan/config.py: its fields are "
        "train's flags) and the subcommands' parsers (dcgan.py); `tests/test_docs.py` fails when this page is "
        "stale. `python dcgan.py COMMAND --help` says the same.",
        "",
    ]
    for name, p in sub.choices.items():
        train = name == "train"
        out += [
            f"## `{name}`",
            "",
            f"{commands[name][0].upper()}{commands[name][1:]}.",
            "",
            "| flag | default | seed preset | meaning |" if train else "| flag | default | meaning |",
            "|---|---|---|---|" if train else "|---|---|---|",
        ]
        for a in p._actions:
            if a.dest == "help":
                continue
            shown = " ".join(a.option_strings) or a.dest.upper()
            if train and shown in fields:
                f = fields[shown]
                preset = cell(seed[f.name]) if seed.get(f.name, f.default) != f.default else ""
                meaning = f.metadata["help"] + (
                    f" ({' | '.join(map(str, choices(f.name)))})" if choices(f.name) else ""
                )
                out.append(f"| `{shown}` | {cell(f.default)} | {preset} | {text(meaning)} |")
                continue
            default = "off" if isinstance(a, argparse._StoreTrueAction) else cell(a.default)
            meaning = a.help or ""
            if a.default is not None:  # the default column says it
                meaning = re.sub(r"\s*\(default: [^)]*\)", "", meaning)
            if a.choices and not isinstance(a.choices, dict):
                meaning += f" ({' | '.join(map(str, a.choices))})"
            out.append(f"| `{shown}` | {default} |{' |' if train else ''} {text(meaning)} |")
        out.append("")
    return "\n".join(out)


def say(line: str, every_process: bool = False) -> None:
    """An error line on stderr; under torchrun from rank 0 only (every process meets the same error), unless
    each process has its own view to give."""
    if every_process or os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "train")
    args = build_parser().parse_args(argv)
    try:
        {
            "train": cmd_train,
            "sample": cmd_sample,
            "evaluate": cmd_evaluate,
            "animate": cmd_animate,
            "interpolate": cmd_interpolate,
            "export": cmd_export,
            "serve": cmd_serve,
            "data": cmd_data,
            "train-evaluator": cmd_train_evaluator,
        }[args.command](args)
    except UsageError as e:
        say(f"error: {e}")
        return 2
    except ProcessLost as e:
        say(f"training stopped: {e}", every_process=True)
        # The broken process group's threads still wait on the lost process; ending the interpreter the usual
        # way would wait them out, then abort. Nothing is left to write.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    except TrainingStopped as e:
        say(f"training stopped: {e}")
        return 1
    except WriteError as e:
        say(f"error: {e}; nothing else was changed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
