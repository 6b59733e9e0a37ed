"""The ``vsgen`` command line: parse, call the library, print.

The only package that knows about terminals and exit codes: 0 success,
1 runtime failure (I/O, disk full, interrupted), 2 usage error. Every error
is one line on stderr, never a traceback (set ``VSGEN_DEBUG=1`` to see one).
Data goes to stdout; progress, ``seed: N`` and warnings go to stderr.

One module per command; they share ``_errors`` (exit codes, signals,
stdout), ``_options`` (the initializer options) and ``_output`` (opening
outputs, progress, writing), and never import each other.
"""

from __future__ import annotations

import warnings
from typing import NoReturn

import click

from vsgen import _interrupt
from vsgen._interrupt import end_at_once_on_interrupt
from vsgen._version import DEFAULT_STREAM_LABEL, __version__
from vsgen.cli._errors import VsgenGroup
from vsgen.cli._output import PROGRESS_MIN_VALUES

__all__ = ["COMMANDS", "PROGRESS_MIN_VALUES", "cli", "main"]

#: Command name -> (module, summary: the first sentence of its help). Each
#: module is imported only when its command runs, so ``vsgen --help`` and
#: ``--version`` need no NumPy.
COMMANDS = {
    "sample": ("vsgen.cli.sample", "Sample a tensor and write it to a file or stdout."),
    "describe": (
        "vsgen.cli.describe",
        "Show what a configuration means for a shape: fans, n, variance, stddev, the "
        "truncated normal's pre-truncation stddev and bounds, or the uniform limit.",
    ),
    "config": (
        "vsgen.cli.config",
        "Print the initializer's JSON config (feed it back with --config FILE|-).",
    ),
    "check": (
        "vsgen.cli.check",
        "Check that the tensors of a .npy/.h5/.safetensors file (or a directory of .npy "
        "files) match their initializers.",
    ),
}


@click.group(
    cls=VsgenGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, param, value: _show_version(ctx, value),
    help="Show the version, the default random stream's and the kernels in use, then exit.",
)
def cli() -> None:
    """Generate variance-scaling (Glorot/He/LeCun) weights: fast, reproducible,
    bit-identical to Keras 3 (numpy backend) with --stream keras, PyTorch's
    torch.nn.init parameters with the kaiming_*/xavier_* presets.

    \b
    Examples:
      vsgen sample --shape 512,256 --seed 0 -o w.npy
      vsgen describe --shape 3,3,64,128 --preset he_normal
      vsgen config --preset glorot_uniform --seed 7 --keras
    """


def _show_version(ctx: click.Context, value: bool) -> None:
    """``vsgen 0.2.0 (stream vsgen/1, kernels: native x86-64-v4)``: the kernels
    as a fill of this process would pick them (VSGEN_KERNEL, the C library),
    found without importing NumPy."""
    if not value or ctx.resilient_parsing:
        return
    from vsgen.streams._kernel_path import describe

    click.echo(f"vsgen {__version__} (stream {DEFAULT_STREAM_LABEL}, kernels: {describe()})")
    ctx.exit()


def main(argv: list[str] | None = None, *, own_process: bool = False) -> NoReturn:
    """Run the command line (``vsgen.__main__.main`` calls this after its imports).

    ``own_process``: the caller owns the process and has turned the garbage
    collector off; once the command's module is imported, the objects made
    so far are frozen (``gc.freeze``) and the collector is turned back on.
    In-process callers (tests, scripts) leave it False: their collector is
    never touched.
    """
    end_at_once_on_interrupt()
    # A library warning (torch's "Initializing zero-element tensors is a no-op")
    # is one line on stderr, as vsgen's own warnings are.
    warnings.formatwarning = _one_line_warning
    cli.own_process = own_process
    if own_process:
        _interrupt.own_process()
    cli.main(args=argv, prog_name="vsgen")


def _one_line_warning(
    message: Warning | str, category: type[Warning], *args: object, **kwargs: object
) -> str:
    return f"warning: {message}\n"
