"""A picture to check results at a glance: the query, then the best hits, each with rank, score and scene."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from geosearch.export import check_output_path
from geosearch.query import Query, tile_pixels
from geosearch.search import Result
from geosearch.store.archive import Archive

THUMB = 192  # pixels per picture
CAPTION = 40  # pixels of text under each picture
COLUMNS = 5
MAX_HITS = 14  # with the query, three rows of five
QUERY_COLOUR, HIT_COLOUR, MISSING_COLOUR = (230, 60, 40), (250, 250, 250), (90, 90, 90)


def _thumbnail(pixels: np.ndarray | None) -> Image.Image:
    """(3, H, W) uint8 → a THUMB-wide picture, aspect kept; a grey square when the pixels cannot be read."""
    if pixels is None:
        return Image.new("RGB", (THUMB, THUMB), MISSING_COLOUR)
    image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    image.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    if image.size != (THUMB, THUMB):  # upscale small tiles too, keeping pixels crisp
        scale = THUMB / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.NEAREST)
    return image


def write_quicklook(path: str | Path, query: Query, hits: list[Result], archive: Archive) -> Path:
    """Write a PNG: the query (outlined in red) and up to MAX_HITS hits, read again from their scenes."""
    path = check_output_path(path, (".png",))
    font = ImageFont.load_default(size=13)
    shown = hits[:MAX_HITS]
    cells = [(_thumbnail(query.pixels), ["query", _query_caption(query)], QUERY_COLOUR)]
    for hit in shown:
        pixels = tile_pixels(archive, hit.payload)
        caption = [f"#{hit.rank}  {hit.score:.3f}" + ("" if pixels is not None else "  (scene not readable)"),
                   Path(hit.payload["scene_path"]).name]
        cells.append((_thumbnail(pixels), caption, HIT_COLOUR))
    columns = min(COLUMNS, len(cells))
    rows = -(-len(cells) // columns)
    sheet = Image.new("RGB", (columns * (THUMB + 8) + 8, rows * (THUMB + CAPTION + 8) + 8), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    for i, (thumb, caption, colour) in enumerate(cells):
        x, y = 8 + (i % columns) * (THUMB + 8), 8 + (i // columns) * (THUMB + CAPTION + 8)
        sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
        draw.rectangle((x - 2, y - 2, x + THUMB + 1, y + THUMB + 1), outline=colour, width=2)
        for line_number, line in enumerate(caption):
            draw.text((x, y + THUMB + 4 + 16 * line_number), _fit(draw, line, font), fill=colour, font=font)
    tmp = path.with_name(f".{path.name}.partial.png")
    try:
        sheet.save(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _query_caption(query: Query) -> str:
    if query.description["type"] == "image":
        return Path(query.description["image"]).name
    return Path(query.description["scene_path"]).name


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont) -> str:
    """Cut text to fit under a picture, keeping its start (where names differ: product, path and row, date)."""
    if draw.textlength(text, font=font) <= THUMB:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > THUMB:
        text = text[:-1]
    return text + "…"
