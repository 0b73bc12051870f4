"""
cli.py: what every fastslow command shares: one error type for user mistakes, an argparse whose
errors are one line, checked flag types (numbers, folders, checkpoints, URLs) and the one line a
Ctrl-C prints.

    from harness.cli import UserError, CLIParser, positive, exit_on_user_error

Library code (train.py, report.py, ...) raises UserError (or tasks.SpecError /
model.CheckpointError / fast_context.ReflectorError, which their own modules raise); only a
script's `main` turns them into the one line `error: ...` and exit code 2 that users see, via
exit_on_user_error. So every function stays usable from a notebook or a test.

Paths are checked when the flags are parsed, before any work: FOLDER (a folder to write into: it
may exist, or its nearest existing parent is a writable folder) and CHECKPOINT (an existing file).
The same checks (`writable_folder`, `checkpoint_file`) run on the folders a command picks itself.
A training loop stopped by Ctrl-C raises Interrupted (a KeyboardInterrupt) whose text says how far
it got and what its checkpoint holds; the script adds the command that continues it, prints that
one line and exits with 130, the shell's code for SIGINT.
"""

import argparse
import math
import os
import shlex
import signal
import sys
from urllib.parse import urlparse

import fast_context
import model
from world import tasks


class UserError(Exception):
    """A mistake in what the user asked for (a flag, a folder, a checkpoint): one line, no trace."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C in a training loop, as one line: the steps done and what the last checkpoint holds."""


class CLIParser(argparse.ArgumentParser):
    """argparse whose errors are one line (what was wrong, where to look), raised as UserError."""

    def error(self, message):
        prog = self.prog if self.prog.startswith("python ") else f"python {self.prog}"
        raise UserError(f"{message} (see `{prog} --help`)")


# -----------------------------------------------------------------------------
# flag types: argparse calls them on the text; ArgumentTypeError becomes `argument --x: ...`

def _number(kind, ok, bound):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}")
        if not math.isfinite(value):  # nan and inf pass float(); no count or rate is either
            raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"'{text}' must be {bound}")
        return value
    parse.__name__ = kind.__name__
    return parse


def positive(kind):
    """argparse type: a finite number > 0 of `kind` (int or float), else a clear message."""
    return _number(kind, lambda v: v > 0, "> 0")


def nonnegative(kind):
    """argparse type: a finite number >= 0 of `kind` (seeds, warmup counts, penalties)."""
    return _number(kind, lambda v: v >= 0, ">= 0")


def writable_folder(path):
    """A folder to write into: an existing folder, or one that can be created. -> path; UserError
    naming what is in the way otherwise."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{path} is a file, not a folder; pass a folder")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):  # the nearest part of the path that exists
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{path} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{path} cannot be written: {parent} is not writable")
    return path


def checkpoint_file(path):
    """An existing, readable checkpoint file (its content is checked when it is loaded). -> path;
    UserError when it is missing or a folder."""
    if os.path.isdir(path):
        inside = os.path.join(path, "model.pt")
        hint = f"; did you mean {inside}?" if os.path.isfile(inside) else "; pass a .pt file"
        raise UserError(f"{path} is a folder, not a checkpoint file{hint}")
    if not os.path.exists(path):
        raise UserError(f"checkpoint not found: {path}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path} cannot be read")
    return path


def http_url(text):
    """An http(s) URL with a host, e.g. http://localhost:11434/v1. -> text; UserError otherwise."""
    u = urlparse(text)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise UserError(f"'{text}' is not an http(s) URL (e.g. http://localhost:11434/v1)")
    return text


def flag_type(check):
    """argparse type from a check that raises UserError (it runs when the flags are parsed)."""
    def parse(text):
        try:
            return check(text)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e))
    parse.__name__ = check.__name__
    return parse


FOLDER = flag_type(writable_folder)        # --out: a folder to write into
CHECKPOINT = flag_type(checkpoint_file)    # --init, --base: an existing checkpoint file
URL = flag_type(http_url)                  # --llm-url


# -----------------------------------------------------------------------------
# a script's main: user errors and Ctrl-C become one line

def continue_line(e, script, argv, flag=None):
    """Ctrl-C `e` -> the Interrupted whose one line ends with the command that continues: this
    one again, with `flag` (e.g. --resume) added when it is missing."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if flag and flag not in argv:
        argv.append(flag)
    done = str(e) if isinstance(e, Interrupted) and str(e) else "interrupted"
    return Interrupted(f"{done}; continue with: {shlex.join(['python', script] + argv)}")


def quiet_worker():
    """Initializer of a worker process: Ctrl-C exits it at once with 130, no traceback (the
    parent prints the one line)."""
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))


def exit_on_user_error(main):
    """Run a script's main(argv); a user error becomes `error: ...` on stderr and exit code 2,
    Ctrl-C one line on stderr and exit code 130."""
    def wrapped(argv=None):
        try:
            return main(argv)
        except (UserError, tasks.SpecError, model.CheckpointError,
                fast_context.ReflectorError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as e:
            print(e if isinstance(e, Interrupted) and str(e) else "interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapped
