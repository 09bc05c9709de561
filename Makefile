# kumo: build, test, install, benchmark.
PREFIX ?= /usr/local
BINDIR  = $(PREFIX)/bin
MANDIR  = $(PREFIX)/share/man/man1
# Every name the multicall binary answers to.
ROLES   = kumo-manager kumo-server kumo-gateway kumo-local kumoctl kumostat kumotop kumolog kumohash kumomergedb

.PHONY: all static test chaos differential install bench man clean

all:
	cargo build --release

# A statically linked kumo (glibc with crt-static; the musl target is not needed):
# it runs on any Linux of the same architecture, in an empty chroot too. It resolves
# numeric addresses, localhost and the names of /etc/hosts by itself; DNS names need
# the build host's glibc NSS libraries at run time, so give it addresses or
# /etc/hosts entries.
HOST_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
static:
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target $(HOST_TRIPLE) --bin kumo
	@echo "static binary: $${CARGO_TARGET_DIR:-target}/$(HOST_TRIPLE)/release/kumo"

# tests/peers.sh installs the test peers of tests/peers.list first, or says what to
# install by hand and stops before the build.
test:
	bash tests/peers.sh test
	cargo test --release -- --test-threads=2

# Long seeded fault schedules (tests/chaos.rs; `make test` runs two short ones).
# KUMO_CHAOS_SEED=N replays the schedule a failure printed.
chaos:
	bash tests/peers.sh test
	KUMO_CHAOS_SCHEDULES=$${KUMO_CHAOS_SCHEDULES:-10} KUMO_CHAOS_ROUNDS=$${KUMO_CHAOS_ROUNDS:-30} \
		cargo test --release --test chaos -- --nocapture

# Long differential runs against a real memcached (tests/differential.rs; `make test`
# runs three short ones). KUMO_DIFF_SEED=N replays the seed a failure printed.
differential:
	bash tests/peers.sh test
	KUMO_DIFF_SEEDS=$${KUMO_DIFF_SEEDS:-50} KUMO_DIFF_OPS=$${KUMO_DIFF_OPS:-5000} \
		cargo test --release --test differential --test differential_binary -- --nocapture

# Regenerates man/ from the roles' option lists; the test suite fails while man/ is stale.
man:
	KUMO_WRITE_MAN=1 cargo test --lib man_pages_in_the_tree_are_current

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)
	install -m 755 target/release/kumo $(DESTDIR)$(BINDIR)/kumo
	for r in $(ROLES); do ln -sf kumo $(DESTDIR)$(BINDIR)/$$r; done
	install -m 644 man/*.1 $(DESTDIR)$(MANDIR)/

# The bench peers are optional: a benchmark whose peer is missing says so and goes on.
bench:
	-bash tests/peers.sh bench
	cargo build --release
	cargo run --release --example rpc_bench
	cargo run --release --example store_bench
	cargo run --release --example replace_bench
	BENCH_ROUNDS=$${BENCH_ROUNDS:-3} bash bench/compare.sh

clean:
	cargo clean
