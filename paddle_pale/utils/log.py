"""Rank-aware logging: rank 0 logs INFO to stdout and OUTPUT_DIR/train.log; other ranks
only report warnings and errors, and write no file."""
import datetime
import logging
import os
import sys

__all__ = ["setup_logging", "format_eta", "VisualDLWriter"]

FORMAT = "[%(asctime)s] %(message)s"


def setup_logging(rank=0, log_file=None):
    logger = logging.getLogger("paddle_pale")
    for handler in list(logger.handlers):
        if getattr(handler, "_paddle_pale", False):
            logger.removeHandler(handler)
            handler.close()
    handlers = [logging.StreamHandler(sys.stdout)]
    if rank == 0 and log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler._paddle_pale = True
        handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False
    return logger


def format_eta(seconds):
    return str(datetime.timedelta(seconds=int(max(0, seconds))))


class VisualDLWriter:
    """Scalars to ``logdir`` when visualdl is installed; silently nothing otherwise."""

    def __init__(self, logdir, enabled=True):
        self.writer = None
        if not enabled:
            return
        try:
            from visualdl import LogWriter
        except ImportError:
            logging.getLogger("paddle_pale").info("visualdl not installed: no VisualDL logs")
            return
        self.writer = LogWriter(logdir=logdir)

    def add_scalar(self, tag, value, step):
        if self.writer is not None:
            self.writer.add_scalar(tag=tag, value=float(value), step=int(step))

    def close(self):
        if self.writer is not None:
            self.writer.close()
