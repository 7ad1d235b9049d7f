# medlab: two commands on a fresh machine.
#   make repro   set up .venv if needed, then run the whole DVC pipeline (embedded default)
#   make test    set up .venv if needed, then run the test suite
# Everything installs from this repository's own files (pyproject.toml, constraints.txt),
# plus, where missing, Debian's chromium and CJK fonts: the report stage opens its page
# in a real headless browser (checked, screenshotted).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medlab-installed
# The pipeline's tools (dvc, papermill, jupyter, the python3 kernel) come from the venv.
export PATH := $(abspath $(BIN)):$(PATH)
# Progress bars print one line per refresh under papermill --log-output: stages print
# their own progress lines instead.
export TQDM_DISABLE := 1
export HF_DATASETS_DISABLE_PROGRESS_BARS := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup browser repro readme test lint smoke clean-outputs

setup: $(STAMP) browser

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# Debian's chromium for the report's browser check (Playwright drives it; nothing is
# downloaded from a browser CDN) and Noto CJK so the page's Chinese text renders.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
	    && ! command -v google-chrome >/dev/null 2>&1 || ! fc-list :lang=zh 2>/dev/null | grep -q .; then \
	  command -v apt-get >/dev/null 2>&1 || { echo "make browser: no Chromium (or no CJK font) and no apt-get;" \
	    "install Chromium and a CJK font, and set report.browser in params.yaml" >&2; exit 1; }; \
	  echo "make browser: installing Debian's chromium and fonts-noto-cjk"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    --no-install-recommends chromium fonts-noto-cjk >/dev/null; \
	fi

repro: $(STAMP) browser
	$(BIN)/python -m medlab.config
	$(BIN)/python -m medlab.report.repro_time $(BIN)/dvc repro
	$(MAKE) --no-print-directory readme

# README.md's result sections from the run's metrics (reports/metrics/, committed with
# dvc.lock): no result number in README.md is typed by hand; a test checks they agree.
readme: $(STAMP)
	$(BIN)/python -m medlab.report.readme

test: $(STAMP) browser
	$(BIN)/python -m pytest -n auto --dist loadfile --durations=15

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/nbstripout --verify notebooks/*.ipynb

# Remove pipeline outputs (not the LLM-call cache or checkpoints under .cache/).
clean-outputs:
	rm -rf data models reports/notebooks reports/html reports/metrics reports/figures reports/pretrain reports/timing
	rm -f reports/index.html reports/index.png
