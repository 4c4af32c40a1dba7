"""The core scenarios 1-11: what bbvirt is for, through udev and libvirt.

   1 hotplug          a device for a running guest: attached, once
   2 unplug           detached when it goes
   3 replug           back at a new address: attached there, once
   4 coldplug         guests started after the plug: the libvirt hook gets
                      them their devices
   5 routing          each device in its own guest, the unassigned one on
                      the host
   6 manual           bbvirt attach/detach by serial, BUS:DEV, BUS-PORT, with
                      --domain; attach-all, detach-all
   7 dry-run          -n/--dry-run changes nothing
   8 live-only        attachments never reach the persistent definition
   9 daemon/guest down  a guest off, libvirtd down, a stale socket: bbvirt
                      answers quickly; both back: devices attached
  10 storm            four devices at once
  11 hostile serial   serials with spaces and quotes go nowhere

1-5, 10 and 11 run on both platforms (CORE); 1, 2, 4 and 5 make the
narrated demo (--demo). Standard library only.
"""

import os
import socket

from ..core import (AB, BR, CORE, GUESTS, KW, LONER, STORM, check, find_dev, make_conf, now,
                    scenario, settle, virsh, wait_for)


HOSTILE = 'AAAAAA -D guestB'   # assigned to nobody; would be "AAAAAA" + "-D guestB" if split
QUOTED = 'AB CD"E'             # listed for guestA (invalid: bbvirt must refuse it)
# Scenario 11: "AAAAAA" is guestA's, so a device whose serial were split on
# whitespace ("AAAAAA" "-D" "guestB") would land in A or B: it must land nowhere.
# And guestA lists a "serial" with a space and a quote (not a valid serial).
HOSTILE_CONF = make_conf(' AAAAAA "AB CD\\"E"')


@scenario(1, 'hotplug', demo=True, platforms=CORE)
def sc_hotplug(lab):
    lab.reset()
    lab.step('guestA and guestB run. Plug %s, which vm.conf assigns to guestA.' % KW)
    d = lab.plug(KW)
    secs = lab.wait_state({'guestA': [d]}, d.t_plug, '%s attached to guestA' % d)
    lab.timing('plug->attached', secs)
    lab.show(since=d.t_plug)
    lab.hold({'guestA': [d]}, 'after hotplug')


@scenario(2, 'unplug', demo=True, platforms=CORE)
def sc_unplug(lab):
    lab.reset()
    d = lab.plug(KW)
    lab.wait_state({'guestA': [d]}, d.t_plug, '%s attached to guestA' % d)
    lab.step('%s is attached to guestA. Unplug it.' % KW)
    t = lab.unplug(KW)
    secs = lab.wait_state({}, t, '%s detached from guestA' % d)
    lab.timing('unplug->detached', secs)
    lab.show(since=t)
    lab.hold({}, 'after unplug')


@scenario(3, 'replug', platforms=CORE)
def sc_replug(lab):
    lab.reset()
    d1 = lab.plug(KW)
    lab.wait_state({'guestA': [d1]}, d1.t_plug, '%s attached' % d1)
    t = lab.unplug(KW)
    lab.wait_state({}, t, '%s detached' % d1)
    d2 = lab.plug(KW)
    check((d2.bus, d2.dev) != (d1.bus, d1.dev), 'replug kept the address %s' % d1.busdev)
    secs = lab.wait_state({'guestA': [d2]}, d2.t_plug, '%s attached at its new address' % d2)
    lab.timing('replug->attached', secs)
    lab.hold({'guestA': [d2]}, 'after replug (exactly once, at %s)' % d2.busdev)
    lab.notes.append('%s -> %s' % (d1.busdev, d2.busdev))


@scenario(4, 'coldplug', demo=True, platforms=CORE)
def sc_coldplug(lab):
    lab.reset(running=())
    lab.step('Both guests are shut off. Plug %s and %s (guestA) and %s (guestB).' % (KW, AB, BR))
    k, a, b = lab.plug(KW, AB, BR)
    lab.hold({}, 'with the guests off')
    lab.step('Start guestA: the libvirt hook asks udev to re-announce its devices.')
    t = lab.start('guestA')
    secs = lab.wait_state({'guestA': [k, a]}, t, 'guestA to get %s and %s' % (k, a))
    lab.timing('start->attached', secs)
    lab.show(since=t)
    lab.hold({'guestA': [k, a]}, 'after guestA started')
    lab.step('Start guestB.')
    t = lab.start('guestB')
    secs = lab.wait_state({'guestA': [k, a], 'guestB': [b]}, t, 'guestB to get %s' % b)
    lab.timing('B start->attached', secs)
    lab.show(since=t)
    lab.hold({'guestA': [k, a], 'guestB': [b]}, 'after guestB started')


@scenario(5, 'routing', demo=True, platforms=CORE)
def sc_routing(lab):
    lab.reset()
    lab.step('Both guests run. Plug %s, %s (guestA), %s (guestB) and %s (nobody\'s).'
             % (KW, AB, BR, LONER))
    k, a, b, n = lab.plug(KW, AB, BR, LONER)
    expect = {'guestA': [k, a], 'guestB': [b]}
    secs = lab.wait_state(expect, k.t_plug, 'each device in its guest')
    lab.timing('plug->all attached', secs)
    lab.show(since=k.t_plug)
    lab.hold(expect, 'routing')
    check(find_dev(LONER) is not None, '%s is no longer on the host' % LONER)
    lab.say('%s stays with the host: /sys/bus/usb/devices/%s, in no guest' % (LONER, n.name))


@scenario(6, 'manual')
def sc_manual(lab):
    lab.reset()
    n = lab.plug(LONER)
    lab.hold({}, 'unassigned %s' % n)
    # by serial, --domain override
    t = now()
    lab.bbvirt('attach', LONER, '--domain', 'guestB')
    lab.timing('attach serial', lab.wait_state({'guestB': [n]}, t, 'attach %s -D guestB' % LONER, 30))
    # by BUS:DEV
    t = now()
    lab.bbvirt('detach', n.busdev, '-D', 'guestB')
    lab.wait_state({}, t, 'detach %s -D guestB' % n.busdev, 30)
    # by BUS-PORT
    t = now()
    lab.bbvirt('attach', n.name, '-D', 'guestA')
    lab.wait_state({'guestA': [n]}, t, 'attach %s -D guestA' % n.name, 30)
    t = now()
    lab.bbvirt('detach', LONER, '-D', 'guestA')
    lab.wait_state({}, t, 'detach %s -D guestA' % LONER, 30)
    t = now()
    lab.bbvirt('attach', n.busdev, '-D', 'guestB')
    lab.wait_state({'guestB': [n]}, t, 'attach %s -D guestB' % n.busdev, 30)
    t = now()
    lab.bbvirt('detach', n.name, '-D', 'guestB')
    lab.wait_state({}, t, 'detach %s -D guestB' % n.name, 30)
    # assigned devices: by the config, then attach-all / detach-all
    k, a, b = lab.plug(KW, AB, BR)
    full = {'guestA': [k, a], 'guestB': [b]}
    lab.wait_state(full, k.t_plug, 'udev attaching %s %s %s' % (k, a, b))
    t = now()
    lab.bbvirt('detach', a.busdev)
    lab.wait_state({'guestA': [k], 'guestB': [b]}, t, 'detach %s (config domain)' % a.busdev, 30)
    t = now()
    lab.bbvirt('attach', AB)
    lab.wait_state(full, t, 'attach %s (config domain)' % AB, 30)
    t = now()
    lab.bbvirt('detach-all')
    lab.timing('detach-all', lab.wait_state({}, t, 'detach-all', 60))
    t = now()
    lab.bbvirt('attach-all', 'guestA')
    lab.timing('attach-all A', lab.wait_state({'guestA': [k, a]}, t, 'attach-all guestA', 60))
    lab.hold({'guestA': [k, a]}, 'attach-all guestA touches only guestA', 1)
    t = now()
    lab.bbvirt('attach-all')
    lab.wait_state(full, t, 'attach-all', 60)
    t = now()
    lab.bbvirt('detach-all', 'guestA')
    lab.wait_state({'guestB': [b]}, t, 'detach-all guestA', 60)
    lab.hold({'guestB': [b]}, 'after the manual commands (%s never attached by itself)' % LONER, 1)


@scenario(7, 'dry-run')
def sc_dry_run(lab):
    lab.reset()
    k, n = lab.plug(KW, LONER)
    expect = {'guestA': [k]}
    lab.wait_state(expect, k.t_plug, '%s attached' % k)
    lab.hold(expect, 'before the dry runs', 1)
    before = {d: virsh('dumpxml', d).out for d in GUESTS}
    cmds = [('-n', 'attach', LONER, '-D', 'guestB'), ('-n', 'attach', n.busdev, '-D', 'guestA'),
            ('-n', 'detach', KW), ('-n', 'detach', k.busdev), ('-n', 'detach', k.name),
            ('--dry-run', 'detach-all'), ('-n', 'detach-all', 'guestA'),
            ('-n', 'attach-all'), ('-n', 'attach', LONER, '-D', 'guestA')]
    for c in cmds:
        lab.bbvirt(*c)
    settle()
    after = {d: virsh('dumpxml', d).out for d in GUESTS}
    for d in GUESTS:
        check(before[d] == after[d], '%s live XML changed by a dry run' % d)
    lab.hold(expect, 'after the dry runs', 1)
    # and the detach side: with KW's device gone, a dry-run detach must not detach
    lab.notes.append('%d dry runs' % len(cmds))


@scenario(8, 'live-only')
def sc_live_only(lab):
    lab.reset(running=('guestA',))
    k, a = lab.plug(KW, AB)
    lab.wait_state({'guestA': [k, a]}, k.t_plug, 'both attached')
    for dom in GUESTS:
        p = lab.hostdevs(dom, inactive=True)
        check(not p, '%s persistent definition has hostdevs: %s' % (dom, [h.xml for h in p]))
    lab.destroy('guestA')
    lab.unplug(AB)
    settle()
    t = lab.start('guestA')
    secs = lab.wait_state({'guestA': [k]}, t, 'guestA restarted with %s only' % k)
    lab.timing('start->attached', secs)
    lab.hold({'guestA': [k]}, 'after restart: only present devices')
    p = lab.hostdevs('guestA', inactive=True)
    check(not p, 'guestA persistent definition has hostdevs: %s' % [h.xml for h in p])


@scenario(9, 'daemon/guest down')
def sc_down(lab):
    lab.reset(running=('guestB',))
    # guest not running: udev's bbvirt has nothing to do and must say so quickly
    t = now()
    k = lab.plug(KW)
    settle()
    u = lab.udev.find('UDEV', 'add', k.name, t)
    kk = lab.udev.find('KERNEL', 'add', k.name, t)
    check(u is not None, 'udev never finished the add event of %s' % k)
    lab.timing('udev add (guest off)', u - kk if kk else u - t)
    r = lab.bbvirt('attach', KW, timeout=30)
    check(r.secs < 15, 'bbvirt attach with the guest off took %.1fs' % r.secs)
    lab.hold({}, 'guest off')
    # libvirtd not running
    lab.stop_libvirtd()
    for s in ('libvirt-sock', 'virtqemud-sock'):
        if os.path.lexists('/run/libvirt/' + s):
            lab.notes.append('%s left behind' % s)
    # a stale socket: the rule's TEST passes, nobody answers
    stale = '/run/libvirt/libvirt-sock'
    made_stale = False
    if not os.path.lexists(stale):
        so = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        so.bind(stale)
        so.close()
        made_stale = True
    t = now()
    a = lab.plug(AB)
    settle()
    u = lab.udev.find('UDEV', 'add', a.name, t)
    check(u is not None, 'udev never finished the add event of %s' % a)
    lab.timing('udev add (no libvirtd)', u - t)
    check(u - t < 20, 'udev needed %.1fs for the add event with libvirtd down' % (u - t))
    r = lab.bbvirt('attach', AB, timeout=30)
    check(r.secs < 15, 'bbvirt attach without libvirtd took %.1fs' % r.secs)
    r = lab.bbvirt('attach', a.busdev, '--syslog', timeout=30)
    r = lab.bbvirt('detach', a.busdev, timeout=30)
    r = lab.bbvirt('attach-all', timeout=30)
    if made_stale:
        os.unlink(stale)
    # both come back
    lab.start_libvirtd()
    lab.timing('libvirtd restart', lab.libvirtd_secs)
    lab.hold({}, 'libvirtd back, guestA still off', 1)
    t = lab.start('guestA')
    secs = lab.wait_state({'guestA': [k, a]}, t, 'guestA start attaching %s %s' % (k, a))
    lab.timing('start->attached', secs)
    lab.hold({'guestA': [k, a]}, 'after guestA started')


@scenario(10, 'storm', platforms=CORE)
def sc_storm(lab):
    lab.reset()
    t = now()
    ts = [lab.bind(s) for s in STORM]
    devs = []
    for s in STORM:
        d, _ = wait_for(lambda: find_dev(s), 30, 'USB device %r to enumerate' % s)
        devs.append(d)
    lab.notes.append('bound in %.2fs' % (ts[-1] - ts[0]))
    secs = lab.wait_state({'guestA': devs}, t, 'all four attached to guestA')
    lab.timing('plug->4 attached', secs)
    lab.hold({'guestA': devs}, 'after the storm (each once)')


@scenario(11, 'hostile serial', platforms=CORE)
def sc_hostile(lab):
    lab.reset(conf=HOSTILE_CONF)
    h, q, k = lab.plug(HOSTILE, QUOTED, KW)
    expect = {'guestA': [k]}
    lab.wait_state(expect, k.t_plug, '%s attached to guestA' % k)
    lab.hold(expect, 'hostile serials')
    # by hand too: whatever the way in, a device with an invalid serial stays out
    for args in (('attach', h.busdev), ('attach', h.busdev, '-D', 'guestB'), ('attach', h.name),
                 ('attach', q.busdev), ('attach', q.busdev, '-D', 'guestB'), ('attach', q.name, '-D', 'guestA'),
                 ('attach', HOSTILE), ('attach', QUOTED), ('attach', 'AAAAAA'),
                 ('attach-all', 'guestA'), ('attach-all', 'guestB'), ('attach-all',)):
        lab.bbvirt(*args, ok=False)
    lab.hold(expect, 'after manual attempts with hostile serials')
    t = lab.unplug(KW)
    lab.wait_state({}, t, 'guestA empty')
    for dom in GUESTS:
        lab.destroy(dom)
        lab.start(dom)
    lab.hold({}, 'guests restarted with only hostile devices plugged')
