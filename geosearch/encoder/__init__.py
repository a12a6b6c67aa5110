"""The encoder: a CNN trunk, a pooling head and an optional projection, mapping a tile to a unit vector."""

from geosearch.encoder.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from geosearch.encoder.model import Encoder, EncoderConfig

__all__ = ["Checkpoint", "Encoder", "EncoderConfig", "load_checkpoint", "save_checkpoint"]
