"""maskvlp: vision-language pre-training with masked multimodal modeling."""
__version__ = "0.1.0"


def load(checkpoint, device=None):
    """Load a trained checkpoint with its preprocessing; see :func:`maskvlp.api.load`."""
    from maskvlp.api import load as _load

    return _load(checkpoint, device)
