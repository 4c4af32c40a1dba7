"""Each bbvirt log line once in the journal (issue 16): scenario 58, trixie.

bbvirt writes each message to stderr and, with --syslog (as
bbvirt-sync.service runs it) and in the libvirt hook, to syslog. Under
systemd a unit's stderr is a stream into the journal and /dev/log is the
journal's too: unless bbvirt tells the two apart, each line of the unit's
run reaches the journal twice under one pid, once by each transport
("bbvirt: attached ..." on stdout's, "attached ..." on syslog's).

  58 journal   the boot's journal: every bbvirt line of bbvirt-sync.service
               (there must be some) appears once per pid, and so does every
               other bbvirt line of the boot so far (udev's runs, the hook)
"""

import collections
import json
import subprocess

from ..core import act, check, scenario

SYNC = 'bbvirt-sync.service'


def boot_journal():
    """bbvirt's entries in the boot's journal, parsed: [dict]. (Not through
    core.run: the actions log gets a summary, not the JSON.)"""
    argv = ['journalctl', '-b', '-o', 'json', '--no-pager', '--all',
            'SYSLOG_IDENTIFIER=bbvirt', '+', '_COMM=bbvirt']
    p = subprocess.run(argv, capture_output=True, text=True, errors='replace', timeout=180)
    res = []
    for line in p.stdout.splitlines():
        try:
            res.append(json.loads(line))
        except ValueError:
            pass
    act('%s -> rc=%s, %d entries%s' % (' '.join(argv), p.returncode, len(res),
                                         (', stderr: ' + p.stderr.strip()) if p.stderr.strip() else ''))
    check(p.returncode == 0, 'journalctl failed (%s): %s' % (p.returncode, p.stderr.strip()))
    return res


def text(e):
    """An entry's message without the "bbvirt: " that bbvirt puts before its
    stderr lines (syslog's carry the ident in their own field)."""
    msg = e.get('MESSAGE', '')
    if isinstance(msg, list):
        msg = bytes(msg).decode(errors='replace')
    return msg[len('bbvirt: '):] if msg.startswith('bbvirt: ') else msg


def repeated(entries):
    """The (pid, text) pairs logged more than once: [(pid, text, [transport])]."""
    seen = collections.defaultdict(list)
    for e in entries:
        seen[(e.get('_PID', '?'), text(e))].append(e.get('_TRANSPORT', '?'))
    return [(pid, t, tr) for (pid, t), tr in seen.items() if len(tr) > 1]


@scenario(58, 'journal', platforms=('trixie',))
def sc_journal(lab):
    lab.syslog.sync()
    mine = boot_journal()
    # The unit's runs, by pid: a syslog line can lose its unit when the
    # process has ended before journald looks it up; the pid cannot.
    pids = {e.get('_PID') for e in mine if e.get('_SYSTEMD_UNIT') == SYNC}
    check(pids, 'no bbvirt line of %s in the boot\'s journal (%d bbvirt lines in all)' % (SYNC, len(mine)))
    sync = [e for e in mine if e.get('_PID') in pids]
    by_transport = collections.Counter(e.get('_TRANSPORT', '?') for e in sync)
    lab.notes.append('%s: %d runs (pids %s), %d lines (%s); %d bbvirt lines in the boot so far'
                     % (SYNC, len(pids), ', '.join(sorted(pids)), len(sync),
                        ', '.join('%s %d' % kv for kv in sorted(by_transport.items())), len(mine)))
    twice = repeated(sync)
    check(not twice, '%d of the %d lines of %s appear more than once under one pid: %s'
          % (len(twice), len(sync), SYNC,
             '; '.join('pid %s %r by %s' % (p, t, '+'.join(tr)) for p, t, tr in twice[:6])))
    # The same for everything else bbvirt logged in this boot (udev's
    # runs, the hook, the scenarios before this one).
    twice = repeated([e for e in mine if e.get('_PID') not in pids])
    check(not twice, 'bbvirt lines that appear more than once under one pid: %s'
          % '; '.join('pid %s %r by %s' % (p, t, '+'.join(tr)) for p, t, tr in twice[:6]))
