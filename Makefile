# hpclock: `make` builds the libraries, `make test` runs every test, `make demo`
# runs the demo. `make header` refreshes the committed C header from src/.

CARGO   ?= cargo
CC      ?= cc
PREFIX  ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The soname changes with every incompatible ABI: before 1.0 that is every
# minor release (0.2's hpclock_options grew), so it carries MAJOR.MINOR while
# MAJOR is 0, and MAJOR alone from 1.0 on. build.rs computes the same.
SONAME  := libhpclock.so.$(shell echo $(VERSION) | awk -F. '{ print ($$1 == 0) ? $$1 "." $$2 : $$1 }')

BUILD   := build
LIBDIR  := $(BUILD)/lib
# The C tests and examples are held to the strictest warnings we can ask for.
CFLAGS_STRICT := -std=c11 -Wall -Wextra -Werror -O2 -g
C_LINK  := -L$(LIBDIR) -lhpclock -Wl,-rpath,$(abspath $(LIBDIR)) -pthread

.PHONY: all lib test rust-test c-test memcheck cli-test f-test mpi-test install-test python-test bench demo header install uninstall clean man dist doc-test dist-test FORCE

all: lib man

# cargo decides what to rebuild; the copy lays out the library as installed:
# libhpclock.so.X.Y.Z, with the soname link $(SONAME) and libhpclock.so.
# libhpclock.a is cargo's staticlib made into one object whose only global
# symbols are hpclock_* (packaging/localize_archive.sh says why and how).
lib: FORCE $(BUILD)/static-libs
	$(CARGO) build --release --locked
	mkdir -p $(LIBDIR)
	# Replaced by a rename, never rewritten in place: a program running the
	# old library would die of SIGBUS.
	cp target/release/libhpclock.so $(LIBDIR)/libhpclock.so.$(VERSION).new
	mv -f $(LIBDIR)/libhpclock.so.$(VERSION).new $(LIBDIR)/libhpclock.so.$(VERSION)
	ln -sf libhpclock.so.$(VERSION) $(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(LIBDIR)/libhpclock.so
	bash packaging/localize_archive.sh target/release/libhpclock.a $(LIBDIR)/libhpclock.a
	mkdir -p $(BUILD)/bin
	cp target/release/hpclock $(BUILD)/bin/hpclock.new
	mv -f $(BUILD)/bin/hpclock.new $(BUILD)/bin/hpclock

$(BUILD)/%: c-tests/%.c c-tests/harness.h include/hpclock.h lib
	$(CC) $(CFLAGS_STRICT) -Iinclude $< -o $@ $(C_LINK)

# A C++ program whose static destructor releases a lock (test_lifecycle runs it).
$(BUILD)/lifecycle_cxx: c-tests/lifecycle_cxx.cpp include/hpclock.h lib
	$(CXX) -std=c++11 -Wall -Wextra -Werror -O2 -g -Iinclude $< -o $@ $(C_LINK)

$(BUILD)/test_lifecycle: $(BUILD)/lifecycle_cxx

$(BUILD)/demo $(BUILD)/resume: $(BUILD)/%: examples/%.c include/hpclock.h lib
	$(CC) $(CFLAGS_STRICT) -Iinclude $< -o $@ $(C_LINK)

MPICC ?= mpicc
$(BUILD)/mpi_guard: examples/mpi_guard.c include/hpclock.h lib
	$(MPICC) $(CFLAGS_STRICT) -Iinclude $< -o $@ $(C_LINK)

# ---- Fortran: the module is compiled with the program's own compiler (a
# .mod file is compiler-specific), so it is installed as source ----
ifeq ($(origin FC),default)
FC := gfortran
endif
MPIFC ?= mpifort
FFLAGS_STRICT := -std=f2008 -Wall -Wextra -Werror -pedantic -O2 -g
FMOD := $(BUILD)/fmod

$(FMOD)/hpclock.o: include/hpclock.f90
	mkdir -p $(FMOD)
	$(FC) $(FFLAGS_STRICT) -J$(FMOD) -c $< -o $@

# The C compiler's sizes and offsets of hpclock.h's structs, which the test
# compares with the module's types.
$(BUILD)/f_layout.o: f-tests/layout.c include/hpclock.h
	mkdir -p $(BUILD)
	$(CC) $(CFLAGS_STRICT) -Iinclude -c $< -o $@

$(BUILD)/test_hpclock_f: f-tests/test_hpclock.f90 $(FMOD)/hpclock.o $(BUILD)/f_layout.o lib
	$(FC) $(FFLAGS_STRICT) -I$(FMOD) $< $(FMOD)/hpclock.o $(BUILD)/f_layout.o -o $@ $(C_LINK)

$(BUILD)/mpi_guard_f: examples/mpi_guard.f90 $(FMOD)/hpclock.o lib
	$(MPIFC) $(FFLAGS_STRICT) -I$(FMOD) $< $(FMOD)/hpclock.o -o $@ $(C_LINK)

test: rust-test c-test memcheck cli-test f-test mpi-test install-test python-test doc-test dist-test

# Includes the header drift check (src/lib.rs, committed_header_matches_generated).
rust-test:
	$(CARGO) test --locked

CXX ?= c++

# The header must compile as C11 and as C++ with every warning an error.
# The core's tests run under both kernel lock primitives; test_fs and
# test_faults run once, on the rig that c-tests/fs_rig.sh mounts around them.
C_TESTS := $(BUILD)/test_core $(BUILD)/test_record $(BUILD)/test_lifecycle $(BUILD)/test_real_use $(BUILD)/test_wait

c-test: $(C_TESTS) $(BUILD)/test_fs $(BUILD)/test_faults $(BUILD)/test_lease
	$(CC) -std=c11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c include/hpclock.h
	$(CXX) -std=c++11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c++ include/hpclock.h
	@status=0; for t in $(C_TESTS); do \
	  echo "== $$t"; $$t || status=1; \
	  echo "== $$t, with the primitive forced to OFD locks"; HPCLOCK_TEST_PRIMITIVE=ofd $$t || status=1; \
	done; \
	echo "== on the rig of c-tests/fs_rig.sh"; bash c-tests/fs_rig.sh $(BUILD)/test_fs $(BUILD)/test_faults \
	  $(BUILD)/test_lease c-tests/test_lease_cli.sh $(BUILD)/test_wait || status=1; \
	exit $$status

# The race over URLs; one job three times: it crashes after step 2, is resumed
# by the next run, and the third run finds the work done; then two copies of
# a job script's `hpclock run` started together.
demo: $(BUILD)/demo $(BUILD)/resume lib
	$(BUILD)/demo
	@dir=$$(mktemp -d "$${TMPDIR:-/tmp}/hpclock-resume-XXXXXX") && \
	echo && echo "== a job that crashes, is requeued, and is requeued again (lock in $$dir)" && \
	{ $(BUILD)/resume $$dir/run.lock $$dir/checkpoint --crash-after 2 || true; } && \
	$(BUILD)/resume $$dir/run.lock $$dir/checkpoint && \
	$(BUILD)/resume $$dir/run.lock $$dir/checkpoint && \
	echo && echo "\$$ cat $$dir/run.lock" && cat $$dir/run.lock && \
	echo && echo "== two copies of a job script start together: hpclock run --once LOCK -- ./simulate" && \
	{ $(BUILD)/bin/hpclock run --once --label simulate $$dir/script.lock -- sh -c 'echo "   copy A simulating"; sleep 1' & \
	  $(BUILD)/bin/hpclock run --once --label simulate $$dir/script.lock -- sh -c 'echo "   copy B simulating"; sleep 1'; \
	  echo "   copy B exited $$?"; wait $$!; echo "   copy A exited $$?"; } ; \
	echo "== requeued after it finished:" && \
	{ $(BUILD)/bin/hpclock run --once $$dir/script.lock -- ./simulate; echo "   exited $$? (76: done)"; } && \
	$(BUILD)/bin/hpclock info $$dir/script.lock

# Every C test again under valgrind memcheck: any memory error or definite
# leak fails the run (exit 97).
# HPCLOCK_UNDER_VALGRIND tells the tests to scale their heaviest loops down.
VALGRIND := env HPCLOCK_UNDER_VALGRIND=1 valgrind -q --error-exitcode=97 --leak-check=full --errors-for-leak-kinds=definite \
            --show-leak-kinds=definite
memcheck: $(C_TESTS) $(BUILD)/test_fs $(BUILD)/test_faults $(BUILD)/test_lease
	@if ! command -v valgrind >/dev/null 2>&1; then \
	  if [ "$$CI" = true ]; then echo "valgrind is not installed, and CI=true: failing"; exit 1; fi; \
	  echo "valgrind is not installed: memcheck SKIPPED"; exit 0; \
	fi; \
	status=0; for t in $(C_TESTS); do echo "== $$t, under valgrind"; $(VALGRIND) $$t || status=1; done; \
	echo "== on the rig, under valgrind"; \
	HPCLOCK_RIG_RUNNER="$(VALGRIND)" bash c-tests/fs_rig.sh $(BUILD)/test_fs $(BUILD)/test_faults \
	  $(BUILD)/test_lease || status=1; \
	exit $$status

# Under real Open MPI; without mpicc the script reports its tests SKIPPED (or
# failed, with CI=true).
mpi-test:
	if command -v $(MPICC) >/dev/null 2>&1; then $(MAKE) $(BUILD)/mpi_guard; fi
	if command -v $(MPIFC) >/dev/null 2>&1; then $(MAKE) $(BUILD)/mpi_guard_f; fi
	bash c-tests/test_mpi.sh $(BUILD)/mpi_guard $(BUILD)/mpi_guard_f

# The Fortran module and Fortran test programs (f-tests/run.sh builds those
# compiled with -fdefault-integer-8 itself); without gfortran the script
# reports its tests SKIPPED (or failed, with CI=true).
f-test: lib
	if command -v $(FC) >/dev/null 2>&1; then $(MAKE) $(BUILD)/test_hpclock_f; fi
	FC=$(FC) bash f-tests/run.sh $(BUILD)/test_hpclock_f $(LIBDIR)/libhpclock.so include/hpclock.f90

# The `hpclock` command, as job scripts use it.
cli-test: lib $(BUILD)/signal_catcher
	bash c-tests/test_cli.sh $(BUILD)/bin/hpclock $(BUILD)/signal_catcher

# make install into a temporary prefix, then pkg-config, CMake, static and
# Fortran builds against it; c-tests/test_static.sh (run by it) checks the
# archive's symbols and fully static C and Fortran programs.
install-test: lib man
	bash c-tests/test_install.sh

# ---- Python: the hpclock package (python/) ----
# python/run_tests.sh builds the wheel with the library `make lib` built
# inside it, installs it into a fresh venv under build/python/ (with pytest
# and mpi4py from PyPI) and runs the pytest suite there, comparing
# `python -m hpclock` with the command. Without the venv module or PyPI its
# tests say SKIPPED (or fail, with CI=true).
PYTHON     ?= python3
PY_LIBRARY := $(abspath $(LIBDIR))/libhpclock.so.$(VERSION)

python-test: lib
	PYTHON=$(PYTHON) HPCLOCK_LIBRARY=$(PY_LIBRARY) HPCLOCK_BIN=$(abspath $(BUILD))/bin/hpclock bash python/run_tests.sh

# ---- benchmarks: `make bench` prints a Markdown table (see BENCH.md) ----
BENCH_VENV := $(BUILD)/bench-venv

$(BUILD)/bench_c: bench/bench_c.c include/hpclock.h lib
	$(CC) $(CFLAGS_STRICT) -Iinclude $< -o $@ $(C_LINK)

# A private virtual environment for the `filelock` package the table compares with.
$(BENCH_VENV)/bin/python:
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check filelock

bench: $(BUILD)/bench_c $(BENCH_VENV)/bin/python
	if command -v $(MPICC) >/dev/null 2>&1; then $(MAKE) $(BUILD)/mpi_guard; fi
	HPCLOCK_LIBRARY=$(PY_LIBRARY) $(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./python
	$(BENCH_VENV)/bin/python bench/bench.py $(BUILD)/bench_c $(BUILD)/mpi_guard $(BENCH_ARGS)

header:
	HPCLOCK_UPDATE_HEADER=1 $(CARGO) build --locked

# ---- manual pages, the docs' link check, the release tarball ----
# hpclock(1) and a page per subcommand are printed by hpclock-man from the
# command's clap definitions (src/bin/hpclock/cli.rs), so they cannot drift
# from the command; hpclock(3) and its one-line aliases, one per function,
# are written by hand in man/man3. The pages carry the date of the release's
# entry in CHANGELOG.md.
MANDIR   := $(BUILD)/man
MAN1     := hpclock.1 hpclock-run.1 hpclock-info.1 hpclock-check.1 hpclock-reset.1
MAN3     := $(notdir $(wildcard man/man3/*.3))
MAN_DATE := $(shell sed -n 's/^\#\# \[$(VERSION)\] - \([0-9-]*\).*/\1/p' CHANGELOG.md 2>/dev/null | head -n 1)
ifeq ($(MAN_DATE),)
MAN_DATE := $(shell date -u +%Y-%m-%d)
endif

man: lib
	rm -rf $(MANDIR).new
	mkdir -p $(MANDIR).new/man1 $(MANDIR).new/man3
	target/release/hpclock-man $(MANDIR).new/man1 $(MAN_DATE) >/dev/null
	cp man/man3/*.3 $(MANDIR).new/man3/
	rm -rf $(MANDIR)
	mv $(MANDIR).new $(MANDIR)

# Links and docs/ anchors in every tracked file (nothing may point outside
# the repository); the manual pages linted with mandoc, and checked against
# the symbols the library exports and the constants of the header.
doc-test: man
	MAN1="$(MAN1)" bash c-tests/test_docs.sh links man

# build/hpclock-VERSION.tar.gz: the sources, the generated header, the manual
# pages and every crate vendored, with a .cargo/config.toml that builds from
# them: `make; make install` from it needs no network.
DIST := $(BUILD)/hpclock-$(VERSION).tar.gz

dist: man
	bash packaging/make_dist.sh $(VERSION) $(MANDIR) $(DIST)

# The tarball unpacked, built and installed in a network namespace with no
# interfaces (unshare -n, as root), then the installed command, a C program
# against the installed library and `man -l` of every installed page.
dist-test: dist
	bash c-tests/test_docs.sh dist $(DIST)

# ---- install: PREFIX and DESTDIR as usual ----
DESTDIR ?=
INSTALL_LIB := $(DESTDIR)$(PREFIX)/lib
INSTALL_INC := $(DESTDIR)$(PREFIX)/include
INSTALL_BIN := $(DESTDIR)$(PREFIX)/bin
INSTALL_MAN := $(DESTDIR)$(PREFIX)/share/man
INSTALLED := $(INSTALL_BIN)/hpclock $(INSTALL_LIB)/libhpclock.so.$(VERSION) $(INSTALL_LIB)/$(SONAME) $(INSTALL_LIB)/libhpclock.so \
             $(INSTALL_LIB)/libhpclock.a $(INSTALL_INC)/hpclock.h $(INSTALL_INC)/hpclock.f90 \
             $(INSTALL_LIB)/pkgconfig/hpclock.pc \
             $(INSTALL_LIB)/cmake/hpclock/hpclockConfig.cmake $(INSTALL_LIB)/cmake/hpclock/hpclockConfigVersion.cmake \
             $(addprefix $(INSTALL_MAN)/man1/,$(MAN1)) $(addprefix $(INSTALL_MAN)/man3/,$(MAN3))

# The system libraries a static link needs (Libs.private, the CMake static
# target), as rustc reports them for a staticlib, with libgcc's unwinder as
# the archive gcc_eh instead of the shared gcc_s: a fully static program
# (gcc -static) has no libgcc_s.so, and gcc_eh serves dynamic links as well.
# hpclock itself links nothing native beyond what the standard library does
# (no #[link], no link lines from build.rs but the cdylib's soname), so an
# empty staticlib reports the same list in a second rather than rebuilding
# the crate. Made by `make`, so that `make install` needs no toolchain.
$(BUILD)/static-libs: Makefile
	mkdir -p $(BUILD)
	echo 'pub fn f() {}' | rustc --edition 2021 --crate-type staticlib --crate-name nsl \
	  --print native-static-libs -o $(BUILD)/nsl.a - 2>&1 | sed -n 's/^note: native-static-libs: //p' \
	  | sed -e 's/-lgcc_s\b/-lgcc_eh/' > $@.tmp
	rm -f $(BUILD)/nsl.a
	grep -q -- -lgcc_eh $@.tmp && mv $@.tmp $@

# What `make` built. `make install` installs it as it is, and builds only what
# is missing: after a `make`, `sudo make install` needs no cargo or rustc.
BUILT := $(BUILD)/bin/hpclock $(LIBDIR)/libhpclock.so.$(VERSION) $(LIBDIR)/libhpclock.a $(BUILD)/static-libs \
         $(MANDIR)/man1/hpclock.1

install:
	@for f in $(BUILT); do \
	  if [ ! -e "$$f" ]; then echo "$$f has not been built: make"; $(MAKE) all || exit 1; break; fi; \
	done
	install -d $(INSTALL_LIB)/pkgconfig $(INSTALL_LIB)/cmake/hpclock $(INSTALL_INC) $(INSTALL_BIN) \
	  $(INSTALL_MAN)/man1 $(INSTALL_MAN)/man3
	install -m 644 $(addprefix $(MANDIR)/man1/,$(MAN1)) $(INSTALL_MAN)/man1/
	install -m 644 $(addprefix $(MANDIR)/man3/,$(MAN3)) $(INSTALL_MAN)/man3/
	install -m 755 $(BUILD)/bin/hpclock $(INSTALL_BIN)/
	install -m 755 $(LIBDIR)/libhpclock.so.$(VERSION) $(INSTALL_LIB)/
	ln -sf libhpclock.so.$(VERSION) $(INSTALL_LIB)/$(SONAME)
	ln -sf $(SONAME) $(INSTALL_LIB)/libhpclock.so
	install -m 644 $(LIBDIR)/libhpclock.a $(INSTALL_LIB)/
	install -m 644 include/hpclock.h include/hpclock.f90 $(INSTALL_INC)/
	libs="$$(cat $(BUILD)/static-libs)"; \
	sed -e 's|@VERSION@|$(VERSION)|g' -e "s|@NATIVE_STATIC_LIBS@|$$libs|g" \
	  packaging/hpclock.pc.in > $(INSTALL_LIB)/pkgconfig/hpclock.pc; \
	cmake_libs="$$(echo $$libs | sed -e 's/-l//g' -e 's/ /;/g')"; \
	sed -e 's|@VERSION@|$(VERSION)|g' -e 's|@SONAME@|$(SONAME)|g' -e "s|@NATIVE_STATIC_LIBS_CMAKE@|$$cmake_libs|g" \
	  packaging/hpclockConfig.cmake.in > $(INSTALL_LIB)/cmake/hpclock/hpclockConfig.cmake
	sed -e 's|@VERSION@|$(VERSION)|g' packaging/hpclockConfigVersion.cmake.in \
	  > $(INSTALL_LIB)/cmake/hpclock/hpclockConfigVersion.cmake

uninstall:
	rm -f $(INSTALLED)
	-rmdir $(INSTALL_LIB)/cmake/hpclock 2>/dev/null

clean:
	$(CARGO) clean
	rm -rf $(BUILD)

FORCE:
