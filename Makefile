# prefork: `make` builds httpd, `make test` builds and runs the tests.
# Honours CXX, CXXFLAGS, LDFLAGS, PREFIX and DESTDIR.

CXX ?= g++
CXXFLAGS ?= -O2 -g
PREFIX ?= /usr/local
BINDIR = $(PREFIX)/bin
WARNINGS = -Wall -Wextra -Werror
ALL_CXXFLAGS = -std=c++17 $(WARNINGS) $(CXXFLAGS)
GTEST_LIBS ?= -lgtest_main -lgtest -lpthread

BUILD = build
HTTPD = httpd
TEST_INCLUDES =

# Cross builds with Debian's cross compilers (g++-aarch64-linux-gnu,
# g++-arm-linux-gnueabihf): `make CROSS_COMPILE=aarch64-linux-gnu-` builds
# build/aarch64-linux-gnu/httpd; the native ./httpd is left alone. Tests
# then use GoogleTest built from its sources with the same compiler.
CROSS_COMPILE ?=
GTEST_SRC ?= /usr/src/googletest/googletest
ifneq ($(CROSS_COMPILE),)
TRIPLE := $(patsubst %-,%,$(CROSS_COMPILE))
CXX := $(CROSS_COMPILE)g++
AR := $(CROSS_COMPILE)ar
BUILD := build/$(TRIPLE)
HTTPD := $(BUILD)/httpd
TEST_INCLUDES := -I$(GTEST_SRC)/include
GTEST_LIBS := $(BUILD)/gtest/libgtest_main.a $(BUILD)/gtest/libgtest.a -lpthread
endif
TEST_SOURCES = test/header_test.cc test/options_test.cc test/scoreboard_test.cc test/http_parser_test.cc \
               test/listener_test.cc test/pool_test.cc test/http_test.cc test/http_routing_test.cc \
               test/httpd_test.cc test/harness.cc test/examples_test.cc test/sys_test.cc test/worker_api_test.cc \
               test/cgi_test.cc test/httpd_config_test.cc test/password_test.cc test/http_files_test.cc
TEST_OBJECTS = $(TEST_SOURCES:test/%.cc=$(BUILD)/test/%.o)

.PHONY: all static board board-check size-check function-check examples test asan-test embedded-check bench bench-pool chaos fuzz install clean cross-test cross-test-here

all: $(HTTPD)

# httpd itself is built lean: no exceptions (the library never throws),
# no RTTI, no unwind tables, unused sections dropped; httpd.cc, which only
# sets the server up, for size (-Os); code is not padded for alignment
# where the compiler can be told so (g++; clang++ keeps its padding). That keeps the
# stripped binary under 160 KiB at -O2 (size-check). The tests link the
# library built with the plain flags.
NO_PADDING = -fno-align-functions -fno-align-jumps -fno-align-loops -fno-align-labels
NO_PADDING := $(shell $(CXX) -Werror $(NO_PADDING) -x c++ -c -o /dev/null /dev/null 2>/dev/null && echo $(NO_PADDING))
# Calls are bound at start-up, so a worker never writes httpd's GOT (lazy
# binding cost each worker a page there and a stack page for the resolver),
# and the GOT is then read-only (full RELRO). Code and read-only data share
# a segment, as before binutils 2.31: separate segments would pad the file
# past 160 KiB once RELRO rounds to a page. With every call bound at start,
# the lean objects call through the GOT (-fno-plt): no PLT stubs, 1.3 KiB
# of room before the data segment moves a page on in the file.
BIND_NOW = -Wl,-z,now -Wl,-z,noseparate-code
LEAN = -fno-plt -fno-exceptions -fno-rtti -fno-asynchronous-unwind-tables -ffunction-sections -fdata-sections $(NO_PADDING)
$(HTTPD): $(BUILD)/lean/httpd.o $(BUILD)/lean/prefork.o
	$(CXX) $(ALL_CXXFLAGS) $(LDFLAGS) -Wl,--gc-sections $(BIND_NOW) -o $@ $^

$(BUILD)/lean/%.o: %.cc prefork.h
	@mkdir -p $(dir $@)
	$(CXX) $(ALL_CXXFLAGS) $(LEAN) $(if $(filter httpd.cc,$<),-Os) -I. -c -o $@ $<

# A static httpd (glibc: host names and --user still need its NSS
# libraries at run time; the linker says so).
static: $(BUILD)/static/httpd
$(BUILD)/static/httpd: $(BUILD)/lean/httpd.o $(BUILD)/lean/prefork.o
	@mkdir -p $(dir $@)
	$(CXX) $(ALL_CXXFLAGS) $(LDFLAGS) -static -Wl,--gc-sections -o $@ $^

# For a board without libstdc++.so: the C++ runtime linked in, libc still
# shared (host names and --user keep working through its NSS).
board: $(BUILD)/board/httpd
$(BUILD)/board/httpd: $(BUILD)/lean/httpd.o $(BUILD)/lean/prefork.o
	@mkdir -p $(dir $@)
	$(CXX) $(ALL_CXXFLAGS) $(LDFLAGS) -static-libstdc++ -static-libgcc -Wl,--gc-sections -o $@ $^
	@$(CROSS_COMPILE)strip -o $@.stripped $@ && echo "$@: $$(wc -c < $@.stripped) bytes stripped; needs:" \
	    $$($(CROSS_COMPILE)readelf -d $@ | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')

# The board build must need no C++ runtime library.
board-check: $(BUILD)/board/httpd
	@! $(CROSS_COMPILE)readelf -d $< | grep -E 'NEEDED.*(libstdc\+\+|libgcc_s)' || \
	    { echo "board-check: $< still needs the C++ runtime"; exit 1; }
	@echo "board-check: $< needs no libstdc++.so or libgcc_s.so"

# Stripped sizes; the dynamic httpd must stay under 160 KiB.
size-check: $(HTTPD)
	@$(CROSS_COMPILE)strip -o $(BUILD)/httpd.stripped $(HTTPD)
	@size=$$(wc -c < $(BUILD)/httpd.stripped); echo "httpd stripped: $$size bytes (limit 163840)"; \
	    test $$size -lt 163840 || { echo "size-check: httpd grew past 160 KiB"; exit 1; }

$(BUILD)/%.o: %.cc prefork.h
	@mkdir -p $(dir $@)
	$(CXX) $(ALL_CXXFLAGS) -I. -c -o $@ $<

$(BUILD)/test/%.o: test/%.cc prefork.h test/harness.h test/httpd_fixture.h
	@mkdir -p $(dir $@)
	$(CXX) $(ALL_CXXFLAGS) $(TEST_INCLUDES) -I. -c -o $@ $<

# test/sys_test.cc includes prefork.cc to reach its static wrappers and
# self-pipe, so its object is the library here: the test binary links it
# instead of prefork.o (the same code with the same flags).
$(BUILD)/test/sys_test.o: prefork.cc
$(BUILD)/prefork_test: $(TEST_OBJECTS) $(if $(CROSS_COMPILE),$(BUILD)/gtest/libgtest.a)
	$(CXX) $(ALL_CXXFLAGS) $(LDFLAGS) -o $@ $(TEST_OBJECTS) $(GTEST_LIBS)

# GoogleTest for a cross build, from the sources Debian ships.
$(BUILD)/gtest/libgtest.a:
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 -O1 -I$(GTEST_SRC)/include -I$(GTEST_SRC) -c -o $(BUILD)/gtest/gtest-all.o $(GTEST_SRC)/src/gtest-all.cc
	$(CXX) -std=c++17 -O1 -I$(GTEST_SRC)/include -c -o $(BUILD)/gtest/gtest_main.o $(GTEST_SRC)/src/gtest_main.cc
	$(AR) rcs $(BUILD)/gtest/libgtest_main.a $(BUILD)/gtest/gtest_main.o
	$(AR) rcs $@ $(BUILD)/gtest/gtest-all.o

$(BUILD)/example: $(BUILD)/test/example.o $(BUILD)/prefork.o
	$(CXX) $(ALL_CXXFLAGS) $(LDFLAGS) -o $@ $^

# Programs on the library as a user writes them; make test runs them.
EXAMPLES = $(BUILD)/example_json_api $(BUILD)/example_line_kv
examples: $(EXAMPLES)
$(BUILD)/example_%: $(BUILD)/test/example_%.o $(BUILD)/prefork.o
	$(CXX) $(ALL_CXXFLAGS) $(LDFLAGS) -o $@ $^

# httpd with faults on demand, for make chaos (built by make test too, so it keeps building).
$(BUILD)/chaos_server: $(BUILD)/test/chaos_server.o $(BUILD)/prefork.o
	$(CXX) $(ALL_CXXFLAGS) $(LDFLAGS) -o $@ $^

# The example in prefork.h's manual and test/example.cc must stay identical.
example-check: $(BUILD)/example
	@sed -n '/^     #include "prefork.h"/,/^     }$$/p' prefork.h | sed 's/^     //' | \
	    diff - test/example.cc && echo "example: prefork.h and test/example.cc agree"

# The library must also build the way embedded toolchains use it.
embedded-check:
	@mkdir -p $(BUILD)
	$(CXX) -std=c++17 $(WARNINGS) -fno-exceptions -fno-rtti -Os -c -o $(BUILD)/prefork-embedded.o prefork.cc

# No function in the library or the program longer than a screen.
function-check:
	@python3 test/function_lengths.py --limit 60 prefork.cc httpd.cc

test: all $(BUILD)/prefork_test $(BUILD)/chaos_server examples example-check embedded-check size-check board-check function-check
	PREFORK_TEST_EXAMPLES=$(BUILD) timeout 300 $(BUILD)/prefork_test

# The same suite under AddressSanitizer and UndefinedBehaviorSanitizer (the
# httpd program tests run the ./httpd that `all` builds).
asan-test: all
	$(MAKE) BUILD=build/asan CXXFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	    build/asan/prefork_test examples
	ASAN_OPTIONS=detect_leaks=1 PREFORK_TEST_EXAMPLES=build/asan build/asan/prefork_test

# libFuzzer on the HTTP parser (needs clang): FUZZ_SECONDS of fuzzing from
# the seed corpus in test/fuzz_corpus; new inputs are kept in build/.
FUZZ_SECONDS ?= 60
fuzz:
	@mkdir -p $(BUILD)/fuzz-corpus
	clang++ -std=c++17 $(WARNINGS) -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all -I. -o $(BUILD)/fuzz_parser test/fuzz_parser.cc prefork.cc
	$(BUILD)/fuzz_parser -max_total_time=$(FUZZ_SECONDS) -max_len=20000 -print_final_stats=1 \
	    $(BUILD)/fuzz-corpus test/fuzz_corpus

# Throughput and worker memory against Apache prefork and nginx, and the
# pool's reaction to bursts and kills (they install their peers when root).
bench: all
	test/bench.sh

bench-pool: all
	test/bench_pool.sh

chaos: all $(BUILD)/chaos_server
	CHAOS_SERVER=$(BUILD)/chaos_server test/chaos.sh

# The whole suite for aarch64 and armhf under qemu-user: static binaries
# (qemu needs no target libraries then), and the httpd program tests run
# the cross-built httpd through the same qemu.
CROSS_TRIPLES ?= aarch64-linux-gnu arm-linux-gnueabihf
cross-test:
	@for t in $(CROSS_TRIPLES); do \
	    $(MAKE) --no-print-directory CROSS_COMPILE=$$t- LDFLAGS=-static cross-test-here || exit 1; \
	done

QEMU = qemu-$(if $(filter aarch64%,$(TRIPLE)),aarch64,arm)
cross-test-here:
	@command -v $(CXX) >/dev/null && command -v $(QEMU) >/dev/null || { \
	    echo "cross-test: needs $(CXX) and $(QEMU) (Debian: g++-$(TRIPLE) qemu-user)"; exit 1; }
	$(MAKE) --no-print-directory $(BUILD)/prefork_test $(HTTPD) examples
	PREFORK_TEST_HTTPD=$(HTTPD) PREFORK_TEST_EXAMPLES=$(BUILD) PREFORK_TEST_LAUNCHER=$(QEMU) timeout 600 $(QEMU) $(BUILD)/prefork_test

install: $(HTTPD)
	install -d $(DESTDIR)$(BINDIR)
	install -m 755 $(HTTPD) $(DESTDIR)$(BINDIR)/httpd

clean:
	rm -rf $(BUILD) httpd
