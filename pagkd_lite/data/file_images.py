"""Images kept as files (``decode_per_step``): decoded batch by batch when training or
prediction uses them, ImageFolder style.

:class:`FileImageDataset` decodes files by index; :class:`_BatchDecoder` runs it through one
DataLoader with ``loader_workers`` worker processes; :class:`FileImages` is what an
ImageSet's ``images`` then are: it looks like a uint8 ``(N, 3, S, S)`` tensor and decodes
only the rows that are used. The pixels are those :func:`pagkd_lite.data.realdata.load_dataset`
keeps in RAM or in the decode cache (:mod:`pagkd_lite.data.decode`).
"""

from __future__ import annotations

import numpy as np
import torch

from pagkd_lite.data.decode import _decode, _read_bytes, _regular_stat
from pagkd_lite.data.image_rows import ImageRows
from pagkd_lite.errors import ImageLoadError

__all__ = ["FileImageDataset", "FileImages"]


class FileImageDataset(torch.utils.data.Dataset):
    """Image files decoded when asked for (ImageFolder style).

    ``dataset[i]`` is ``paths[i]`` decoded now, uint8 ``(3, size, size)``: the pixels that
    :func:`~pagkd_lite.data.realdata.load_dataset` keeps in RAM or in the decode cache (one
    decoder, the libjpeg warning probe left out: the loader ran it when it checked the file).
    ``dataset[[i, j, ...]]`` is their stack ``(k, 3, size, size)``, one DataLoader item.

    Args:
        paths: the image files (``list[str | Path]``).
        size: the output side (``int``).
        max_pixels: the loader's pixel limit (``int``).
        stats: optional ``(byte size, st_mtime_ns)`` per file as the loader saw it
            (``list[tuple[int, int]]``); a file changed since then is an
            :class:`ImageLoadError` naming it, never different pixels.
    """

    def __init__(self, paths: list, size: int, max_pixels: int = 40_000_000,
                 stats: list[tuple[int, int]] | None = None) -> None:
        self.paths = [str(p) for p in paths]
        self.size = int(size)
        self.max_pixels = int(max_pixels)
        self.stats = stats
        if stats is not None and len(stats) != len(self.paths):
            raise ValueError(f"FileImageDataset: {len(stats)} stats for {len(self.paths)} "
                             f"paths")

    def __len__(self) -> int:
        return len(self.paths)

    def _one(self, i: int) -> torch.Tensor:
        path = self.paths[i]
        if self.stats is not None:
            st = _regular_stat(path)
            if (st.st_size, st.st_mtime_ns) != tuple(self.stats[i]):
                raise ImageLoadError(path, "changed since the data was loaded (size or "
                                           "modification time); start the run again")
        return _decode(_read_bytes(path), path, self.size, self.max_pixels,
                       keep_warnings=True, probe=False)[0]

    def __getitem__(self, index: int | list[int]) -> torch.Tensor:
        if isinstance(index, int | np.integer):
            return self._one(int(index))
        return torch.stack([self._one(int(i)) for i in index]) if len(index) else \
            torch.empty((0, 3, self.size, self.size), dtype=torch.uint8)


class _Chunks(torch.utils.data.Sampler):
    """The DataLoader's sampler: the chunks of the batch being decoded (set per batch)."""

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


class _BatchDecoder:
    """Decodes rows of a :class:`FileImageDataset` through one DataLoader whose ``workers``
    processes persist for the run (started at the first batch); ``workers=0`` decodes in
    this process. A batch is split into one chunk per worker; chunks come back in order."""

    def __init__(self, dataset: FileImageDataset, workers: int) -> None:
        self.dataset, self.workers = dataset, int(workers)
        self._sampler = _Chunks()
        self._loader: torch.utils.data.DataLoader | None = None

    def __call__(self, rows: list[int]) -> torch.Tensor:
        if self.workers == 0 or len(rows) < 2:
            return self.dataset[rows]
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=None, sampler=self._sampler,
                num_workers=self.workers, persistent_workers=True)
        k = min(self.workers, len(rows))
        self._sampler.chunks = [c.tolist() for c in np.array_split(np.asarray(rows), k)]
        try:
            return torch.cat(list(self._loader))
        except Exception:  # noqa: BLE001 - decode here again: the loader's own error, whole
            return self.dataset[rows]

    def __getstate__(self) -> dict:  # a copy or a pickle starts its own workers
        return {**self.__dict__, "_loader": None, "_sampler": _Chunks()}


class FileImages(ImageRows):
    """An ImageSet's ``images`` when they stay files: looks like a uint8 ``(N, 3, S, S)``
    tensor and decodes only the rows that are read, when they are read (an
    :class:`~pagkd_lite.data.image_rows.ImageRows` whose source is the files).

    ``select`` (``ImageSet.subset``, the cross-validation folds) gives another
    ``FileImages`` and decodes nothing. Indexing (``images[i]``, ``images[idx]``,
    ``images[a:b]``) decodes those rows now; ``.to(device)``, ``.pin_memory()``,
    ``.contiguous()``, ``.numpy()``, ``.float()`` and any torch function decode every row of
    the view. Decoding runs through the shared :class:`_BatchDecoder` (a DataLoader with
    worker processes). Training moves each step's batch with ``images[index].to(device)``
    (:func:`pagkd_lite.models.accel.host_to_device`), so it decodes that batch at that step
    and holds no other image.

    Args:
        decoder: the shared decoder over every file (``_BatchDecoder``).
        rows: which of its files, in order (int64 ``(N,)``; default all).
    """

    def __init__(self, decoder: _BatchDecoder, rows=None) -> None:
        self.decoder = decoder
        super().__init__(np.arange(len(decoder.dataset)) if rows is None else rows)

    @property
    def side(self) -> int:
        return self.decoder.dataset.size

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        return self.decoder(rows.tolist())

    def _view(self, rows: np.ndarray) -> FileImages:
        return FileImages(self.decoder, rows)

    def __repr__(self) -> str:
        return (f"FileImages({len(self.rows)} files, decoded per use at "
                f"{self.decoder.dataset.size} px, {self.decoder.workers} worker(s))")

    def decode(self) -> torch.Tensor:
        """These rows decoded now: uint8 ``(len(self), 3, S, S)`` (:meth:`tensor`)."""
        return self.tensor()
