# Makefile — builds lib/ into a static library, the programs into bin/, and runs tests and benchmarks.
#
#   make            build everything (warnings are errors in spirit: there must be none)
#   make deps       install the Debian packages the build needs (apt-get, as root)
#   make test       install what is missing, build, run every test; ends "N passed, N failed"
#   make sanitize   the same tests built with AddressSanitizer + UndefinedBehaviorSanitizer
#   make valgrind   the unit tests under valgrind
#   make bench      benchmarks at the GPT-2 124M shape (see README)
#   make demo       launch a pipeline (the default model, or MODEL=DIR split in three), generate text
#   make default-model   train the embedded default model again (about 35 minutes)

SHELL := /bin/bash
PKGS := libzmq libczmq msgpack openblas inih libcjson libcrypto libpcre2-8
DEBS := build-essential pkg-config bsdutils libzmq3-dev libczmq-dev libmsgpack-dev libopenblas-dev \
        libopenblas0-pthread libinih-dev libcjson-dev libssl-dev libpcre2-dev gnuplot-nox \
        valgrind bible-kjv procps

BUILD ?= build
BIN ?= bin
OPT ?= -O3 -march=native
SAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

# The kernels choose their instruction set at run time (lib/kern.h): built for the baseline CPU,
# so that the portable path is portable and each other path holds only what its target names.
$(BUILD)/lib/kern.o $(BUILD)/lib/kern_%.o: OPT := $(filter-out -march=%,$(OPT))

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS ?= $(OPT)
CFLAGS += -std=c11 -D_GNU_SOURCE -fno-math-errno -Wall -Wextra -g -pthread -Ilib $(PKG_CFLAGS)
LDLIBS += $(PKG_LIBS) -lm -lpthread

LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB := $(BUILD)/libsplitlearn.a
TOOLS := $(patsubst tools/%.c,$(BIN)/zmq-splitlearn-%,$(wildcard tools/*.c))
NODES := $(patsubst nodes/%.c,$(BIN)/zmq-splitlearn-%,$(wildcard nodes/*.c))
TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
UNIT_TESTS := $(filter-out $(BUILD)/tests/test_e2e%,$(TESTS))
SCRIPT_TESTS := $(wildcard tests/test_*.sh)

.PHONY: all deps ensure-deps test check sanitize valgrind bench demo default-model fuzz clean format
all: $(TOOLS) $(NODES) $(TESTS)

$(BUILD)/%.o: %.c $(wildcard lib/*.h) | ensure-deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN)/zmq-splitlearn-%: $(BUILD)/tools/%.o $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/zmq-splitlearn-%: $(BUILD)/nodes/%.o $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%.o: tests/%.c tests/check.h $(wildcard lib/*.h) | ensure-deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# Installs the build's Debian packages when root, else prints the command to run.
deps:
	@if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBS); \
	else \
	    echo "run as root: apt-get install -y --no-install-recommends $(DEBS)"; exit 1; \
	fi

# Runs 'make deps' only when a package is missing, so that test and demo work on a fresh machine.
ensure-deps:
	@pkg-config --exists $(PKGS) 2>/dev/null && command -v valgrind >/dev/null || $(MAKE) --no-print-directory deps

# The sub-make re-reads pkg-config after ensure-deps may have installed the packages.
test check: ensure-deps
	@$(MAKE) --no-print-directory all
	@SL_BIN=$(BIN) tests/run.sh $(TESTS) $(SCRIPT_TESTS)

sanitize: ensure-deps
	@$(MAKE) --no-print-directory BUILD=build-san BIN=build-san/bin OPT="$(SAN_FLAGS)" all
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    SL_BIN=build-san/bin tests/run.sh $(patsubst $(BUILD)/%,build-san/%,$(TESTS)) $(SCRIPT_TESTS)

valgrind: ensure-deps
	@$(MAKE) --no-print-directory BUILD=build-vg BIN=build-vg/bin OPT="-O1 -g" all
	@SL_BIN=build-vg/bin tests/run.sh --wrap "valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite" \
	    $(patsubst $(BUILD)/%,build-vg/%,$(UNIT_TESTS))

bench: ensure-deps
	@$(MAKE) --no-print-directory all
	@tools/bench.sh

demo: ensure-deps
	@$(MAKE) --no-print-directory all
	@MODEL="$(MODEL)" PROMPT="$(PROMPT)" tools/demo.sh

# Each parser under libFuzzer (clang) for FUZZ_SECONDS each.
FUZZ_SECONDS ?= 30
fuzz: ensure-deps
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang OPT="-O1 -g -fsanitize=address,fuzzer-no-link" \
	    build-fuzz/libsplitlearn.a
	@for f in tests/fuzz_*.c; do \
	    name=$$(basename $$f .c); \
	    clang -O1 -g -fsanitize=address,fuzzer -std=c11 -D_GNU_SOURCE -Ilib $(PKG_CFLAGS) $$f \
	        build-fuzz/libsplitlearn.a $(LDLIBS) -o build-fuzz/$$name || exit 1; \
	    mkdir -p build-fuzz/corpus-$$name; \
	    echo "== $$name ($(FUZZ_SECONDS) s)"; \
	    build-fuzz/$$name -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -print_final_stats=1 \
	        build-fuzz/corpus-$$name 2>&1 | grep -E 'stat::number_of_executed_units|ERROR|SUMMARY|Done' ; \
	    test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

# Trains the embedded default model (models/default) with this pipeline: about 35 minutes.
default-model: ensure-deps
	@$(MAKE) --no-print-directory all
	@tools/default-model.sh

format:
	clang-format -i lib/*.[ch] tools/*.c nodes/*.c tests/*.[ch]

clean:
	rm -rf $(BUILD) build-san build-vg build-fuzz $(BIN)

.SECONDARY:
