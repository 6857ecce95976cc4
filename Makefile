# Thin wrapper around CMake. `make demo` and `make test` are the two commands a user needs.
BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_ALLOC ?= build-alloc
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
FUZZ_SECONDS ?= 60

.PHONY: all deps build build-asan test test-unit fuzz alloc-sweep demo demo-stop bench bench-callgrind bench-floor clean format

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The sanitizer build uses clang, which also builds the libFuzzer targets (tests/fuzz).
build-asan: deps
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DPGS_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_ASAN) -j $(JOBS)

# The whole suite twice: once on the optimized build, once under ASan+UBSan. Tests run
# JOBS at a time; those that share the fixture cluster take turns (tests/CMakeLists.txt).
test: build build-asan
	cd $(BUILD_ASAN) && ctest --output-on-failure --timeout 600 -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure --timeout 600 -j $(JOBS)

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

# Every libFuzzer target (or those in FUZZ_TARGETS) for FUZZ_SECONDS each, one after the
# other; fails if one crashed.
fuzz: build-asan
	@scripts/fuzz.sh $(BUILD_ASAN) $(FUZZ_SECONDS) "$(FUZZ_TARGETS)"

# The allocation-failure sweep (tests/alloc/sweep.py): an ASan build of pgshard alone with
# PGS_ALLOC_FAIL, a two-shard cluster of its own (so that fan-outs span shards), every N
# of every scenario.
alloc-sweep: deps
	@cmake -S . -B $(BUILD_ALLOC) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DPGS_SANITIZE=ON -DPGS_ALLOC_FAIL=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_ALLOC) -j $(JOBS) --target pgshard
	@tests/cluster/cluster.sh start $(BUILD_ALLOC)/cluster --shards 2 --replicas 0
	@status=0; python3 tests/alloc/sweep.py --bin $(BUILD_ALLOC)/pgshard --cluster $(BUILD_ALLOC)/cluster \
	  --work $(BUILD_ALLOC)/alloc -j $(JOBS) || status=$$?; \
	  tests/cluster/cluster.sh stop $(BUILD_ALLOC)/cluster; exit $$status

demo: build
	@scripts/demo.sh start $(BUILD)

demo-stop:
	@scripts/demo.sh stop $(BUILD)

# The benchmark: pgshard, PgBouncer and PostgreSQL directly under pgbench on a cluster of its
# own; a CSV, a markdown table and a chart in bench-results/<timestamp>/ (knobs: BENCH_QUICK=1
# for about two minutes, others in scripts/bench.sh). Long, so not part of `make test`.
bench: build
	@scripts/bench.sh $(BUILD)

# Instructions per transaction under callgrind (route path), into the same kind of folder.
bench-callgrind: build
	@BENCH_CALLGRIND=1 scripts/bench.sh $(BUILD)

# The least a proxy of each I/O style (epoll, io_uring) spends per transaction, next to
# PgBouncer and pgshard.
bench-floor: build
	@BENCH_FLOOR=1 scripts/bench.sh $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_ALLOC)
