"""Images as rows of a source, chosen by an index array: subsets that copy no pixel.

An :class:`~pagkd_lite.data.imageset.ImageSet` of real data does not hold its pixels in a
tensor of its own. Its ``images`` are an :class:`ImageRows`: a source (the memory-mapped
decode store, an array in RAM, or the image files themselves) plus an index array ``rows``
(int64 ``(N,)``) saying which of the source's images this set holds, in which order.

* :meth:`ImageRows.select` gives another view of the same source (new ``rows``, no pixel
  copied): ``ImageSet.subset``, the cross-validation folds, the train/val/test splits and
  the unpaired folds use it, so building every fold's six subsets costs a few index arrays.
* Indexing (``images[i]``, ``images[idx]``, ``images[a:b]``) gives a uint8 tensor of its own:
  one batch, read from the source at that moment. Training and prediction move each step's
  batch with ``images[index]`` (:func:`pagkd_lite.models.accel.host_to_device`), so the
  decoded pixels exist once per machine (the store's pages are shared through the OS page
  cache) plus one batch per step, and augmentation works on that batch as before.
* ``.to(...)``, ``.contiguous()``, ``.float()``, ``.numpy()``, ``np.asarray(...)`` and any
  torch function (``torch.equal``, ``torch.cat``) read every row of the view: the whole set
  as one tensor. Fine for a small set or a test; training never does it.

:class:`ArrayImages` are rows of a NumPy array ``(M, 3, S, S)`` (the decode store's
copy-on-write memory map, or the decoded images in RAM); :class:`~pagkd_lite.data.file_images.
FileImages` are rows of a list of image files, decoded when read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["ArrayImages", "ImageRows", "in_chunks"]

#: Bytes per chunk when a whole set is read in turn (:func:`in_chunks`): 32 MiB, e.g. 128
#: images at 224 px, 55 at 448 px.
CHUNK_BYTES = 32 << 20


class ImageRows:
    """The rows ``rows`` of an image source; looks like a uint8 ``(N, 3, S, S)`` tensor.

    Subclasses say how to read rows (:meth:`_read`), their side ``S`` (:attr:`side`) and how
    to make a view of the same source (:meth:`_view`).

    Args:
        rows: int64 ``(N,)``, indices into the source (copied, read-only).
    """

    dtype = torch.uint8
    ndim = 4
    device = torch.device("cpu")

    def __init__(self, rows) -> None:
        rows = np.array(rows, dtype=np.int64).reshape(-1)
        rows.setflags(write=False)
        self.rows = rows

    # ------------------------------------------------------------ what a subclass gives
    @property
    def side(self) -> int:
        """``S``: every image is ``(3, S, S)``."""
        raise NotImplementedError

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        """Source rows ``rows`` (int64 ``(k,)``) as a new uint8 tensor ``(k, 3, S, S)``."""
        raise NotImplementedError

    def _view(self, rows: np.ndarray) -> ImageRows:
        """Another view of the same source, holding source rows ``rows``."""
        raise NotImplementedError

    # ------------------------------------------------------------ tensor-like surface
    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), 3, self.side, self.side))

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def __len__(self) -> int:
        return len(self.rows)

    def _positions(self, index) -> np.ndarray:
        """``index`` (a slice, a list, a 1-D int or bool array / tensor) -> source rows."""
        if isinstance(index, slice):
            return self.rows[index]
        if isinstance(index, torch.Tensor):
            index = index.detach().cpu().numpy()
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != self.rows.shape:
                raise IndexError(f"{type(self).__name__}: a boolean index of shape "
                                 f"{idx.shape} for {len(self)} images")
            return self.rows[idx]
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise IndexError(f"{type(self).__name__}: index must be an int, a slice or a 1-D "
                             f"integer or boolean index, got {idx.dtype} of shape "
                             f"{tuple(idx.shape)}")
        idx = idx.astype(np.int64, copy=False)
        bad = (idx < -len(self)) | (idx >= len(self))
        if bad.any():
            raise IndexError(f"{type(self).__name__}: index {int(idx[bad][0])} is out of "
                             f"range for {len(self)} images")
        return self.rows[idx]

    def select(self, index) -> ImageRows:
        """The images at ``index`` as another view of the same source (no pixel read)."""
        return self._view(self._positions(index))

    def __getitem__(self, index) -> torch.Tensor:
        """A uint8 tensor of its own: ``(3, S, S)`` for an int, ``(k, 3, S, S)`` for a
        slice, a list or an index array; a tuple indexes the batch further."""
        if isinstance(index, tuple):
            if not index:
                return self.tensor()
            head = self[index[0]]
            rest = index[1:]
            return head[rest] if isinstance(index[0], int | np.integer) else \
                head[(slice(None), *rest)]
        if isinstance(index, torch.Tensor) and index.ndim == 0 and index.dtype != torch.bool:
            index = int(index)  # a 0-d index tensor reads as its int
        if isinstance(index, np.ndarray) and index.ndim == 0 and index.dtype != bool:
            index = int(index)
        if isinstance(index, int | np.integer):
            if not -len(self) <= int(index) < len(self):
                raise IndexError(f"{type(self).__name__}: index {int(index)} is out of range "
                                 f"for {len(self)} images")
            return self._read(self.rows[[int(index)]])[0]
        return self._read(self._positions(index))

    def tensor(self) -> torch.Tensor:
        """Every row, read now: a uint8 tensor ``(N, 3, S, S)`` of its own."""
        return self._read(self.rows)

    def to(self, *args, **kwargs) -> torch.Tensor:
        return self.tensor().to(*args, **kwargs)

    def pin_memory(self) -> torch.Tensor:
        return self.tensor().pin_memory()

    def contiguous(self, *args, **kwargs) -> torch.Tensor:
        return self.tensor().contiguous(*args, **kwargs)

    def numpy(self) -> np.ndarray:
        return self.tensor().numpy()

    def float(self) -> torch.Tensor:
        return self.tensor().float()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        def real(x):
            if isinstance(x, ImageRows):
                return x.tensor()
            if isinstance(x, list | tuple):
                return type(x)(real(v) for v in x)
            return x
        return func(*real(tuple(args)), **{k: real(v) for k, v in (kwargs or {}).items()})


def in_chunks(images: torch.Tensor | ImageRows,
              max_bytes: int = CHUNK_BYTES) -> Iterator[torch.Tensor]:
    """Every image of ``images`` (uint8 ``(N, 3, H, W)``: a tensor or an :class:`ImageRows`)
    in order, read as contiguous uint8 tensors ``(k, 3, H, W)`` of at most ``max_bytes``
    (one image at least): a digest of a whole set holds one chunk at a time, never the set,
    whatever the resolution."""
    per = max(1, max_bytes // max(1, int(np.prod(tuple(images.shape[1:])))))
    for i in range(0, len(images), per):
        yield images[i:i + per].contiguous()


class ArrayImages(ImageRows):
    """Rows of a NumPy array ``(M, 3, S, S)`` uint8: the decode store's memory map
    (:meth:`pagkd_lite.data.decode_cache.DecodeStore.images`) or decoded images in RAM.

    ``array`` is shared by every view made from this one (``select``, ``ImageSet.subset``):
    ``np.shares_memory(view.array, store)`` holds. A pickled view over a memory map carries
    the file's name, not its pixels, and maps the file again where it is unpickled.

    Args:
        array: uint8 ``(M, 3, S, S)``.
        rows: which of its images, in order (int64 ``(N,)``; default all ``M``).
    """

    def __init__(self, array: np.ndarray, rows=None) -> None:
        if (not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 4
                or array.shape[1] != 3 or array.shape[2] != array.shape[3]):
            raise ValueError(f"ArrayImages: the array must be uint8 (M, 3, S, S), got "
                             f"{getattr(array, 'dtype', type(array).__name__)} "
                             f"{tuple(getattr(array, 'shape', ()))}")
        self.array = array
        super().__init__(np.arange(len(array)) if rows is None else rows)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= len(array)):
            raise IndexError(f"ArrayImages: rows outside [0, {len(array)})")

    @property
    def side(self) -> int:
        return int(self.array.shape[-1])

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.take(self.array, rows, axis=0)))

    def _view(self, rows: np.ndarray) -> ArrayImages:
        return ArrayImages(self.array, rows)

    def __repr__(self) -> str:
        where = (f"memory map of {self.array.filename}"
                 if isinstance(self.array, np.memmap) and self.array.filename else "RAM")
        return f"ArrayImages({len(self)} of {len(self.array)} images at {self.side} px, {where})"

    def __getstate__(self) -> dict[str, Any]:
        a = self.array
        if isinstance(a, np.memmap) and a.filename:
            return {"file": a.filename, "offset": a.offset, "shape": a.shape, "mode": a.mode,
                    "rows": self.rows}
        return {"array": a, "rows": self.rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "file" in state:
            array = np.memmap(state["file"], dtype=np.uint8, mode=state["mode"],
                              offset=state["offset"], shape=tuple(state["shape"]))
        else:
            array = state["array"]
        self.__init__(array, state["rows"])
