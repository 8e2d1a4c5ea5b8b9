# courier-broker — one hand-written makefile.
#
#   make            build/courier-broker and build/courier-double
#   make test       install missing packages, build, run every suite
#   make check      the same suites built with ASan + UBSan (build/asan/)
#   make demo       a first token from the test double, end to end
#   make bench      wrk figures: broker vs. the double, and ratios
#   make fuzz       libFuzzer drivers (clang), a short run of each
#   make fmt / lint clang-format, and cppcheck + format check

BUILD    ?= build
CC       ?= cc
PKGS      = lua5.4 lua5.4-cjson libmicrohttpd libcurl libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# Truncating a message to its buffer is intended everywhere we format: no
# -Wformat-truncation (a gcc-only flag: clang builds set WARN_GCC empty).
WARN_GCC ?= -Wno-format-truncation
WARN = -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
       -Wpointer-arith -Wundef -Wvla -Wnull-dereference -Werror $(WARN_GCC)
OPT      ?= -O2 -g -D_FORTIFY_SOURCE=2
SAN      ?=
VERSION  = 0.1.0
CFLAGS_ALL = -std=c17 -D_GNU_SOURCE -DBROKER_VERSION=\"$(VERSION)\" $(OPT) $(SAN) $(WARN) -fstack-protector-strong \
             -Isrc $(PKG_CFLAGS) $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lpthread -lm $(LDLIBS)

SRCS  = $(wildcard src/*.c)
OBJS  = $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS))
LIBOBJS = $(filter-out $(BUILD)/obj/main.o,$(OBJS))

BROKER = $(BUILD)/courier-broker
DOUBLE = $(BUILD)/courier-double

# Unit tests: tests/unit/test_X.c tests src/X.c; each lists the objects it links.
UNIT_scope    = scope
UNIT_duration = duration
UNIT_secret   = secret
UNIT_envelope = envelope scope duration secret
UNIT_json     = json
UNIT_jwt      = jwt jwks json secret log
UNIT_ident    = ident jwt jwks json secret log
UNIT_config   = config pmatch secret jwt jwks ident json duration scope log
UNIT_pmatch   = pmatch
UNIT_pidfile  = pidfile
UNIT_metrics  = metrics
UNIT_jwks     = jwks jwt json secret log
UNIT_courier  = courier jwt jwks json secret log
UNIT_policy   = policy pmatch envelope scope duration json config secret jwt jwks ident log
UNIT_NAMES = $(patsubst tests/unit/test_%.c,%,$(wildcard tests/unit/test_*.c))
UNIT_BINS  = $(patsubst %,$(BUILD)/tests/test_%,$(UNIT_NAMES))

.PHONY: all deps test check demo bench bench-jwt bench-decision fuzz fmt lint clean unit integration
all: $(BROKER) $(DOUBLE)

deps:
	@bash scripts/install-deps.sh

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj $(BUILD)/tests:
	@mkdir -p $@

$(BROKER): $(OBJS)
	$(CC) $(SAN) -o $@ $(OBJS) $(LDLIBS_ALL)

$(DOUBLE): tests/double/courier_double.c $(BUILD)/obj/json.o | $(BUILD)/obj
	$(CC) $(CFLAGS_ALL) -o $@ $< $(BUILD)/obj/json.o $(LDLIBS_ALL)

.SECONDEXPANSION:
$(BUILD)/tests/test_%: tests/unit/test_%.c $$(addprefix $(BUILD)/obj/,$$(addsuffix .o,$$(UNIT_$$*))) | $(BUILD)/tests
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL) -lcmocka

unit: $(UNIT_BINS)
	@bash scripts/run-tests.sh unit $(UNIT_BINS)

integration: $(BROKER) $(DOUBLE)
	@BROKER_BIN=$(abspath $(BROKER)) DOUBLE_BIN=$(abspath $(DOUBLE)) \
	  bash scripts/run-tests.sh integration

test: deps
	@$(MAKE) --no-print-directory all $(UNIT_BINS)
	@BROKER_BIN=$(abspath $(BROKER)) DOUBLE_BIN=$(abspath $(DOUBLE)) \
	  bash scripts/run-tests.sh all $(UNIT_BINS)

check: deps
	@$(MAKE) --no-print-directory BUILD=build/asan OPT="-O1 -g" \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test

demo: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh $(abspath $(BROKER)) $(abspath $(DOUBLE))

bench: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/bench.sh $(abspath $(BROKER)) $(abspath $(DOUBLE))

# JWT verification micro-benchmark: µs per token per algorithm (scripts/bench.sh runs it too).
BENCH_JWT_OBJS = jwt jwks json secret log
$(BUILD)/bench_jwt: tests/bench/bench_jwt.c tests/unit/testkeys.h $(addprefix $(BUILD)/obj/,$(addsuffix .o,$(BENCH_JWT_OBJS)))
	$(CC) $(CFLAGS_ALL) -o $@ $< $(addprefix $(BUILD)/obj/,$(addsuffix .o,$(BENCH_JWT_OBJS))) $(LDLIBS_ALL)

bench-jwt: $(BUILD)/bench_jwt
	@$(BUILD)/bench_jwt

# Policy decision micro-benchmark: median and p99 µs per decision of policies/default.lua.
BENCH_DECISION_OBJS = policy pmatch envelope scope duration json config secret jwt jwks ident log
$(BUILD)/bench_decision: tests/bench/bench_decision.c $(addprefix $(BUILD)/obj/,$(addsuffix .o,$(BENCH_DECISION_OBJS)))
	$(CC) $(CFLAGS_ALL) -o $@ $< $(addprefix $(BUILD)/obj/,$(addsuffix .o,$(BENCH_DECISION_OBJS))) $(LDLIBS_ALL)

bench-decision: $(BUILD)/bench_decision
	@$(BUILD)/bench_decision policies/default.lua

FUZZ_NAMES = $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_jwt      = jwt jwks json secret log
FUZZ_jwks     = jwks jwt json secret log
FUZZ_duration = duration
FUZZ_scope    = scope
FUZZ_json     = json
FUZZ_pmatch   = pmatch
FUZZ_courier  = courier json jwt jwks secret log
FUZZ_body     = envelope json scope duration secret
FUZZ_policy   = policy pmatch envelope scope duration json config secret jwt jwks ident log
FUZZ_config   = config policy pmatch envelope scope duration json secret jwt jwks ident log
FUZZ_SECONDS ?= 60
fuzz: deps
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=clang WARN_GCC= OPT="-O1 -g" \
	  SAN="-fsanitize=fuzzer-no-link,address,undefined" $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_NAMES))
	@bash scripts/fuzz.sh $(FUZZ_SECONDS) $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_NAMES))

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $$(addprefix $(BUILD)/obj/,$$(addsuffix .o,$$(FUZZ_$$*)))
	clang $(CFLAGS_ALL) -fsanitize=fuzzer -o $@ $^ $(LDLIBS_ALL)

fmt:
	clang-format -i src/*.c src/*.h tests/unit/*.c tests/double/*.c tests/fuzz/*.c

lint:
	clang-format --dry-run --Werror src/*.c src/*.h
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --std=c11 \
	  --suppress=missingIncludeSystem -Isrc src/

clean:
	rm -rf build
