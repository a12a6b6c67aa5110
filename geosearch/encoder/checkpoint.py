"""The one checkpoint format: weights, the config that defines the embedding space, metadata, and a model id.

The model id is a content hash of the config and the stored tensors, so two files with the same embedding
space have the same id, and any change to a weight gives a new one. Metadata (training summary, licence of the
initial weights, dates) does not enter the hash. Files are read with `torch.load(weights_only=True)`: plain
tensors and containers only, never pickled code.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from geosearch import __version__
from geosearch.encoder.model import Encoder, EncoderConfig, load_weights
from geosearch.errors import GeosearchError

FORMAT = "geosearch-encoder/1"


def model_id_of(config: EncoderConfig, state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{config.backbone}-{digest.hexdigest()[:16]}"


@dataclass
class Checkpoint:
    config: EncoderConfig
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    metadata: dict  # initial_weights {name, licence, source}, training, created_with, notes
    model_id: str

    @classmethod
    def of(cls, encoder: Encoder, metadata: dict, half: bool = False) -> "Checkpoint":
        """Snapshot an encoder; `half` stores floating-point weights as float16 (half the size)."""
        state = {
            key: (value.detach().cpu().half() if half and value.is_floating_point() else value.detach().cpu().clone())
            for key, value in encoder.state_dict().items()
        }
        metadata = {"created_with": f"geosearch {__version__}", **metadata}
        return cls(encoder.config, state, metadata, model_id_of(encoder.config, state))

    def encoder(self) -> Encoder:
        """The encoder in eval mode, with these weights (float16 storage is widened to float32)."""
        encoder = Encoder(self.config)
        load_weights(encoder, self.state_dict, f"checkpoint {self.model_id} (a {self.config.backbone} encoder)")
        return encoder.eval()

    def info(self) -> dict:
        floats = [t for t in self.state_dict.values() if t.is_floating_point()]
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in floats})
        return {"model_id": self.model_id, "format": FORMAT, **self.config.to_dict(), "dim": self.config.dim,
                "stored_values": sum(t.numel() for t in floats), "storage": dtypes, **self.metadata}


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        raise GeosearchError(f"{path}: directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.partial")
    torch.save({"format": FORMAT, "model_id": checkpoint.model_id, "config": checkpoint.config.to_dict(),
                "metadata": checkpoint.metadata, "state_dict": checkpoint.state_dict}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint: its format, its config, and that its weights still hash to its model id."""
    path = Path(path)
    if not path.is_file():
        raise GeosearchError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        first_sentence = str(error).split("\n")[0].split(". ")[0]  # torch's advice after it is not for files
        raise GeosearchError(f"{path}: not a readable checkpoint ({type(error).__name__}: {first_sentence})") \
            from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise GeosearchError(
            f"{path}: not a geosearch checkpoint (a bare state dict? make one with "
            "`geosearch model init --backbone NAME --weights PATH --out CKPT`)"
        )
    config = EncoderConfig.from_dict(payload["config"])
    model_id = model_id_of(config, payload["state_dict"])
    if model_id != payload["model_id"]:
        raise GeosearchError(f"{path}: corrupt checkpoint (its weights hash to {model_id}, not {payload['model_id']})")
    broken = [name for name, tensor in payload["state_dict"].items()
              if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        raise GeosearchError(f"{path}: {len(broken)} of its weight tensors hold NaN or infinite values (first "
                             f"{broken[0]}): a run that diverged; it would embed every tile as NaN")
    return Checkpoint(config, payload["state_dict"], payload["metadata"], model_id)
