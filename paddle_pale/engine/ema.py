"""Exponential moving average of model weights (Polyak averaging, as timm's ModelEma)."""
import contextlib

import paddle

__all__ = ["ModelEMA"]


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weight`` after every optimizer step.

    The averages are float32 copies keyed like ``model.state_dict()``, so they save as a
    plain state dict (``.pdema``) that loads into the same model.
    """

    def __init__(self, model, decay=0.9999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: value.detach().astype("float32").clone()
                       for name, value in model.state_dict().items()}

    @paddle.no_grad()
    def update(self, model):
        for name, value in model.state_dict().items():
            value = value.detach().astype("float32")
            if paddle.is_floating_point(value):
                self.shadow[name].set_value(self.shadow[name] * self.decay
                                            + value * (1.0 - self.decay))
            else:
                self.shadow[name].set_value(value)

    def state_dict(self):
        return dict(self.shadow)

    def set_state_dict(self, state):
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks keys: {', '.join(missing[:5])}...")
        for name in self.shadow:
            self.shadow[name].set_value(paddle.to_tensor(state[name]).astype("float32"))

    @contextlib.contextmanager
    def applied_to(self, model):
        """Temporarily load the averaged weights into ``model`` (for evaluation)."""
        backup = {name: value.detach().clone() for name, value in model.state_dict().items()}
        model.set_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.set_state_dict(backup)
