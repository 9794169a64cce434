"""Every data card carries the required front-matter fields (a card is data, not prose)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pagkd_lite.data.cards import REQUIRED_FIELDS, load_card, missing_fields

CARDS_DIR = Path(__file__).resolve().parents[1] / "data_cards"
CARDS = sorted(p for p in CARDS_DIR.glob("*.md") if p.name != "README.md")
REAL_DATA_CARDS = ("piccolo", "cpc_paired", "mesejo_colonoscopy")


def test_cards_exist():
    names = {p.stem for p in CARDS}
    assert set(REAL_DATA_CARDS) <= names, f"missing cards in {CARDS_DIR}"


@pytest.mark.parametrize("path", CARDS, ids=[p.stem for p in CARDS])
def test_card_has_required_fields(path):
    card = load_card(path)
    assert missing_fields(card) == [], f"{path.name}: missing {missing_fields(card)}"
    empty = [f for f in REQUIRED_FIELDS if card[f] is None or card[f] == "" or card[f] == []]
    assert not empty, f"{path.name}: empty required field(s) {empty}"


@pytest.mark.parametrize("stem", REAL_DATA_CARDS)
def test_real_data_card_conventions(stem):
    path = CARDS_DIR / f"{stem}.md"
    card = load_card(path)
    assert card["name"] == stem
    assert set(card["modalities"]) == {"WLI", "NBI"}
    assert set(card["label_space"]) == {"WLI", "NBI"}
    assert isinstance(card["known_biases"], list) and card["known_biases"]
    body = path.read_text(encoding="utf-8")
    assert "## How to arrange it for the loader" in body
    assert "```csv\npath,modality,label,patient_id,lesion_id" in body   # manifest example
