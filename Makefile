# Set-up and everyday commands. Two are all a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch build installed when the venv has none. A user with a GPU can keep their CUDA build:
# install it into .venv first (or pass TORCH_SPEC=torch), and nothing here replaces it.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test test-fast bench bench-data bench-data-emoji bench-data-avatars bench-data-homework bench-emoji fmnist-data lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/oddeye demo --out demo-output

test: install
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow (torchrun ranks, fresh interpreters, quality floors).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# One-class Fashion-MNIST, all 10 classes, ladder detectors and classical references;
# writes benchmarks/results/*.json and regenerates BENCHMARKS.md. Override with BENCH_ARGS=...
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
BENCH_ARGS ?= --detectors fcn,cnn,cnn-bn,vae,pca,knn
bench: install fmnist-data
	$(BIN)/oddeye bench fmnist --data-dir $(FMNIST_DIR) $(BENCH_ARGS)

fmnist-data:
	@[ -d $(FMNIST_DIR) ] && exit 0; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist || \
		(apt-get update -q && apt-get install -y -q dataset-fashion-mnist); \
	else \
		echo "Fashion-MNIST is not in $(FMNIST_DIR). Install Debian's package:"; \
		echo "  sudo apt-get install dataset-fashion-mnist"; \
		echo "or put the four idx files (train/t10k images and labels) in a folder and run"; \
		echo "  $(BIN)/oddeye bench fmnist --data-dir FOLDER"; \
		exit 2; \
	fi

# The colour benchmark's data: two npm packages (Apache-2.0 / CC-BY-4.0 artwork), 64x64 PNGs only.
EMOJI_DIR ?= benchmarks/data/emoji
EMOJI_VERSION ?= 16.0.0
bench-data: bench-data-emoji bench-data-avatars

bench-data-emoji:
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed to fetch the emoji packages; or unpack"; \
		echo "  emoji-datasource-google and -twitter@$(EMOJI_VERSION) yourself and pass --data-dir"; exit 2; }
	@mkdir -p $(EMOJI_DIR)
	@for v in google twitter; do \
		d=$(EMOJI_DIR)/emoji-datasource-$$v; \
		if [ -f $$d/emoji.json ] && [ -d $$d/img/$$v/64 ]; then echo "$$d: present"; continue; fi; \
		(cd $(EMOJI_DIR) && npm pack -q emoji-datasource-$$v@$(EMOJI_VERSION) >/dev/null) || exit 2; \
		rm -rf $$d.tmp && mkdir -p $$d.tmp && \
		tar xzf $(EMOJI_DIR)/emoji-datasource-$$v-$(EMOJI_VERSION).tgz -C $$d.tmp --strip-components 1 \
			package/emoji.json package/LICENSE package/img/$$v/64 && \
		rm -rf $$d && mv $$d.tmp $$d && rm -f $(EMOJI_DIR)/emoji-datasource-$$v-$(EMOJI_VERSION).tgz && \
		echo "$$d: $$(ls $$d/img/$$v/64 | wc -l) images"; \
	done

# The avatars benchmark's faces (MVTec AD folders with masks), drawn by node from three npm packages
# installed into AVATARS_NPM (pinned in src/oddeye/bench/avatars_data.py). A complete category is
# kept; one is written to a temporary folder and renamed when whole.
AVATARS_DIR ?= benchmarks/data/avatars
AVATARS_NPM ?= benchmarks/data/npm-avatars
AVATARS = $(BIN)/oddeye bench avatars-data --out $(AVATARS_DIR) --modules $(AVATARS_NPM)
bench-data-avatars: install
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
		echo "node and npm (node 18+) are needed to draw the avatars: https://nodejs.org"; exit 2; }
	$(AVATARS) --size 64 --n-train 3000 --n-test 1000
	$(AVATARS) --size 256 --n-train 3000 --n-test 1000
	$(AVATARS) --size 1024 --n-train 200 --n-test 100
	$(AVATARS) --size 64 --strays 300
	$(AVATARS) --size 256 --strays 300

# the avatars at the homework's size (issue 24: oddeye bench avatars --n 140001): about 2 minutes
bench-data-homework: install
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
		echo "node and npm (node 18+) are needed to draw the avatars: https://nodejs.org"; exit 2; }
	$(AVATARS) --size 64 --n-train 140001 --n-test 19999 --name avatars64-n140001

bench-emoji: install bench-data-emoji
	$(BIN)/oddeye bench emoji --data-dir $(EMOJI_DIR)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: install
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) demo-output build *.egg-info src/*.egg-info .pytest_cache
