PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VIEWER := src/omnipath_lvlm/serve/static/vendor/openseadragon/VERSION

.PHONY: setup test demo viewer nano reproduce clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# the web viewer's OpenSeadragon comes from npm at set-up time (never committed)
$(VIEWER):
	bash scripts/build_viewer.sh || echo "warning: the web viewer's OpenSeadragon could not be installed (needs npm); the API still works"

setup: $(STAMP) $(VIEWER)

viewer: $(VIEWER)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m omnipath_lvlm.demo

# retrain the shipped models/omnipath-nano from scratch (SynthPath data are generated if missing;
# they are deterministic), evaluate it and rewrite its card; `make reproduce` resumes instead
nano: setup
	rm -rf runs/repro/nano-base runs/repro/nano runs/repro/eval-nano-base runs/repro/eval-nano-base-slides \
	       runs/repro/eval-nano runs/repro/eval-nano-slides runs/repro/eval-nano-slide-boxes runs/repro/eval-nano-slides-record
	REPRO_STAGES=data,nano,eval,results $(BIN)/python scripts/reproduce.py

# every stage of docs/RESULTS.md (data, training, PGFC evaluation, ablations, attention maps, tables)
reproduce: setup
	$(BIN)/python scripts/reproduce.py

clean:
	rm -rf $(VENV) build dist *.egg-info
