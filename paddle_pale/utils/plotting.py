"""matplotlib for the pictures (ablation chart, attention regions and maps), imported
only when a picture is drawn: the model and the trainer do not need it."""

__all__ = ["pyplot"]


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend; ImportError naming the extra
    when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("drawing pictures needs matplotlib: pip install "
                          "'paddle-pale[viz]' (or pip install matplotlib)") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
