"""The lab's machinery: everything a scenario stands on.

  constants     paths, the libvirt URI, the guests, the emulated devices'
                serials (KW, AB, BR, LONER, STORM), vm.conf (BASE_CONF,
                make_conf), the guests' domain XML
  helpers       check/Failure (a scenario's assertion), run/must (a command,
                recorded in the actions log: act), virsh (libvirt's C API
                where it can: fastvirt.py), settle (udevadm settle),
                wait_for (poll with a deadline), wfile/rfile, out (console)
  watchers      SyslogSink (bookworm: /dev/log), JournalSink (trixie: the
                journal), UdevMonitor (udev's usb events), SystemdDaemon
                (trixie: libvirtd as a systemd service)
  devices       Dev/find_dev (a USB device in sysfs), Gadget (a configfs
                gadget that enumerates as a BitBabbler), HostDev (a
                <hostdev> of a domain's XML)
  Lab           the object every scenario gets, named `lab`: the VM's setup
                (bookworm, trixie), libvirtd, plug/unplug, what libvirt and
                QEMU hold (problems, wait_state, hold), guests, bbvirt runs
  the registry  scenario() registers a scenario in SCENARIOS

Standard library only.
"""

import collections
import os
import re
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

from . import fastvirt

URI = 'qemu:///system'
WORK = '/run/lab'
BBVIRT = '/usr/bin/bbvirt'
BBVIRT_LOCAL = '/usr/local/bin/bbvirt'   # trixie, boot "anywhere": `make install`'s default PREFIX
VMCONF = '/etc/bit-babbler/vm.conf'
GADGETS = '/sys/kernel/config/usb_gadget'
USBDEVS = '/sys/bus/usb/devices'
GUESTS = ('guestA', 'guestB')
ALIAS = 'ua-bbvirt-'
LIBVIRTD_LOG = '/var/log/libvirt/libvirtd.log'
RULE_MASK = '/etc/udev/rules.d/60-bbvirt.rules'   # a link to /dev/null masks bbvirt's rule

T0 = time.monotonic()

# Serials. Valid BitBabbler serials are 6-7 characters of A-Z0-9.
KW = 'KWIF4Q'        # guestA
AB = 'ABC1234'       # guestA
BR = 'BRAVO01'       # guestB
LONER = 'LONER01'    # assigned to nobody
STORM = ['STORM01', 'STORM02', 'STORM03', 'STORM04']   # guestA


def make_conf(extra_a=''):
    return """\
# /etc/bit-babbler/vm.conf written by the bbvirt lab
DOMAIN_RNG_guestA=( %s %s %s%s )
DOMAIN_URI_guestA="qemu:///system"
DOMAIN_RNG_guestB=( %s )
""" % (KW, AB, ' '.join(STORM), extra_a, BR)


BASE_CONF = make_conf()

DOMAIN_XML = """\
<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def now():
    return time.monotonic()


def stamp():
    return '%8.2f' % (now() - T0)


class Failure(Exception):
    """A scenario's assertion failed."""


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def wfile(path, text):
    with open(path, 'w') as f:
        f.write(text)


def rfile(path):
    with open(path, errors='replace') as f:
        return f.read().rstrip('\n')


def out(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------- logs

class LogFile:
    """An append-only text log shared by threads."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.f = open(path, 'a')

    def write(self, line):
        with self.lock:
            self.f.write(line.rstrip('\n') + '\n')
            self.f.flush()


ACTIONS = None   # the lab's own log: every command it ran, with results


def act(line):
    if ACTIONS:
        ACTIONS.write('%s %s' % (stamp(), line))


class Result:
    def __init__(self, argv, rc, out, err, secs):
        self.argv, self.rc, self.out, self.err, self.secs = argv, rc, out, err, secs

    def __str__(self):
        return '%s -> rc=%s (%.2fs)%s%s' % (
            ' '.join(self.argv), self.rc, self.secs,
            ('\n  stdout: ' + self.out.strip().replace('\n', '\n          ')) if self.out.strip() else '',
            ('\n  stderr: ' + self.err.strip().replace('\n', '\n          ')) if self.err.strip() else '')


def run(argv, timeout=90, input=None):
    t = now()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        rc, so, se = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        def txt(x):
            return x.decode(errors='replace') if isinstance(x, bytes) else (x or '')
        rc, so, se = 'timeout', txt(e.stdout), txt(e.stderr)
    except OSError as e:
        rc, so, se = 'oserror', '', str(e)
    r = Result(list(argv), rc, so, se, now() - t)
    s = str(r)
    act(s if len(s) < 4000 else s[:4000] + ' ...')
    return r


def must(argv, timeout=90, input=None):
    r = run(argv, timeout, input)
    if r.rc != 0:
        raise Failure('command failed: %s' % r)
    return r


def virsh(*args, timeout=60):
    """`virsh -c URI ARGS` as a Result. The commands the lab's helpers run
    all the time (list --name, dumpxml, qemu-monitor-command --hmp, start
    --paused, destroy) go through libvirt's C API on one open connection
    (fastvirt.py: same answers, without ~0.5 s of process start a call under
    TCG); any other command, or when the API cannot be used (no daemon, a
    call stuck, turned off with virsh_api(False)), runs virsh."""
    return HOST_A.virsh(*args, timeout=timeout)


class Host:
    """A libvirt host the checks ask: its URI, its virsh() (libvirt's API
    where it can, else the virsh program) and where its libvirtd keeps the
    status files of running guests. HOST_A is the VM's own libvirtd;
    scenario 26 adds a second one (saved.HostB) in its own mount namespace."""

    def __init__(self, name, uri, run_dir, fast):
        self.name, self.uri, self.run_dir, self.fast = name, uri, run_dir, fast

    def virsh(self, *args, timeout=60):
        if self.fast is not None and VIRSH_API:
            r = self.fast.virsh(args)
            if r is not None:
                res = Result(['virsh(api%s)' % ('' if self is HOST_A else ' ' + self.name)] + list(args), *r)
                if args[0] in ('start', 'destroy'):
                    act(str(res))
                return res
        return run(['virsh', '-c', self.uri] + list(args), timeout=timeout)


def virsh_api(on):
    """Let virsh() use libvirt's API (on, the default) or only the virsh
    program (off: while something that never answers sits at libvirt's
    socket, scenario 12). Off closes the API's connection."""
    global VIRSH_API
    VIRSH_API = on
    if not on and FAST is not None:
        FAST.close()


try:
    FAST = fastvirt.FastVirt(URI, act)
except (OSError, AttributeError) as _e:
    FAST = None
    print('lab: libvirt.so through ctypes unavailable (%s): the checks use virsh' % _e,
          file=sys.stderr, flush=True)
VIRSH_API = True
HOST_A = Host('A', URI, '/run/libvirt', FAST)


def settle():
    run(['udevadm', 'settle', '--timeout=60'], timeout=90)


def wait_for(fn, deadline, what, interval=0.25):
    """Poll fn() until it returns something true; return (value, seconds).
    fn may return (False, why) style tuples: anything falsy or (False, x)."""
    t = now()
    last = None
    while True:
        v = fn()
        if isinstance(v, tuple) and len(v) == 2 and v[0] is False:
            last = v[1]
        elif v:
            return v, now() - t
        if now() - t > deadline:
            raise Failure('timed out after %.0fs waiting for %s%s' % (
                deadline, what, (': ' + str(last)) if last else ''))
        time.sleep(interval)


class SyslogSink(threading.Thread):
    """/dev/log: there is no syslog daemon in the VM. Datagrams go to a file."""

    SEV = ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug']

    def __init__(self, path):
        super().__init__(daemon=True)
        self.log = LogFile(path)
        self.lines = []
        if os.path.lexists('/dev/log'):
            os.unlink('/dev/log')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind('/dev/log')
        os.chmod('/dev/log', 0o666)

    def run(self):
        while True:
            data = self.sock.recv(65536)
            msg = data.decode(errors='replace').rstrip('\n\0')
            sev = ''
            m = re.match(r'<(\d+)>(.*)', msg, re.S)
            if m:
                sev, msg = self.SEV[int(m.group(1)) & 7], m.group(2)
                # drop the RFC 3164 timestamp: the lab's clock is more useful
                msg = re.sub(r'^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ', '', msg)
            line = '%s %-7s %s' % (stamp(), sev, msg)
            self.lines.append((now(), msg))
            self.log.write(line)


class JournalSink(threading.Thread):
    """trixie: the journal (journald owns /dev/log), followed from the start
    of the boot. Every entry goes to journal.log; bbvirt's also to syslog.log
    and to .lines as (time, "bbvirt[PID]: text"), like SyslogSink. Times are
    the journal's CLOCK_MONOTONIC, the clock of time.monotonic(): negative
    stamps are before the lab started."""

    SEV = SyslogSink.SEV

    def __init__(self, path, jpath):
        super().__init__(daemon=True)
        self.log = LogFile(path)
        self.jlog = LogFile(jpath)
        self.lines = []
        self.entries = []    # (time, identifier, pid, priority, message)
        self.marks = set()
        self.proc = subprocess.Popen(['journalctl', '-b', '-f', '-o', 'json', '--no-pager', '--all'],
                                     stdout=subprocess.PIPE, text=True, errors='replace')

    def run(self):
        import json
        for line in self.proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            msg = e.get('MESSAGE', '')
            if isinstance(msg, list):
                msg = bytes(msg).decode(errors='replace')
            t = int(e.get('__MONOTONIC_TIMESTAMP', '0')) / 1e6
            ident = e.get('SYSLOG_IDENTIFIER') or e.get('_COMM') or '?'
            pid = e.get('_PID') or e.get('SYSLOG_PID') or ''
            try:
                prio = int(e.get('PRIORITY', 6))
            except ValueError:
                prio = 6
            self.entries.append((t, ident, pid, prio, msg))
            if ident == 'bbvirt-lab':
                self.marks.add(msg)
            self.jlog.write('%8.2f %-7s %s[%s]: %s' % (t - T0, self.SEV[prio & 7], ident, pid, msg))
            if ident == 'bbvirt':
                self.lines.append((t, 'bbvirt[%s]: %s' % (pid, msg)))
                self.log.write('%8.2f %-7s bbvirt[%s]: %s' % (t - T0, self.SEV[prio & 7], pid, msg))

    def sync(self, timeout=60):
        """Wait until the journal up to now has been read."""
        tag = 'bbvirt-lab-mark-%d' % int(now() * 1000)
        run(['logger', '-t', 'bbvirt-lab', tag])
        wait_for(lambda: tag in self.marks, timeout,
                 'the journal to show the lab\'s mark')


class SystemdDaemon:
    """trixie: a libvirt daemon run by systemd (libvirtd, or virtqemud with
    the modular daemons), with what scenarios use of subprocess.Popen."""

    def __init__(self, name):
        self.name = name

    def prop(self, *names):
        r = run(['systemctl', 'show', self.name + '.service'] + ['-p' + n for n in names], timeout=30)
        return dict(l.split('=', 1) for l in r.out.splitlines() if '=' in l)

    @property
    def pid(self):
        return int(self.prop('MainPID').get('MainPID', '0') or 0)

    def poll(self):
        r = run(['systemctl', 'is-active', self.name + '.service'], timeout=30)
        return None if r.out.strip() in ('active', 'activating', 'reloading', 'deactivating') else 0

    @property
    def returncode(self):
        return self.poll()

    def send_signal(self, sig):
        must(['systemctl', 'kill', '--kill-whom=main', '-s', str(int(sig)), self.name + '.service'])

    def wait(self, timeout=None):
        wait_for(lambda: self.poll() is not None, timeout or 60, '%s to stop' % self.name)
        return 0

    def sockets(self):
        return ['%s%s.socket' % (self.name, s) for s in ('', '-ro', '-admin')]


class UdevMonitor(threading.Thread):
    """`udevadm monitor` for the usb subsystem, one compact line per usb_device
    event; KERNEL = the kernel's uevent, UDEV = udev done with it (rules and
    RUN programs included)."""

    KEYS = ('BUSNUM', 'DEVNUM', 'PRODUCT', 'ID_SERIAL_SHORT')

    def __init__(self, path):
        super().__init__(daemon=True)
        self.log = LogFile(path)
        self.events = []     # (time, source, action, devpath, props)
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            ['udevadm', 'monitor', '--kernel', '--udev', '--property', '--subsystem-match=usb'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors='replace')

    def run(self):
        block = []
        for line in self.proc.stdout:
            line = line.rstrip('\n')
            if line:
                block.append(line)
                continue
            self.flush(block)
            block = []

    def flush(self, block):
        if not block:
            return
        m = re.match(r'(KERNEL|UDEV)\s*\[[^\]]*\]\s+(\S+)\s+(\S+)\s+\((\S+)\)', block[0])
        if not m:
            self.ready.set()
            return
        props = dict(l.split('=', 1) for l in block[1:] if '=' in l)
        if props.get('DEVTYPE') != 'usb_device':
            return
        src, action, devpath = m.group(1), m.group(2), m.group(3)
        self.events.append((now(), src, action, devpath, props))
        self.log.write('%s %-6s %-7s %-8s %s' % (
            stamp(), src, action, devpath.rsplit('/', 1)[-1],
            ' '.join('%s=%s' % (k, props[k]) for k in self.KEYS if k in props)))

    def find(self, src, action, devname, since):
        for t, s, a, p, props in self.events:
            if t >= since and s == src and a == action and p.rsplit('/', 1)[-1] == devname:
                return t
        return None


# ------------------------------------------------------------------ devices

class Dev:
    """A USB device as the VM's kernel sees it. `alias`: the hostdev alias
    bbvirt gives it (default: a BitBabbler's, ua-bbvirt-<serial>)."""

    def __init__(self, name, serial, alias=None):
        self.name = name                    # sysfs name, "BUS-PORT": 3-1
        self.serial = serial
        self._alias = alias
        p = os.path.join(USBDEVS, name)
        self.bus = int(rfile(p + '/busnum'))
        self.dev = int(rfile(p + '/devnum'))
        self.t_plug = None

    @property
    def busdev(self):
        return '%d:%d' % (self.bus, self.dev)

    @property
    def alias(self):
        return self._alias or ALIAS + self.serial

    def __repr__(self):
        return '%s@%s(%s)' % (self.serial, self.busdev, self.name)


BITBABBLER = ('0403', '7840')


def usb_devices():
    """The one walk of /sys/bus/usb/devices: every USB device (no root hub,
    no interface) as (name, (idVendor, idProduct), serial or None), those
    that vanish while being read left out."""
    for name in os.listdir(USBDEVS):
        if ':' in name or name.startswith('usb'):
            continue
        p = os.path.join(USBDEVS, name)
        try:
            ids = (rfile(p + '/idVendor'), rfile(p + '/idProduct'))
            serial = rfile(p + '/serial') if os.path.exists(p + '/serial') else None
        except OSError:
            continue
        yield name, ids, serial


def present(name, serial):
    """Dev(name, serial), or None when the device vanished meanwhile (an
    unplug under way: its busnum is gone)."""
    try:
        return Dev(name, serial)
    except OSError:
        return None


def find_dev(serial):
    """The BitBabbler with this serial, or None."""
    for name, ids, have in usb_devices():
        if ids == BITBABBLER and have == serial:
            return present(name, serial)
    return None


def find_usb(vendor, product, serial, udc):
    """The device with this vendor:product (hex, as sysfs has them) and
    serial (None: none) on the bus of `udc` (dummy_udc.K is dummy_hcd.K's
    only port), or None. Twins with one serial are told apart by bus."""
    bus = bus_of_udc(udc)
    for name, ids, have in usb_devices():
        if name.startswith('%d-' % bus) and ids == (vendor, product) and (have or None) == (serial or None):
            return present(name, have)
    return None


def find_nameless():
    """A BitBabbler without a (readable) serial: none, or an empty one."""
    for name, ids, have in usb_devices():
        if ids == BITBABBLER and not have:
            return present(name, '')
    return None


def bus_of_udc(udc):
    """The USB bus number of the host controller paired with `udc`."""
    k = udc.rsplit('.', 1)[1]
    hcd = '/sys/devices/platform/dummy_hcd.%s' % k
    for e in os.listdir(hcd):
        if e.startswith('usb') and e[3:].isdigit():
            return int(e[3:])
    raise Failure('no USB bus under %s' % hcd)


class Gadget:
    """A configfs USB gadget: a BitBabbler by default, else any
    vendor:product (hex strings, '10c4') with any serial, or none."""

    count = 0

    def __init__(self, serial, vendor='0403', product='7840'):
        Gadget.count += 1
        self.serial = serial
        self.vendor, self.product = vendor, product
        self.path = '%s/bb%d' % (GADGETS, Gadget.count)
        self.udc = None
        self.last_udc = None
        p = self.path
        # Absolute paths only, and mkdir raises when it fails: no writing
        # plain files into some other directory by accident.
        os.mkdir(p)
        wfile(p + '/idVendor', '0x' + vendor)
        wfile(p + '/idProduct', '0x' + product)
        wfile(p + '/bcdDevice', '0x0100')
        os.mkdir(p + '/strings/0x409')
        if serial is not None:
            wfile(p + '/strings/0x409/serialnumber', serial)
        wfile(p + '/strings/0x409/manufacturer', 'bbvirt lab')
        wfile(p + '/strings/0x409/product',
              'emulated BitBabbler' if (vendor, product) == ('0403', '7840') else 'emulated USB device')
        os.mkdir(p + '/configs/c.1')
        os.mkdir(p + '/functions/SourceSink.0')
        os.symlink(p + '/functions/SourceSink.0', p + '/configs/c.1/SourceSink.0')


# --------------------------------------------------------------------- the lab

class HostDev:
    def __init__(self, el):
        a = el.find('source/address')
        al = el.find('alias')
        self.alias = al.get('name') if al is not None else None
        self.bus = self.num(a.get('bus')) if a is not None else None
        self.dev = self.num(a.get('device')) if a is not None else None
        self.xml = ET.tostring(el, encoding='unicode').strip()

    @staticmethod
    def num(s):
        if s is None:
            return None
        return int(s, 16) if s.lower().startswith('0x') else int(s, 10)

    def key(self):
        return (self.alias, self.bus, self.dev)


class Lab:
    def __init__(self, args):
        self.args = args
        self.platform = args.platform     # bookworm or trixie
        self.demo = args.demo
        self.gadgets = {}
        self.libvirtd = None
        self.timings = []
        self.notes = []

    # ---- narration (demo)
    def say(self, msg):
        if self.demo:
            out('   ' + msg)

    def step(self, msg):
        if self.demo:
            out('\n-> ' + msg)

    def show(self, doms=GUESTS, since=None):
        """Demo: what bbvirt logged, what libvirt and QEMU show."""
        if not self.demo:
            return
        if since is not None:
            lines = [m for t, m in self.syslog.lines if t >= since and 'bbvirt' in m]
            for m in lines[-12:]:
                out('   bbvirt log | ' + m)
        act_doms = self.active()
        for dom in doms:
            if dom not in act_doms:
                out('   %s: shut off' % dom)
                continue
            hds = self.hostdevs(dom)
            if not hds:
                out('   %s live XML: no <hostdev>' % dom)
            for h in hds:
                x = re.sub(r'>\s+<', '><', h.xml)
                out('   %s live XML | %s' % (dom, x))
            r = virsh('qemu-monitor-command', dom, '--hmp', 'info usb')
            lines = [l.strip() for l in r.out.splitlines() if l.strip()]
            if not lines:
                out("   %s QEMU 'info usb': (no USB device)" % dom)
            for l in lines:
                out("   %s QEMU 'info usb' | %s" % (dom, l))

    def timing(self, what, secs):
        self.timings.append('%s %.1fs' % (what, secs))
        self.say('[%s: %.1fs]' % (what, secs))

    # ---- setup
    def setup(self):
        if self.platform == 'trixie':
            return self.setup_trixie()
        a = self.args
        os.makedirs(WORK, exist_ok=True)
        global ACTIONS
        ACTIONS = LogFile(WORK + '/actions.log')
        self.syslog = SyslogSink(WORK + '/syslog.log')
        self.syslog.start()
        self.udev = UdevMonitor(WORK + '/udev.log')
        self.udev.start()

        # Sockets and special files must not land on 9p: tmpfs for libvirt's dirs.
        for d in ('/run/libvirt', '/var/lib/libvirt', '/var/cache/libvirt'):
            os.makedirs(d, exist_ok=True)
            must(['mount', '-t', 'tmpfs', 'lab-tmpfs', d])
        if not os.path.ismount('/var/log'):
            must(['mount', '-t', 'tmpfs', 'lab-tmpfs', '/var/log'])
        os.makedirs('/var/log/libvirt/qemu', exist_ok=True)

        # Install the project the way a user would: the staged `make install`.
        # (entry by entry: cp cannot set the times of the read-only /)
        for e in sorted(os.listdir(a.stage)):
            must(['cp', '-a', os.path.join(a.stage, e), '/'])
        for f in (BBVIRT, '/usr/lib/udev/rules.d/60-bbvirt.rules', '/etc/libvirt/hooks/qemu.d/bbvirt'):
            check(os.path.exists(f), 'make install did not install %s' % f)
        check(os.access('/etc/libvirt/hooks/qemu.d/bbvirt', os.X_OK), 'the qemu hook is not executable')
        if a.orig:
            check(os.path.exists(a.orig), '%s missing' % a.orig)
        self.write_conf(BASE_CONF)

        # libvirt: no virtlogd (it hangs here); a log file we can show.
        with open('/etc/libvirt/qemu.conf', 'a') as f:
            f.write('\n# bbvirt lab\nstdio_handler = "file"\n')
        with open('/etc/libvirt/libvirtd.conf', 'a') as f:
            f.write('\n# bbvirt lab\nlog_filters = "1:qemu.qemu_hotplug 1:qemu.qemu_hostdev 3:*"\n'
                    'log_outputs = "1:file:%s"\n' % LIBVIRTD_LOG)
        # The hook is in place: start libvirtd now (it takes ~40 s to answer
        # under TCG) and do the rest meanwhile.
        self.start_libvirtd(wait=False)

        # udev: the project's rules are installed; make udevd read them.
        must(['udevadm', 'control', '--reload'])
        if a.udev_debug:
            run(['udevadm', 'control', '--log-level=debug'])

        # Emulated USB: dummy_hcd gives N host controllers, each with one UDC.
        must(['modprobe', 'dummy_hcd', 'num=%d' % a.buses])
        must(['modprobe', 'libcomposite'])
        must(['modprobe', 'usb_f_ss_lb'])
        if not os.path.ismount('/sys/kernel/config'):
            must(['mount', '-t', 'configfs', 'none', '/sys/kernel/config'])
        self.udcs = sorted(os.listdir('/sys/class/udc'), key=lambda s: int(s.rsplit('.', 1)[1]))
        check(len(self.udcs) == a.buses, 'expected %d UDCs, have %s' % (a.buses, self.udcs))
        settle()
        self.udev.ready.wait(30)

        self.wait_libvirtd()
        for g in GUESTS:
            path = WORK + '/%s.xml' % g
            wfile(path, DOMAIN_XML.format(name=g))
            must(['virsh', '-c', URI, 'define', path])

    def setup_trixie(self):
        """Debian 13, booted by systemd: bbvirt came from its package (dpkg -i
        before the boot), libvirtd from socket activation, the boot's devices
        from bbvirt-lab-gadgets.service. Look, do not install."""
        a = self.args
        os.makedirs(WORK, exist_ok=True)
        global ACTIONS
        ACTIONS = LogFile(WORK + '/actions.log')
        self.syslog = JournalSink(WORK + '/syslog.log', WORK + '/journal.log')
        self.syslog.start()
        self.udev = UdevMonitor(WORK + '/udev.log')
        self.udev.start()
        r = run(['dpkg-query', '-W', '-f=${Status} ${Version}', 'bbvirt'])
        if a.boot in ('anywhere', 'modular'):
            # no package: `make install` (PREFIX=/usr/local) ran in the root
            # before the boot (lab/run); scenario 62 moves it to /opt
            check(not r.out.startswith('install ok installed'), 'boot "anywhere": the bbvirt package is installed: %s' % r)
            self.bbvirt_bin = BBVIRT_LOCAL
            for f in (BBVIRT_LOCAL, '/usr/local/lib/bbvirt/bbvirt-event', '/usr/local/lib/udev/rules.d/60-bbvirt.rules',
                      '/etc/libvirt/hooks/qemu.d/bbvirt'):
                check(os.path.exists(f), 'make install did not install %s' % f)
            check(not os.path.exists(BBVIRT), 'boot "anywhere": %s exists' % BBVIRT)
            r = run([BBVIRT_LOCAL, '--version'])
            self.pkg_version = r.out.strip().split()[-1] if r.rc == 0 and r.out.strip() else '?'
            self.install_note = 'bbvirt %s installed by make install (PREFIX=/usr/local), no package%s' % (
                self.pkg_version, '; virtqemud, no libvirtd' if a.boot == 'modular' else '')
        else:
            check(r.out.startswith('install ok installed'), 'the bbvirt package is not installed: %s' % r)
            self.pkg_version = r.out.split()[-1]
            self.bbvirt_bin = BBVIRT
            self.install_note = 'bbvirt %s from its package' % self.pkg_version
            for f in (BBVIRT, '/usr/lib/udev/rules.d/60-bbvirt.rules', '/etc/libvirt/hooks/qemu.d/bbvirt'):
                check(os.path.exists(f), 'the package did not install %s' % f)
        check(rfile(VMCONF) + '\n' == BASE_CONF, '%s is not the lab\'s (lab/run writes lab.py --print-conf)' % VMCONF)
        # the boot "modular" runs virtqemud instead (scenarios/modular.py)
        self.daemon = 'virtqemud' if a.boot == 'modular' else 'libvirtd'
        self.libvirtd = SystemdDaemon(self.daemon)
        if a.boot in ('main', 'resume', 'anywhere', 'modular'):
            r = run(['systemctl', 'is-system-running', '--wait'], timeout=900)
            self.system_state = r.out.strip()
            self.t_libvirtd = now()
            self.wait_libvirtd()
        else:
            # scenario 2's comparison boots: settle is all they measure
            wait_for(lambda: run(['systemctl', 'is-active', 'bbvirt-lab-settle.service']).out.strip()
                     in ('active', 'failed'), 600, 'bbvirt-lab-settle.service to finish', interval=2)
            self.libvirtd_secs = 0
        self.second_udevd()
        self.adopt_gadgets()
        self.udcs = sorted(os.listdir('/sys/class/udc'), key=lambda s: int(s.rsplit('.', 1)[1]))
        check(len(self.udcs) == a.buses, 'expected %d UDCs, have %s' % (a.buses, self.udcs))
        self.udev.ready.wait(30)

    def second_udevd(self):
        """virtme-ng's init starts a systemd-udevd of its own (and triggers a
        coldplug) even under systemd. Two daemons would run every rule
        twice: if it is still there, stop it."""
        main = run(['systemctl', 'show', '-pMainPID', '--value', 'systemd-udevd.service']).out.strip()
        extra = []
        for d in os.listdir('/proc'):
            if d.isdigit() and d != main:
                try:
                    if rfile('/proc/%s/comm' % d) == 'systemd-udevd':
                        extra.append(int(d))
                except OSError:
                    pass
        for pid in extra:
            os.kill(pid, 15)
        self.udevd_note = ('a second systemd-udevd (pid %s, started by virtme-ng) stopped' % extra) if extra else \
            'one systemd-udevd (pid %s)' % main
        act(self.udevd_note)

    def adopt_gadgets(self):
        """The gadgets bbvirt-lab-gadgets.service made at boot (bootN)."""
        for name in sorted(os.listdir(GADGETS)):
            p = os.path.join(GADGETS, name)
            g = Gadget.__new__(Gadget)
            g.path = p
            g.serial = rfile(p + '/strings/0x409/serialnumber')
            g.vendor, g.product = '0403', '7840'   # boot-gadgets makes BitBabblers
            g.udc = rfile(p + '/UDC') or None
            g.last_udc = g.udc
            self.gadgets[g.serial] = g
            act('adopted gadget %s (%s) on %s' % (name, g.serial, g.udc))

    def write_conf(self, text):
        os.makedirs(os.path.dirname(VMCONF), exist_ok=True)
        wfile(VMCONF, text)
        os.chmod(VMCONF, 0o644)
        act('wrote %s:\n%s' % (VMCONF, text))

    def start_libvirtd(self, wait=True):
        self.t_libvirtd = now()
        if self.platform == 'trixie':
            d = self.libvirtd
            must(['systemctl', 'start'] + d.sockets())
            must(['systemctl', 'start', d.name + '.service'], timeout=300)
            act('started %s.service' % d.name)
            if wait:
                self.wait_libvirtd()
            return
        err = open(WORK + '/libvirtd.stderr', 'a')
        self.libvirtd = subprocess.Popen(['/usr/sbin/libvirtd'], stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err, start_new_session=True)
        act('started libvirtd, pid %d' % self.libvirtd.pid)
        if wait:
            self.wait_libvirtd()

    def wait_libvirtd(self):
        def up():
            if self.platform == 'trixie':
                return virsh('version', timeout=60).rc == 0
            if self.libvirtd.poll() is not None:
                raise Failure('libvirtd exited with status %s' % self.libvirtd.returncode)
            return virsh('version', timeout=30).rc == 0
        wait_for(up, 240, 'libvirtd to answer', interval=1)
        self.libvirtd_secs = now() - self.t_libvirtd

    def stop_libvirtd(self):
        if self.platform == 'trixie':
            d = self.libvirtd
            must(['systemctl', 'stop', d.name + '.service'] + d.sockets(), timeout=120)
            act('%s stopped (service and sockets)' % d.name)
            return
        if self.libvirtd and self.libvirtd.poll() is None:
            self.libvirtd.terminate()
            try:
                self.libvirtd.wait(60)
            except subprocess.TimeoutExpired:
                self.libvirtd.kill()
                self.libvirtd.wait(10)
        act('libvirtd stopped')

    def libvirtd_running(self):
        if self.platform == 'trixie':
            return run(['systemctl', 'is-active', self.libvirtd.name + '.service']).out.strip() == 'active'
        return self.libvirtd is not None and self.libvirtd.poll() is None

    # ---- devices
    def gadget(self, serial):
        if serial not in self.gadgets:
            self.gadgets[serial] = Gadget(serial)
        return self.gadgets[serial]

    def bind(self, serial, udc=None):
        g = self.gadget(serial)
        check(g.udc is None, '%s is already plugged' % serial)
        used = {x.udc for x in self.gadgets.values() if x.udc}
        if udc is None:
            free = [u for u in self.udcs if u not in used]
            check(free, 'no free UDC (raise LAB_BUSES)')
            udc = g.last_udc if g.last_udc in free else free[0]
        t = now()
        wfile(g.path + '/UDC', udc)
        g.udc = g.last_udc = udc
        act('plugged %r into %s' % (serial, udc))
        return t

    def plug(self, *serials):
        """Plug gadgets (back to back), wait for the kernel to enumerate them."""
        ts = [self.bind(s) for s in serials]
        devs = []
        for s, t in zip(serials, ts):
            d, _ = wait_for(lambda: find_dev(s), 30, 'USB device %r to enumerate' % s)
            d.t_plug = t
            devs.append(d)
            self.say('plugged %r into %s: kernel enumerates it as %s (bus %d, device %d)'
                     % (s, self.gadgets[s].udc, d.name, d.bus, d.dev))
        return devs if len(devs) != 1 else devs[0]

    def unplug(self, serial):
        g = self.gadgets[serial]
        check(g.udc is not None, '%s is not plugged' % serial)
        t = now()
        wfile(g.path + '/UDC', '\n')
        act('unplugged %r from %s' % (serial, g.udc))
        self.say('unplugged %r from %s' % (serial, g.udc))
        g.udc = None
        wait_for(lambda: find_dev(serial) is None, 30, 'USB device %r to go away' % serial)
        return t

    def unplug_all(self):
        for s, g in self.gadgets.items():
            if g.udc and (g.vendor, g.product) == ('0403', '7840'):
                self.unplug(s)
            elif g.udc:
                self.unplug_usb(s)

    # ---- devices of any kind (DOMAIN_USB_), keyed by a name of the lab's
    def usb_gadget(self, key, vendor, product, serial):
        if key not in self.gadgets:
            self.gadgets[key] = Gadget(serial, vendor, product)
        return self.gadgets[key]

    def plug_usb(self, key, udc=None):
        """Plug the gadget `key` (made by usb_gadget) and wait for the kernel
        to enumerate it on its bus: the Dev (without its alias)."""
        g = self.gadgets[key]
        t = self.bind(key, udc)
        d, _ = wait_for(lambda: find_usb(g.vendor, g.product, g.serial, g.udc), 30,
                        'USB device %s (%s:%s) to enumerate' % (key, g.vendor, g.product))
        d.t_plug = t
        return d

    def unplug_usb(self, key):
        g = self.gadgets[key]
        check(g.udc is not None, '%s is not plugged' % key)
        t = now()
        udc = g.udc
        wfile(g.path + '/UDC', '\n')
        act('unplugged %r from %s' % (key, udc))
        g.udc = None
        wait_for(lambda: find_usb(g.vendor, g.product, g.serial, udc) is None, 30,
                 'USB device %s to go away' % key)
        return t

    # ---- libvirt / QEMU truth
    def active(self, host=None):
        r = (host or HOST_A).virsh('list', '--name')
        return set(l.strip() for l in r.out.splitlines() if l.strip())

    def state(self, dom, host=None):
        return (host or HOST_A).virsh('domstate', dom).out.strip()

    def hostdevs(self, dom, inactive=False, host=None):
        r = (host or HOST_A).virsh('dumpxml', dom, *(['--inactive'] if inactive else []))
        if r.rc != 0:
            raise Failure('virsh dumpxml %s failed: %s' % (dom, r))
        root = ET.fromstring(r.out)
        return [HostDev(h) for h in root.iter('hostdev') if h.get('type') == 'usb']

    def qemu_ids(self, dom, host=None):
        r = (host or HOST_A).virsh('qemu-monitor-command', dom, '--hmp', 'info usb')
        if r.rc != 0:
            return None
        ids = []
        for l in r.out.splitlines():
            m = re.search(r', ID: (.*)$', l.strip())
            if m:
                ids.append(m.group(1).strip())
        return ids

    def qemu_hostdevs(self, dom, host=None):
        """QEMU's usb-host devices from `info qtree`: {id: (bus, dev) or None}."""
        r = (host or HOST_A).virsh('qemu-monitor-command', dom, '--hmp', 'info qtree')
        if r.rc != 0:
            return None
        found, cur = {}, None
        for l in r.out.splitlines():
            m = re.search(r'dev: ([\w-]+), id "(.*)"', l)
            if m:
                cur = m.group(2) if m.group(1) == 'usb-host' else None
                if cur is not None:
                    found[cur] = {}
                continue
            m = re.match(r'\s*(hostdevice|hostbus|hostaddr) = (.*)', l)
            if cur is not None and m:
                found[cur][m.group(1)] = m.group(2).strip()
        res = {}
        for i, p in found.items():
            m = re.match(r'"/dev/bus/usb/(\d+)/(\d+)"', p.get('hostdevice', ''))
            if m:
                res[i] = (int(m.group(1)), int(m.group(2)))
                continue
            try:
                b, a = int(p['hostbus'].split()[0]), int(p['hostaddr'].split()[0])
                res[i] = (b, a) if b and a else None
            except (KeyError, ValueError):
                res[i] = None
        return res

    def status_hostdevs(self, dom, host=None):
        """libvirt's status file of a running guest (what dumpxml shows, read
        without spawning virsh: that takes ~1 s under TCG). None: not running."""
        try:
            root = ET.parse('%s/qemu/%s.xml' % ((host or HOST_A).run_dir, dom)).getroot()
        except FileNotFoundError:
            return None
        except ET.ParseError:
            return []
        return [HostDev(h) for h in root.iter('hostdev') if h.get('type') == 'usb']

    def problems(self, expect, full=True, doms=GUESTS, host=None):
        """What differs between expect ({dom: [Dev]}) and the truth.
        Running guests must hold exactly their expected devices, once each,
        at the right address, tagged ua-bbvirt-<serial>; nothing else.
        full: ask libvirt (virsh dumpxml) and QEMU (info usb, info qtree);
        otherwise only read libvirt's status files (cheap, for polling)."""
        probs = []
        act_doms = self.active(host) if full else None
        for dom in doms:
            want = expect.get(dom, [])
            if full:
                hds = self.hostdevs(dom, host=host) if dom in act_doms else None
            else:
                hds = self.status_hostdevs(dom, host)
            if hds is None:
                if want:
                    probs.append('%s is not running' % dom)
                continue
            wanted = [(d.alias, d.bus, d.dev) for d in want]
            have = [h.key() for h in hds]
            for w in wanted:
                n = have.count(w)
                if n != 1:
                    probs.append('%s live XML: %d x hostdev %s at %d:%d (want 1)' % ((dom, n) + w))
            for h in have:
                if h not in wanted:
                    probs.append('%s live XML: unexpected hostdev alias=%s at %s:%s' % ((dom,) + h))
            if not full or probs:
                continue
            ids = self.qemu_ids(dom, host)
            qt = self.qemu_hostdevs(dom, host)
            if ids is None or qt is None:
                probs.append("%s: QEMU's info usb/qtree failed" % dom)
                continue
            for d in want:
                n = ids.count(d.alias)
                if n != 1:
                    probs.append("%s QEMU info usb: %d x %s (want 1)" % (dom, n, d.alias))
                if qt.get(d.alias) != (d.bus, d.dev):
                    probs.append('%s QEMU qtree: usb-host %s is host device %s, want %s'
                                 % (dom, d.alias, qt.get(d.alias, 'missing'), d.busdev))
            aliases = [d.alias for d in want]
            for i in ids:
                if i not in aliases:
                    probs.append("%s QEMU info usb: unexpected device %s" % (dom, i))
            for i in qt:
                if i not in aliases:
                    probs.append("%s QEMU qtree: unexpected usb-host %s" % (dom, i))
        return probs

    def wait_state(self, expect, t0, what, deadline=90, doms=GUESTS, host=None):
        """Wait until libvirt's live state matches expect, then check it with
        virsh and QEMU. Returns seconds from t0 to libvirt's state matching.
        doms: the guests judged; host: the libvirt asked (default HOST_A)."""
        def fast():
            p = self.problems(expect, full=False, doms=doms, host=host)
            return (False, '; '.join(p)) if p else True
        wait_for(fast, deadline, what, interval=0.1)
        secs = now() - t0

        def full():
            p = self.problems(expect, doms=doms, host=host)
            return (False, '; '.join(p)) if p else True
        wait_for(full, 30, what + ' (virsh dumpxml, QEMU info usb/qtree)', interval=1)
        return secs

    def hold(self, expect, what, secs=None, doms=GUESTS, host=None):
        """Once udev is idle, expect must keep holding for a while (nothing
        late, nothing twice); checked in full at the end."""
        secs = self.args.hold if secs is None else secs
        settle()
        t = now()
        while True:
            p = self.problems(expect, full=False, doms=doms, host=host)
            check(not p, '%s: %s' % (what, '; '.join(p)))
            if now() - t >= secs:
                break
            time.sleep(0.2)
        p = self.problems(expect, doms=doms, host=host)
        check(not p, '%s: %s' % (what, '; '.join(p)))

    # ---- guests
    def start(self, dom):
        t = now()
        r = virsh('start', dom, '--paused', timeout=120)
        check(r.rc == 0, 'virsh start %s failed: %s' % (dom, r))
        self.say('virsh start %s --paused (%.1fs)' % (dom, now() - t))
        return t

    def destroy(self, dom):
        r = virsh('destroy', dom, timeout=120)
        check(r.rc == 0, 'virsh destroy %s failed: %s' % (dom, r))
        self.say('virsh destroy %s' % dom)

    def reset(self, running=GUESTS, conf=BASE_CONF):
        """Known state: config written, libvirtd up, nothing plugged, guests
        in `running` running with no hostdev, the others shut off."""
        demo, self.demo = self.demo, False
        try:
            self.write_conf(conf)
            if not self.libvirtd_running():
                self.start_libvirtd()
            self.unplug_all()
            settle()
            act_doms = self.active()
            for dom in GUESTS:
                # a saved state left by a failed scenario (issue 15's) would
                # be restored by every later start
                if dom not in act_doms and os.path.exists('/var/lib/libvirt/qemu/save/%s.save' % dom):
                    run(['virsh', '-c', URI, 'managedsave-remove', dom])
                up = dom in act_doms
                if up and (dom not in running or self.hostdevs(dom)):
                    self.destroy(dom)
                    up = False
                if dom in running and not up:
                    self.start(dom)
            settle()
            p = self.problems({})
            check(not p, 'reset: ' + '; '.join(p))
        finally:
            self.demo = demo

    def bbvirt(self, *args, timeout=60, ok=True):
        r = run([BBVIRT] + list(args), timeout=timeout)
        self.say('$ bbvirt %s  -> exit %s (%.1fs)' % (' '.join(_q(a) for a in args), r.rc, r.secs))
        if ok:
            check(r.rc == 0, 'expected success: %s' % r)
        return r


def _q(s):
    return s if re.match(r'^[\w:./=-]+$', s) else "'%s'" % s.replace("'", "'\\''")


# ------------------------------------------------------------ the registry

# One entry a scenario, in the order they were registered: the order they
# run in (on trixie, that of scenarios/trixie.py's ORDER).
Scenario = collections.namedtuple('Scenario', 'num name fn demo platforms bench')
SCENARIOS = []
BOOKWORM = ('bookworm',)
CORE = ('bookworm', 'trixie')


def scenario(num, name, demo=False, platforms=BOOKWORM, bench=False):
    """Register fn(lab) as scenario `num`, printed as `name`.
    demo: one of the narrated demo's (--demo); platforms: where it runs by
    default (--only runs it anywhere); bench: there only with --bench (the
    benchmarks: minutes, and they assert little)."""
    def deco(fn):
        SCENARIOS.append(Scenario(num, name, fn, demo, platforms, bench))
        return fn
    return deco
