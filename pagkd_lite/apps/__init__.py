"""Applications: what ``pagkd-lite`` runs on top of the pipeline: the SynthEndo benchmark
(its statistics and figures), cross-validation on your data, the token-label diagnosis, and
the command line itself.
"""
