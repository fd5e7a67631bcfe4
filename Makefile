# Herald: the two commands an operator needs are `make run` and `make test`.
# Everything else here is a building block of those two.
JOBS ?= $(shell nproc)
BUILD_TYPE ?= RelWithDebInfo
.PHONY: all deps build build-asan run test test-unit test-integration clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B build/release -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null
	@cmake --build build/release -j $(JOBS)

build-asan: deps
	@cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DHERALD_SANITIZE=ON >/dev/null
	@cmake --build build/asan -j $(JOBS)

# Foreground daemon on the embedded defaults: loopback only, data in ./var/herald.
run: build
	exec build/release/heraldd

# The whole suite twice: release build, then ASan+UBSan build.
test: build build-asan
	cd build/release && ctest --output-on-failure -j $(JOBS) --timeout 300
	cd build/asan && ctest --output-on-failure -j $(JOBS) --timeout 600

clean:
	rm -rf build
