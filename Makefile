# pagkd_lite: `make demo`, `make test`, `make lab`. Each creates .venv and installs the kit
# (with the pinned torch/torchvision pair of constraints-ci.txt) when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lab lint bench step-time install clean cache site test-site test-lab

$(STAMP): pyproject.toml constraints-ci.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints-ci.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pagkd-lite demo --preset demo

test: $(STAMP)
	$(BIN)/ruff check pagkd_lite tests tests_site tests_lab benchmarks scripts
	PAGKD_SMOKE=1 $(BIN)/python -m pytest -q --durations=10 tests
	PAGKD_SMOKE=1 $(BIN)/python -m pytest -q --nbval -p no:cacheprovider notebooks

# the rendered course: every notebook executed (demo mode from the class-mode cache; see
# scripts/build_site.py) and rendered by Sphinx (myst-nb, book theme) into site/, which
# works offline wherever it is copied
SITE_STAMP := $(VENV)/.installed-site
$(SITE_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints-ci.txt -e '.[test,site]'
	touch $(SITE_STAMP)

site: cache $(SITE_STAMP)
	$(BIN)/python scripts/build_site.py --mode demo --out site

# the whole site built in smoke mode, every page opened in headless Chromium with the
# network blocked (Debian's chromium: apt-get install -y chromium); PAGKD_TEST_SITE=site
# checks an existing build instead
test-site: $(SITE_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests_site

# the course in JupyterLab (tests_lab/test_lab.py): `make lab`'s server on a free port, no
# token, smoke mode; notebooks 01 and 04 run, drawn, their explorer moved, saved and reopened,
# in Debian's chromium via Playwright (the [site] extra, as test-site); then notebook 05 in
# demo mode within 3 minutes where `make cache` has run (skipped, with the reason, if not)
test-lab: $(SITE_STAMP)
	$(BIN)/python -m pytest -q -s -p no:cacheprovider --durations=0 tests_lab

# resumable (each model is saved as it finishes, a student's epochs in last.pt); torch's
# threads = the cores the load average leaves free (at least 1): two threads fighting another
# job for one core train 3x slower than one (notebooks/TEACHING.md); CACHE_THREADS=N to choose
CACHE_THREADS ?= $(shell $(PY) -c "import os; print(max(1, round((os.cpu_count() or 1) - os.getloadavg()[0])))")
cache: $(STAMP)
	$(BIN)/pagkd-lite cache --preset demo --threads $(CACHE_THREADS)

# JupyterLab serves the repository's root, so that the notebooks' links and images into docs/
# resolve (tests/test_lab_links.py), and opens the course index, notebooks/README.md, rendered
# (scripts/lab_settings/overrides.json: Markdown opens as a preview; right-click, Open With,
# Editor to edit); PAGKD_SMOKE=1 make lab for smoke mode (the kernels inherit it)
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir=$(CURDIR) \
	    --LabApp.app_settings_dir=$(CURDIR)/scripts/lab_settings notebooks/README.md

bench: $(STAMP)
	$(BIN)/pagkd-lite bench --preset demo --seeds 5

step-time: $(STAMP)
	$(BIN)/python benchmarks/step_time.py

clean:
	rm -rf $(VENV) runs site .pytest_cache
