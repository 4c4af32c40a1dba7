"""bbvirt installed other than as /usr/bin (issue 22): scenarios 61-63, in
the trixie boot "anywhere".

Debian 13's AppArmor profile for libvirtd runs libvirt's hooks in the
daemon's own profile, which may execute /bin, /sbin, /usr/bin, /usr/sbin
and /usr/lib/libvirt only: a hook that runs /usr/local/bin/bbvirt is denied
(exit status 126), and libvirt then refuses to start every guest ("Hook
script execution failed"), autostart included.

The boot: the trixie root without the Debian package; lab/run ran `make
install` as root in it before the boot (the Makefile, dist/, doc/ and the
binaries in /usr/src/bbvirt, the default PREFIX /usr/local, no DESTDIR), as
an admin installs from a checkout. vm.conf is the lab's, guestA autostarts.
The binary the hook runs is `lab.bbvirt_bin`: /usr/local/bin/bbvirt after
the boot, /opt/bbvirt/bin/bbvirt once 62 has run.

  61 make install /usr/local  guestA (autostart) running with exactly
                              KWIF4Q and ABC1234; guestB started with virsh
                              gets BRAVO01 through the hook; an unplug and a
                              hotplug; `bbvirt check` exits 0 with no error
                              line; no AppArmor denial of bbvirt
  62 bbvirt install /opt      `make uninstall`, the binary (and bbvirt-event
                              next to it) copied to /opt/bbvirt/bin, its
                              `bbvirt install`; both guests destroyed and
                              started again with virsh: each gets its devices
                              through the hook; an unplug and a hotplug;
                              `bbvirt check` clean; no denial
  63 hook cannot run          the binary the hook runs (a) moved away, (b)
                              not executable, (c) denied by AppArmor (bbvirt's
                              block of the profile's local file removed, the
                              profile reloaded), (d) crashing (SIGSEGV): each
                              time `virsh start guestB` succeeds (and guestA's
                              destroy and start for (c)), the journal holds
                              the hook's line (identifier bbvirt) "cannot run
                              <binary>" written after the fault was made; for
                              (c) `bbvirt check` reports an error naming
                              AppArmor. The binary restored after each fault;
                              at the end both guests started again get their
                              devices.
"""

import os
import re
import shutil

from ..core import (AB, BR, GUESTS, KW, LONER, Failure, act, check, find_dev, must, now, rfile, run,
                    scenario, settle, virsh, wait_for, wfile)

T = ('trixie',)
SRC = '/usr/src/bbvirt'                         # lab/run's copy of the checkout (make install ran there)
LOCAL_BIN = '/usr/local/bin/bbvirt'
OPT_DIR = '/opt/bbvirt/bin'
OPT_BIN = OPT_DIR + '/bbvirt'
HOOK = '/etc/libvirt/hooks/qemu.d/bbvirt'
AA_PROFILE = '/etc/apparmor.d/usr.sbin.libvirtd'
AA_LOCAL = '/etc/apparmor.d/local/usr.sbin.libvirtd'
AA_BEGIN, AA_END = '# BEGIN bbvirt', '# END bbvirt'
SEGV = '/usr/lib/bbvirt-lab/segv'               # dies of SIGSEGV (lab/run builds it)
GOOD = '/usr/lib/bbvirt-lab/bbvirt.good'        # 63: a working copy of the binary


def error_lines(r):
    """The `error...` lines of a bbvirt run (stdout and stderr)."""
    return [l.strip() for l in (r.out + '\n' + r.err).splitlines()
            if re.match(r'\s*(bbvirt: )?error\b', l)]


def bbvirt_denials(since):
    """Lines `apparmor="DENIED"` naming bbvirt since `since` (monotonic), in
    this boot's journal, whatever the transport (the kernel's, or audit's).
    NB: virtme-ng boots systemd with `audit=off`, which disables audit until
    reboot (a later audit=1 does not undo it): the kernel then logs no
    AppArmor denial at all, and this finds none whatever happens. The
    profile's verdict is asked directly instead: profile_allows()."""
    r = run(['journalctl', '-b', '-o', 'short-monotonic', '--no-pager', '--grep', 'apparmor="DENIED"'],
            timeout=60)
    res = []
    for line in r.out.splitlines():
        mm = re.match(r'\[\s*([\d.]+)\]', line)
        if mm and float(mm.group(1)) >= since and 'bbvirt' in line:
            res.append(line)
    return res


def autostart_failure(dom='guestA'):
    """libvirtd's journal line of this boot saying the autostart of `dom`
    failed, or None (asked of journalctl: it came before the lab started)."""
    r = run(['journalctl', '-b', '--no-pager', '-o', 'cat', '--grep', 'Failed to autostart'], timeout=60)
    for m in r.out.splitlines():
        if "'%s'" % dom in m or ' %s:' % dom in m:
            return m
    return None


def start_error(r):
    """A failed `virsh start`, in short: its error line."""
    lines = [l.strip() for l in (r.err + '\n' + r.out).splitlines() if l.strip()]
    err = next((l for l in lines if l.startswith('error:')), lines[0] if lines else 'rc=%s' % r.rc)
    return err[:400]


def profile_allows(binp):
    """The daemon's AppArmor profile's verdict on the hook running `binp`,
    asked directly: a shell confined by the profile `libvirtd` (aa-exec, as
    libvirt runs its hooks: `/etc/libvirt/hooks/** rmix`, the script's shell
    inside the daemon's profile) execs `binp --version`. Returns the Result:
    rc 0 allowed, 126 denied."""
    return run(['aa-exec', '-p', 'libvirtd', '--', '/bin/sh', '-c', 'exec "$0" --version', binp], timeout=60)


def check_clean(lab, binp, since):
    """`binp check` exits 0 and prints no error line; the daemon's profile
    lets the hook run `binp`; no AppArmor denial of bbvirt in the journal
    since `since` (see bbvirt_denials: none is ever logged here)."""
    r = run([binp, 'check'], timeout=120)
    errs = error_lines(r)
    check(r.rc == 0 and not errs, '%s check: exit %s, error lines: %s (all of it: %s)'
          % (binp, r.rc, errs or 'none', r))
    p = profile_allows(binp)
    check(p.rc == 0, 'the profile libvirtd does not let the hook run %s: %s' % (binp, p))
    den = bbvirt_denials(since)
    check(not den, 'AppArmor denials of bbvirt in the journal: %s' % den[:6])
    lab.notes.append('%s check: exit 0, no error line; the profile libvirtd lets a hook run it '
                     '(aa-exec: exit 0); 0 denials in the journal' % binp)


def plugged(lab, *serials):
    """The devices `serials`, plugged if they are not: [Dev]."""
    devs = []
    for s in serials:
        d = find_dev(s)
        devs.append(d if d is not None else lab.plug(s))
    return devs


def guests_off(lab, doms=GUESTS):
    act_doms = lab.active()
    for dom in doms:
        if dom in act_doms:
            lab.destroy(dom)


def hook_runs(binp):
    """The installed hook names `binp` (the binary it runs)."""
    check(os.path.exists(HOOK), '%s is missing' % HOOK)
    text = rfile(HOOK)
    check(binp in text, '%s does not run %s:\n%s' % (HOOK, binp, text))


# ----------------------------------------------------------------------- 61

@scenario(61, 'make install /usr/local', platforms=T)
def sc_make_install(lab):
    check(getattr(lab, 'bbvirt_bin', None) == LOCAL_BIN and lab.args.boot == 'anywhere',
          'not the boot "anywhere" (lab/run --platform trixie --only 61,62,63)')
    hook_runs(LOCAL_BIN)
    J = lab.syslog

    # guestA autostarts: through the hook (prepare, then started)
    def up():
        if 'guestA' in lab.active():
            return True
        f = autostart_failure()
        if f:
            p = profile_allows(LOCAL_BIN)
            raise Failure('the autostart guest guestA did not start: libvirtd: %s\n  the profile libvirtd '
                          'and %s (aa-exec): exit %s %s' % (f, LOCAL_BIN, p.rc, p.err.strip()[:200]))
        return False
    wait_for(up, 240, 'guestA (autostart) to run', interval=1)
    k, a, b, l = (find_dev(s) for s in (KW, AB, BR, LONER))
    check(all((k, a, b, l)), 'devices bound at boot missing: %s' % [k, a, b, l])
    lab.timing('boot->guestA holds its devices',
               lab.wait_state({'guestA': [k, a]}, 0, 'guestA (autostarted) to hold %s and %s' % (k, a), 240))
    check('guestB' not in lab.active(), 'guestB (not autostarted) is running')
    lab.hold({'guestA': [k, a]}, 'after boot: guestA holds exactly its devices', 2)

    # guestB started by hand: its device through the hook
    t = lab.start('guestB')
    lab.timing('start guestB->attached', lab.wait_state(
        {'guestA': [k, a], 'guestB': [b]}, t, '%s attached to guestB (virsh start, the hook)' % b))
    # an unplug and a hotplug
    t = lab.unplug(AB)
    lab.timing('unplug->detached', lab.wait_state({'guestA': [k], 'guestB': [b]}, t, '%s detached' % a))
    a2 = lab.plug(AB)
    lab.timing('plug->attached', lab.wait_state({'guestA': [k, a2], 'guestB': [b]}, a2.t_plug,
                                                '%s attached again (hotplug)' % a2))
    lab.hold({'guestA': [k, a2], 'guestB': [b]}, 'after the hotplug', 2)
    check(find_dev(LONER) is not None, '%s left the host' % LONER)
    J.sync()
    check_clean(lab, LOCAL_BIN, 0)


# ----------------------------------------------------------------------- 62

@scenario(62, 'bbvirt install /opt', platforms=T)
def sc_install_opt(lab):
    t_since = now()
    check(lab.args.boot == 'anywhere', 'not the boot "anywhere"')
    if lab.bbvirt_bin == LOCAL_BIN:
        r = must(['make', '-C', SRC, 'uninstall'], timeout=120)
        left = [f for f in (LOCAL_BIN, '/usr/local/lib/bbvirt/bbvirt-event',
                            '/usr/local/lib/udev/rules.d/60-bbvirt.rules', HOOK) if os.path.exists(f)]
        check(not left, 'make uninstall left %s' % left)
        if os.path.exists(AA_LOCAL):
            check(AA_BEGIN not in rfile(AA_LOCAL), 'make uninstall left bbvirt\'s block in %s:\n%s'
                  % (AA_LOCAL, rfile(AA_LOCAL)))
    os.makedirs(OPT_DIR, exist_ok=True)
    for f in ('bbvirt', 'bbvirt-event'):
        shutil.copy2('%s/target/release/%s' % (SRC, f), '%s/%s' % (OPT_DIR, f))
        os.chmod('%s/%s' % (OPT_DIR, f), 0o755)
    r = must([OPT_BIN, 'install'], timeout=300)
    lab.bbvirt_bin = OPT_BIN
    act('bbvirt install: %s' % r)
    lab.notes.append('%s install: %s' % (OPT_BIN, ' | '.join(l for l in r.out.splitlines() if l.strip())[:400]))
    hook_runs(OPT_BIN)
    rule = rfile('/etc/udev/rules.d/60-bbvirt.rules')
    check(OPT_BIN in rule, 'the rule bbvirt install wrote does not run %s' % OPT_BIN)

    # restart nothing but the guests: each gets its devices through the hook
    k, a, b = plugged(lab, KW, AB, BR)
    guests_off(lab)
    settle()
    p = lab.problems({})
    check(not p, 'with both guests off: %s' % '; '.join(p))
    t = lab.start('guestA')
    lab.timing('start guestA->attached', lab.wait_state({'guestA': [k, a]}, t,
                                                         'guestA\'s devices through the hook'))
    t = lab.start('guestB')
    lab.timing('start guestB->attached', lab.wait_state({'guestA': [k, a], 'guestB': [b]}, t,
                                                         'guestB\'s device through the hook'))
    # an unplug and a hotplug
    t = lab.unplug(KW)
    lab.timing('unplug->detached', lab.wait_state({'guestA': [a], 'guestB': [b]}, t, '%s detached' % k))
    k2 = lab.plug(KW)
    lab.timing('plug->attached', lab.wait_state({'guestA': [k2, a], 'guestB': [b]}, k2.t_plug,
                                                '%s attached again (hotplug)' % k2))
    lab.hold({'guestA': [k2, a], 'guestB': [b]}, 'after the hotplug', 2)
    lab.syslog.sync()
    check_clean(lab, OPT_BIN, t_since)


# ----------------------------------------------------------------------- 63

def without_block(text):
    """`text` without bbvirt's lines: from a line that begins with `# BEGIN
    bbvirt` (it may say more) to one that begins with `# END bbvirt`."""
    res, inside = [], False
    for l in text.splitlines(True):
        if l.strip().startswith(AA_BEGIN):
            inside = True
        elif l.strip().startswith(AA_END) and inside:
            inside = False
        elif not inside:
            res.append(l)
    return ''.join(res)


def aa_reload():
    must(['apparmor_parser', '-r', AA_PROFILE], timeout=600)


def replace_file(src, dst, mode=0o755):
    """Put a copy of `src` at `dst` by rename (no "text file busy")."""
    tmp = dst + '.lab-new'
    shutil.copy2(src, tmp)
    os.chmod(tmp, mode)
    os.replace(tmp, dst)


class Fault:
    """One way the hook cannot run bbvirt: make() makes it, undo() restores."""

    def __init__(self, tag, what, binp):
        self.tag, self.what, self.binp = tag, what, binp
        self.note = ''
        self.saved = None

    def make(self):
        b = self.binp
        if self.tag == 'a':
            os.rename(b, b + '.lab-away')
        elif self.tag == 'b':
            os.chmod(b, 0o644)
        elif self.tag == 'c':
            self.saved = rfile(AA_LOCAL) + '\n' if os.path.exists(AA_LOCAL) else None
            text = self.saved or ''
            if AA_BEGIN in text:
                wfile(AA_LOCAL, without_block(text))
                self.note = 'bbvirt\'s block removed from %s, profile reloaded' % AA_LOCAL
            else:
                self.note = 'no bbvirt block in %s: the default profile, reloaded' % AA_LOCAL
            aa_reload()
        elif self.tag == 'd':
            replace_file(SEGV, b)
        act('fault (%s) %s: made %s' % (self.tag, self.what, self.note))

    def undo(self):
        b = self.binp
        if self.tag == 'a':
            os.rename(b + '.lab-away', b)
        elif self.tag == 'b':
            os.chmod(b, 0o755)
        elif self.tag == 'c':
            if self.saved is not None:
                wfile(AA_LOCAL, self.saved)
            aa_reload()
        elif self.tag == 'd':
            replace_file(GOOD, b)
        act('fault (%s) %s: undone' % (self.tag, self.what))


@scenario(63, 'hook cannot run', platforms=T)
def sc_hook_cannot_run(lab):
    check(lab.args.boot == 'anywhere', 'not the boot "anywhere"')
    J = lab.syslog
    binp = lab.bbvirt_bin          # /usr/local/bin/bbvirt, or /opt/... after 62
    check(os.access(binp, os.X_OK), '%s is not there to break' % binp)
    hook_runs(binp)
    shutil.copy2(binp, GOOD)
    check(os.path.exists(SEGV), '%s missing (lab/run builds it)' % SEGV)
    k, a, b = plugged(lab, KW, AB, BR)
    faults = [Fault('a', 'the binary moved away', binp),
              Fault('b', 'the binary not executable (mode 644)', binp),
              Fault('c', 'denied by AppArmor', binp),
              Fault('d', 'the binary crashes (SIGSEGV)', binp)]
    failures, notes = [], []
    for f in faults:
        doms = ('guestB', 'guestA') if f.tag == 'c' else ('guestB',)
        guests_off(lab, doms)
        t_fault = now()
        f.make()
        errs = []
        try:
            for dom in doms:
                r = virsh('start', dom, '--paused', timeout=120)
                if r.rc != 0:
                    errs.append('virsh start %s failed: %s' % (dom, start_error(r)))
            J.sync()
            lines = [m for t, ident, pid, prio, m in J.entries
                     if ident == 'bbvirt' and t >= t_fault and 'cannot run' in m and binp in m]
            if not lines:
                errs.append('no line of the hook (identifier bbvirt) with "cannot run" and %s in the journal '
                            'since the fault' % binp)
            if f.tag == 'c':
                # the fault is there (and so 61's and 62's probe can fail)
                p = profile_allows(binp)
                if p.rc != 126:
                    errs.append('the profile libvirtd still lets a hook run %s: %s' % (binp, p))
                else:
                    notes.append('aa-exec -p libvirtd: exit 126')
                r = run([binp, 'check'], timeout=120)
                aa = [l for l in error_lines(r) if 'AppArmor' in l]
                if not aa:
                    errs.append('%s check (exit %s) reports no error naming AppArmor; its error lines: %s'
                                % (binp, r.rc, error_lines(r) or 'none'))
                else:
                    notes.append('check: %s' % aa[0][:200])
        finally:
            f.undo()
        if errs:
            failures.append('(%s) %s%s: %s' % (f.tag, f.what, (' [%s]' % f.note) if f.note else '',
                                               '; '.join(errs)))
        else:
            notes.append('(%s) %s: %s started, "%s"' % (f.tag, f.what, ' and '.join(doms),
                                                         lines[-1][:160]))
    # restored: the hook runs bbvirt again
    guests_off(lab)
    settle()
    try:
        t = lab.start('guestA')
        lab.wait_state({'guestA': [k, a]}, t, 'guestA\'s devices through the hook, the binary restored')
        t = lab.start('guestB')
        lab.timing('restored: start guestB->attached', lab.wait_state(
            {'guestA': [k, a], 'guestB': [b]}, t, 'guestB\'s device through the hook, the binary restored'))
    except Failure as e:
        failures.append('after the faults were undone: %s' % e)
    lab.notes.extend(notes)
    check(not failures, '\n'.join(failures))
