"""PNG output: one image per file or a grid of many, upscaled with nearest neighbour for small images; `ImageWriter`
streams either from batches (a grid PNG is written row of tiles by row of tiles)."""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cm_media import files
from cm_media.errors import UserError
from cm_media.modality import MediaWriter


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> torch.Tensor:
    """[B, C, H, W] -> one [C, rows*(H+pad)+pad, cols*(W+pad)+pad] image with `pad` pixels of border."""
    b, c, h, w = images.shape
    cols = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad) * 0.5
    for i in range(b):
        r, q = divmod(i, cols)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    return grid


def to_pil(image: torch.Tensor, min_size: int = 0) -> Image.Image:
    """[C, H, W] in [0, 1] -> PIL image, upscaled by an integer factor to at least `min_size` on the short side."""
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else np.ascontiguousarray(arr))
    scale = max(1, math.ceil(min_size / min(im.size))) if min_size else 1
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST) if scale > 1 else im


def save_images(images: torch.Tensor, path: Path, grid: bool | None = None, min_tile: int = 32) -> list[Path]:
    """Write [B, C, H, W] images: a grid PNG when `path` has a suffix (or grid=True), else numbered PNGs."""
    path = Path(path)
    if grid is None:
        grid = path.suffix != ""
    if grid:
        path.parent.mkdir(parents=True, exist_ok=True)
        scale = max(1, math.ceil(min_tile / min(images.shape[-2:])))
        up = images.repeat_interleave(scale, -1).repeat_interleave(scale, -2) if scale > 1 else images
        to_pil(make_grid(up.cpu(), pad=max(1, scale // 2))).save(path if path.suffix else path.with_suffix(".png"))
        return [path if path.suffix else path.with_suffix(".png")]
    path.mkdir(parents=True, exist_ok=True)
    out = []
    for i, im in enumerate(images.cpu()):
        p = path / f"{i:04d}.png"
        to_pil(im, min_tile).save(p)
        out.append(p)
    return out


# ---------------------------------------------------------------- streaming output (memory of one batch)

PIL_SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF",
                ".tiff": "TIFF"}
MAX_PIL_GRID = 1024  # images in a non-PNG grid (built in memory; a PNG grid is streamed row by row)
MAX_GRID_SIDE = 2**20  # pixels on either side of a grid PNG


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, C, H, W] in [0, 1] -> uint8 [B, H, W, C], rounded like `to_pil`."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


class GridPNG:
    """A grid PNG of `total` tiles written row of tiles by row of tiles: the same pixels as `make_grid` + `to_pil`
    (grey 0.5 borders of `pad` pixels, tiles upscaled by `scale`), holding only one row of tiles in memory.
    Written to a temporary file, renamed into place by `close`; `abort` removes it."""

    def __init__(self, path: Path, total: int, height: int, width: int, channels: int, cols: int | None = None,
                 scale: int = 1, pad: int = 1):
        self.path = Path(path)
        self.total, self.scale, self.pad = total, scale, pad
        self.h, self.w, self.c = height * scale, width * scale, channels
        self.cols = cols or math.ceil(math.sqrt(total))
        self.rows = math.ceil(total / self.cols)
        self.width = self.cols * (self.w + pad) + pad
        self.height = self.rows * (self.h + pad) + pad
        if max(self.width, self.height) > MAX_GRID_SIDE:
            raise UserError(f"a grid of {total} images would be {self.width}x{self.height} pixels, above the PNG "
                            f"limit of {MAX_GRID_SIDE} per side: write a folder of files instead")
        self._pending: list[np.ndarray] = []  # uint8 [H, W, C] tiles of the current row
        self._written = 0
        self._zip = zlib.compressobj(6)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._file = open(self._tmp, "wb")  # closed by close() / abort()
        color = 0 if channels == 1 else 2
        self._file.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height,
                                                                             8, color, 0, 0, 0)))

    def _rows(self, pixels: np.ndarray) -> None:
        """Compress rows [n, width, C] (each gets PNG filter byte 0)."""
        raw = np.concatenate([np.zeros((pixels.shape[0], 1), np.uint8), pixels.reshape(pixels.shape[0], -1)], 1)
        data = self._zip.compress(raw.tobytes())
        if data:
            self._file.write(_chunk(b"IDAT", data))

    def _flush_row(self) -> None:
        band = np.full((self.pad + self.h, self.width, self.c), 128, np.uint8)  # 0.5 grey, like make_grid
        for q, tile in enumerate(self._pending):
            x0 = self.pad + q * (self.w + self.pad)
            band[self.pad:, x0: x0 + self.w] = tile
        self._rows(band)
        self._pending = []

    def add(self, images: torch.Tensor) -> None:
        """Append [B, C, H, W] images in [0, 1] (at their model size; upscaled here)."""
        tiles = to_uint8(images)
        if self.scale > 1:
            tiles = tiles.repeat(self.scale, axis=1).repeat(self.scale, axis=2)
        for tile in tiles:
            if self._written >= self.total:
                raise ValueError(f"GridPNG got more than {self.total} images")
            self._pending.append(tile)
            self._written += 1
            if len(self._pending) == self.cols:
                self._flush_row()

    def close(self) -> Path:
        if self._pending:
            self._flush_row()
        blank_rows = self.height - math.ceil(self._written / self.cols) * (self.h + self.pad)
        if blank_rows > 0:  # the bottom border (and rows of tiles never given)
            self._rows(np.full((blank_rows, self.width, self.c), 128, np.uint8))
        self._file.write(_chunk(b"IDAT", self._zip.flush()) + _chunk(b"IEND", b""))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class ImageWriter(MediaWriter):
    """`total` images arriving in batches: one grid file (PNG streamed; other formats built at the end, at most
    MAX_PIL_GRID images) or numbered PNGs 0000.png, ... in a folder."""

    def __init__(self, path: Path, total: int, grid: bool, size: tuple[int, int], channels: int, min_tile: int = 32):
        path = Path(path)
        self.grid, self.total, self.min_tile, self.paths = grid, total, min_tile, []
        self.index = 0
        self._png = None
        self._parts: list[torch.Tensor] = []
        if not grid:
            self.folder = files.output_folder(path)
            return
        if path.is_dir():
            raise UserError(f"--out {path} is an existing folder; name a grid file inside it "
                            f"(e.g. {path / 'images.png'}) or pass --separate for one file per image")
        suffix = path.suffix.lower()
        if suffix != ".png" and suffix not in PIL_SUFFIXES:
            raise UserError(f"cannot write images to {path}: use .png (or {', '.join(sorted(PIL_SUFFIXES))}), or a "
                            "name without a suffix with --separate")
        if suffix != ".png" and total > MAX_PIL_GRID:
            raise UserError(f"a {suffix} grid holds at most {MAX_PIL_GRID} images (-n {total}): write a .png grid "
                            "(streamed) or pass --separate")
        self.path = files.output_file(path)
        scale = max(1, math.ceil(min_tile / min(size)))
        if suffix == ".png":
            with files.writing(self.path):
                self._png = GridPNG(self.path, total, *size, channels, scale=scale, pad=max(1, scale // 2))

    def add(self, media):
        media = media.cpu()
        if not self.grid:
            for im in media:
                p = self.folder / f"{self.index:04d}.png"
                with files.writing(p):
                    to_pil(im, self.min_tile).save(p)
                self.paths.append(p)
                self.index += 1
        elif self._png is not None:
            with files.writing(self.path):
                self._png.add(media)
        else:
            self._parts.append(media)

    def close(self):
        if not self.grid:
            return self.paths
        with files.writing(self.path):
            if self._png is not None:
                return [self._png.close()]
            return save_images(torch.cat(self._parts), self.path, grid=True, min_tile=self.min_tile)

    def abort(self):
        if self._png is not None:
            self._png.abort()
