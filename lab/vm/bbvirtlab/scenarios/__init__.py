"""The scenarios, one module a group. Importing this package registers them
all (core.scenario), in the order they run in on bookworm:

  hotplug.py     1-11   the core: hotplug, unplug, replug, coldplug, routing,
                        manual commands, dry runs, live-only, daemon or guest
                        down, storm, hostile serials (1-5, 10, 11 on trixie too)
  hardening.py   12-19  faults and hostile input: a silent libvirt socket,
                        parallel events, libvirtd killed, a lost remove event,
                        a guest destroyed, an unplug mid-attach, hostile
                        gadgets, the soak
  admin.py       30, 31 status/check, the Debian package; 40, the benchmarks
                        (only with --bench)
  guestside.py   20     guests without a (fast) USB controller, a device held
                        open on the host
  anyusb.py      21     any USB device by DOMAIN_USB_ (id, serial, port)
  saved.py       23-28  saved, restored, migrated and reverted guests: a
                        device never follows its old address
  anyusb.py      21, 22 any USB device by DOMAIN_USB_ (id, serial, port);
                        `bbvirt devices` and a vm.conf made of its suggestions
  trixie.py      50-56  Debian 13 under systemd: boot, settle, AppArmor, the
                        crash hunt (the trixie platform only; ORDER, MAIN)
  journal.py     58     Debian 13: each bbvirt line once in the journal
  reboot.py      59, 60 a host reboot with libvirt-guests suspending and
                        resuming the guests (trixie: the main boot, then
                        the boot "resume" of the same root)
  anywhere.py    61-63  bbvirt installed other than as /usr/bin (issue 22):
                        make install to /usr/local, bbvirt install from /opt,
                        a hook that cannot run bbvirt (trixie: the boot
                        "anywhere", no package)
  modular.py     64, 65 the modular daemon virtqemud instead of libvirtd:
                        hotplug, the hook, the sync unit, the idle exit
                        and socket activation (trixie: the boot "modular")
  remote.py      70, 71 USB over the network (issue 23): usbredirect behind
                        mutual-TLS stunnel to a guest's <redirdev>, an
                        exporting host in a network namespace; then bbvirt
                        driving it (serve, tunnels, DOMAIN_REMOTE_) (trixie,
                        main boot)
  remote_follows.py 72-74 the remote device follows its guest (save and
                        restore, managed save, live migration) and twins
                        served by port; nobody else gets one (trixie, main
                        boot)

A new scenario goes into the module of its group (or a new module imported
here): see lab/README.md, "How to add a scenario".
"""

from . import hotplug, hardening, admin, guestside, anyusb, saved, trixie, journal, reboot, anywhere, modular, remote, remote_follows  # noqa: F401  (registration order)
