"""Scenario 21: any USB device, by DOMAIN_USB_ elements (issue 10).

   21 any usb        two CP210x sticks (10c4:ea60) that share the serial
                     "0001", routed to two guests by port; a Z-Wave stick
                     (0658:0200) without a serial, by id; a security key
                     (1050:0407) by id and serial; a receiver (046d:c52b) that
                     no element matches stays on the host. Hotplug, unplug,
                     replug (new address, exactly once), coldplug through the
                     hook, and `status --json`.

The expected aliases are computed here by the rule bbvirt(1) documents
(ua-bbusb-VVVVPPPP-ID-eN-TAG), not read from bbvirt. Standard library only.
"""

import json
import re

from ..core import BASE_CONF, bus_of_udc, check, scenario


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
