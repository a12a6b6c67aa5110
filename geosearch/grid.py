"""Tile windows on a pixel grid: size, stride, and what happens at the right and bottom edges."""

from enum import StrEnum

import numpy as np

from geosearch.errors import GeosearchError


class EdgeMode(StrEnum):
    """How a grid ends where the scene is not a whole number of strides.

    shift (default): the last tile in each row and column moves inward to end on the edge, so every pixel is
        covered by full tiles of real data, at the cost of one tile overlapping its neighbour more than the stride.
    pad: tiles continue past the edge; pixels outside the scene are nodata and lower the tile's valid fraction.
    drop: tiles that would cross the edge are left out; a strip narrower than one stride stays uncovered.
    """

    SHIFT = "shift"
    PAD = "pad"
    DROP = "drop"


def axis_offsets(length: int, size: int, stride: int, edge: EdgeMode | str) -> np.ndarray:
    """Start offsets of tiles along one axis of `length` pixels."""
    edge = EdgeMode(edge)
    if size <= 0 or stride <= 0:
        raise GeosearchError(f"tile size ({size}) and stride ({stride}) must be positive")
    if edge is EdgeMode.PAD:
        # Up to and including the first tile that reaches the edge.
        count = max(1, -(-(length - size) // stride) + 1)
        return np.arange(count, dtype=np.int64) * stride
    if length < size:
        return np.empty(0, dtype=np.int64)
    offsets = np.arange(0, length - size + 1, stride, dtype=np.int64)
    if edge is EdgeMode.SHIFT and offsets[-1] + size < length:
        offsets = np.append(offsets, length - size)
    return offsets


def tile_offsets(width: int, height: int, size: int, stride: int, edge: EdgeMode | str) -> np.ndarray:
    """(row, col) offsets of every tile, row-major, as an (N, 2) array. Raises if no tile fits."""
    rows = axis_offsets(height, size, stride, edge)
    cols = axis_offsets(width, size, stride, edge)
    if rows.size == 0 or cols.size == 0:
        raise GeosearchError(
            f"the scene ({width}×{height} px) is smaller than one {size} px tile; "
            "use a smaller --tile-size, or --edge pad"
        )
    grid_rows, grid_cols = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([grid_rows.ravel(), grid_cols.ravel()], axis=1)
