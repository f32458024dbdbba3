"""The entry of every ``tools/*.py`` script: CPU set-up, quiet start-up, one-line errors.

    from paddle_pale.utils.tool import run_tool

    def main(argv=None):
        ...

    if __name__ == "__main__":
        run_tool(main)

:func:`run_tool` applies :func:`~paddle_pale.utils.cpu.configure_cpu`, silences the
third-party start-up noise it knows to be harmless (:data:`HARMLESS_WARNINGS`; only in
the tools' processes, the library filters nothing), imports paddle with the math
library's threads set after its import (paddle prints a warning at import whenever
``OMP_NUM_THREADS`` is above 1, although more threads are what a CPU run wants), and
calls ``main``.

A user's mistake (a bad config value, a missing file, weights that do not fit) is one
line on stderr, ``tool.py: error: <message>``, and exit status 2, as argparse reports a
bad option. Such a mistake is an exception of :data:`USER_ERRORS` raised by the
package's own code (or PaddleSeg's / PaddleDetection's config checks), which words its
messages for users. Anything else is a bug and keeps its traceback; ``--debug`` (taken
out of the arguments before the tool sees them) or ``PADDLE_PALE_DEBUG=1`` shows the
traceback of a user error too.

Like the rest of the ground layer, this module imports nothing of the package at import
time, and paddle only inside :func:`run_tool`.
"""
import os
import sys
import traceback
import warnings

from .cpu import configure_cpu

__all__ = ["HARMLESS_WARNINGS", "USER_ERRORS", "DEBUG_ENV", "is_user_error", "call_tool",
           "quiet_warnings", "run_tool", "positive_int"]

DEBUG_ENV = "PADDLE_PALE_DEBUG"

# (message regex, category, module regex) of warnings that say nothing to our users
HARMLESS_WARNINGS = (
    # paddle's C++-extension helper at every import: we build no extensions
    ("No ccache found", UserWarning, r"paddle\.utils\.cpp_extension"),
    # PaddleSeg 2.8.0 / PaddleDetection 2.6.0 on Python 3.11 import paths
    (r".*pkg_resources is deprecated", UserWarning, ""),
    (r".*`np\.\w+` is a deprecated alias", DeprecationWarning, ""),
)

# exception types that carry a message meant for the user when our code raises them
USER_ERRORS = (ValueError, OSError, ImportError, RuntimeError)
# where such an exception may be raised: our package, and the config checks of the
# libraries whose configs the seg/det tools read
_USER_ERROR_SOURCES = (os.sep + "paddle_pale" + os.sep,
                       os.path.join("paddleseg", "cvlibs", ""),
                       os.path.join("ppdet", "core", "workspace"))


def positive_int(text):
    """argparse ``type`` of a count that must be at least 1."""
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def is_user_error(error):
    """Whether ``error`` reports a user's mistake: a :data:`USER_ERRORS` type raised (its
    innermost frame) by the package or a library's config check. A ``ValueError`` deep
    in numpy or paddle is a bug of ours (a wrong call) and is not one."""
    if not isinstance(error, USER_ERRORS):
        return False
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and any(source in frames[-1].filename
                                for source in _USER_ERROR_SOURCES)


def _message(error):
    text = str(error)
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.strerror}: {error.filename!r}"  # [Errno 2] ... without the number
    return " ".join(text.split()) or type(error).__name__


def call_tool(main, argv=None, prog=None, debug=None):
    """Call ``main(argv)``; a user's mistake becomes ``PROG: error: MESSAGE`` on stderr
    and ``SystemExit(2)``. ``debug`` (default: ``--debug`` in ``argv`` or
    ``PADDLE_PALE_DEBUG``) re-raises it with its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if debug is None:
        debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    prog = prog or os.path.basename(sys.argv[0])
    try:
        return main(argv)
    except Exception as error:
        if debug or not is_user_error(error):
            raise
        print(f"{prog}: error: {_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None


def quiet_warnings():
    """Ignore :data:`HARMLESS_WARNINGS` (each by message, category and module)."""
    for message, category, module in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def _import_paddle_with_threads():
    """Import paddle with ``OMP_NUM_THREADS`` unset (paddle takes 1 and warns of nothing),
    then give the math libraries the threads :func:`configure_cpu` chose; the variable
    is set again afterwards, for what reads it later (the predictor's default, the
    benchmark's record). A value the user exported stays as it is."""
    threads = os.environ.pop("OMP_NUM_THREADS", None)
    import paddle
    if threads is not None:
        try:
            paddle.base.core.set_num_threads(int(threads))
        except (AttributeError, ValueError):
            pass  # no such call in this paddle, or a value that is not a count
        os.environ["OMP_NUM_THREADS"] = threads


def run_tool(main):
    """What a tool's ``if __name__ == "__main__":`` does: :func:`configure_cpu`, quiet
    warnings, paddle imported, then :func:`call_tool` on ``sys.argv``. A ``main`` taking a
    ``cpu`` argument gets what :func:`configure_cpu` applied."""
    user_threads = "OMP_NUM_THREADS" in os.environ
    cpu = configure_cpu()
    quiet_warnings()
    if user_threads:
        import paddle  # noqa: F401  (the user's count, the user's warning)
    else:
        _import_paddle_with_threads()
    code = main.__code__
    if "cpu" in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]:
        return call_tool(lambda argv: main(argv, cpu=cpu))
    return call_tool(main)
