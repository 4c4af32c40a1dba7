"""libvirt's C API through ctypes: the fast path of the lab's virsh().

Spawning virsh costs ~0.5 s a call under TCG, and the lab's helpers (problems,
wait_state, hold, reset, start, destroy) call it all the time. FastVirt makes
the same few calls virsh makes, on one connection kept open (reopened when
libvirtd restarted), and gives the same answers: the live XML
(virDomainGetXMLDesc, `virsh dumpxml`), QEMU's monitor
(virDomainQemuMonitorCommand, `virsh qemu-monitor-command --hmp`), the
running guests (`virsh list --name`), start --paused and destroy. For any
other command, or when the API cannot be used (no daemon, a call stuck),
FastVirt.virsh returns None and the caller runs virsh.

Self-contained: it logs through the function it is given. Standard library only.
"""

import ctypes
import threading
import time


class VirtCallError(Exception):
    """libvirt said no (virsh would exit 1)."""


class FastUnavailable(Exception):
    """The API cannot be used now: ask virsh instead."""


class FastVirt:
    """The few libvirt calls the lab's helpers make, through libvirt.so, on
    one connection that is reopened when libvirtd restarted. One call at a
    time; each bounded (see _call)."""

    LIST_ACTIVE = 1          # VIR_CONNECT_LIST_DOMAINS_ACTIVE
    XML_INACTIVE = 2         # VIR_DOMAIN_XML_INACTIVE
    MONITOR_HMP = 1          # VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP

    def __init__(self, uri, log):
        vp, cp, ci, cu = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint
        self.uri = uri.encode()
        self.log = log           # log(line): the lab's actions log
        self.lib = lib = ctypes.CDLL('libvirt.so.0')
        self.qemu = qemu = ctypes.CDLL('libvirt-qemu.so.0')
        self.libc = ctypes.CDLL(None)
        self.libc.free.argtypes = [vp]
        self.libc.free.restype = None
        for name, res, args in (
                ('virConnectOpen', vp, [cp]),
                ('virConnectClose', ci, [vp]),
                ('virConnectIsAlive', ci, [vp]),
                ('virConnectListAllDomains', ci, [vp, ctypes.POINTER(ctypes.POINTER(vp)), cu]),
                ('virDomainGetName', cp, [vp]),
                ('virDomainLookupByName', vp, [vp, cp]),
                ('virDomainGetXMLDesc', vp, [vp, cu]),
                ('virDomainFree', ci, [vp]),
                ('virGetLastErrorMessage', cp, [])):
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        qemu.virDomainQemuMonitorCommand.restype = ci
        qemu.virDomainQemuMonitorCommand.argtypes = [vp, cp, ctypes.POINTER(vp), cu]
        # libvirt prints every error to stderr unless told otherwise
        errfunc = ctypes.CFUNCTYPE(None, vp, vp)
        self._quiet = errfunc(lambda user, err: None)
        lib.virSetErrorFunc.restype = None
        lib.virSetErrorFunc.argtypes = [vp, errfunc]
        lib.virSetErrorFunc(None, self._quiet)
        for name, res, args in (
                ('virDomainCreateWithFlags', ci, [vp, cu]),
                ('virDomainDestroy', ci, [vp])):
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        self.conn = None
        self.lock = threading.Lock()
        self.stuck = None

    def _err(self, what):
        m = self.lib.virGetLastErrorMessage()
        return VirtCallError('%s: %s' % (what, m.decode(errors='replace') if m else 'unknown error'))

    def _take(self, ptr):
        """A char * that libvirt allocated for us: its text, then freed."""
        s = ctypes.cast(ptr, ctypes.c_char_p).value.decode(errors='replace')
        self.libc.free(ptr)
        return s

    def close(self):
        with self.lock:
            if self.conn:
                self.lib.virConnectClose(self.conn)
            self.conn = None

    def _call(self, fn, timeout=60):
        """fn(conn) in a worker thread: a libvirtd that stops answering must
        not hang the lab. After such a timeout the callers use virsh until the
        stuck call returns."""
        if self.stuck is not None and self.stuck.is_alive():
            raise FastUnavailable('a call is stuck')
        box = {}

        def work():
            try:
                box['v'] = self._call_now(fn)
            except Exception as e:
                box['e'] = e
        th = threading.Thread(target=work, daemon=True)
        th.start()
        th.join(timeout)
        if th.is_alive():
            self.stuck = th
            self.log('libvirt API: no answer in %ds, using virsh meanwhile' % timeout)
            raise FastUnavailable('no answer in %ds' % timeout)
        if 'e' in box:
            raise box['e']
        return box['v']

    def _call_now(self, fn):
        with self.lock:
            for attempt in (1, 2):
                if not self.conn:
                    c = self.lib.virConnectOpen(self.uri)
                    if not c:   # no daemon (yet): virsh says what it has to say
                        raise FastUnavailable(self._err('connecting to %s' % self.uri.decode()))
                    self.conn = c
                try:
                    return fn(self.conn)
                except VirtCallError:
                    if attempt == 1 and self.lib.virConnectIsAlive(self.conn) != 1:
                        self.lib.virConnectClose(self.conn)   # libvirtd restarted: reconnect
                        self.conn = None
                        continue
                    raise

    def _domain(self, conn, name):
        d = self.lib.virDomainLookupByName(conn, name.encode())
        if not d:
            raise self._err('domain %s' % name)
        return d

    def active(self):
        def fn(conn):
            arr = ctypes.POINTER(ctypes.c_void_p)()
            n = self.lib.virConnectListAllDomains(conn, ctypes.byref(arr), self.LIST_ACTIVE)
            if n < 0:
                raise self._err('listing domains')
            names = []
            for i in range(n):
                names.append(self.lib.virDomainGetName(arr[i]).decode())
                self.lib.virDomainFree(arr[i])
            self.libc.free(arr)
            return names
        return self._call(fn)

    def xml(self, name, inactive=False):
        def fn(conn):
            d = self._domain(conn, name)
            try:
                p = self.lib.virDomainGetXMLDesc(d, self.XML_INACTIVE if inactive else 0)
                if not p:
                    raise self._err('XML of %s' % name)
                return self._take(p)
            finally:
                self.lib.virDomainFree(d)
        return self._call(fn)

    def hmp(self, name, cmd):
        def fn(conn):
            d = self._domain(conn, name)
            try:
                res = ctypes.c_void_p()
                if self.qemu.virDomainQemuMonitorCommand(d, cmd.encode(), ctypes.byref(res), self.MONITOR_HMP) < 0:
                    raise self._err('monitor command %r on %s' % (cmd, name))
                return self._take(res)
            finally:
                self.lib.virDomainFree(d)
        return self._call(fn)

    def lifecycle(self, name, start):
        def fn(conn):
            d = self._domain(conn, name)
            try:
                rc = (self.lib.virDomainCreateWithFlags(d, 1) if start      # VIR_DOMAIN_START_PAUSED
                      else self.lib.virDomainDestroy(d))
                if rc < 0:
                    raise self._err('%s %s' % ('starting' if start else 'destroying', name))
                return 'Domain \'%s\' %s\n' % (name, 'started' if start else 'destroyed')
            finally:
                self.lib.virDomainFree(d)
        return self._call(fn, timeout=120)

    def virsh(self, args):
        """The answer virsh would give to the commands the lab's helpers run
        (list --name, dumpxml, qemu-monitor-command --hmp, start --paused,
        destroy): (exit status, stdout, stderr, seconds); None for other
        commands or when the API cannot be used now."""
        a = list(args)
        t = time.monotonic()
        try:
            if a == ['list', '--name']:
                text = ''.join(n + '\n' for n in self.active())
            elif a[:1] == ['dumpxml'] and (len(a) == 2 or (len(a) == 3 and a[2] == '--inactive')):
                text = self.xml(a[1], inactive=len(a) == 3)
            elif len(a) == 4 and a[0] == 'qemu-monitor-command' and a[2] == '--hmp':
                text = self.hmp(a[1], a[3])
            elif len(a) == 3 and a[0] == 'start' and a[2] == '--paused':
                text = self.lifecycle(a[1], True)
            elif len(a) == 2 and a[0] == 'destroy':
                text = self.lifecycle(a[1], False)
            else:
                return None
            rc, err = 0, ''
        except FastUnavailable:
            return None
        except VirtCallError as e:
            rc, text, err = 1, '', 'error: %s' % e
            self.log('libvirt API (virsh %s) -> rc=1: %s' % (' '.join(a), e))
        return rc, text, err, time.monotonic() - t

