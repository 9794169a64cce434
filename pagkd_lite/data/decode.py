"""Reading and decoding one image file: any mode -> RGB uint8 ``(3, S, S)``, or an
:class:`~pagkd_lite.errors.ImageLoadError` that names the file and the reason.

Images: see :func:`load_image` (any mode -> RGB uint8, EXIF rotation honoured, plain
resize to ``image_size x image_size``). Decoding policy (``LoadReport.policy``): only
regular files are opened (no FIFOs or devices); an image over ``max_pixels`` is refused
before it is decoded; an image whose decoder warns (a JPEG with corrupt data, bad
EXIF, ...) is skipped with the warning as its reason (``decode_warnings="keep"``: loaded,
and the warning recorded). The real-data loader (:mod:`pagkd_lite.data.realdata`) and the
images kept as files (:mod:`pagkd_lite.data.file_images`) decode through :func:`_decode`,
so both give the same pixels.
"""

from __future__ import annotations

import ctypes
import io
import os
import stat
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from pagkd_lite.errors import ImageLoadError

__all__ = ["load_image"]


def _regular_stat(path: str | Path) -> os.stat_result:
    """The file's ``stat`` (links followed), or :class:`ImageLoadError` unless it is a
    regular file."""
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(p, "broken symbolic link" if p.is_symlink() else "file not found")
    if p.is_dir():
        raise ImageLoadError(p, "is a directory, not an image file")
    st = p.stat()
    if not stat.S_ISREG(st.st_mode):
        mode = st.st_mode
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise ImageLoadError(p, f"{kind}, not a regular file: not opened")
    return st


def _read_bytes(path: str | Path) -> bytes:
    """The file's bytes, or :class:`ImageLoadError` saying why they cannot be had."""
    p = Path(path)
    _regular_stat(p)
    try:
        data = p.read_bytes()
    except PermissionError:
        raise ImageLoadError(p, "permission denied") from None
    except OSError as e:
        raise ImageLoadError(p, f"cannot read file ({e.strerror or e})") from None
    if not data:
        raise ImageLoadError(p, "empty file (0 bytes)")
    return data


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB.

    16-bit ('I;16*') is scaled to 8 bit by v * 255 / 65535 (full range, no stretching);
    32-bit 'I' and float 'F' are read as 8-bit if their maximum is <= 255 (<= 1.0 for
    'F': scaled by 255), else as 16-bit. Alpha (RGBA, LA, palette with transparency) is
    composited on black: RGB * alpha / 255.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if mode == "F" and top <= 1.0:
            arr = arr * 255.0
        elif mode.startswith("I;16") or top > 255.0:
            arr = np.clip(arr, 0, 65535) * (255.0 / 65535.0)
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        mode = im.mode
    if mode == "P" and "transparency" in im.info:
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (0, 0, 0))
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    return im if mode == "RGB" else im.convert("RGB")


def _libjpeg_warnings(data: bytes) -> list[str]:
    """libjpeg's warnings for a JPEG (e.g. ``Corrupt JPEG data: 214 extraneous bytes``).

    Pillow decodes a JPEG with a corrupted body without a word; torchvision's libjpeg
    decoder prints its warnings on file descriptor 2, which is captured here. Pillow has
    already decoded the image, so a second decoder that cannot (a JPEG flavour it lacks,
    or no torchvision image decoding at all) adds no warning.
    """
    try:
        from torchvision.io import decode_jpeg
    except ImportError:
        return []
    with tempfile.TemporaryFile() as cap, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(cap.fileno(), 2)
        try:
            decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        except RuntimeError:
            return []
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        cap.seek(0)
        text = cap.read().decode("utf-8", "replace")
    return [f"libjpeg: {ln.strip()}" for ln in text.splitlines() if "JPEG" in ln]


def _decode(data: bytes, path: str | Path, size: int, max_pixels: int = 40_000_000,
            keep_warnings: bool = False,
            probe: bool = True) -> tuple[torch.Tensor, str, tuple, list[str]]:
    """Bytes -> (uint8 (3, size, size), source mode, source (w, h) after EXIF rotation,
    decoder warnings). Images over ``max_pixels`` are refused before decoding; decoder
    warnings raise :class:`ImageLoadError` unless ``keep_warnings``. ``probe=False`` skips
    the second (libjpeg) decode that only looks for warnings: the pixels are the same."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageLoadError(path, f"image too large: {w} x {h} = {w * h} pixels "
                                               f"> max_pixels={max_pixels} (refused, not "
                                               f"decoded; raise --max-pixels to load it)")
                src_mode, fmt = im.mode, im.format
                im.draft(None, (size, size))   # JPEG only: decode at reduced scale, >= size
                im.load()
                im = ImageOps.exif_transpose(im)
                src_size = im.size
                rgb = _to_rgb(im)
        notes = [f"{c.category.__name__}: {c.message}" for c in caught
                 if not issubclass(c.category, Image.DecompressionBombWarning)]
        if fmt == "JPEG" and probe:
            notes += _libjpeg_warnings(data)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image (Pillow cannot identify the format)") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(path, f"image too large ({e})") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure means a bad file
        raise ImageLoadError(path, f"corrupt or truncated image data "
                                   f"({type(e).__name__}: {e})") from None
    if notes and not keep_warnings:
        raise ImageLoadError(path, f"decoder warning ({'; '.join(notes)}); skipped by the "
                                   f"decoding policy (--keep-decode-warnings, or "
                                   f"decode_warnings='keep' in Python, loads it)")
    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(rgb, dtype=np.uint8)
    tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    return tensor, src_mode, src_size, notes


def _release_freed_memory() -> None:
    """Hand the C heap's freed pages back to the OS (glibc ``malloc_trim``; elsewhere a
    no-op). Decoding thousands of images leaves the heap fragmented: each libjpeg probe
    frees a full-size frame (0.6 MB at 448 px) between small allocations that stay, and
    without a trim the process's private memory grows by about that much per image."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):   # not glibc (macOS, musl, Windows)
        return None


_LIBC = _glibc()


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """Read one image file as a uint8 tensor ``(3, size, size)``.

    Any size and mode: grayscale, palette, RGBA/LA (alpha composited on black), 16-bit
    (scaled to 8 bit), CMYK; the EXIF orientation is applied first
    (``PIL.ImageOps.exif_transpose``). Resizing is a plain bilinear resize of the whole
    frame to ``size x size`` (no crop): endoscopy crops are usually lesion crops, and a
    centre crop could cut lesion margins, so the kit accepts the aspect-ratio change.

    Raises:
        ImageLoadError: the path is missing, a directory, not a regular file, unreadable,
            empty, not an image, over 40 million pixels, corrupt/truncated, or its decoder
            warns; the message names the file and the reason.
    """
    return _decode(_read_bytes(path), path, int(size))[0]

