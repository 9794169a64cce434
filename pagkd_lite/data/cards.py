"""Data cards as data: read the YAML front matter of ``data_cards/*.md``.

A card is Markdown that opens with a YAML block between two ``---`` lines (the Hugging Face
dataset-card convention). :func:`load_card` returns that block as a dict; the kit reads it for
the label space, pairing status, ids and leakage policy, and a test checks that every card
carries :data:`REQUIRED_FIELDS`.
"""

from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["REQUIRED_FIELDS", "load_card", "missing_fields"]

REQUIRED_FIELDS: tuple[str, ...] = (
    "name",
    "pretty_name",
    "license",
    "access",
    "modalities",
    "devices",
    "pairing",
    "label_space",
    "num_classes",
    "patient_ids",
    "lesion_ids",
    "leakage_policy",
    "image_size",
    "size",
    "source",
    "citation",
    "known_biases",
)


def load_card(path: str | Path) -> dict:
    """Parse the YAML front matter of the data card at ``path`` into a dict.

    Raises ``ValueError`` naming the file when the front matter is missing, unterminated, not
    valid YAML, or not a mapping; ``FileNotFoundError`` when the file does not exist.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        raise ValueError(f"{path}: no YAML front matter (the first line must be '---')")
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise ValueError(f"{path}: YAML front matter is not closed by a '---' line")
    try:
        data = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML front matter: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: YAML front matter must be a mapping of field: value, "
                         f"got {type(data).__name__}")
    return data


def missing_fields(card: dict) -> list[str]:
    """The entries of :data:`REQUIRED_FIELDS` that ``card`` lacks, in order."""
    return [f for f in REQUIRED_FIELDS if f not in card]
