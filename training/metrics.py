"""Retrieval metrics over a labelled set (spec §7): every query ranks the gallery by cosine similarity.

Queries are processed in chunks, so memory grows with chunk × gallery, never gallery²: 100k+ embeddings fit.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

DEFAULT_KS = (5, 10, 50, 100)


@dataclass
class Retrieval:
    """Mean metrics over queries, plus mAP per class."""

    queries: int
    map: float  # non-interpolated average precision over the full ranking (the headline)
    map_trapz: float  # cirtorch's trapezoidal (Oxford) AP
    precision_at: dict[int, float]
    recall_at_hit: dict[int, float]  # DML convention: some relevant item in the top k
    recall_at_frac: dict[int, float]  # IR convention: the share of relevant items in the top k
    map_per_class: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"queries": self.queries, "map": self.map, "map_trapz": self.map_trapz,
                **{f"p@{k}": v for k, v in self.precision_at.items()},
                **{f"recall_at_{k}_hit": v for k, v in self.recall_at_hit.items()},
                **{f"recall_at_{k}_frac": v for k, v in self.recall_at_frac.items()},
                "map_per_class": self.map_per_class}


def _average_precision(relevant: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, n) bool ranked relevance and each query's number of relevant items → AP and trapezoidal AP.
    Only the relevant positions are visited: the j-th relevant item (0-based) of a row, at 0-based rank r,
    adds (j + 1) / (r + 1) to AP, and cirtorch's trapezoid (j / r + (j + 1) / (r + 1)) / 2 (1 for j / r at r = 0)."""
    rows, r = relevant.nonzero(as_tuple=True)  # row-major: ranks ascend within a row
    r = r.double()
    j = torch.arange(len(rows), dtype=torch.float64, device=r.device) - (total.cumsum(0) - total).double()[rows]
    at = (j + 1) / (r + 1)
    before = torch.where(r > 0, j / r.clamp_min(1), 1.0)
    count = total.clamp_min(1).double()
    ap = torch.zeros(len(total), dtype=torch.float64, device=r.device).index_add_(0, rows, at) / count
    trapz = torch.zeros(len(total), dtype=torch.float64, device=r.device).index_add_(0, rows, (before + at) / 2) / count
    return ap, trapz


def evaluate_retrieval(embeddings: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                       gallery: torch.Tensor | np.ndarray | None = None,
                       gallery_labels: torch.Tensor | np.ndarray | None = None,
                       ks: tuple[int, ...] = DEFAULT_KS, chunk: int = 256) -> Retrieval:
    """Each embedding queries the gallery (by default: the other embeddings of the same set). Embeddings are
    unit vectors; ties in similarity are broken by gallery order."""
    queries = torch.as_tensor(embeddings, dtype=torch.float32)
    query_labels = torch.as_tensor(labels)
    same_set = gallery is None
    gallery = queries if same_set else torch.as_tensor(gallery, dtype=torch.float32)
    gallery_labels = query_labels if same_set else torch.as_tensor(gallery_labels)
    aps, traps, precision, hit, frac = [], [], {k: [] for k in ks}, {k: [] for k in ks}, {k: [] for k in ks}
    for start in range(0, len(queries), chunk):
        similarity = queries[start:start + chunk] @ gallery.T
        if same_set:  # a query is not in its own gallery
            rows = torch.arange(len(similarity))
            similarity[rows, rows + start] = float("-inf")
        order = similarity.argsort(dim=1, descending=True, stable=True)
        if same_set:
            order = order[:, :-1]  # drop the query itself, ranked last
        relevant = gallery_labels[order] == query_labels[start:start + chunk, None]
        total = relevant.sum(dim=1)
        ap, trapz = _average_precision(relevant, total)
        aps.append(ap)
        traps.append(trapz)
        for k in ks:
            in_top = relevant[:, :k].sum(dim=1).double()
            precision[k].append(in_top / k)
            hit[k].append((in_top > 0).double())
            frac[k].append(in_top / total.clamp_min(1))
    ap_all = torch.cat(aps)
    per_class = {int(c): float(ap_all[query_labels == c].mean()) for c in torch.unique(query_labels)}
    mean = {name: {k: float(torch.cat(values[k]).mean()) for k in ks}
            for name, values in (("p", precision), ("hit", hit), ("frac", frac))}
    return Retrieval(queries=len(queries), map=float(ap_all.mean()), map_trapz=float(torch.cat(traps).mean()),
                     precision_at=mean["p"], recall_at_hit=mean["hit"], recall_at_frac=mean["frac"],
                     map_per_class=per_class)
