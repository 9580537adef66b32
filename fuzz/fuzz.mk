# fuzz/fuzz.mk - the libFuzzer targets (fuzz/README.md), included by the
# Makefile. The library is built again with clang, instrumented for
# libFuzzer, ASan and UBSan, into $(FUZZ_BUILD); each fuzz/fuzz_<t>.c links
# against it as $(FUZZ_BUILD)/fuzz_<t>.
#
#   make fuzz                  every target for FUZZ_S seconds (default 60),
#                              one at a time, over its committed corpus
#   make fuzz FUZZ_T=cron      one target
#   make fuzz FUZZ_SAVE=1      also merge what grew the coverage into
#                              fuzz/corpus/<t>/ (otherwise it is dropped)
#   make fuzz-smoke            what `make test` runs: each target for
#                              FUZZ_SMOKE_S seconds (default 4)

FUZZ_BUILD   ?= build-fuzz
FUZZ_CC      ?= clang
FUZZ_S       ?= 60
FUZZ_SMOKE_S ?= 4
FUZZ_SAVE    ?=
FUZZ_ALL     := $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_T       ?= $(FUZZ_ALL)
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
# -gline-tables-only: file:line in every report, a fifth less build time
# than -g (it runs in `make test`).
FUZZ_CFLAGS  := -O1 -gline-tables-only -fno-omit-frame-pointer -std=c11 \
                -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
                $(WERROR) -I. $(shell pkg-config --cflags $(PKGS)) -MMD -MP \
                $(FUZZ_SAN)
# All of LIB_SRC: the route target links daemon/routes.c's table, whose
# handlers reach every layer.
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_BIN     := $(FUZZ_ALL:%=$(FUZZ_BUILD)/fuzz_%)

.PHONY: fuzz fuzz-build fuzz-smoke fuzz-clean

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/api/openapi.o: api/openapi.json
$(FUZZ_BUILD)/api/web.o: web/index.html web/app.js web/app.css

$(FUZZ_BUILD)/libflowd.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/fuzz/fuzz_%.o $(FUZZ_BUILD)/libflowd.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

fuzz-build: $(FUZZ_BIN)

fuzz: $(FUZZ_T:%=$(FUZZ_BUILD)/fuzz_%)
	@FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SAVE=$(FUZZ_SAVE) fuzz/run.sh $(FUZZ_S) $(FUZZ_T)

fuzz-smoke: $(FUZZ_BIN)
	@FUZZ_BUILD=$(FUZZ_BUILD) fuzz/run.sh $(FUZZ_SMOKE_S) $(FUZZ_ALL)

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

# `make clean` removes the fuzz build too.
clean: fuzz-clean

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
