# flowd - build, test, run, install. `make help` lists the targets.

CC      ?= gcc
PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
PKGS    := raft libuv libmicrohttpd jansson libpq inih libsystemd libcurl gnutls
WERROR  := $(if $(CI),-Werror,)
OPT     ?= -O2 -g
XCFLAGS := $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter $(WERROR) \
           -I. $(shell pkg-config --cflags $(PKGS)) -MMD -MP $(CFLAGS)
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -lpthread -lm
PYTEST  := /usr/bin/python3 -m pytest

LAYERS  := core consensus storage api daemon
LIB_SRC := $(filter-out daemon/main.c,$(foreach d,$(LAYERS),$(wildcard $(d)/*.c)))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
CLI_SRC := $(wildcard cli/*.c)

# Keep intermediate objects (no trailing `rm` after the test summary), and no
# directory chatter from recursive makes.
.SECONDARY:
MAKEFLAGS += --no-print-directory

.PHONY: all test unit integration asan run install uninstall clean format check-deps bench help chaos fuzz

all: $(BUILD)/flowd $(if $(CLI_SRC),$(BUILD)/flowctl) $(UNIT_BIN) $(BUILD)/loadgen $(BUILD)/watchgen $(BUILD)/tests/cron_dump

help:
	@echo "make             build build/flowd, build/flowctl and the unit tests"
	@echo "make test        every unit and integration test"
	@echo "make asan        the same under ASan+UBSan+LSan (build-asan/)"
	@echo "make fuzz        each libFuzzer target for FUZZ_S seconds (fuzz/README.md)"
	@echo "make run         start the local demo cluster with its own PostgreSQL"
	@echo "make bench       the benchmarks (docs/benchmarks.md)"
	@echo "make install     install flowd, flowctl and the systemd unit (PREFIX, DESTDIR)"
	@echo "make check-deps  fail on an include that points the wrong way"
	@echo "make format      clang-format every C file"

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(XCFLAGS) -c $< -o $@

# The OpenAPI document is built into api/openapi.o (.incbin).
$(BUILD)/api/openapi.o: api/openapi.json
# So is the web dashboard into api/web.o.
$(BUILD)/api/web.o: web/index.html web/app.js web/app.css

$(BUILD)/libflowd.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/flowd: $(BUILD)/daemon/main.o $(BUILD)/libflowd.a
	$(CC) $(XCFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/flowctl: $(CLI_SRC:%.c=$(BUILD)/%.o)
	$(CC) $(XCFLAGS) $(LDFLAGS) -o $@ $^ -lcurl -ljansson

$(BUILD)/loadgen: $(BUILD)/bench/loadgen.o
	$(CC) $(XCFLAGS) $(LDFLAGS) -o $@ $^ -lpthread -lm $(shell pkg-config --libs gnutls)

$(BUILD)/watchgen: $(BUILD)/bench/watchgen.o
	$(CC) $(XCFLAGS) $(LDFLAGS) -o $@ $^

$(BUILD)/tests/cron_dump: $(BUILD)/tests/unit/cron_dump.o $(BUILD)/libflowd.a
	$(CC) $(XCFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libflowd.a
	@mkdir -p $(dir $@)
	$(CC) $(XCFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

unit: $(UNIT_BIN) $(BUILD)/tests/cron_dump
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done
	CRON_DUMP=$(abspath $(BUILD)/tests/cron_dump) $(PYTEST) -q -p no:cacheprovider tests/differential

integration: $(BUILD)/flowd $(if $(CLI_SRC),$(BUILD)/flowctl)
	FLOWD_BIN=$(abspath $(BUILD)/flowd) FLOWD_BUILD=$(abspath $(BUILD)) \
	  $(PYTEST) -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)

test: all check-deps
	$(MAKE) unit
	$(MAKE) fuzz-smoke
	$(MAKE) integration

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 test

chaos: $(BUILD)/flowd
	FLOWD_BIN=$(abspath $(BUILD)/flowd) FLOWD_BUILD=$(abspath $(BUILD)) FLOWD_CHAOS=long \
	  $(PYTEST) -q -p no:cacheprovider tests/integration -k chaos

run: $(BUILD)/flowd
	scripts/demo.sh

bench: $(BUILD)/flowd $(BUILD)/loadgen
	bench/run.sh && bench/cluster.sh

check-deps:
	@scripts/check-deps.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

install: $(BUILD)/flowd
	install -D -m 0755 $(BUILD)/flowd $(DESTDIR)$(PREFIX)/bin/flowd
	if [ -f $(BUILD)/flowctl ]; then install -D -m 0755 $(BUILD)/flowctl $(DESTDIR)$(PREFIX)/bin/flowctl; fi
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed 's|/usr/local|$(PREFIX)|g' systemd/flowd.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/flowd.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/flowd.service
	install -D -m 0644 systemd/flowd.sysusers.conf $(DESTDIR)$(PREFIX)/lib/sysusers.d/flowd.conf
	install -d $(DESTDIR)$(PREFIX)/share/doc/flowd
	install -m 0644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/flowd/
	install -D -m 0644 deploy/flowd.conf.example $(DESTDIR)$(PREFIX)/share/flowd/flowd.conf.example

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/flowd $(DESTDIR)$(PREFIX)/bin/flowctl \
	  $(DESTDIR)$(PREFIX)/lib/systemd/system/flowd.service \
	  $(DESTDIR)$(PREFIX)/lib/sysusers.d/flowd.conf
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/flowd

clean:
	rm -rf build build-asan

include fuzz/fuzz.mk

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
