"""`deformact` command line: one sub-command per module in `deformact.commands`.

Each command module defines ``add_arguments(parser)`` and ``main(args) -> int``; it parses and
calls :mod:`deformact.tools` or :mod:`deformact.engine`. Modules are imported only when their
command runs, so ``deformact --help`` stays instant.

Errors a user can cause are :class:`deformact.errors.DeformactError`; :func:`main` catches them
here, once, and prints ``deformact <command>: error: <message>`` on one line (exit status 2).
Anything else is a bug and keeps its traceback. Under torchrun a config or checkpoint error is
found alike by every process before any work: rank 0 alone prints it; other errors name their rank.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from deformact.errors import CheckpointError, ConfigError, DeformactError

# name -> (module, one-line help). Keep the order a user would follow.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("deformact.commands.demo", "generate the synthetic set, train, test and plot (the main job)"),
    "prepare": ("deformact.commands.prepare", "convert a dataset release (e.g. Penn Action) to pyskl format"),
    "train": ("deformact.commands.train", "train a model from a YAML config (DDP under torchrun)"),
    "test": ("deformact.commands.test", "evaluate a checkpoint with multi-clip testing"),
    "ensemble": ("deformact.commands.ensemble", "fuse the saved test scores of several runs"),
    "ablate": ("deformact.commands.ablate", "run the paper's ablation table over several seeds"),
    "extract-poses": ("deformact.commands.extract_poses", "2D poses from videos into a pyskl pickle"),
    "predict": ("deformact.commands.predict", "top-5 actions for a raw video"),
    "stream": ("deformact.commands.stream", "one JSON line per window of a live source (file, camera, URL)"),
    "explain": ("deformact.commands.explain", "joint importance, temporal attention and 3DTS pictures"),
    "export": ("deformact.commands.export", "export a checkpoint to ONNX and check it in onnxruntime"),
    "bench": ("deformact.commands.bench", "time, memory and FLOP/s of the model and data path"),
    "info": ("deformact.commands.info", "parameters and FLOPs per module of a preset"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deformact",
        description="3D deformable transformer for RGB + pose action recognition (ICCV 2023).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def _one_line_warning(prog: str):
    """``warnings.formatwarning`` for the CLI: a warning (a counted skip, a note) reads as one
    ``<prog>: warning: ...`` line, not Python's file:line header plus a source line. (Formatting
    only, so ``warnings.catch_warnings(record=True)`` still records them.)"""
    def fmt(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
        text = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
        return f"{prog}: warning: {text}\n"
    return fmt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = build_parser()
        if not argv:
            parser.print_help()
            return 0
        parser.parse_args(argv)  # prints help or a clear 'invalid choice' error
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            print(f"deformact {name}: not available in this version", file=sys.stderr)
            return 2
        raise
    prog = f"deformact {name}"
    parser = argparse.ArgumentParser(prog=prog, description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    saved, warnings.formatwarning = warnings.formatwarning, _one_line_warning(prog)
    try:
        return int(module.main(args) or 0)
    except DeformactError as e:
        message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
        rank = int(os.environ.get("RANK", "0") or 0)
        if rank == 0:
            print(f"{prog}: error: {message}", file=sys.stderr)
        elif not isinstance(e, (ConfigError, CheckpointError)):
            print(f"{prog}: error (rank {rank}): {message}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = saved


if __name__ == "__main__":
    sys.exit(main())
