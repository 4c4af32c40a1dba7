"""The bbvirt lab, VM side: the package behind lab.py.

lab/run boots a throw-away VM (virtme-ng: the host's root file system read-only,
/etc /usr /var as tmpfs-backed overlays) and runs lab.py in it, as root.
It never runs on the host: it mounts, loads kernel modules and starts daemons
(only `lab.py --print-conf` and `--help` run on the host).

In the VM it
  - installs the tree that `make install DESTDIR=STAGE PREFIX=/usr` staged on
    the host (binary, udev rules, libvirt qemu hook), writes its own vm.conf,
  - listens on /dev/log (bbvirt logs there with --syslog), records udev events,
  - starts libvirtd and defines two diskless guests (started paused),
  - emulates BitBabblers (USB 0403:7840, any serial) with dummy_hcd and
    configfs gadgets: plug = bind a gadget to a UDC, unplug = unbind it,
  - runs the scenarios and judges them by what libvirt (live domain XML) and
    QEMU (HMP `info usb`, QOM) say, polling with deadlines.

Platforms (--platform): bookworm (the default; the host's Debian 12 root
over 9p, a shell as PID 1: the lab mounts tmpfs, installs the staged tree,
listens on /dev/log and starts libvirtd itself) and trixie (a Debian 13 root
booted with systemd as PID 1: bbvirt installed from its Debian package before
the boot, libvirtd socket-activated, logs in the journal, emulated devices
plugged by an early boot unit; scenarios in scenarios/trixie.py).

Modules:
  core.py        the machinery: constants, helpers (check, run, virsh, settle,
                 wait_for), log and udev watchers, emulated devices, the Lab
                 class (the `lab` every scenario gets), the scenario registry
  fastvirt.py    libvirt's C API through ctypes: the fast path of core.virsh
  helpers.py     checks and tools several scenario groups share (bbvirt's log
                 lines, `bbvirt status --json`, QEMU's processes, the crash
                 recorder)
  scenarios/     the scenarios, one module a group (see its __init__.py)
  runner.py      the command line and the run: setup, the chosen scenarios,
                 PASS/FAIL lines, `N passed, N failed`

Standard library only.
"""
