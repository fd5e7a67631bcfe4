# Herald: the two commands an operator needs are `make run` and `make test`.
# Everything else here is a building block of those two.
JOBS ?= $(shell nproc)
BUILD_TYPE ?= RelWithDebInfo
.PHONY: all deps browser-deps smsc-deps build build-asan run test fuzz fuzz-brief chaos bench clean

all: build

deps:
	@scripts/deps.sh

# playwright-core for the browser tests (tests/browser), pinned by its package-lock.json; again
# whenever the lock file changes. It drives Debian's chromium; it downloads no browser itself.
browser-deps: tests/browser/node_modules/.herald-installed

tests/browser/node_modules/.herald-installed: tests/browser/package-lock.json | deps
	cd tests/browser && npm ci --no-audit --no-fund
	@touch $@

# The npm `smpp` package (pinned by tests/smsc/package-lock.json) that tests/smsc/smsc.js runs as
# the SMSC of the SMS / WAP Push integration tests; again whenever the lock file changes.
smsc-deps: tests/smsc/node_modules/.herald-installed

tests/smsc/node_modules/.herald-installed: tests/smsc/package-lock.json | deps
	cd tests/smsc && npm ci --no-audit --no-fund
	@touch $@

build: deps
	@cmake -S . -B build/release -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	@cmake --build build/release -j $(JOBS)

build-asan: deps
	@cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DHERALD_SANITIZE=ON >/dev/null
	@cmake --build build/asan -j $(JOBS)

# Foreground daemon on the embedded defaults: loopback only, data in ./var/herald.
run: build
	exec build/release/heraldd

# Every fuzz target briefly, then the whole suite twice: release build, then ASan+UBSan build.
test: build build-asan browser-deps smsc-deps
	@$(MAKE) --no-print-directory fuzz-brief
	cd build/release && ctest --output-on-failure -j $(JOBS) --timeout 900
	cd build/asan && ctest --output-on-failure -j $(JOBS) --timeout 900

# libFuzzer targets (clang, ASan+UBSan): 30 s each in the suite, 10 minutes each here.
fuzz-brief: deps
	scripts/fuzz.sh 30
fuzz: deps
	scripts/fuzz.sh 600

# The long crash-safety run: ten minutes of kill -9 under load.
chaos: build
	HERALD_BUILD=$(CURDIR)/build/release /usr/bin/python3 tests/chaos/chaos.py --duration 600 --min-kills 100

# Herald and its peers (Nchan, Mosquitto, NATS JetStream) side by side, alternating rounds;
# tables in build/bench/<date>/tables.md (docs/PERFORMANCE.md). BENCH_QUICK=1 for a short run.
bench: build
	bench/run.sh

clean:
	rm -rf build
