"""Exponential moving average of model weights (Polyak averaging, as timm's ModelEma)."""
import contextlib

import paddle

__all__ = ["ModelEMA"]


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weight`` after every optimizer step.

    The averages are float32 copies keyed like ``model.state_dict()``, so they save as a
    plain state dict (``.pdema``) that loads into the same model. Under AMP O2 the model
    holds float16 / bfloat16 parameters: they are averaged in float32 and cast back to
    each parameter's own dtype when the averages are applied.
    """

    def __init__(self, model, decay=0.9999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: self._stored(value)
                       for name, value in model.state_dict().items()}

    @staticmethod
    def _stored(value):
        value = value.detach()
        if paddle.is_floating_point(value):
            value = value.astype("float32")
        return value.clone()

    @paddle.no_grad()
    def update(self, model):
        for name, value in model.state_dict().items():
            if paddle.is_floating_point(value):
                self.shadow[name].set_value(self.shadow[name] * self.decay
                                            + value.detach().astype("float32")
                                            * (1.0 - self.decay))
            else:  # integer buffers (counters) are copied, not averaged
                self.shadow[name].set_value(value.detach())

    def state_dict(self):
        return dict(self.shadow)

    def set_state_dict(self, state):
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks keys: {', '.join(missing[:5])}...")
        for name, current in self.shadow.items():
            current.set_value(paddle.to_tensor(state[name]).astype(current.dtype))

    @contextlib.contextmanager
    def applied_to(self, model):
        """Temporarily load the averaged weights into ``model`` (for evaluation), each
        in the dtype of the model's own tensor."""
        own = model.state_dict()
        backup = {name: value.detach().clone() for name, value in own.items()}
        model.set_state_dict({name: self.shadow[name].astype(own[name].dtype)
                              for name in own})
        try:
            yield model
        finally:
            model.set_state_dict(backup)
