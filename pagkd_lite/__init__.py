"""pagkd_lite: a thin, tested implementation of PaGKD (pairing-free group-level knowledge
distillation from NBI to WLI endoscopy, Hu et al., AAAI 2026) for learning and teaching.

The layers, from the bottom up; a module imports only from its own
layer or the ones below it, and the imports form no cycle:

shared         ``errors`` (user-facing errors), ``files`` (atomic writes, printable names),
               ``distributed`` (torchrun)
``data``       images and labels: SynthEndo, your own folders, folds, unpaired grouping
``models``     the classifiers (timm backbone + token embedding + head), SimCLR, GPU switches
``method``     PaGKD's losses (GKD-Pro, GKD-Den), CAM and token labels, loop references,
               the Distiller of every method and their registry, the mechanism log's numbers
``config``     dataclass configs, presets, ``--set``: every layer's settings, so above ``method``
``training``   the training loop, metrics, checkpoints, the demo pipeline, reports
``course``     the notebooks' helpers: class mode, figures, explorers, exercises
``apps``       what the command line runs: bench, cross-validation, diagnosis, ``cli``

The README's module map names every module with its one concern.
"""

__version__ = "0.1.0"
