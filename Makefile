# bbvirt: build and install.
#   make                      build target/release/bbvirt
#   make install DESTDIR=/tmp/stage PREFIX=/usr
# Installs the binary, the udev rules, the libvirt qemu hook, the man page and,
# only when none exists yet, an example /etc/bit-babbler/vm.conf.

PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
SYSCONFDIR  ?= /etc
UDEVRULESDIR ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/udev/rules.d,$(PREFIX)/lib/udev/rules.d)
HOOKDIR     ?= $(SYSCONFDIR)/libvirt/hooks/qemu.d
CARGO       ?= cargo
BIN         ?= target/release/bbvirt

SUBST = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@UDEVRULESDIR@|$(UDEVRULESDIR)|g'

.PHONY: all build install uninstall test lab demo clean

all: build

build:
	$(CARGO) build --release --locked

install:
	test -x $(BIN) || { echo "$(BIN) is missing: run 'make' first" >&2; exit 1; }
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/bbvirt
	install -d $(DESTDIR)$(UDEVRULESDIR) $(DESTDIR)$(HOOKDIR) $(DESTDIR)$(MANDIR)/man1
	$(SUBST) dist/udev/rules.d/60-bbvirt.rules > $(DESTDIR)$(UDEVRULESDIR)/60-bbvirt.rules
	chmod 0644 $(DESTDIR)$(UDEVRULESDIR)/60-bbvirt.rules
	$(SUBST) dist/libvirt/hooks/qemu.d/bbvirt > $(DESTDIR)$(HOOKDIR)/bbvirt
	chmod 0755 $(DESTDIR)$(HOOKDIR)/bbvirt
	install -m 0644 doc/bbvirt.1 $(DESTDIR)$(MANDIR)/man1/bbvirt.1
	if [ ! -e $(DESTDIR)$(SYSCONFDIR)/bit-babbler/vm.conf ]; then \
	  install -D -m 0644 dist/bit-babbler/vm.conf $(DESTDIR)$(SYSCONFDIR)/bit-babbler/vm.conf; fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/bbvirt $(DESTDIR)$(UDEVRULESDIR)/60-bbvirt.rules \
	      $(DESTDIR)$(HOOKDIR)/bbvirt $(DESTDIR)$(MANDIR)/man1/bbvirt.1

test:
	$(CARGO) test --locked

clean:
	$(CARGO) clean

# Debian package: target/debian/bbvirt_VERSION_ARCH.deb (see packaging/build-deb;
# BBVIRT_BIN=FILE packages a prebuilt binary). packaging/test-deb checks it.
.PHONY: deb
deb:
	packaging/build-deb
