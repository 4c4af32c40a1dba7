"""Scenarios 21 and 22: any USB device, by DOMAIN_USB_ elements (issues 10
and 16).

   21 any usb        two CP210x sticks (10c4:ea60) that share the serial
                     "0001", routed to two guests by port; a Z-Wave stick
                     (0658:0200) without a serial, by id; a security key
                     (1050:0407) by id and serial; a receiver (046d:c52b) that
                     no element matches stays on the host. Hotplug, unplug,
                     replug (new address, exactly once), coldplug through the
                     hook, and `status --json`.
   22 devices        the same devices, plugged while vm.conf names none:
                     `bbvirt devices --json` lists each with the element the
                     lab expects (the twins by port, saying so, the others by
                     id), on the host; a vm.conf made only of those
                     suggestions, each given to the guest 21 expects, routes
                     every device there (`sync`, then a replug through udev);
                     `devices` then names each one's guest.

The expected aliases and elements are computed here, by the rules bbvirt(1)
documents (ua-bbusb-VVVVPPPP-ID-eN-TAG; the shortest of id, id+serial,
id+port that selects only the device), not read from bbvirt. Standard
library only.
"""

import json
import re

from ..core import BASE_CONF, GUESTS, Failure, bus_of_udc, check, now, scenario


def usb_alias(vendor, product, guest, element, serial):
    """bbvirt(1)'s alias for a device a DOMAIN_USB_ element routes."""
    if serial is None:
        tag = 'noserial'
    elif 1 <= len(serial) <= 32 and re.fullmatch(r'[A-Za-z0-9_-]+', serial):
        tag = serial
    else:
        h = 0x811c9dc5
        for b in serial.encode():
            h = ((h ^ b) * 0x01000193) & 0xffffffff
        tag = 'h%08x' % h
    return 'ua-bbusb-%s%s-%s-e%d-%s' % (vendor, product, guest, element, tag)


# key: (vendor, product, serial)
DEVICES = {
    'zigbee-a': ('10c4', 'ea60', '0001'),
    'zigbee-b': ('10c4', 'ea60', '0001'),
    'zwave': ('0658', '0200', None),
    'key': ('1050', '0407', '12345678'),
    'receiver': ('046d', 'c52b', 'RCV1'),
}


@scenario(21, 'any usb', demo=True)
def sc_any_usb(lab):
    lab.reset()
    for key, (v, p, serial) in DEVICES.items():
        lab.usb_gadget(key, v, p, serial)
    used = {g.udc for g in lab.gadgets.values() if g.udc}
    free = [u for u in lab.udcs if u not in used]
    check(len(free) >= len(DEVICES), 'need %d free UDCs, have %s' % (len(DEVICES), free))
    udc = dict(zip(DEVICES, free))
    port = {k: '%d-1' % bus_of_udc(u) for k, u in udc.items()}
    conf = BASE_CONF + (
        'DOMAIN_USB_guestA=( "id=10c4:ea60 port=%s"   # the twins, told apart by port\n'
        '                    "id=0658:0200" )        # no serial\n'
        'DOMAIN_USB_guestB=( "id=10c4:ea60 port=%s"\n'
        '                    "id=1050:0407 serial=12345678" )\n'
        % (port['zigbee-a'], port['zigbee-b']))
    lab.write_conf(conf)
    lab.step('Not only BitBabblers: vm.conf gives USB devices of any kind by DOMAIN_USB_ '
             'elements:\n' + '\n'.join('     ' + l for l in conf.splitlines() if 'DOMAIN_USB' in l or '"id=' in l))
    lab.say('Plug two CP210x sticks that share the serial "0001" (ports %s and %s), a Z-Wave '
            'stick without a serial, a security key and a receiver that no element names.'
            % (port['zigbee-a'], port['zigbee-b']))
    where = {'zigbee-a': ('guestA', 0), 'zwave': ('guestA', 1),
             'zigbee-b': ('guestB', 0), 'key': ('guestB', 1)}

    def plug(key):
        d = lab.plug_usb(key, udc[key])
        v, p, _ = DEVICES[key]
        if key in where:
            guest, e = where[key]
            d._alias = usb_alias(v, p, guest, e, d.serial)
        return d

    # hotplug: each device into its guest, the receiver nowhere
    devs = {k: plug(k) for k in DEVICES}
    want = {'guestA': [devs['zigbee-a'], devs['zwave']],
            'guestB': [devs['zigbee-b'], devs['key']]}
    t0 = min(d.t_plug for d in devs.values())
    secs = lab.wait_state(want, t0, 'every device in its guest')
    lab.timing('plug->all attached', secs)
    lab.hold(want, 'after hotplug (the receiver on the host)')
    lab.show(since=t0)

    # unplug one twin: its entry goes, the other twin stays
    lab.step('Unplug the stick at %s, then plug it back: it leaves guestA and comes back, '
             'at a new address, exactly once; its twin stays in guestB.' % port['zigbee-a'])
    t = lab.unplug_usb('zigbee-a')
    want['guestA'] = [devs['zwave']]
    lab.timing('unplug->detached', lab.wait_state(want, t, 'zigbee-a detached'))
    lab.hold(want, 'after unplugging one twin')

    # replug it: a new address, attached exactly once
    old = devs['zigbee-a']
    d = plug('zigbee-a')
    check((d.bus, d.dev) != (old.bus, old.dev), 'replug kept the address %s' % old.busdev)
    want['guestA'] = [d, devs['zwave']]
    lab.timing('replug->attached', lab.wait_state(want, d.t_plug, 'zigbee-a back in guestA'))
    lab.hold(want, 'after replug (exactly once, at %s)' % d.busdev)
    lab.show(since=d.t_plug)
    lab.notes.append('zigbee-a %s -> %s' % (old.busdev, d.busdev))

    # coldplug: guestB restarted with its devices plugged in: the hook
    lab.destroy('guestB')
    want.pop('guestB')
    lab.hold(want, 'guestB shut off')
    t = lab.start('guestB')
    want['guestB'] = [devs['zigbee-b'], devs['key']]
    lab.timing('start->attached', lab.wait_state(want, t, 'guestB started with its devices'))
    lab.hold(want, 'after guestB started')

    # status: every routed device with its element, healthy
    r = lab.bbvirt('status', '--json', ok=False)
    check(r.rc == 0, 'status: exit %s: %s' % (r.rc, r))
    st = json.loads(r.out)
    by_alias = {x['alias']: x for x in st['devices'] if x.get('alias')}
    for key, (guest, e) in where.items():
        dev = d if key == 'zigbee-a' else devs[key]
        x = by_alias.get(dev.alias)
        check(x is not None, 'status lists no device with alias %s: %s' % (dev.alias, st['devices']))
        check(x['matched_by'] == 'DOMAIN_USB_%s[%d]' % (guest, e), 'status: %s matched_by %r' % (key, x['matched_by']))
        check(x['state'] == 'attached', 'status: %s state %r' % (key, x['state']))
    check(not any(x['id'] == '046d:c52b' for x in st['devices']), 'status lists the receiver: %s' % st['devices'])
    lab.notes.append('aliases: %s' % ', '.join(sorted(by_alias)))
    lab.unplug_all()


# Where scenario 21 sends each device (the receiver stays on the host).
WHERE = {'zigbee-a': 'guestA', 'zwave': 'guestA', 'zigbee-b': 'guestB', 'key': 'guestB'}


def expected_element(key, port):
    """The element bbvirt(1) says `devices` suggests for DEVICES[key] among
    DEVICES: the shortest of id, id+serial, id+port that selects only it."""
    v, p, serial = DEVICES[key]
    same_id = [k for k, d in DEVICES.items() if k != key and d[:2] == (v, p)]
    if not same_id:
        return 'id=%s:%s' % (v, p), 'id', None
    if serial and all(DEVICES[k][2] != serial for k in same_id):
        return 'id=%s:%s serial=%s' % (v, p, serial), 'id_serial', None
    return 'id=%s:%s port=%s' % (v, p, port[key]), 'id_port', 'same_serial' if serial else 'no_serial'


def devices_json(lab):
    """`bbvirt devices --json`, exit 0, schema 2: {port: device}."""
    r = lab.bbvirt('devices', '--json', ok=False)
    check(r.rc == 0, 'bbvirt devices --json: exit %s: %s' % (r.rc, r))
    try:
        j = json.loads(r.out)
    except ValueError as e:
        raise Failure('bbvirt devices --json printed no JSON (%s): %s' % (e, r))
    check(j.get('schema') == 2, 'devices --json: schema %r, want 2' % j.get('schema'))
    check(j['libvirt']['reachable'] and j['sysfs']['error'] is None and j['config']['error'] is None,
          'devices --json: libvirt %s, sysfs %s, config %s' % (j['libvirt'], j['sysfs'], j['config']))
    return {d['port']: d for d in j['devices']}


@scenario(22, 'devices')
def sc_devices(lab):
    lab.reset()
    for key, (v, p, serial) in DEVICES.items():
        lab.usb_gadget(key, v, p, serial)
    used = {g.udc for g in lab.gadgets.values() if g.udc}
    free = [u for u in lab.udcs if u not in used]
    check(len(free) >= len(DEVICES), 'need %d free UDCs, have %s' % (len(DEVICES), free))
    udc = dict(zip(DEVICES, free))
    port = {k: '%d-1' % bus_of_udc(u) for k, u in udc.items()}
    lab.step('A new user plugs devices in and asks bbvirt which is which: `bbvirt devices`.')
    devs = {k: lab.plug_usb(k, udc[k]) for k in DEVICES}
    lab.hold({}, 'plugged, vm.conf naming none of them: every device on the host')

    # Each device listed with the element the lab expects, on the host.
    seen = devices_json(lab)
    check(sorted(seen) == sorted(port.values()),
          'devices lists %s, want exactly the ports %s (root hubs aside)' % (sorted(seen), sorted(port.values())))
    table = lab.bbvirt('devices').out
    for key, (v, p, serial) in DEVICES.items():
        d, x = devs[key], seen[port[key]]
        what = '%s at %s' % (key, port[key])
        check((x['id'], x['serial'], x['address'], x['product'], x['manufacturer'])
              == ('%s:%s' % (v, p), serial, '%03d:%03d' % (d.bus, d.dev), 'emulated USB device', 'bbvirt lab'),
              '%s: devices says %s' % (what, x))
        check(x['guest'] is None and not x['hostdevs'], '%s: not on the host: %s' % (what, x))
        element, keys, because = expected_element(key, port)
        s = x['suggestion'] or {}
        check((s.get('element'), s.get('keys'), s.get('port_because')) == (element, keys, because),
              '%s: suggested %s, want %r (%s, %s)' % (what, s, element, keys, because))
        if keys == 'id_port':
            twins = ['%03d:%03d' % (devs[k].bus, devs[k].dev) for k in DEVICES
                     if k != key and DEVICES[k] == DEVICES[key]]
            check(s['twins'] == twins, '%s: twins %s, want %s' % (what, s['twins'], twins))
        check(s['word'] in table, '%s: the table does not show %s:\n%s' % (what, s['word'], table))
    lab.notes.append('suggested: ' + ', '.join('%s %s' % (k, seen[port[k]]['suggestion']['element'])
                                                 for k in DEVICES))

    # A vm.conf made only of those suggestions, each to the guest 21 expects.
    conf = '# bbvirt lab: only the elements `bbvirt devices --json` suggested\n'
    index = {}
    for guest in GUESTS:
        keys = [k for k in DEVICES if WHERE.get(k) == guest]
        for i, k in enumerate(keys):
            index[k] = i
        conf += 'DOMAIN_USB_%s=( %s )\n' % (guest, ' '.join(seen[port[k]]['suggestion']['word'] for k in keys))
    lab.write_conf(conf)
    lab.step('Paste each suggestion into vm.conf for its guest:\n' +
             '\n'.join('     ' + l for l in conf.splitlines()))
    r = lab.bbvirt('check', ok=False)
    check(r.rc == 0, 'bbvirt check on the suggestions: %s' % r)
    for key in WHERE:
        v, p, _ = DEVICES[key]
        devs[key]._alias = usb_alias(v, p, WHERE[key], index[key], devs[key].serial)
    want = {g: [devs[k] for k in DEVICES if WHERE.get(k) == g] for g in GUESTS}
    t = now()
    lab.bbvirt('sync')
    lab.timing('sync->attached', lab.wait_state(want, t, 'every device where 21 expects, by the suggestions'))
    lab.hold(want, 'after sync (the receiver on the host)')
    lab.show(since=t)

    # udev's path too: a twin unplugged and plugged back into its port.
    t = lab.unplug_usb('zigbee-a')
    want['guestA'] = [devs['zwave']]
    lab.timing('unplug->detached', lab.wait_state(want, t, 'zigbee-a detached'))
    d = lab.plug_usb('zigbee-a', udc['zigbee-a'])
    d._alias = devs['zigbee-a'].alias
    devs['zigbee-a'] = d
    want['guestA'] = [d, devs['zwave']]
    lab.timing('replug->attached', lab.wait_state(want, d.t_plug, 'zigbee-a back in guestA by its port'))
    lab.hold(want, 'after the replug')

    # devices now names each one's guest; the receiver stays on the host.
    seen = devices_json(lab)
    for key in DEVICES:
        d, x = devs[key], seen[port[key]]
        guest = WHERE.get(key)
        check(x['guest'] == guest, '%s: devices says guest %r, want %r' % (key, x['guest'], guest))
        if guest is None:
            check(not x['hostdevs'] and x['matched_by'] is None, 'receiver: %s' % x)
            continue
        hd = [(h['domain'], h['alias'], h['bus'], h['dev'], h['found_by']) for h in x['hostdevs']]
        check(hd == [(guest, d.alias, d.bus, d.dev, 'address')], '%s: hostdevs %s' % (key, hd))
        check(x['matched_by'] == 'DOMAIN_USB_%s[%d]' % (guest, index[key]),
              '%s: matched_by %r' % (key, x['matched_by']))
        check(any(h['guest'] == guest for h in x['held_by']),
              "%s: %s's QEMU does not hold its node: %s" % (key, guest, x['held_by']))
    lab.notes.append('drivers in a guest: %s' % seen[port['key']]['drivers'])
    lab.unplug_all()
