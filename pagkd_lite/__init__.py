"""pagkd_lite: a thin, tested implementation of PaGKD (pairing-free group-level knowledge
distillation from NBI to WLI endoscopy, Hu et al., AAAI 2026) for learning and teaching.

The folders are the layers, read from the bottom up; a module imports only from its own
layer or the ones below it (and from the four shared modules at the top level):

``data``       images and labels: SynthEndo, your own folders, folds, unpaired grouping
``models``     the classifiers (timm backbone + token embedding + head), SimCLR, GPU switches
``method``     PaGKD's losses (GKD-Pro, GKD-Den), CAM and token labels, loop references,
               the Distiller of every method and their registry
``training``   the training loop, metrics, checkpoints, the demo pipeline, reports
``apps``       what the command line runs: bench, cross-validation, diagnosis, ``cli``
``course``     the notebooks' helpers: class mode, figures, explorers, exercises

Shared by every layer: ``config`` (dataclass configs, presets, ``--set``), ``errors`` (the
user-facing errors), ``files`` (atomic writes, printable names), ``distributed`` (torchrun).
The README's module map names every module with its one concern.
"""

__version__ = "0.1.0"
