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


class GridMode(StrEnum):
    """Where tile origins sit.

    aligned (default): on a lattice fixed in the scene's CRS, whole strides from an anchor that keeps the pixel
        phase, so scenes in one CRS whose pixels share a phase cut the same ground into the same tiles.
    scene: whole strides from the scene's top-left pixel (before aligned grids, every archive was cut so).
    """

    ALIGNED = "aligned"
    SCENE = "scene"


def lattice_axis(origin: int, length: int, size: int, stride: int,
                 edge: EdgeMode | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tile starts along one axis whose first pixel is pixel `origin` of the lattice's frame, each start's lattice
    index (start + origin) / stride, and whether the tile is on the lattice at all.

    pad: every lattice tile that meets the scene; drop: lattice tiles wholly inside; shift: those, plus a tile
    moved inward to start or end on the scene's edge wherever a strip would stay uncovered (off the lattice).
    """
    edge = EdgeMode(edge)
    if size <= 0 or stride <= 0:
        raise GeosearchError(f"tile size ({size}) and stride ({stride}) must be positive")
    if edge is EdgeMode.PAD:
        first, last = (origin - size) // stride + 1, (origin + length - 1) // stride
    else:
        first, last = -(-origin // stride), (origin + length - size) // stride
    indexes = np.arange(first, last + 1, dtype=np.int64)
    starts, on = indexes * stride - origin, np.ones(len(indexes), dtype=bool)
    if edge is EdgeMode.SHIFT and length >= size:
        if not len(starts) or starts[0] > 0:
            starts, indexes, on = np.insert(starts, 0, 0), np.insert(indexes, 0, 0), np.insert(on, 0, False)
        if starts[-1] + size < length:
            starts, indexes, on = np.append(starts, length - size), np.append(indexes, 0), np.append(on, False)
    return starts, indexes, on


def lattice_offsets(origin: tuple[int, int], width: int, height: int, size: int, stride: int,
                    edge: EdgeMode | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col) offsets of every tile on the lattice, row-major; their (N, 2) lattice (row, col) indexes; and
    whether each is on the lattice. `origin` is the scene's top-left pixel in the lattice's frame (row, col)."""
    rows, row_index, row_on = lattice_axis(origin[0], height, size, stride, edge)
    cols, col_index, col_on = lattice_axis(origin[1], width, size, stride, edge)
    if rows.size == 0 or cols.size == 0:
        if min(width, height) < size:
            raise GeosearchError(f"the scene ({width}×{height} px) is smaller than one {size} px tile; "
                                 "use a smaller --tile-size, or --edge pad")
        raise GeosearchError(f"no {size} px tile of the aligned grid lies wholly in the scene ({width}×{height} px); "
                             "use a smaller --tile-size, --edge shift or pad, or --grid scene")
    r, c = (pick.ravel() for pick in np.meshgrid(np.arange(len(rows)), np.arange(len(cols)), indexing="ij"))
    offsets = np.stack([rows[r], cols[c]], axis=1)
    return offsets, np.stack([row_index[r], col_index[c]], axis=1), row_on[r] & col_on[c]
