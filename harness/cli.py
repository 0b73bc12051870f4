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
one line and exits with 130, the shell's code for SIGINT. SIGTERM (a scheduler's stop) is handled
the same way and exits with 143. A full disk is one line too: the file refused and the space left.
Sizes that would build memory in proportion to them (steps, seeds, bases, screen sizes) are bounded
when the flags are parsed (MOST_*).
"""

import argparse
import errno
import math
import os
import shlex
import shutil
import signal
import stat
import sys
import tempfile
import threading
from dataclasses import fields, replace
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

# Sizes a command builds memory or processes in proportion to, bounded when the flags are parsed
# (each flag's --help states its bound)
MOST_STEPS = 1_000_000   # RL steps of a run, the stages of a schedule together
MOST_SEEDS = 100         # the suite's --seeds, and its --bases
MOST_SEED = 10**9        # a run or pretraining seed (rollout seeds are seed * 100003 + step)
MOST_THREADS = 1024      # torch threads
MOST_SCREEN = 256        # select_tasks.py --screen: a val split's problems


def _number(kind, ok, bound, most=None):
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
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"'{text}' is too large: at most {most:,}")
        return value
    parse.__name__, parse.most = kind.__name__, most
    return parse


def positive(kind, most=None):
    """argparse type: a finite number > 0 of `kind` (int or float), at most `most` if given, else
    a clear message."""
    return _number(kind, lambda v: v > 0, "> 0", most)


def nonnegative(kind, most=None):
    """argparse type: a finite number >= 0 of `kind` (seeds, warmup counts, penalties)."""
    return _number(kind, lambda v: v >= 0, ">= 0", most)


def writable_folder(path):
    """A folder to write into: an existing folder, or one that can be created. -> path; UserError
    naming what is in the way otherwise."""
    if not path:  # '' would quietly mean the default folder
        raise UserError("an empty folder name; pass a folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{path} is a file, not a folder; pass a folder")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):  # the nearest part of the path that exists
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{path} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{path} cannot be written: {parent} is not writable")
    try:
        most = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        most = 255
    for name in os.path.abspath(path).split(os.sep):
        if len(os.fsencode(name)) > most:
            raise UserError(f"{path} cannot be created: a name in it has {len(os.fsencode(name))} "
                            f"bytes, more than the {most} a file name may have")
    try:  # /proc and /sys pass os.access, yet nothing can be created there
        os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=parent))
    except OSError as e:
        raise UserError(f"{path} cannot be written: nothing can be created in {parent} "
                        f"({e.strerror})")
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
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block torch.load for ever
        raise UserError(f"{path} is not a regular file (a pipe or a device); pass a .pt file")
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


def betas(text):
    """argparse type: AdamW's betas as 'B1,B2', each a finite number in [0, 1). -> (b1, b2)"""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 2 or not all(0 <= v < 1 for v in vals):  # nan fails every comparison
        raise argparse.ArgumentTypeError(f"'{text}' is not two numbers in [0, 1), e.g. 0.9,0.95")
    return vals


def parsed_by(parse):
    """argparse type from a parser that raises ValueError; the text itself is kept."""
    def check(text):
        try:
            parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))
        return text
    check.__name__ = getattr(parse, "__name__", "text")
    return check


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


# -----------------------------------------------------------------------------
# a dataclass of numbers as flags: --FIELD for every field (nanoGPT's configurator, with types)

def add_config_flags(parser, config, default, aliases=None, choices=None, zero_ok=(), most=None,
                     skip=()):
    """--FIELD-NAME for every field of the dataclass `config` but `skip`: a checked number (> 0,
    or >= 0 for `zero_ok`; at most most[field] if given), one of `choices[field]`, betas for a
    tuple, a switch for a bool, text for another str. aliases: {field: another flag}; a field
    whose flag is another field's alias is left out. default(None) is the value of an absent
    flag (None: keep the config's)."""
    aliases, choices, most = aliases or {}, choices or {}, most or {}
    for f in fields(config):
        flag = "--" + f.name.replace("_", "-")
        if f.name in skip or (flag in aliases.values() and f.name not in aliases):
            continue
        bound = f" (at most {most[f.name]:,})" if f.name in most else ""
        if f.name in choices:
            kind = dict(choices=list(choices[f.name]))
        elif f.type is tuple:
            kind = dict(type=betas)
        elif f.type is bool:  # the flag turns it on
            kind = dict(action="store_const", const=True)
        elif f.type is str:
            kind = dict(type=str)
        else:
            number = {"int": int, "float": float}[f.type.__name__]
            check = nonnegative if f.name in zero_ok else positive
            kind = dict(type=check(number, most.get(f.name)))
        names = [flag] + ([aliases[f.name]] if f.name in aliases else [])
        parser.add_argument(*names, dest=f.name, default=default(None), **kind,
                            help=f"{config.__name__}.{f.name} (default: the preset's){bound}")


def with_flags(config, args):
    """`config` with every field given as a flag (add_config_flags) replaced."""
    given = {f.name: getattr(args, f.name, None) for f in fields(config)}
    return replace(config, **{k: v for k, v in given.items() if v is not None})


# the suite's flags and their defaults: `run` and `pretrain` refuse them rather than ignore them
SUITE_FLAGS = {"seeds": 1, "bases": 1, "jobs": None, "sweep": False, "fresh_bases": False}


def refuse_ignored_flags(args):
    """train.py's flags that its command would ignore (or a fixed prompt for a method that reads
    none) -> UserError naming the first."""
    given = [k for k, default in SUITE_FLAGS.items() if getattr(args, k, default) != default]
    if args.cmd and given:
        raise UserError(f"--{given[0].replace('_', '-')} is a flag of the suite (`python train.py` "
                        f"with no command); `{args.cmd}` does not use it")
    fixed = getattr(args, "fixed_prompt", None)  # a flag of `run` alone
    if fixed is not None and (args.method != "instructed" or not fixed.strip()):
        raise UserError("--fixed-prompt takes a non-empty prompt, and is for --method instructed")


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(e, kept="what was on disk before is kept"):
    """A write refused for want of space (OSError `e`, its filename set) -> the one-line UserError
    naming the file and the free space left."""
    path = e.filename or "a file"
    where = os.path.dirname(os.path.abspath(e.filename)) if e.filename else os.getcwd()
    while not os.path.exists(where):
        where = os.path.dirname(where)
    free = shutil.disk_usage(where).free
    return UserError(f"cannot write {path}: the disk is full ({free / 2**20:.1f} MiB free in "
                     f"{where}); {kept}")


# how the last stop came: SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop); the exit code is 128 + it
_stop = {"signal": signal.SIGINT}


def _terminate(signum, frame):
    """SIGTERM stops the work the way Ctrl-C does: checkpoints intact, one line."""
    _stop["signal"] = signum
    raise KeyboardInterrupt


def exit_on_user_error(main):
    """Run a script's main(argv); a user error (a full disk too) becomes `error: ...` on stderr and
    exit code 2; Ctrl-C one line on stderr and exit code 130, SIGTERM the same line and 143."""
    def wrapped(argv=None):
        on_main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGTERM, _terminate) if on_main else None
        _stop["signal"] = signal.SIGINT
        try:
            return main(argv)
        except (UserError, tasks.SpecError, model.CheckpointError,
                fast_context.ReflectorError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            print(f"error: {disk_full(e)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as e:
            print(e if isinstance(e, Interrupted) and str(e) else "interrupted", file=sys.stderr)
            sys.exit(128 + _stop["signal"])
        finally:
            if on_main:
                signal.signal(signal.SIGTERM, old)
    return wrapped
