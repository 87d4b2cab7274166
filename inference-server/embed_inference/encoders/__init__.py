"""Encoders: pre (tokenize) -> core (forward) -> post (normalize, float32 bytes).

Only the interface is imported here; each engine module is imported on demand,
so that the debug engine never pulls in torch.
"""

from .base import Backend, Encoder, Prepared, Settings, Weights

__all__ = ["Backend", "Encoder", "Prepared", "Settings", "Weights"]
