"""A host reboot with libvirt-guests suspending and resuming the guests
(issue 15, trixie): two boots of one root.

  59 reboot-suspend (main boot, last) guestA holds KWIF4Q and ABC1234,
                    guestB holds BRAVO01, LONER01 stays with the host (the
                    scenario plugs them itself: those before it in the
                    main boot leave other devices plugged); with
                    /etc/default/libvirt-guests at ON_SHUTDOWN=suspend,
                    ON_BOOT=start (upstream's defaults; Debian ships
                    shutdown/ignore), libvirt-guests.service is stopped as a
                    shutdown stops it: its ExecStop managed-saves both
                    guests and lists them. The lab keeps the images and the
                    list on the root (/var/lib/bbvirt-lab/persist: the
                    boot's /var/lib/libvirt is a tmpfs, 9p holds no sockets)
                    and asks the next boot to plug the devices in the
                    reverse order, so each comes back at another address.
  60 reboot-resume  (boot "resume", the same root) bbvirt-lab-persist puts
                    the images and the list back before libvirtd starts;
                    libvirtd's autostart restores guestA from its image,
                    libvirt-guests (ON_BOOT=start) restores guestB: each
                    runs again holding exactly its own devices at their new
                    addresses, QEMU reading each device; no bbvirt error.

Standard library only.
"""

import json
import os

from ..core import AB, BR, KW, LONER, act, check, find_dev, must, now, rfile, run, scenario, wfile
from .saved import info_usb, PRODUCT

T = ('trixie',)
PERSIST = '/var/lib/bbvirt-lab/persist'
SAVE_DIR = '/var/lib/libvirt/qemu/save'
LISTFILE = '/var/lib/libvirt/libvirt-guests'
ORDER_FILE = '/etc/bbvirt-lab/gadget-order'   # read by boot-gadgets
GUESTS_CONF = """\
# bbvirt lab (scenario 59): upstream libvirt-guests' defaults
ON_BOOT=start
ON_SHUTDOWN=suspend
"""


def guest_devs(lab):
    return {'guestA': [find_dev(KW), find_dev(AB)], 'guestB': [find_dev(BR)]}


@scenario(59, 'reboot-suspend', platforms=T)
def sc_reboot_suspend(lab):
    # Its own state, not the boot's: the scenarios before it in the main
    # boot (54's storm devices, 52's replugs) leave other devices plugged
    # and the boot's unplugged. Both guests run; the four devices are
    # plugged one by one, each on the bus it had before where it had one.
    lab.reset()
    kw, ab, br, _ = lab.plug(KW, AB, BR, LONER)
    expect = {'guestA': [kw, ab], 'guestB': [br]}
    lab.wait_state(expect, kw.t_plug, 'guestA with %s, %s and guestB with %s' % (KW, AB, BR), deadline=180)
    wfile('/etc/default/libvirt-guests', GUESTS_CONF)
    act('wrote /etc/default/libvirt-guests:\n%s' % GUESTS_CONF)
    # At boot it ran with Debian's ON_BOOT=ignore; what counts is its stop.
    must(['systemctl', 'start', 'libvirt-guests.service'], timeout=120)
    t = now()
    r = run(['systemctl', 'stop', 'libvirt-guests.service'], timeout=600)
    check(r.rc == 0, 'stopping libvirt-guests.service (its ExecStop suspends the guests): %s' % r)
    lab.timing('libvirt-guests stop', now() - t)
    check(not lab.active() & {'guestA', 'guestB'}, 'guests still running: %s' % lab.active())
    saves = sorted(os.listdir(SAVE_DIR)) if os.path.isdir(SAVE_DIR) else []
    check(saves == ['guestA.save', 'guestB.save'], 'managed save images: %s' % saves)
    listed = rfile(LISTFILE) if os.path.exists(LISTFILE) else ''
    check('qemu:///system' in listed or 'default' in listed, 'libvirt-guests listed nothing: %r' % listed)
    # Keep them on the root for the next boot; plug in reverse order there.
    os.makedirs(PERSIST, exist_ok=True)
    for f in saves:
        must(['cp', '-a', os.path.join(SAVE_DIR, f), PERSIST + '/'], timeout=300)
    must(['cp', '-a', LISTFILE, PERSIST + '/libvirt-guests'])
    addrs = {d.serial: d.busdev for ds in expect.values() for d in ds}
    wfile(PERSIST + '/addresses.json', json.dumps(addrs))
    os.makedirs(os.path.dirname(ORDER_FILE), exist_ok=True)
    wfile(ORDER_FILE, 'LONER01 BRAVO01 ABC1234 KWIF4Q\n')
    run(['sync'])
    lab.notes.append('suspended guestA, guestB at %s' % addrs)
    # status sees the images; as saved they are clean (nothing moved yet)
    r = run(['/usr/bin/bbvirt', 'status', '--json'], timeout=60)
    j = json.loads(r.out)
    saved = {d['name']: d.get('managed_save') for d in j.get('domains', [])}
    check(saved.get('guestA') and saved['guestA']['restores_cleanly'],
          'status --json on guestA\'s image: %s' % saved.get('guestA'))


@scenario(60, 'reboot-resume', platforms=T)
def sc_reboot_resume(lab):
    before = json.loads(rfile(PERSIST + '/addresses.json'))
    expect = guest_devs(lab)
    check(all(all(expect[g]) for g in expect), 'the boot\'s devices are not all there: %s' % expect)
    moved = {d.serial: (before.get(d.serial), d.busdev) for ds in expect.values() for d in ds}
    check(all(a != b for a, b in moved.values()), 'some device kept its address: %s' % moved)
    lab.notes.append('addresses %s' % ', '.join('%s %s->%s' % (s, a, b) for s, (a, b) in sorted(moved.items())))
    # libvirt-guests resumed guestB (and would have resumed guestA, which
    # libvirtd's autostart restored first)
    r = run(['systemctl', 'show', 'libvirt-guests.service', '-p', 'ActiveState', '-p', 'Result'])
    act('libvirt-guests.service: %s' % r.out.strip())
    t = now()
    secs = lab.wait_state(expect, t, 'guestA with %s, %s and guestB with %s at their new addresses'
                          % (KW, AB, BR), deadline=300)
    lab.timing('resumed, holding', secs)
    check('ActiveState=active' in r.out and 'Result=success' in r.out,
          'libvirt-guests.service did not resume the guests: %s' % r.out)
    for dom, devs in expect.items():
        got = info_usb(lab, dom)
        for d in devs:
            check(got.get(d.alias) == PRODUCT, '%s: QEMU info usb: %s has product %r' % (dom, d.alias, got.get(d.alias)))
    lab.hold(expect, 'after the resume (exactly once each)')
    check(find_dev(LONER) is not None, '%s left the host' % LONER)
    errors = [l for l in run(['journalctl', '-b', '-t', 'bbvirt', '-p', 'err', '-o', 'cat']).out.splitlines() if l]
    check(not errors, 'bbvirt logged errors in this boot: %s' % errors[:5])
    rewrites = [l for l in run(['journalctl', '-b', '-t', 'bbvirt', '-o', 'cat', '--grep', 'restore: ua-bbvirt']).out.splitlines() if l]
    check(rewrites, 'no rewrite by the restore hook in the journal')
    lab.notes.append('hook: %s' % '; '.join(rewrites[:3]))
    # when, in this boot: libvirtd up, the guests' devices attached
    att = [l for l in run(['journalctl', '-b', '-t', 'bbvirt', '-o', 'short-monotonic', '--grep',
                            '^attached ']).out.splitlines() if l.startswith('[')]
    up = run(['systemctl', 'show', 'libvirtd.service', '-p', 'ActiveEnterTimestampMonotonic', '--value']).out.strip()
    if att and up.isdigit():
        last = float(att[-1][1:att[-1].index(']')])
        lab.notes.append('libvirtd active at %.0fs of the boot, last device attached at %.0fs'
                         % (int(up) / 1e6, last))
