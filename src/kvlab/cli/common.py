"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import sys

from kvlab.defaults import DEFAULT_CHUNK_SIZE
from kvlab.errors import KvlabError


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default",
                        help="'default' (embedded SmolLM2-135M-Instruct), a local HF directory, a .gguf file, "
                        "a Hugging Face id already in the local cache, or random:<shape> (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: fp32 on CPU, bf16 on CUDA)")


def add_method_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="full",
                        help="a method name (see `kvlab ls methods`), optionally with parameters: "
                        "snapkv:window_size=64 (default: %(default)s)")
    parser.add_argument("--budget", default=None,
                        help="KV budget: tokens per layer (1024), a ratio of the prompt (25%%), bytes (64MiB) "
                        "or full (default: full)")
    parser.add_argument("--chunk-size", type=chunk_size, default=DEFAULT_CHUNK_SIZE,
                        help="prefill the context in chunks of N tokens, compressing to the budget between "
                        "chunks; 'none' = one pass (default: %(default)s)")


def chunk_size(text: str) -> int | None:
    if text.lower() in ("none", "0", "off"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"chunk size must be a positive integer or 'none', not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("chunk size must be >= 1")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a duration in seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0 seconds")
    return value


def port(text: str) -> int:
    """argparse type: a TCP port, 0-65535 (0 = any free port)."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0-65535, not {value}")
    return value


def load(args: argparse.Namespace):
    """Load the model named by --model/--device/--dtype, quietly."""
    from transformers.utils import logging as hf_logging

    from kvlab.models import load_model

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    return load_model(args.model, dtype=args.dtype, device=args.device)


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise KvlabError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise KvlabError(f"{path} is a directory; pass a text file") from None
    except UnicodeDecodeError:
        raise KvlabError(f"{path} is not UTF-8 text") from None


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def progress_bar(total: int, desc: str):
    """A tqdm bar on stderr when it is a terminal, else a no-op callback."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="tok", file=sys.stderr, leave=False)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close
