"""Keep what the start knows: a term that holds a fine-tuned encoder's ranking of a batch's neighbours to the
ranking its frozen starting point gives, while a ranking loss trains. A loss over a few places or classes
otherwise reshapes the whole space around them; this keeps the rest of what the start could tell apart."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from geosearch.encoder.model import Encoder

MASKED = -1e4  # an image is not its own neighbour; finite, so that KL's 0 · log 0 terms stay 0


class KeepNeighbours(nn.Module):
    """For each image of a batch, KL(start ‖ student) between the softmax distributions over its similarities to
    the other images at `temperature`: the neighbours the start ranks first must stay first. (A listwise form of
    similarity-preserving distillation; the two embedding spaces may differ in dimension.)"""

    def __init__(self, start: Encoder, temperature: float = 0.1):
        super().__init__()
        self.start = copy.deepcopy(start).eval().requires_grad_(False)
        self.temperature = temperature

    def _log_neighbours(self, embeddings: torch.Tensor) -> torch.Tensor:
        similarity = embeddings @ embeddings.T / self.temperature
        itself = torch.eye(len(embeddings), dtype=torch.bool, device=embeddings.device)
        return F.log_softmax(similarity.masked_fill(itself, MASKED), dim=1)

    def forward(self, images: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self._log_neighbours(self.start(images).float())
        return F.kl_div(self._log_neighbours(embeddings), target, log_target=True, reduction="batchmean")

    def train(self, mode: bool = True) -> "KeepNeighbours":
        """The start stays in eval mode (its batch norm statistics are part of what it knows)."""
        super().train(mode)
        self.start.eval()
        return self
