# Makefile — builds lib/ into a static library, the programs into bin/, and runs tests and benchmarks.
#
#   make            install what is missing (as make deps), then build everything (warnings are
#                   errors in spirit: there must be none)
#   make deps       install the Debian packages the build needs (apt-get, as root)
#   make install    the programs into PREFIX/bin (PREFIX=/usr/local; DESTDIR for staging), the
#                   GPT-2 vocab into PREFIX/share/zmq-splitlearn (found there without --vocab), man
#                   pages made from each --help with help2man into PREFIX/share/man/man1
#   make uninstall  removes what make install put there (same PREFIX)
#   make test       install what is missing, build, run every test; ends "N passed, N failed"
#   make sanitize   the same tests built with AddressSanitizer + UndefinedBehaviorSanitizer
#   make valgrind   the unit tests under valgrind
#   make bench      benchmarks at the GPT-2 124M shape (see README)
#   make soak       about 2 minutes of mixed load on a 4-stage pipeline (tools/soak.sh; not in make test)
#   make demo       launch a pipeline (the default model, or MODEL=... split from its n_layer:
#                   a directory, a hub cache entry or a repo id), generate text; PORT=5701 is the
#                   first of the 3 local ports it uses, PROMPT="..." the prompt
#   make default-model   train the embedded default model again (about 35 minutes)
#   make privacy-table   the privacy-utility table of docs/PRIVACY.md (about an hour; not in make test)
#   make perplexity-table   the default model's perplexity at every weight format (README; 3 minutes)

SHELL := /bin/bash
PKGS := libzmq libczmq msgpack openblas inih libcjson libcrypto libpcre2-8 libzip
DEBS := build-essential pkg-config bsdutils libzmq3-dev libczmq-dev libmsgpack-dev libopenblas-dev \
        libopenblas0-pthread libinih-dev libcjson-dev libssl-dev libpcre2-dev libzip-dev gnuplot-nox \
        valgrind bible-kjv procps help2man

BUILD ?= build
BIN ?= bin
PREFIX ?= /usr/local
DESTDIR ?=
VERSION := $(shell sed -n 's/^\#define SL_VERSION "\(.*\)"$$/\1/p' lib/version.h)
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
# The fuzzers' seed writers, and each harness as a plain program replaying files (tests/replay.c):
# test_fuzz_seeds.sh runs them.
FUZZ_REPLAYS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/fuzz_*.c) $(wildcard tests/*_seeds.c))
SCRIPT_TESTS := $(wildcard tests/test_*.sh)
PROGRAMS := $(TOOLS) $(NODES)
MANPAGES := $(patsubst $(BIN)/%,$(BUILD)/man/%.1,$(PROGRAMS))

.PHONY: all build deps ensure-deps test check sanitize valgrind bench soak demo default-model privacy-table \
        perplexity-table fuzz clean format \
        install install-files uninstall

# On a fresh machine the packages are missing when this file is read, and with them the
# pkg-config flags above: `all` installs them first, then builds in a sub-make that reads the
# flags again (as test, demo and the others do).
all: ensure-deps
	@$(MAKE) --no-print-directory build

build: $(TOOLS) $(NODES) $(TESTS) $(FUZZ_REPLAYS)

$(BUILD)/%.o: %.c $(wildcard lib/*.h tools/*.h) | ensure-deps
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

$(BUILD)/tests/fuzz_%: $(BUILD)/tests/fuzz_%.o $(BUILD)/tests/replay.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%.o: tests/%.c $(wildcard tests/*.h) $(wildcard lib/*.h) | ensure-deps
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
	@$(MAKE) --no-print-directory build
	@SL_BIN=$(BIN) SL_BUILD=$(BUILD) tests/run.sh $(TESTS) $(SCRIPT_TESTS)

sanitize: ensure-deps
	@$(MAKE) --no-print-directory BUILD=build-san BIN=build-san/bin OPT="$(SAN_FLAGS)" build
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    SL_BIN=build-san/bin SL_BUILD=build-san tests/run.sh $(patsubst $(BUILD)/%,build-san/%,$(TESTS)) $(SCRIPT_TESTS)

valgrind: ensure-deps
	@$(MAKE) --no-print-directory BUILD=build-vg BIN=build-vg/bin OPT="-O1 -g" build
	@SL_BIN=build-vg/bin tests/run.sh --wrap "valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite" \
	    $(patsubst $(BUILD)/%,build-vg/%,$(UNIT_TESTS))

bench: ensure-deps
	@$(MAKE) --no-print-directory build
	@tools/bench.sh

soak: ensure-deps
	@$(MAKE) --no-print-directory build
	@tools/soak.sh

demo: ensure-deps
	@$(MAKE) --no-print-directory build
	@MODEL="$(MODEL)" PROMPT="$(PROMPT)" PORT="$(PORT)" tools/demo.sh

# Each parser under libFuzzer (clang) for FUZZ_SECONDS each, every one from a seed corpus of files
# our own writers made: a fuzzer fuzz_X starts from what tests/X_seeds.c writes (messages from our
# encoder, safetensors from our writer, our topologies, texts our tokenizer decodes), and from
# build-fuzz/seeds-NAME when a test writes seeds for it (test_torch --seeds: our pickles). cJSON is
# instrumented too, so that the JSON headers and tokenizer files are fuzzed down into its parser:
# tools/cjson-source.sh fetches the source of the libcjson1 installed (apt-get source, into
# build-fuzz/cjson; never into the repository) and it is linked in place of the library. Without
# a Debian mirror to fetch it from, the fuzzers link the system's cJSON and say so.
FUZZ_SECONDS ?= 30
FUZZ_CC := clang -O1 -g -std=c11 -D_GNU_SOURCE -Ilib $(PKG_CFLAGS)
fuzz: ensure-deps
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang OPT="-O1 -g -fsanitize=address,fuzzer-no-link" \
	    build-fuzz/libsplitlearn.a
	@$(MAKE) --no-print-directory $(BUILD)/tests/test_torch && $(BUILD)/tests/test_torch --seeds build-fuzz
	@rm -f build-fuzz/cJSON.o; cjson=$$(tools/cjson-source.sh build-fuzz/cjson 2>build-fuzz/cjson-fetch.log) && \
	    $(FUZZ_CC) -fsanitize=address,fuzzer-no-link -c $$cjson/cJSON.c -o build-fuzz/cJSON.o && \
	    echo "== cJSON instrumented: $$cjson" || \
	    echo "== WARNING: cJSON is not instrumented: its source could not be fetched (build-fuzz/cjson-fetch.log)"
	@if [ -f build-fuzz/cJSON.o ]; then libs="build-fuzz/cJSON.o $(filter-out -lcjson,$(LDLIBS))"; \
	    else libs="$(LDLIBS)"; fi; \
	for f in tests/fuzz_*.c; do \
	    name=$$(basename $$f .c); seeds=tests/$${name#fuzz_}_seeds.c; \
	    $(FUZZ_CC) -fsanitize=address,fuzzer $$f build-fuzz/libsplitlearn.a $$libs -o build-fuzz/$$name || exit 1; \
	    mkdir -p build-fuzz/corpus-$$name; \
	    if [ -f $$seeds ]; then \
	        $(FUZZ_CC) -fsanitize=address,fuzzer-no-link $$seeds build-fuzz/libsplitlearn.a $$libs \
	            -o build-fuzz/$${name}_seeds && build-fuzz/$${name}_seeds build-fuzz/corpus-$$name || exit 1; \
	    fi; \
	    echo "== $$name ($(FUZZ_SECONDS) s)"; \
	    seeds=build-fuzz/seeds-$$name; [ -d $$seeds ] || seeds=; \
	    build-fuzz/$$name -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -print_final_stats=1 \
	        build-fuzz/corpus-$$name $$seeds 2>&1 | grep -E 'stat::number_of_executed_units|ERROR|SUMMARY|Done' ; \
	    test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

# Trains the embedded default model (models/default) with this pipeline: about 35 minutes.
default-model: ensure-deps
	@$(MAKE) --no-print-directory build
	@tools/default-model.sh

# A man page from each program's --help (help2man; the version from lib/version.h), with the
# one-line description of its NAME section.
what.zmq-splitlearn-split := cut a GPT-2 checkpoint into pipeline parts
what.zmq-splitlearn-node := run one stage of a split GPT-2 pipeline
what.zmq-splitlearn-launch := start this host's nodes of a pipeline topology
what.zmq-splitlearn-send := generate text through a running pipeline
what.zmq-splitlearn-run := generate text with a whole GPT-2 model in one process
what.zmq-splitlearn-train := split learning over a pipeline's parts
what.zmq-splitlearn-merge := join pipeline parts or a checkpoint into one HF model
what.zmq-splitlearn-info := describe a model, split, part or checkpoint
what.zmq-splitlearn-tokenize := GPT-2 byte-level BPE: text to token ids and back
what.zmq-splitlearn-mkmodel := write a random GPT-2 of any shape
what.zmq-splitlearn-import := import the split parts of a PyTorch seed library
what.zmq-splitlearn-keygen := make a CurveZMQ key pair for a node, client or trainer
what.zmq-splitlearn-bench := benchmark inference kernels at a model's shape
what.zmq-splitlearn-bench-pipeline := benchmark a 3-stage pipeline against the whole model
what.zmq-splitlearn-perplexity := the perplexity of a GPT-2 model on a text
$(BUILD)/man/%.1: $(BIN)/%
	@mkdir -p $(dir $@)
	help2man --no-info --version-string=$(VERSION) --name="$(or $(what.$*),part of zmq-splitlearn)" \
	    -o $@ $(abspath $<)

install: ensure-deps
	@command -v help2man >/dev/null || $(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory install-files

install-files: $(PROGRAMS) $(MANPAGES)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/zmq-splitlearn/gpt2-vocab \
	    $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(PROGRAMS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 models/gpt2-vocab/vocab.json models/gpt2-vocab/merges.txt models/gpt2-vocab/INFO.md \
	    $(DESTDIR)$(PREFIX)/share/zmq-splitlearn/gpt2-vocab/
	install -m 644 $(MANPAGES) $(DESTDIR)$(PREFIX)/share/man/man1/

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(notdir $(PROGRAMS))) \
	    $(addprefix $(DESTDIR)$(PREFIX)/share/man/man1/,$(notdir $(MANPAGES)))
	rm -rf $(DESTDIR)$(PREFIX)/share/zmq-splitlearn

# The privacy-utility table: every first cut x noise x NoPeek, fine-tuned and attacked (up to an hour;
# STEPS, CUTS, SIGMAS, NOPEEK, TOKENS make it smaller: tools/privacy-table.sh).
privacy-table: ensure-deps
	@$(MAKE) --no-print-directory all
	@tools/privacy-table.sh

# The embedded default model's perplexity on its held-out text at every weight format (README).
perplexity-table: ensure-deps
	@$(MAKE) --no-print-directory build
	@tools/perplexity-table.sh

format:
	clang-format -i lib/*.[ch] tools/*.[ch] nodes/*.c tests/*.[ch]

clean:
	rm -rf $(BUILD) build-san build-vg build-fuzz $(BIN)

.SECONDARY:
