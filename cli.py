"""
cli.py: what every fastslow command shares: one error type for user mistakes, an argparse whose
errors are one line, and a number parser for flags.

    from cli import UserError, CLIParser, positive, exit_on_user_error

Library code (train.py, report.py, ...) raises UserError (or tasks.SpecError /
model.CheckpointError / fast_context.ReflectorError, which their own modules raise); only a
script's `main` turns them into the one line `error: ...` and exit code 2 that users see, via
exit_on_user_error. So every function stays usable from a notebook or a test.
"""

import argparse
import sys

import fast_context
import model
import tasks


class UserError(Exception):
    """A mistake in what the user asked for (a flag, a folder, a checkpoint): one line, no trace."""


class CLIParser(argparse.ArgumentParser):
    """argparse whose errors are one line (what was wrong, where to look), raised as UserError."""

    def error(self, message):
        raise UserError(f"{message} (see `python {self.prog} --help`)")


def positive(kind):
    """argparse type: a number > 0 of `kind` (int or float), else a clear message."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"'{text}' must be > 0")
        return value
    parse.__name__ = kind.__name__
    return parse


def exit_on_user_error(main):
    """Run a script's main(argv); a user error becomes `error: ...` on stderr and exit code 2."""
    def wrapped(argv=None):
        try:
            return main(argv)
        except (UserError, tasks.SpecError, model.CheckpointError,
                fast_context.ReflectorError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    return wrapped
