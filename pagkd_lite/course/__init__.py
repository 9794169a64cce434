"""The course's helpers: class mode (models trained once), the notebooks' figures, the GKD-Den
explorer, the UMAP embeddings, static fallbacks of widgets for the site, checked exercises.

Imported in a Jupyter kernel (every notebook imports it before its first figure but 07,
whose figures fill the output's width anyway), it makes :class:`.viz.LabRenderer` plotly's
default: figures fill JupyterLab's output area, so the snapshots a saved notebook reopens
with keep the figures' proportions.
"""

import sys

if "ipykernel" in sys.modules:
    from .viz import use_lab_renderer

    use_lab_renderer()
