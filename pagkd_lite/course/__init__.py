"""The course's helpers: class mode (models trained once), the notebooks' figures, the GKD-Den
explorer, the UMAP embeddings, static fallbacks of widgets for the site, checked exercises.
"""
