"""Saved, restored, migrated and reverted guests (issue 15): a device never
follows its old address.

libvirt keeps a running guest's live XML, bbvirt's hostdevs with their
bus/device addresses included, in every saved state of the guest: a save
image, a managed save, an incoming migration's XML, a snapshot with memory.
When the guest runs again, libvirt opens whatever sits at the old address.

  23 save-restore   virsh save, replug (new address), virsh restore: the
                    guest runs again holding its device at the new address,
                    exactly once, and QEMU really talks to it
  24 managedsave    virsh managedsave, replug, virsh start: the same
  25 wrong-device   save; unplug; an unassigned twin (same vendor:product)
                    takes the old address; restore: the guest does not get
                    it; its own device is attached when plugged again
  26 migration      live migration to a second libvirt host (its own
                    libvirtd, vm.conf and bbvirt in a mount namespace of the
                    VM) and back: the guest arrives holding that host's
                    devices for it and none of the other's; the source keeps
                    nothing
  27 snapshot       snapshot-revert to a running snapshot after a replug, and
                    with an unassigned twin at the snapshot's old address
  28 old-image      an image saved with a hostdev as bbvirt wrote it before
                    (a bare address): it restores just as well

"Really the device": QEMU's `info usb` names the device's product (read
from the device), `info qtree` has the host device at the current address,
and usbmon shows QEMU's URBs to that bus:device after the restore (QEMU
resets and re-reads a usb-host device after loading its state).
Standard library only.
"""

import os
import re
import subprocess
import threading
import uuid

from .. import fastvirt
from ..core import (AB, BASE_CONF, KW, LONER, USBDEVS, WORK, Failure, Host, act, check, find_dev, must,
                    now, out, rfile, run, scenario, settle, virsh, wait_for, wfile)
from ..helpers import status_json

PRODUCT = 'emulated BitBabbler'   # the gadgets' product string (core.Gadget)


# ------------------------------------------------------------ what QEMU holds

class UsbMon(threading.Thread):
    """usbmon's text stream of every bus (/sys/kernel/debug/usb/usbmon/0u):
    the URBs the host sends to each device, for 'QEMU talks to it'."""

    def __init__(self):
        super().__init__(daemon=True)
        run(['modprobe', 'usbmon'])
        if not os.path.ismount('/sys/kernel/debug'):
            run(['mount', '-t', 'debugfs', 'none', '/sys/kernel/debug'])
        self.lines = []
        self.f = open('/sys/kernel/debug/usb/usbmon/0u', errors='replace')

    def run(self):
        for line in self.f:
            self.lines.append((now(), line))

    def urbs(self, bus, dev, since):
        """URB submissions (S) to bus:dev since `since`."""
        pat = re.compile(r' S [CBIZ][io]:%d:%03d:' % (bus, dev))
        return sum(1 for t, l in list(self.lines) if t >= since and pat.search(l))


USBMON = None


def usbmon():
    global USBMON
    if USBMON is None:
        USBMON = UsbMon()
        USBMON.start()
    return USBMON


def info_usb(lab, dom, host=None):
    """QEMU's `info usb`: {ID: product}."""
    r = (host or lab_host_a()).virsh('qemu-monitor-command', dom, '--hmp', 'info usb')
    res = {}
    for l in r.out.splitlines():
        m = re.search(r'Product (.*?), ID: (.*)$', l.strip())
        if m:
            res[m.group(2).strip()] = m.group(1).strip()
    return res


def lab_host_a():
    from ..core import HOST_A
    return HOST_A


def really_holds(lab, dom, d, since, host=None):
    """QEMU of `dom` holds the real device d (not an empty slot): its product
    string read from the device, and URBs to d's bus:device since `since`.
    Returns a note for the scenario's line."""
    def product():
        p = info_usb(lab, dom, host).get(d.alias)
        return p == PRODUCT or (False, 'info usb: %s has product %r' % (d.alias, p))
    wait_for(product, 30, "QEMU's info usb to name %s's product" % d.alias, interval=0.5)
    qemu = [p for p in busy_holders(d) if 'qemu' in p[1]]
    check(qemu, 'no QEMU holds %s\'s node: %s' % (d, busy_holders(d)))
    mon = usbmon()
    n, _ = wait_for(lambda: mon.urbs(d.bus, d.dev, since), 30, 'URBs to %s' % d.busdev, interval=0.5)
    return '%s in QEMU (pid %d): product %r, %d URBs' % (d.serial, qemu[0][0], PRODUCT, n)


def busy_holders(d):
    """Processes holding d's device node: [(pid, comm)]."""
    node = '/dev/bus/usb/%03d/%03d' % (d.bus, d.dev)
    res = []
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            for fd in os.listdir('/proc/%s/fd' % p):
                if os.readlink('/proc/%s/fd/%s' % (p, fd)) == node:
                    res.append((int(p), rfile('/proc/%s/comm' % p)))
                    break
        except OSError:
            continue
    return res


# ------------------------------------------------------------ device numbers

def renumber_bus(lab, udc):
    """Unbind and bind again the dummy_hcd controller paired with `udc`
    (nothing plugged into it): its bus comes back under the same number with
    a new root hub, and device numbers on it start again at 2, as after a
    host reboot. So a device plugged next takes the first number again."""
    k = udc.rsplit('.', 1)[1]
    name = 'dummy_hcd.%s' % k
    drv = '/sys/bus/platform/drivers/dummy_hcd'
    bus_before = lab_bus_of(udc)
    wfile(drv + '/unbind', name)
    wfile(drv + '/bind', name)
    wait_for(lambda: os.path.exists('%s/usb%d' % (USBDEVS, bus_before)), 30, 'bus %d back' % bus_before)
    settle()
    act('renumbered bus %d (%s unbound and bound)' % (bus_before, name))


def lab_bus_of(udc):
    from ..core import bus_of_udc
    return bus_of_udc(udc)


def fresh_plug(lab, serial, udc=None):
    """Plug `serial` (into `udc`, else its last one or a free one) as the
    first device of a freshly numbered bus: its device number is then 2.
    The Dev."""
    g = lab.gadget(serial)
    used = {x.udc for x in lab.gadgets.values() if x.udc}
    if udc is None:
        udc = g.last_udc if g.last_udc and g.last_udc not in used else [u for u in lab.udcs if u not in used][0]
    renumber_bus(lab, udc)
    lab.bind(serial, udc)
    d, _ = wait_for(lambda: find_dev(serial), 30, 'USB device %r to enumerate' % serial)
    return d


def resume(dom, host=None):
    """Let a guest run (the lab starts them paused); one running already
    stays as it is."""
    h = host or lab_host_a()
    if h.virsh('domstate', dom).out.strip() != 'paused':
        return
    r = h.virsh('resume', dom)
    check(r.rc == 0, 'virsh resume %s: %s' % (dom, r))


# ------------------------------------------------------------ 23-25, 28

SAVE = WORK + '/guestA.save'


def attached_running(lab, serial):
    """guestA running (not paused: QEMU opens its usb-host devices then) with
    `serial` attached by bbvirt's udev rule. The Dev."""
    usbmon()
    lab.reset(running=('guestA',))
    resume('guestA')
    d = lab.plug(serial)
    lab.wait_state({'guestA': [d]}, d.t_plug, '%s attached to guestA' % d)
    return d


def replug(lab, serial, d1):
    """Unplug and plug again with the guest saved (bbvirt has nothing to do:
    the guest is off): the device comes back at a new address."""
    lab.unplug(serial)
    d2 = lab.plug(serial)
    check(d2.busdev != d1.busdev, 'replug kept the address %s' % d1.busdev)
    return d2


def save_xml(path):
    return run(['virsh', '-c', 'qemu:///system', 'save-image-dumpxml', path]).out


def show_xml(what, xml):
    """Real libvirt XML into the run's log, between markers: the unit tests'
    fixtures (tests/fixtures/libvirt/) are copies of such."""
    out('==== XML %s ====' % what)
    out(xml.rstrip('\n'))
    out('==== end XML ====')


@scenario(23, 'save-restore', demo=True)
def sc_save_restore(lab):
    d1 = attached_running(lab, KW)
    lab.step('guestA runs, holding %s at %s. virsh save guestA, then unplug %s and plug it again.'
             % (KW, d1.busdev, KW))
    r = virsh('save', 'guestA', SAVE, timeout=180)
    check(r.rc == 0, 'virsh save: %s' % r)
    show_xml('save-image-dumpxml guestA', save_xml(SAVE))
    d2 = replug(lab, KW, d1)
    lab.hold({}, 'with guestA saved')
    lab.step('%s is back at %s (was %s). virsh restore: bbvirt\'s hook gives libvirt the new address.'
             % (KW, d2.busdev, d1.busdev))
    t = now()
    r = virsh('restore', SAVE, timeout=180)
    check(r.rc == 0, 'virsh restore failed: %s' % r)
    secs = lab.wait_state({'guestA': [d2]}, t, 'guestA restored holding %s at %s' % (KW, d2.busdev))
    lab.timing('restore->holding', secs)
    lab.notes.append(really_holds(lab, 'guestA', d2, t))
    lab.show(since=t)
    lab.hold({'guestA': [d2]}, 'after the restore (exactly once, at %s)' % d2.busdev)
    lab.notes.append('%s -> %s' % (d1.busdev, d2.busdev))


@scenario(24, 'managedsave')
def sc_managedsave(lab):
    d1 = attached_running(lab, KW)
    r = virsh('managedsave', 'guestA', timeout=180)
    check(r.rc == 0, 'virsh managedsave: %s' % r)
    d2 = replug(lab, KW, d1)
    # status on the saved guest: its image is reported (judged after the start)
    st, j = status_json(lab, want_rc=None)
    saved = [g for g in j.get('domains', []) if g.get('name') == 'guestA']
    reported = bool(saved and saved[0].get('managed_save'))
    t = now()
    r = virsh('start', 'guestA', timeout=180)
    lab.notes.append('start rc %s' % r.rc)
    check(r.rc == 0, 'virsh start (managed save image) failed: %s' % r)
    check(reported, 'status --json did not report guestA\'s managed save image: %s' % saved)
    secs = lab.wait_state({'guestA': [d2]}, t, 'guestA resumed holding %s at %s' % (KW, d2.busdev))
    lab.timing('start->holding', secs)
    lab.notes.append(really_holds(lab, 'guestA', d2, t))
    lab.hold({'guestA': [d2]}, 'after the managed-save start (exactly once, at %s)' % d2.busdev)
    lab.notes.append('%s -> %s' % (d1.busdev, d2.busdev))


@scenario(25, 'wrong-device')
def sc_wrong_device(lab):
    lab.reset(running=('guestA',))
    resume('guestA')
    d1 = fresh_plug(lab, KW)
    lab.wait_state({'guestA': [d1]}, now(), '%s attached to guestA' % d1)
    r = virsh('save', 'guestA', SAVE, timeout=180)
    check(r.rc == 0, 'virsh save: %s' % r)
    lab.unplug(KW)
    # LONER01: a BitBabbler too (same vendor:product), assigned to nobody
    n = fresh_plug(lab, LONER, lab.gadgets[KW].last_udc)
    check(n.busdev == d1.busdev, 'the twin is at %s, not at the old address %s' % (n.busdev, d1.busdev))
    lab.hold({}, 'guestA saved, %s at %s' % (LONER, n.busdev))
    t = now()
    r = virsh('restore', SAVE, timeout=180)
    lab.notes.append('restore rc %s' % r.rc)
    check(r.rc == 0, 'virsh restore failed: %s' % r)
    # Running again, without the twin (nor an empty slot for long).
    lab.wait_state({}, t, 'guestA restored without %s' % LONER)
    check('guestA' in lab.active(), 'guestA is not running after the restore')
    lab.hold({}, 'after the restore: %s stays with the host' % LONER)
    check(not [p for p in busy_holders(n) if 'qemu' in p[1]], '%s is held by QEMU: %s' % (LONER, busy_holders(n)))
    # its own device comes when plugged again
    k = lab.plug(KW)
    lab.wait_state({'guestA': [k]}, k.t_plug, '%s attached to the restored guestA' % k)
    lab.hold({'guestA': [k]}, 'after %s came back' % KW)
    lab.notes.append('twin at %s' % n.busdev)


OLD_HOSTDEV = """<hostdev mode='subsystem' type='usb'>
  <source>
    <address type='usb' bus='{bus}' device='{dev}'/>
  </source>
  <alias name='{alias}'/>
</hostdev>
"""


@scenario(28, 'old-image')
def sc_old_image(lab):
    """A guest saved by a host with the bbvirt of before: its hostdev has a
    bare address (no vendor/product, no startupPolicy)."""
    usbmon()
    lab.reset(running=('guestA',))
    resume('guestA')
    # the old bbvirt's hostdev, attached by hand; the rule is masked meanwhile
    os.symlink('/dev/null', '/etc/udev/rules.d/60-bbvirt.rules')
    try:
        must(['udevadm', 'control', '--reload'])
        d1 = lab.plug(KW)
        wfile(WORK + '/old-hd.xml', OLD_HOSTDEV.format(bus=d1.bus, dev=d1.dev, alias=d1.alias))
        must(['virsh', '-c', 'qemu:///system', 'attach-device', 'guestA', WORK + '/old-hd.xml', '--live'])
        lab.wait_state({'guestA': [d1]}, now(), 'old-style hostdev of %s' % d1)
        r = virsh('save', 'guestA', SAVE, timeout=180)
        check(r.rc == 0, 'virsh save: %s' % r)
        x = save_xml(SAVE)
        check('startupPolicy' not in x and "vendor id='0x0403'" not in x,
              'the image does not hold an old-style hostdev:\n%s' % x)
    finally:
        os.unlink('/etc/udev/rules.d/60-bbvirt.rules')
        must(['udevadm', 'control', '--reload'])
    d2 = replug(lab, KW, d1)
    t = now()
    r = virsh('restore', SAVE, timeout=180)
    check(r.rc == 0, 'virsh restore failed: %s' % r)
    lab.wait_state({'guestA': [d2]}, t, 'guestA restored holding %s at %s' % (KW, d2.busdev))
    lab.notes.append(really_holds(lab, 'guestA', d2, t))
    lab.hold({'guestA': [d2]}, 'after restoring the old image')


# ------------------------------------------------------------ 26 migration

class HostB:
    """A second libvirt host in the VM: its own libvirtd, /etc/libvirt (with
    bbvirt's hook), vm.conf, /run/bbvirt, state and logs, bind-mounted over
    the usual paths in a mount namespace of its own. It shares the kernel,
    and so sysfs, udev and the USB devices, with host A: each host's vm.conf
    decides which of them its guests get. Host A reaches it at its socket,
    which host A sees under ROOT."""

    ROOT = WORK + '/hostb'
    DIRS = ('/etc/libvirt', '/run/libvirt', '/var/lib/libvirt', '/var/cache/libvirt',
            '/var/log/libvirt', '/etc/bit-babbler', '/run/bbvirt')
    # runs in the new namespace: bind B's directories, then exec libvirtd
    NSINIT = ('import os, subprocess, sys\n'
              'for src, dst in zip(sys.argv[1::2][:-1], sys.argv[2::2]):\n'
              '    subprocess.run(["mount", "--bind", src, dst], check=True)\n'
              'os.execv("/usr/sbin/libvirtd", ["libvirtd", "--pid-file", "/run/libvirt/libvirtd.pid"])\n')

    def __init__(self):
        self.proc = None
        self.uri = 'qemu+unix:///system?socket=%s/run/libvirt/libvirt-sock' % self.ROOT
        self.host = None

    def src(self, d):
        return self.ROOT + d

    def start(self, conf):
        if self.proc is not None and self.proc.poll() is None:
            self.write_conf(conf)
            return
        for d in self.DIRS:
            os.makedirs(self.src(d), exist_ok=True)
            os.makedirs(d, exist_ok=True)
        # B's /etc/libvirt: A's (qemu.conf, the hook), with a host UUID of its
        # own (libvirt refuses to migrate to "the same host") and its own log
        must(['cp', '-a', '/etc/libvirt/.', self.src('/etc/libvirt')])
        for f in os.listdir(self.src('/etc/libvirt/qemu')):
            if f.endswith('.xml'):
                os.unlink(self.src('/etc/libvirt/qemu/' + f))   # no guests defined on B
        run(['rm', '-rf', self.src('/etc/libvirt/qemu/networks/autostart')])   # A's default network
        with open(self.src('/etc/libvirt/libvirtd.conf'), 'a') as f:
            f.write('\n# bbvirt lab: host B\nhost_uuid = "%s"\nlog_outputs = "1:file:/var/log/libvirt/libvirtd.log"\n'
                    % uuid.uuid4())
        # QEMU's output to plain files: A's virtlogd socket (trixie: socket
        # activated in /run/libvirt) is hidden under B's /run/libvirt
        with open(self.src('/etc/libvirt/qemu.conf'), 'a') as f:
            f.write('\n# bbvirt lab: host B\nstdio_handler = "file"\n')
        # QEMU's capabilities, probed once by A (~40 s under TCG), still valid
        run(['cp', '-a', '/var/cache/libvirt/.', self.src('/var/cache/libvirt')])
        os.makedirs(self.src('/var/log/libvirt/qemu'), exist_ok=True)
        self.write_conf(conf)
        args = []
        for d in self.DIRS:
            args += [self.src(d), d]
        err = open(WORK + '/libvirtd-b.stderr', 'a')
        self.proc = subprocess.Popen(['unshare', '--mount', '--propagation', 'private', 'python3', '-c',
                                      self.NSINIT] + args + ['-'],
                                     stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
        act('host B: libvirtd started in its own mount namespace, pid %d' % self.proc.pid)
        try:
            fast = fastvirt.FastVirt(self.uri, act)
        except (OSError, AttributeError):
            fast = None
        self.host = Host('B', self.uri, self.src('/run/libvirt'), fast)

        def up():
            if self.proc.poll() is not None:
                raise Failure('host B\'s libvirtd exited with status %s' % self.proc.returncode)
            return run(['virsh', '-c', self.uri, 'version'], timeout=30).rc == 0
        _, secs = wait_for(up, 240, 'host B\'s libvirtd to answer', interval=1)
        act('host B: libvirtd answered after %.0fs' % secs)

    def write_conf(self, text):
        p = self.src('/etc/bit-babbler/vm.conf')
        wfile(p, text)
        os.chmod(p, 0o644)
        act('host B: wrote vm.conf:\n%s' % text)

    def bbvirt(self, *args, timeout=60):
        """bbvirt as host B runs it: in libvirtd B's mount namespace."""
        return run(['nsenter', '-t', str(self.proc.pid), '-m', '/usr/bin/bbvirt'] + list(args),
                   timeout=timeout)


HOST_B = HostB()

# Host B gives guestA only LONER01 (host A gives it KWIF4Q and ABC1234 and
# LONER01 to nobody): the guest must hold B's device there, A's here.
CONF_B = """\
# host B's /etc/bit-babbler/vm.conf (bbvirt lab, scenario 26)
DOMAIN_RNG_guestA=( %s )
""" % LONER


def migrate(lab, dom, src, dst_uri):
    t = now()
    r = run(['virsh', '-c', src, 'migrate', '--live', dom, dst_uri, '--migrateuri', 'tcp://127.0.0.1'],
            timeout=300)
    return r, now() - t


@scenario(26, 'migration')
def sc_migration(lab):
    usbmon()
    lab.reset(running=('guestA',))
    resume('guestA')
    HOST_B.start(CONF_B)
    b = HOST_B.host
    k, a, n = lab.plug(KW, AB, LONER)
    lab.wait_state({'guestA': [k, a]}, k.t_plug, 'guestA on host A holding %s, %s' % (k, a))
    lab.hold({'guestA': [k, a]}, 'before the migration (%s stays with host A)' % LONER)
    show_xml('dumpxml --migratable guestA', run(['virsh', '-c', 'qemu:///system', 'dumpxml', '--migratable',
                                                 'guestA']).out)
    lab.step('guestA holds %s and %s on host A. Migrate it live to host B, whose vm.conf gives it %s.'
             % (KW, AB, LONER))
    r, secs = migrate(lab, 'guestA', 'qemu:///system', HOST_B.uri)
    check(r.rc == 0, 'migration A -> B failed: %s' % r)
    lab.timing('migrate A->B', secs)
    t = now()
    secs = lab.wait_state({'guestA': [n]}, t - secs, 'guestA on host B holding only %s' % n,
                          doms=('guestA',), host=b)
    lab.timing('A->B holding B\'s', secs)
    lab.notes.append(really_holds(lab, 'guestA', n, t - 5, host=b))
    lab.hold({'guestA': [n]}, 'on host B', doms=('guestA',), host=b)
    # the source keeps nothing: guestA is gone from A, its devices are A's again
    check('guestA' not in lab.active(), 'guestA still runs on host A')
    lab.hold({}, 'host A after the migration')
    for d in (k, a):
        check(not busy_holders(d), '%s is still held: %s' % (d, busy_holders(d)))
    st, j = status_json(lab, want_rc=0)
    devs = {x.get('serial'): x for x in j.get('devices', [])}
    check(devs.get(KW, {}).get('attached_to') == [] and devs.get(KW, {}).get('state') == 'inactive',
          'host A\'s status on %s: %s' % (KW, devs.get(KW)))
    lab.step('And back to host A.')
    r, secs = migrate(lab, 'guestA', HOST_B.uri, 'qemu:///system')
    check(r.rc == 0, 'migration B -> A failed: %s' % r)
    lab.timing('migrate B->A', secs)
    t = now()
    secs = lab.wait_state({'guestA': [k, a]}, t - secs, 'guestA back on host A holding %s, %s' % (k, a))
    lab.timing('B->A holding A\'s', secs)
    lab.notes.append(really_holds(lab, 'guestA', k, t - 5))
    lab.hold({'guestA': [k, a]}, 'back on host A')
    check('guestA' not in lab.active(b), 'guestA still runs on host B')
    check(not busy_holders(n), '%s is still held: %s' % (n, busy_holders(n)))
    rb = HOST_B.bbvirt('status', '--json')
    check(rb.rc == 0, 'host B\'s status is not healthy: %s' % rb)


# ------------------------------------------------------------ 27 snapshot

GUEST_S = 'guestS'
DISK_S = '/var/lib/libvirt/images/guestS.qcow2'
XML_S = """\
<domain type='qemu'>
  <name>guestS</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%s'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'/>
    <memballoon model='none'/>
  </devices>
</domain>
""" % DISK_S

def snapshot_guest(lab):
    """guestS: a guest with a qcow2 disk (internal snapshots with memory
    need one), KWIF4Q assigned to it instead of guestA."""
    conf = BASE_CONF.replace(KW + ' ', '') + 'DOMAIN_RNG_guestS=( %s )\n' % KW
    lab.reset(running=(), conf=conf)
    if run(['virsh', '-c', 'qemu:///system', 'dominfo', GUEST_S]).rc != 0:
        os.makedirs(os.path.dirname(DISK_S), exist_ok=True)
        must(['qemu-img', 'create', '-q', '-f', 'qcow2', DISK_S, '16M'])
        wfile(WORK + '/guestS.xml', XML_S)
        must(['virsh', '-c', 'qemu:///system', 'define', WORK + '/guestS.xml'])
    if GUEST_S in lab.active():
        lab.destroy(GUEST_S)
    for s in run(['virsh', '-c', 'qemu:///system', 'snapshot-list', GUEST_S, '--name']).out.split():
        must(['virsh', '-c', 'qemu:///system', 'snapshot-delete', GUEST_S, s])
    lab.start(GUEST_S)
    resume(GUEST_S)


@scenario(27, 'snapshot')
def sc_snapshot(lab):
    doms = (GUEST_S,)
    snapshot_guest(lab)
    d1 = fresh_plug(lab, KW)
    lab.wait_state({GUEST_S: [d1]}, now(), '%s attached to guestS' % d1, doms=doms)
    must(['virsh', '-c', 'qemu:///system', 'snapshot-create-as', GUEST_S, 's1'], timeout=180)
    # (a) replugged since: the revert brings the device at its new address
    d2 = replug(lab, KW, d1)
    lab.wait_state({GUEST_S: [d2]}, d2.t_plug, '%s attached at its new address' % d2, doms=doms)
    t = now()
    r = run(['virsh', '-c', 'qemu:///system', 'snapshot-revert', GUEST_S, 's1'], timeout=180)
    lab.notes.append('revert after replug rc %s' % r.rc)
    check(r.rc == 0, 'snapshot-revert failed: %s' % r)
    secs = lab.wait_state({GUEST_S: [d2]}, t, 'guestS reverted holding %s at %s' % (KW, d2.busdev),
                          doms=doms)
    lab.timing('revert->holding', secs)
    lab.hold({GUEST_S: [d2]}, 'after the revert', doms=doms)
    # (b) a twin at the snapshot's address: the guest must never hold it
    lab.unplug(KW)
    lab.wait_state({}, now(), '%s detached' % KW, doms=doms)
    n = fresh_plug(lab, LONER, lab.gadgets[KW].last_udc)
    check(n.busdev == d1.busdev, 'the twin is at %s, not at the snapshot\'s %s' % (n.busdev, d1.busdev))
    seen = []
    stop = threading.Event()

    def watch():
        # every 0.2 s: does a QEMU hold the twin's device node?
        while not stop.is_set():
            seen.extend(p for p in busy_holders(n) if 'qemu' in p[1])
            stop.wait(0.2)
    w = threading.Thread(target=watch, daemon=True)
    w.start()
    t = now()
    r = run(['virsh', '-c', 'qemu:///system', 'snapshot-revert', GUEST_S, 's1'], timeout=180)
    lab.notes.append('revert with a twin rc %s' % r.rc)
    settle()
    lab.hold({}, 'after the revert with the twin at %s' % n.busdev, doms=doms)
    stop.set()
    w.join()
    check(not [p for p in busy_holders(n) if 'qemu' in p[1]], '%s is held by QEMU: %s' % (LONER, busy_holders(n)))
    check(not seen, 'QEMU held the twin %s at %s: %s' % (LONER, n.busdev, seen[:3]))
    if r.rc != 0:
        lab.notes.append('refused: ' + r.err.strip().splitlines()[-1][:160] if r.err.strip() else 'refused')
    lab.unplug(LONER)
    if GUEST_S in lab.active():
        lab.destroy(GUEST_S)
