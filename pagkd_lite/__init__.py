"""pagkd_lite: a thin, tested implementation of PaGKD (pairing-free group-level knowledge
distillation from NBI to WLI endoscopy, Hu et al., AAAI 2026) for learning and teaching."""

__version__ = "0.1.0"
