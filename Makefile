# stream_events: PGXS build.  `make demo` and `make test` are the two entry
# points (see README.md); both install missing packages first.

EXTENSION  = stream_events
EXTVERSION = 0.2.0
# the version before (its install script is frozen in sql/): the current
# upgrade script is sql/$(EXTENSION)--$(PREVVERSION)--$(EXTVERSION).sql
PREVVERSION = 0.1.0

MODULE_big = stream_events
# one folder per layer (src/README.md); headers are included by their path
# under src/ ("core/owner.h")
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c) $(filter-out src/stream_listen/%,$(wildcard src/*/*.c))))

# The install script of the current version is assembled from one piece per
# module (sql/modules/).  Released versions are frozen: their install scripts
# (sql/stream_events--0.1.0.sql, ...) are committed as they shipped and never
# edited; each later version comes with an upgrade script
# sql/stream_events--A--B.sql from the one before (test/t/040_upgrade.pl checks
# that upgrading and a fresh install give the same objects).  To release the
# current version: bump EXTVERSION (and default_version in the control file),
# `git add -f` the generated script of the old version, list the new generated
# file in .gitignore, and start the next upgrade script.
MODULE_SQL = $(sort $(wildcard sql/modules/*.sql))
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*.sql))

# pg_regress suites: every sql/*.sql that is not an install/upgrade script.
REGRESS = $(sort $(filter-out $(EXTENSION)--%,$(notdir $(basename $(wildcard sql/*.sql)))))
REGRESS_OPTS = --temp-instance=tmp_check_regress --temp-config=test/regress.conf \
	--load-extension=$(EXTENSION)
NO_INSTALLCHECK =

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl
PROVE_FLAGS = -I test/perl

PG_CPPFLAGS = -I$(srcdir)/src -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK = $(filter -lpcre2-8,$(shell pkg-config --libs libpcre2-8 2>/dev/null))

EXTRA_CLEAN = sql/$(EXTENSION)--$(EXTVERSION).sql tmp_check tmp_check_regress results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

.PHONY: deps test demo demo-stop bench bench-activation upgrade-functions test-upgrade

ifneq ($(PGXS),)
include $(PGXS)

# PGXS tracks no header dependencies here: every object depends on every
# header (a struct that changes under a stale object corrupts memory)
$(OBJS): $(wildcard src/*.h src/*/*.h)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(MODULE_SQL)
	cat $^ > $@

# The stream_listen client (src/stream_listen/, its own PGXS PROGRAM).
all: stream-listen
stream-listen:
	$(MAKE) -C src/stream_listen PG_CONFIG='$(PG_CONFIG)'
install: install-stream-listen
install-stream-listen:
	$(MAKE) -C src/stream_listen PG_CONFIG='$(PG_CONFIG)' install
clean: clean-stream-listen
clean-stream-listen:
	$(MAKE) -C src/stream_listen PG_CONFIG='$(PG_CONFIG)' clean
.PHONY: stream-listen install-stream-listen clean-stream-listen

else
all:
	@echo "pg_config not found: run 'make deps' (or 'make demo' / 'make test', which do it)" >&2; exit 1
endif

deps:
	@scripts/setup.sh

test:
	@scripts/test.sh

# The upgrade script: `make upgrade-functions` regenerates its function and view part
# from the installed versions; `make test-upgrade` runs test/t/040_upgrade.pl
# alone (it prints what still differs from a fresh install).
upgrade-functions: install
	@scripts/upgrade-functions.sh --update sql/$(EXTENSION)--$(PREVVERSION)--$(EXTVERSION).sql $(PREVVERSION)

test-upgrade:
	@scripts/tap.sh test/t/040_upgrade.pl

demo:
	@scripts/demo.sh

demo-stop:
	@scripts/demo.sh stop

bench:
	@bench/ingest.sh

bench-activation:
	@bench/activation.sh
