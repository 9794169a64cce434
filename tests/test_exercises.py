"""Checked exercises: right answers pass, wrong ones get a hint, every check has its cells."""

import json
from pathlib import Path

import pytest

from pagkd_lite.course import exercises

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def _cells(nb_path):
    return json.loads(nb_path.read_text())["cells"]


def _rows(oracle_gain: float, pagkd_gain: float) -> list[dict]:
    rows = []
    for seed, base in (("0", 0.80), ("1", 0.70)):
        rows += [{"method": "wli_only", "seed": seed, "auc": base},
                 {"method": "paired_oracle", "seed": seed, "auc": base + oracle_gain},
                 {"method": "pagkd", "seed": seed, "auc": base + pagkd_gain},
                 {"method": "pagkd_no_den", "seed": seed, "auc": base + 0.01 * int(seed)}]
    return rows


def test_none_is_not_answered_and_unknown_id_is_refused(capsys):
    assert exercises.check("03.3", None, tau=1.0) is False
    assert "not answered yet" in capsys.readouterr().out
    with pytest.raises(KeyError, match="no exercise '99.9'"):
        exercises.check("99.9", 1)


@pytest.mark.parametrize("eid, right, wrong, ctx", [
    ("00.1", (196, 1568), (49, 392), {}),
    ("03.2", (1, 2), (0, 3), {"num_classes": 3}),
    ("03.3", (-2.0, 2.0), (0.0, 2.0), {"tau": 0.5}),
    ("04.2", [0.0, 0.0, 0.0], [0.25, 0.25, 0.5], {}),
])
def test_right_passes_wrong_gets_a_hint(eid, right, wrong, ctx, capsys):
    assert exercises.check(eid, right, **ctx) is True
    assert exercises.check(eid, wrong, **ctx) is False
    out = capsys.readouterr().out
    assert f"{eid}: correct" in out and f"{eid}: not yet." in out


def test_oracle_share_is_defined_only_when_the_oracle_gains(capsys):
    up = _rows(oracle_gain=0.04, pagkd_gain=0.01)
    assert exercises.oracle_share(up) == pytest.approx(0.25)
    assert exercises.check("05.1", 0.25, rows=up)
    assert not exercises.check("05.1", "undefined", rows=up)
    # two losses: the ratio would read as "136% recovered"; no share exists
    down = _rows(oracle_gain=-0.014, pagkd_gain=-0.019)
    assert exercises.oracle_share(down) is None
    assert exercises.check("05.1", "undefined", rows=down)
    assert not exercises.check("05.1", -0.019 / -0.014, rows=down)
    assert "sign of the oracle's gain" in capsys.readouterr().out


def test_seed_paired_difference():
    rows = _rows(0.0, 0.02)
    assert exercises.check("05.3", 0.015, rows=rows)      # (0.02 + 0.01) / 2
    assert not exercises.check("05.3", 0.02, rows=rows)   # difference of means, unpaired-style


@pytest.mark.parametrize("eid", exercises.exercise_ids())
def test_every_check_has_a_learner_cell_and_a_folded_solution(eid):
    nb = next(p for p in NOTEBOOKS if p.name.startswith(eid.split(".")[0] + "_"))
    cells = [c for c in _cells(nb) if c["cell_type"] == "code"]
    learner = [c for c in cells if f'exercises.check("{eid}", answer' in "".join(c["source"])]
    solution = [c for c in cells
                if f'assert exercises.check("{eid}", solution' in "".join(c["source"])]
    assert len(learner) == 1 and "answer = None" in "".join(learner[0]["source"])
    assert len(solution) == 1 and solution[0]["metadata"]["jupyter"]["source_hidden"] is True
    assert cells.index(learner[0]) < cells.index(solution[0])


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_tags_its_parameters_cell(nb):
    tagged = [c for c in _cells(nb) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and "SMOKE" in "".join(tagged[0]["source"])
