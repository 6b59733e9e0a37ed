"""One line per error, the right exit code, and the process-wide plumbing.

Exit codes: 0 success, 1 runtime failure (I/O, disk full, interrupted),
2 usage error; ``check`` uses 1 for its "NOT consistent" verdict and 3 for
runtime failures. Every error is one line on stderr, never a traceback (set
``VSGEN_DEBUG=1`` to see one); SIGTERM unwinds like Ctrl-C so temporary
files are removed; a reader that goes away ends the run quietly.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import signal
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn

import click
from click.exceptions import NoArgsIsHelpError

from vsgen import _interrupt


class RuntimeFailure(click.ClickException):
    """A runtime failure (I/O, disk full, interrupted): exit code 1, one line."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        say(f"Error: {one_line(self.format_message())}")


class BadInput(RuntimeFailure):
    """Bad input from the user: exit code 2, one line."""

    exit_code = 2


def one_line(text: str) -> str:
    return " ".join(str(text).split())


#: The library's argument names as the command line spells them.
OPTION_NAMES = {
    "scale": "--scale",
    "mode": "--mode",
    "distribution": "--distribution",
    "seed": "--seed",
    "preset": "--preset",
    "stream": "--stream",
    "layout": "--layout",
    "input_axes": "--in-axes",
    "output_axes": "--out-axes",
    "dtype": "--dtype",
    "shape": "--shape",
    "fan_shape": "--fan-shape",
    "rows": "--rows",
    "shard": "--shard",
    "fmt": "--format",
    "threads": "--threads",
    "chunks": "--chunks",
    "max_shard_size": "--max-shard-size",
    "connect_timeout": "--connect-timeout",
    "cluster_timeout": "--cluster-timeout",
}


def in_cli_terms(message: str, renamed: Mapping[str, str] | None = None) -> str:
    """A library message that names Python arguments, in command-line terms.

    ``"Argument `rows` must satisfy ... Received: rows=0:9"`` becomes
    ``"--rows must satisfy ... Received: --rows=0:9"``. Only messages about
    arguments (those starting with "Argument") are rewritten; ``renamed``
    overrides the option for an argument (e.g. ``shape`` -> ``--fan-shape``).
    """
    if not message.startswith("Argument"):
        return message
    names = {**OPTION_NAMES, **(renamed or {})}

    def option(found: re.Match[str]) -> str:
        return names.get(found.group(1), found.group(0))

    message = re.sub(r"^Arguments? (?=`)", "", message)
    message = re.sub(r"`(\w+)`", option, message)
    return re.sub(r"\b(\w+)(?==)", option, message)


@contextlib.contextmanager
def user_errors(renamed: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn the library's errors into one-line CLI errors at one boundary.

    ValueError/TypeError mean the input was wrong (exit 2), with argument
    names as options (:func:`in_cli_terms`; a message the library reworded
    into its own words is shown as it was first written, in the command
    line's: ``vsgen._wording``); OSError is a runtime failure (exit 1).
    """
    try:
        yield
    except (ValueError, TypeError) as error:
        message = getattr(error, "command_line_message", None) or str(error)
        raise BadInput(in_cli_terms(message, renamed)) from error
    except BrokenPipeError:
        raise
    except OSError as error:
        raise RuntimeFailure(describe_os_error(error)) from error


def describe_os_error(error: OSError) -> str:
    # A message the library worded for Python callers keeps the command line's words.
    worded = getattr(error, "command_line_message", None)
    if worded:
        return str(worded)
    if error.strerror and error.filename:
        return f"{error.strerror}: {error.filename}"
    # OSError(errno, message) prints as "[Errno N] message"; the message is enough.
    return error.strerror or str(error) or type(error).__name__


def settle_after_imports() -> None:
    """Freeze every object that exists now out of the cyclic collector's reach
    (``gc.freeze``: they are the imported modules, which live as long as the
    process) and turn the collector on, for the command's own garbage."""
    import gc

    gc.freeze()
    gc.enable()


class VsgenGroup(click.Group):
    """A group whose ``main`` prints every error as one line with the right exit code.

    Commands given as ``lazy_commands`` (name -> (module, summary)) are
    imported only when invoked: ``vsgen --help`` lists them from the summary
    (a test keeps it equal to each command's own), so that the group's help
    and ``--version`` start without NumPy.
    """

    #: Set by ``vsgen.cli.main(own_process=True)``: see ``settle_after_imports``.
    own_process = False

    def __init__(
        self, *args: Any, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            import importlib

            module = importlib.import_module(self.lazy_commands[cmd_name][0])
            self.add_command(getattr(module, cmd_name))
            if self.own_process:
                settle_after_imports()
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Click's lookup, with the likeliest command named when there is no such
        command (``vsgen smaple``: "did you mean sample?")."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as error:
            name = args[0] if args else ""
            if name.startswith("-") or self.get_command(ctx, name) is not None:
                raise
            from vsgen.names import closest

            guess = closest(name, self.list_commands(ctx))
            if guess is None:
                raise
            raise click.UsageError(
                f"No such command {name!r}; did you mean {guess}?", error.ctx
            ) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        # The width click's own listing gives each summary.
        limit = formatter.width - 6 - max((len(name) for name in names), default=0)
        rows = []
        for name in names:
            if name in self.commands:
                command = self.commands[name]
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                # A stand-in command shortens the summary exactly as click would.
                stand_in = click.Command(name, help=self.lazy_commands[name][1])
                rows.append((name, stand_in.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        # SIGTERM unwinds like Ctrl-C for the whole command, so that a signal
        # that arrives while an output is being created still removes its
        # temporary file. Both are reported here, before click's own handler
        # prints an empty line to stderr and turns them into click.Abort.
        # Before and after the command, main's start-up handler (if any)
        # ends the process at once.
        _interrupt.output_pending()
        try:
            with terminate_as_interrupt(), library_warnings_as_lines():
                return super().invoke(ctx)
        except (KeyboardInterrupt, Exception) as error:
            # The interrupt itself, or what it caused on its way out; a message the
            # command made (a ClickException) stays, even one made for an interrupt.
            if isinstance(error, click.ClickException) or not _raised_while_interrupted(error):
                raise
            _forget_unhandled_interrupt()
            raise RuntimeFailure("interrupted") from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> NoReturn:
        # Always click's non-standalone mode: every outcome is reported and
        # turned into an exit code here, whatever the caller asked for.
        del standalone_mode
        if sys.stdout is None:  # started with stdout closed (`vsgen ... >&-`)
            sys.stdout = ClosedStream()
        failed = runtime_exit_code(sys.argv[1:] if args is None else args)
        try:
            result = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except NoArgsIsHelpError as error:  # a bare `vsgen`: the help, readable, as click does
            error.show()
            sys.exit(2)
        except click.UsageError as error:
            hint = ""
            if error.ctx is not None:
                hint = f" (see '{error.ctx.command_path} --help')"
            say(f"Error: {one_line(error.format_message())}{hint}")
            sys.exit(2)
        except click.ClickException as error:
            say(f"Error: {one_line(error.format_message())}")
            sys.exit(failed if error.exit_code == 1 else error.exit_code)
        except click.Abort:
            _forget_unhandled_interrupt()
            say("Error: interrupted")
            sys.exit(failed)
        except BrokenPipeError:
            silence_stdout()
            sys.exit(failed)
        except OSError as error:  # printing failed, e.g. `vsgen config > /dev/full`
            silence_stdout()
            say(f"Error: cannot write the output: {describe_os_error(error)}")
            sys.exit(failed)
        except Exception as error:  # a bug: still one line, unless debugging
            if os.environ.get("VSGEN_DEBUG"):
                raise
            say(
                f"Error: internal error: {type(error).__name__}: {one_line(str(error))} "
                "(set VSGEN_DEBUG=1 for a traceback)"
            )
            sys.exit(failed)
        sys.exit(result if isinstance(result, int) else 0)


def _raised_while_interrupted(error: BaseException) -> bool:
    """True if ``error`` is a Ctrl-C or SIGTERM (KeyboardInterrupt), or was raised
    while one unwound the command.

    Python's threading primitives are written in Python, so an interrupt can land
    between two of their steps: ``threading.Condition.wait`` (under every
    ``Event.wait``) interrupted just after it released its lock, and before the
    ``try`` that takes it back, leaves the lock free, and the enclosing ``with``
    then fails with "RuntimeError: release unlocked lock", the interrupt its
    ``__context__``. The interrupt is what happened; the run was unwound all the same.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__context__
    return False


def _forget_unhandled_interrupt() -> None:
    """Keep the exit code of a caught Ctrl-C.

    When a KeyboardInterrupt leaves code that Python compiled from a string
    (``exec``/``eval``: every named tuple and dataclass is made so, e.g. while a
    module is imported), CPython marks it unhandled and, at exit, ends the process
    by SIGINT (status -2) although vsgen caught it and reported it. Running any
    such code clears the mark.
    """
    exec("")  # noqa: S102 - an empty module, for its side effect on that mark


class ClosedStream(io.TextIOBase):
    """Stands in for a standard output that was closed before vsgen started.

    Python sets ``sys.stdout`` to None then, and ``click.echo`` silently
    prints nothing; writing here fails loudly instead, like a full disk.
    """

    def _closed(self) -> OSError:
        return OSError(errno.EBADF, "standard output is closed")

    def write(self, text: str) -> int:
        raise self._closed()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        raise self._closed()

    @property
    def buffer(self) -> Any:
        raise self._closed()

    def isatty(self) -> bool:
        return False


def plus_minus() -> str:
    """``"±"``, or ``"+/-"`` when stdout's encoding cannot print it (e.g. ASCII)."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        "±".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "+/-"
    return "±"


def emit(text: str) -> None:
    """Print data to stdout and flush, so that a failure is an error of this run."""
    click.echo(text)
    sys.stdout.flush()


#: ``vsgen check`` exits 1 for "NOT consistent", so its runtime failures (I/O,
#: interrupted, a closed stdout, an internal error) exit with this code instead:
#: a failure must never read as a verdict.
CHECK_FAILED = 3


def runtime_exit_code(args: Any) -> int:
    """The exit code of a runtime failure for the command in ``args``: 3 for check, else 1."""
    words = [str(arg) for arg in args or ()]
    command = next((word for word in words if not word.startswith("-")), None)
    return CHECK_FAILED if command == "check" else 1


def say(line: str) -> None:
    """One line to stderr, best effort: a full or closed stderr never fails a run."""
    with contextlib.suppress(OSError, ValueError):
        click.echo(line, err=True)


def stdout_is_terminal() -> bool:
    return sys.stdout is not None and sys.stdout.isatty()


def binary_stdout() -> Any:
    """Standard output as a binary stream whose ``write`` writes all or raises.

    With ``PYTHONUNBUFFERED`` (or ``python -u``) ``sys.stdout.buffer`` is a raw
    ``FileIO``, whose ``write`` may write only part of the data (a reader that
    went away, a non-blocking pipe) and return a count that writers do not
    check; a ``BufferedWriter`` retries until everything is written.
    """
    if sys.stdout is None or isinstance(sys.stdout, ClosedStream):
        raise OSError(errno.EBADF, "standard output is closed; use -o FILE")
    stream = sys.stdout.buffer
    if isinstance(stream, io.RawIOBase):
        return io.BufferedWriter(io.FileIO(stream.fileno(), "wb", closefd=False))
    return stream


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of data
    that could not be written does not print "Exception ignored ..." lines."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@contextlib.contextmanager
def library_warnings_as_lines() -> Iterator[None]:
    """vsgen's own warnings (e.g. a large job without the C kernels) print as
    one line, ``warning: MESSAGE``, on stderr, like the command's own; other
    packages' warnings print as Python prints them."""
    with warnings.catch_warnings():
        python_show = warnings.showwarning

        def show(message: Any, category: Any, *where: Any, **more: Any) -> None:
            if category.__module__.startswith("vsgen."):
                say(f"warning: {one_line(str(message))}")
            else:
                python_show(message, category, *where, **more)

        warnings.showwarning = show
        yield


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt, so temporary files are removed;
    once the output is in place (``vsgen._interrupt.output_in_place``) they change
    nothing: the work is done and the command ends with exit code 0. (Raising then
    could land in a callback Python cannot unwind, which prints "Exception ignored".)"""

    def handler(signum: int, frame: Any) -> None:
        if not _interrupt.is_output_in_place():
            raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread (e.g. some test runners)
        yield
        return
    python_hook = sys.unraisablehook

    def unraisable(report: Any) -> None:
        # A KeyboardInterrupt raised where Python cannot propagate it (a weakref
        # callback of the import system, a __del__) would be printed as "Exception
        # ignored" and lost: deliver the interrupt again a moment later, from a
        # thread, once this hook has returned, to be raised where it can.
        if isinstance(report.exc_value, KeyboardInterrupt):
            import _thread
            import threading

            again = threading.Timer(0.005, _thread.interrupt_main, (signal.SIGINT,))
            again.daemon = True
            again.start()
            return
        python_hook(report)

    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = python_hook
        for caught, old in previous.items():
            _interrupt.restore(caught, old)


@contextlib.contextmanager
def signals_held() -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM: record them instead of raising, for a short step."""
    received: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        received.append(signum)

    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # e.g. `vsgen ... &`
                previous[signum] = signal.signal(signum, hold)
    except ValueError:  # not the main thread (e.g. some test runners)
        yield received
        return
    try:
        yield received
    finally:
        for held, handler in previous.items():
            _interrupt.restore(held, handler)
