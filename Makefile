# courier-broker — one hand-written makefile.
#
#   make            build/courier-broker and build/courier-double
#   make test       install missing packages, build, run every suite
#   make check      the same suites built with ASan + UBSan (build/asan/)
#   make tsan       the integration suite under ThreadSanitizer (build/tsan/)
#   make docs-check docs/configuration.md's option table against the code's
#   make demo       a first token from the test double, end to end
#   make bench      wrk figures: broker vs. the double, and ratios
#   make fuzz       libFuzzer drivers (clang), a short run of each
#   make fmt / lint clang-format, and cppcheck + format check (src/ and tests/)
#   make man        build/man/: courier-broker(8), courier-broker.conf(5)
#   make install    binary, man pages, config, policies, unit (PREFIX, DESTDIR, CONFDIR)
#
# Tests, benchmarks, fuzzers and tools link $(BUILD)/libbroker.a (every object
# of src/ and its subfolders but main.o): the linker takes what each needs.
# Header dependencies come from the compiler (-MMD -MP, the .d files).

BUILD    ?= build
CC       ?= cc
PKGS      = lua5.4 lua5.4-cjson libmicrohttpd libcurl libcrypto gnutls hiredis
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# Truncating a message to its buffer is intended everywhere we format: no
# -Wformat-truncation (a gcc-only flag: clang builds set WARN_GCC empty).
WARN_GCC ?= -Wno-format-truncation
# -Werror only where the compiler is known (CI sets WERROR=-Werror): a newer
# compiler's new warning must not break a user's build.
WERROR   ?=
WARN = -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
       -Wpointer-arith -Wundef -Wvla -Wnull-dereference $(WERROR) $(WARN_GCC)
OPT      ?= -O2 -g -D_FORTIFY_SOURCE=2
SAN      ?=
VERSION  = 0.1.0
CFLAGS_ALL = -std=c17 -D_GNU_SOURCE -DBROKER_VERSION=\"$(VERSION)\" $(OPT) $(SAN) $(WARN) -fstack-protector-strong \
             -Isrc $(PKG_CFLAGS) $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lpthread -lm $(LDLIBS)

# Every .c under src/, subfolders included; objects mirror the paths.
SRCS    = $(sort $(shell find src -name '*.c'))
OBJS    = $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS))
LIBOBJS = $(filter-out $(BUILD)/obj/main.o,$(OBJS))
LIB     = $(BUILD)/libbroker.a

BROKER = $(BUILD)/courier-broker
DOUBLE = $(BUILD)/courier-double
PRINT_OPTIONS = $(BUILD)/print-options

# Unit tests: tests/unit/test_X.c tests src/X.c.
UNIT_NAMES = $(patsubst tests/unit/test_%.c,%,$(wildcard tests/unit/test_*.c))
UNIT_BINS  = $(patsubst %,$(BUILD)/tests/test_%,$(UNIT_NAMES))

# C files outside src/ (compiled to $(BUILD)/tobj/, mirroring tests/).
TEST_SRCS = $(wildcard tests/unit/*.c tests/bench/*.c tests/fuzz/*.c tests/double/*.c tests/tools/*.c)
TEST_OBJS = $(patsubst tests/%.c,$(BUILD)/tobj/%.o,$(TEST_SRCS))

# Files clang-format owns (make fmt writes them, make lint checks them).
FMT_FILES = $(SRCS) $(sort $(shell find src -name '*.h')) \
            $(wildcard tests/unit/*.[ch] tests/bench/*.[ch] tests/fuzz/*.[ch] tests/double/*.[ch] tests/tools/*.[ch])

.PHONY: all man install deps test check tsan demo bench bench-jwt bench-decision bench-errpath fuzz fmt lint docs-check clean unit integration
all: $(BROKER) $(DOUBLE) man

deps:
	@bash scripts/install-deps.sh

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(BUILD)/tobj/%.o: tests/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

-include $(OBJS:.o=.d) $(TEST_OBJS:.o=.d)
# Kept after linking: they are what the .d files describe.
.SECONDARY: $(TEST_OBJS)

# Rebuilt from scratch so that a source file removed or moved leaves no stale member.
$(LIB): $(LIBOBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BROKER): $(OBJS)
	$(CC) $(SAN) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS_ALL)

$(DOUBLE): $(BUILD)/tobj/double/courier_double.o $(LIB)
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/tests/test_%: $(BUILD)/tobj/unit/test_%.o $(LIB)
	@mkdir -p $(@D)
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL) -lcmocka

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

# ThreadSanitizer over the integration suite (build/tsan/, suppressions in
# tests/tsan.supp). Not part of make test: it takes several minutes.
tsan: deps
	@$(MAKE) --no-print-directory BUILD=build/tsan OPT="-O1 -g" \
	  SAN="-fsanitize=thread -fno-omit-frame-pointer" all
	@bash scripts/tsan.sh $(abspath build/tsan/courier-broker) $(abspath build/tsan/courier-double)

# docs/configuration.md's option table is the code's (config_print_options).
$(PRINT_OPTIONS): $(BUILD)/tobj/tools/print_options.o $(LIB)
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL)

# The man pages, generated from docs/man/*.in with the code's option table
# and usage text (scripts/man.sh), so they never disagree with the code.
MANPAGES = $(BUILD)/man/courier-broker.8 $(BUILD)/man/courier-broker.conf.5
man: $(MANPAGES)

$(BUILD)/man/%: docs/man/%.in scripts/man.sh $(BROKER) $(PRINT_OPTIONS)
	@mkdir -p $(@D)
	bash scripts/man.sh $< $@ $(VERSION) $(BROKER) $(PRINT_OPTIONS)

# make install [PREFIX=/usr/local] [DESTDIR=] [CONFDIR=/etc/courier-broker].
# CONFDIR gets a configuration whose policy paths point at CONFDIR/policies
# (both only when absent: an operator's edits are never overwritten);
# DATADIR keeps pristine copies of examples/ and policies/ side by side, so
# the examples' ../policies paths work there as they do in the source tree.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share/courier-broker
DOCDIR  ?= $(PREFIX)/share/doc/courier-broker
UNITDIR ?= $(PREFIX)/lib/systemd/system
CONFDIR ?= /etc/courier-broker
INSTALL ?= install

install: $(BROKER) $(MANPAGES)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
	  $(DESTDIR)$(DATADIR)/examples $(DESTDIR)$(DATADIR)/policies $(DESTDIR)$(DOCDIR) \
	  $(DESTDIR)$(UNITDIR) $(DESTDIR)$(CONFDIR)/policies
	$(INSTALL) -m 0755 $(BROKER) $(DESTDIR)$(BINDIR)/courier-broker
	$(INSTALL) -m 0644 $(BUILD)/man/courier-broker.8 $(DESTDIR)$(MANDIR)/man8/
	$(INSTALL) -m 0644 $(BUILD)/man/courier-broker.conf.5 $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -m 0644 examples/*.conf.lua $(DESTDIR)$(DATADIR)/examples/
	$(INSTALL) -m 0644 policies/* $(DESTDIR)$(DATADIR)/policies/
	$(INSTALL) -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/etc/courier-broker|$(CONFDIR)|g' \
	  -e 's|/usr/local/share/doc/courier-broker|$(DOCDIR)|g' packaging/courier-broker.service \
	  >$(DESTDIR)$(UNITDIR)/courier-broker.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/courier-broker.service
	@for f in policies/*; do t=$(DESTDIR)$(CONFDIR)/$$f; \
	  [ -e $$t ] || $(INSTALL) -m 0644 $$f $$t; done
	@t=$(DESTDIR)$(CONFDIR)/broker.conf.lua; if [ -e $$t ]; then echo "install: $$t exists: kept"; \
	  else sed 's|"\.\./policies/|"policies/|' examples/broker.conf.lua >$$t && chmod 0644 $$t; fi

docs-check: $(PRINT_OPTIONS)
	@bash scripts/docs-check.sh $(PRINT_OPTIONS) docs/configuration.md

demo: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh $(abspath $(BROKER)) $(abspath $(DOUBLE))

bench: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/bench.sh $(abspath $(BROKER)) $(abspath $(DOUBLE))

# JWT verification micro-benchmark: µs per token per algorithm (scripts/bench.sh runs it too).
$(BUILD)/bench_%: $(BUILD)/tobj/bench/bench_%.o $(LIB)
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL)

bench-jwt: $(BUILD)/bench_jwt
	@$(BUILD)/bench_jwt

# Policy decision micro-benchmark: median and p99 µs per decision of policies/default.lua.
bench-decision: $(BUILD)/bench_decision
	@$(BUILD)/bench_decision policies/default.lua

# Policy error path micro-benchmark: decisions/s of a 101-tenant engine, deny vs. error.
bench-errpath: $(BUILD)/bench_errpath
	@$(BUILD)/bench_errpath

FUZZ_NAMES = $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60
fuzz: deps
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=clang WARN_GCC= OPT="-O1 -g" \
	  SAN="-fsanitize=fuzzer-no-link,address,undefined" $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_NAMES))
	@bash scripts/fuzz.sh $(FUZZ_SECONDS) $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_NAMES))

$(BUILD)/fuzz_%: $(BUILD)/tobj/fuzz/fuzz_%.o $(LIB)
	$(CC) $(SAN) -fsanitize=fuzzer $(LDFLAGS) -o $@ $^ $(LDLIBS_ALL)

fmt:
	clang-format -i $(FMT_FILES)

lint:
	clang-format --dry-run --Werror $(FMT_FILES)
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --std=c11 \
	  --suppress=missingIncludeSystem -Isrc src/
	@# tests/: the same checks but three that only flag test scaffolding: memleak
	@# (a failed setup or a bench's main returning early: the process ends),
	@# varFuncNullUB (NULL ends a fragment list; glibc's NULL is a pointer) and
	@# va_list_usedBeforeStarted (after cmocka's fail_msg, which does not return).
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --std=c11 \
	  --suppress=missingIncludeSystem --suppress=memleak --suppress=varFuncNullUB \
	  --suppress=va_list_usedBeforeStarted -Isrc tests/unit tests/bench tests/fuzz tests/double tests/tools

clean:
	rm -rf build
