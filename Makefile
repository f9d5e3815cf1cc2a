# hpclock: `make` builds the libraries, `make test` runs every test, `make demo`
# runs the demo. `make header` refreshes the committed C header from src/.

CARGO   ?= cargo
CC      ?= cc
PREFIX  ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

BUILD   := build
LIBDIR  := $(BUILD)/lib
# The C tests and examples are held to the strictest warnings we can ask for.
CFLAGS_STRICT := -std=c11 -Wall -Wextra -Werror -O2 -g
C_LINK  := -L$(LIBDIR) -lhpclock -Wl,-rpath,$(abspath $(LIBDIR)) -pthread

.PHONY: all lib test rust-test c-test demo header clean FORCE

all: lib

# cargo decides what to rebuild; the copy lays out the library as installed:
# libhpclock.so.X.Y.Z, with the soname link libhpclock.so.0 and libhpclock.so.
lib: FORCE
	$(CARGO) build --release --locked
	mkdir -p $(LIBDIR)
	cp target/release/libhpclock.so $(LIBDIR)/libhpclock.so.$(VERSION)
	ln -sf libhpclock.so.$(VERSION) $(LIBDIR)/libhpclock.so.0
	ln -sf libhpclock.so.0 $(LIBDIR)/libhpclock.so
	cp target/release/libhpclock.a $(LIBDIR)/libhpclock.a

$(BUILD)/%: c-tests/%.c c-tests/harness.h include/hpclock.h lib
	$(CC) $(CFLAGS_STRICT) -Iinclude $< -o $@ $(C_LINK)

$(BUILD)/demo $(BUILD)/resume: $(BUILD)/%: examples/%.c include/hpclock.h lib
	$(CC) $(CFLAGS_STRICT) -Iinclude $< -o $@ $(C_LINK)

test: rust-test c-test

# Includes the header drift check (src/lib.rs, committed_header_matches_generated).
rust-test:
	$(CARGO) test --locked

CXX ?= c++

# The header must compile as C11 and as C++ with every warning an error.
# The core's tests run under both kernel lock primitives; test_fs runs once,
# on the two-node rig that c-tests/fs_rig.sh mounts around it.
C_TESTS := $(BUILD)/test_core $(BUILD)/test_record

c-test: $(C_TESTS) $(BUILD)/test_fs
	$(CC) -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c include/hpclock.h
	$(CXX) -std=c++11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c++ include/hpclock.h
	@status=0; for t in $(C_TESTS); do \
	  echo "== $$t"; $$t || status=1; \
	  echo "== $$t, with the primitive forced to OFD locks"; HPCLOCK_TEST_PRIMITIVE=ofd $$t || status=1; \
	done; \
	echo "== $(BUILD)/test_fs, on the two-node rig"; bash c-tests/fs_rig.sh $(BUILD)/test_fs || status=1; \
	exit $$status

# The race over URLs, then one job three times: it crashes after step 2, is
# resumed by the next run, and the third run finds the work done.
demo: $(BUILD)/demo $(BUILD)/resume
	$(BUILD)/demo
	@dir=$$(mktemp -d "$${TMPDIR:-/tmp}/hpclock-resume-XXXXXX") && \
	echo && echo "== a job that crashes, is requeued, and is requeued again (lock in $$dir)" && \
	{ $(BUILD)/resume $$dir/run.lock $$dir/checkpoint --crash-after 2 || true; } && \
	$(BUILD)/resume $$dir/run.lock $$dir/checkpoint && \
	$(BUILD)/resume $$dir/run.lock $$dir/checkpoint && \
	echo && echo "\$$ cat $$dir/run.lock" && cat $$dir/run.lock

header:
	HPCLOCK_UPDATE_HEADER=1 $(CARGO) build --locked

clean:
	$(CARGO) clean
	rm -rf $(BUILD)

FORCE:
