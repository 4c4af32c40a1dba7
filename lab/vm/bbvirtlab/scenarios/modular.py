"""bbvirt with the modular daemons (issue 22): scenarios 64 and 65, in the
trixie boot "modular".

Fedora, RHEL and Arch run libvirt's QEMU driver in its own daemon,
`virtqemud`, socket-activated and leaving when idle; Debian packages none.
The boot: the trixie root with `virtqemud` built from Debian's libvirt 11.3
source (lab/build-virtqemud: the daemon binary, its units and upstream's
AppArmor profile usr.sbin.virtqemud, run against Debian's own libvirt
libraries and QEMU driver module), libvirtd's units disabled and masked,
virtqemud's sockets and service enabled, its idle timeout 30 s instead of
120 (/etc/default/virtqemud). bbvirt installed as in the boot "anywhere":
`make install` in /usr/local before the boot, which also put bbvirt's
AppArmor lines in local/usr.sbin.virtqemud. guestA autostarts.

  64 virtqemud              only virtqemud serves (libvirtd inactive, its
                            socket absent; virtqemud-sock there);
                            bbvirt-sync.service ran (wanted by
                            virtqemud.service); guestA autostarted holds
                            exactly KWIF4Q and ABC1234; guestB started
                            gets BRAVO01 through the hook; an unplug and a
                            hotplug through udev; `bbvirt check` clean, its
                            hook probe run under the profile virtqemud
  65 virtqemud idle exit    both guests destroyed: virtqemud exits by
                            itself; a device plugged and unplugged meanwhile
                            does not start it (bbvirt from udev does not
                            wake a daemon that is not up); `virsh start
                            guestA` starts it through its socket,
                            bbvirt-sync.service runs again, and guestA gets
                            its devices through the hook
"""

import os
import re

from ..core import AB, BR, KW, LONER, act, check, find_dev, now, run, scenario, settle, virsh_api, wait_for
from .anywhere import error_lines

T = ('trixie',)
BIN = '/usr/local/bin/bbvirt'
SOCK = '/run/libvirt/virtqemud-sock'
SYNC = 'bbvirt-sync.service'


def unit(name, *props):
    r = run(['systemctl', 'show', name] + ['-p' + p for p in props], timeout=30)
    return dict(l.split('=', 1) for l in r.out.splitlines() if '=' in l)


def is_active(name):
    return run(['systemctl', 'is-active', name], timeout=30).out.strip()


def sync_runs():
    """The runs of bbvirt-sync.service in this boot, from the journal: the
    monotonic times of systemd's 'Starting' lines."""
    r = run(['journalctl', '-b', '-u', SYNC, '-o', 'short-monotonic', '--no-pager'], timeout=60)
    times = []
    for line in r.out.splitlines():
        m = re.match(r'\[\s*([\d.]+)\]', line)
        if m and 'Starting bbvirt-sync.service' in line:
            times.append(float(m.group(1)))
    return times


@scenario(64, 'virtqemud', platforms=T)
def sc_virtqemud(lab):
    check(lab.args.boot == 'modular', 'not the boot "modular" (lab/run --platform trixie --only 64,65)')
    check(is_active('virtqemud.service') == 'active', 'virtqemud.service is %s' % is_active('virtqemud.service'))
    for u in ('libvirtd.service', 'libvirtd.socket'):
        check(is_active(u) != 'active', '%s is active' % u)
    check(os.path.exists(SOCK), '%s is missing' % SOCK)
    check(not os.path.exists('/run/libvirt/libvirt-sock'), 'libvirtd\'s socket exists')
    mode = run(['cat', '/sys/kernel/security/apparmor/profiles'], timeout=10).out
    vq = re.search(r'^virtqemud \((\w+)\)', mode, re.M)
    lab.notes.append('profile virtqemud: %s' % (vq.group(1) if vq else 'not loaded'))

    def up():
        return 'guestA' in lab.active()
    wait_for(up, 300, 'guestA (autostart) to run under virtqemud', interval=1)
    k, a, b, l = (find_dev(s) for s in (KW, AB, BR, LONER))
    check(all((k, a, b, l)), 'devices bound at boot missing: %s' % [k, a, b, l])
    lab.timing('boot->guestA holds its devices',
               lab.wait_state({'guestA': [k, a]}, 0, 'guestA (autostarted) to hold %s and %s' % (k, a), 240))
    check(sync_runs(), '%s never ran in this boot' % SYNC)
    lab.hold({'guestA': [k, a]}, 'after boot: guestA holds exactly its devices', 2)

    t = lab.start('guestB')
    lab.timing('start guestB->attached', lab.wait_state(
        {'guestA': [k, a], 'guestB': [b]}, t, '%s attached to guestB (virsh start, the hook under virtqemud)' % b))
    t = lab.unplug(AB)
    lab.timing('unplug->detached', lab.wait_state({'guestA': [k], 'guestB': [b]}, t, '%s detached' % a))
    a2 = lab.plug(AB)
    lab.timing('plug->attached', lab.wait_state({'guestA': [k, a2], 'guestB': [b]}, a2.t_plug,
                                                '%s attached again (hotplug through virtqemud-sock)' % a2))
    lab.hold({'guestA': [k, a2], 'guestB': [b]}, 'after the hotplug', 2)

    r = run([BIN, 'check', '-v'], timeout=120)
    errs = error_lines(r)
    check(r.rc == 0 and not errs, 'bbvirt check: exit %s, error lines: %s (all: %s)' % (r.rc, errs, r))
    # the probe's line (not the one that only reads the hook's file)
    probe = [x for x in r.out.splitlines() if x.startswith('ok: libvirt hook')
             and ('AppArmor profile' in x or 'unconfined' in x)]
    check(probe, 'bbvirt check -v printed no probe line: %s' % r.out[-1500:])
    if vq:
        check('AppArmor profile virtqemud' in probe[0], 'the probe did not run under virtqemud\'s profile: %s'
              % probe[0])
    lab.notes.append('check: %s' % probe[0][:200])


@scenario(65, 'virtqemud idle exit', platforms=T)
def sc_idle_exit(lab):
    check(lab.args.boot == 'modular', 'not the boot "modular"')
    try:
        idle_exit(lab)
    finally:
        virsh_api(True)


def idle_exit(lab):
    k, a = find_dev(KW), find_dev(AB)
    check(k and a, 'guestA\'s devices are not plugged')
    for dom in lab.active():
        lab.destroy(dom)
    # the lab's own libvirt connection (fastvirt) would keep virtqemud busy:
    # closed until the daemon has gone and a device was replugged
    virsh_api(False)
    t = now()
    wait_for(lambda: is_active('virtqemud.service') in ('inactive', 'failed'), 180,
             'virtqemud to exit when idle (--timeout 30)', interval=1)
    lab.timing('last guest destroyed->virtqemud exited', now() - t)
    check(is_active('virtqemud.socket') == 'active', 'virtqemud.socket is %s after the idle exit'
          % is_active('virtqemud.socket'))
    runs_before = len(sync_runs())

    # plugged and unplugged while no daemon runs: udev's bbvirt must not
    # wake it (nothing runs to attach to), nor wait
    lab.unplug(AB)
    a2 = lab.plug(AB)
    settle()
    lab.syslog.sync()
    check(is_active('virtqemud.service') in ('inactive', 'failed'),
          'a replug while virtqemud was down started it (%s)' % is_active('virtqemud.service'))

    # a start through the socket: virtqemud, the sync unit and the hook
    virsh_api(True)
    t = lab.start('guestA')
    lab.timing('start guestA (socket activation)->attached',
               lab.wait_state({'guestA': [k, a2]}, t, 'guestA\'s devices after virtqemud came back'))
    check(is_active('virtqemud.service') == 'active', 'virtqemud is %s' % is_active('virtqemud.service'))
    wait_for(lambda: len(sync_runs()) > runs_before, 120, '%s to run again with virtqemud' % SYNC, interval=1)
    lab.notes.append('%s ran %d time(s) in this boot' % (SYNC, len(sync_runs())))
    lab.hold({'guestA': [k, a2]}, 'after the socket-activated start', 2)
    check(find_dev(BR) is not None and find_dev(LONER) is not None, 'devices left the host')
    act('virtqemud idle exit: done')
