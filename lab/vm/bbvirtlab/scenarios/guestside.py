"""The host's side and the guest's side (issue 11): scenario 20.

Judged by what libvirt's live XML shows, by bbvirt's own log lines (the
lab's /dev/log sink) and by `bbvirt check` / `bbvirt status --json`.

  20 guest side   guestC has no USB controller (model='none'): check says so
                  (error, exit 1); plugging its device logs one clear line and
                  changes nothing; guestD has only piix3-uhci: check warns,
                  the device is attached all the same; a host process that
                  holds guestA's device node open: status names it (pid,
                  name), says the device is held on the host, exits 1.
Standard library only.
"""

import json
import subprocess
import sys

from ..core import (BASE_CONF, DOMAIN_XML, KW, WORK, check, now, scenario, settle, virsh, wait_for,
                    wfile)
from ..helpers import bbvirt_lines

NOCTL = 'NOCTL01'    # guestC's: a guest without a USB controller
SLOW = 'UHCI001'     # guestD's: USB 1.1 only
EXTRA = ('guestC', 'guestD')
SEEDD_NONE = '/nonexistent/seedd.conf'


CONF = BASE_CONF + 'DOMAIN_RNG_guestC=( %s )\nDOMAIN_RNG_guestD=( %s )\n' % (NOCTL, SLOW)


def define(name, model):
    path = WORK + '/%s.xml' % name
    xml = DOMAIN_XML.format(name=name).replace(
        "model='qemu-xhci' ports='15'", "model='%s'" % model)
    check("model='%s'" % model in xml, 'core.DOMAIN_XML has no qemu-xhci controller to replace')
    wfile(path, xml)
    r = virsh('define', path)
    check(r.rc == 0, 'virsh define %s: %s' % (name, r))
    r = virsh('start', name, '--paused', timeout=120)
    check(r.rc == 0, 'virsh start %s: %s' % (name, r))


def undefine(name):
    virsh('destroy', name, timeout=120)
    virsh('undefine', name)


def hostdevs(lab, name):
    return [(h.alias, h.bus, h.dev) for h in lab.hostdevs(name)]


@scenario(20, 'guest side')
def sc_guest_side(lab):
    lab.reset(conf=CONF)
    define('guestC', 'none')
    define('guestD', 'piix3-uhci')
    try:
        # check: guestC cannot take USB devices at all, guestD only slowly.
        r = lab.bbvirt('check', '--seedd-config', SEEDD_NONE, ok=False)
        check(r.rc == 1, 'check with guestC (no USB controller) should exit 1: %s' % r)
        check("error: guest guestC: domain 'guestC' has no USB controller (live XML)" in r.out,
              'check did not report guestC: %s' % r)
        check("warning: guest guestD: domain 'guestD' has only a USB 1.1 controller "
              "(piix3-uhci, live XML)" in r.out, 'check did not warn about guestD: %s' % r)
        lab.say('check: ' + ' | '.join(l for l in r.out.splitlines() if 'guestC' in l or 'guestD' in l))

        # A plug for guestC: one clear error line, nothing attached anywhere.
        t = now()
        c = lab.plug(NOCTL)
        want = "cannot attach %s to 'guestC': the guest has no USB controller" % NOCTL
        lines, secs = wait_for(
            lambda: [m for _, m in bbvirt_lines(lab, t) if want in m],
            60, "bbvirt's error for %s" % NOCTL)
        lab.timing('plug->clear error', secs)
        settle()
        errors = [m for _, m in bbvirt_lines(lab, t) if 'error' in m]
        check(len(errors) == 1, 'expected one error line, got %r' % errors)
        check('\n' not in errors[0], 'the error spans lines: %r' % errors[0])
        lab.say('logged: ' + errors[0])
        check(hostdevs(lab, 'guestC') == [], 'guestC holds %s' % hostdevs(lab, 'guestC'))
        lab.hold({}, 'after the refused attach')   # guestA, guestB: nothing

        # guestD (USB 1.1): attached all the same.
        d = lab.plug(SLOW)
        wait_for(lambda: hostdevs(lab, 'guestD') == [(d.alias, d.bus, d.dev)], 90,
                 '%s attached to guestD' % d)
        lab.say('guestD (piix3-uhci) holds %s' % d)
        lab.unplug(NOCTL)
        lab.unplug(SLOW)
    finally:
        for g in EXTRA:
            undefine(g)

    # A host process holds guestA's device open: status names it.
    lab.reset()
    k = lab.plug(KW)
    lab.wait_state({'guestA': [k]}, k.t_plug, '%s attached to guestA' % k)
    node = '/dev/bus/usb/%03d/%03d' % (k.bus, k.dev)
    holder = subprocess.Popen(
        [sys.executable, '-c',
         'import sys, time\nf = open(sys.argv[1], "rb")\nprint("open", flush=True)\ntime.sleep(120)',
         node], stdout=subprocess.PIPE, text=True)
    try:
        check(holder.stdout.readline().strip() == 'open', 'the holder could not open %s' % node)
        r = lab.bbvirt('status', '--json', ok=False)
        check(r.rc == 1, 'status with a held device should exit 1: %s' % r)
        st = json.loads(r.out)
        dev = next(x for x in st['devices'] if x['serial'] == KW)
        mine = [h for h in dev['held_by'] if h['pid'] == holder.pid]
        check(len(mine) == 1 and mine[0]['guest'] is None,
              'status does not name the holder pid %d: %s' % (holder.pid, dev['held_by']))
        check(dev['held_on_host'] is True, 'held_on_host is not true: %s' % dev)
        qemu = [h for h in dev['held_by'] if h['guest'] == 'guestA']
        lab.say('status: %s held by %s; guestA\'s QEMU: %s' % (KW, mine[0], qemu))
        check(dev['attached_to'] and dev['attached_to'][0].get('guest_port'),
              'no guest port for %s: %s' % (KW, dev['attached_to']))
        lab.say('status: %s sits at guest port %s (%s)' % (
            KW, dev['attached_to'][0]['guest_port'], dev['attached_to'][0]['controller']))
        r = lab.bbvirt('status', ok=False)
        check('python3 (pid %d)' % holder.pid in r.out, 'the table does not name the holder: %s' % r)
        check('held open on the host' in r.out, 'the table summary misses it: %s' % r)
    finally:
        holder.kill()
        holder.wait()
    r = lab.bbvirt('status', '--json', ok=False)
    st = json.loads(r.out)
    dev = next(x for x in st['devices'] if x['serial'] == KW)
    check(not dev['held_on_host'], 'still held after the holder ended: %s' % dev)
    check(r.rc == 0, 'status not healthy after the holder ended: %s' % r)
