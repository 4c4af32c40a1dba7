//! Which devices a guest gets: the questions every action asks of a
//! [`Config`] (who owns a serial, which present device each `DOMAIN_USB_`
//! element takes, every device of one guest, a guest by its libvirt name).
//! The answers live here once, so that sync, the hook, udev events,
//! `status`, `devices` and `check` can never disagree about a route.

use std::collections::HashMap;

use crate::device::is_valid_serial;
use crate::selector::Selector;

use super::{Config, DomainConf};

/// The routes of the present USB devices ([`Config::usb_routes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbRoutes {
    /// Per device, in the order given: (guest index, element index).
    pub route: Vec<Option<(usize, usize)>>,
    /// The flat element list the overlaps index: (guest, element).
    pub elements: Vec<(usize, usize)>,
    /// Devices several elements match, elements that match several devices.
    pub overlaps: Vec<crate::selector::Overlap>,
}

impl Config {
    /// The domain a serial is assigned to: the first in file order.
    pub fn domain_for_serial(&self, serial: &str) -> Option<&DomainConf> {
        self.domains
            .iter()
            .find(|d| d.serials.iter().any(|s| s == serial))
    }

    /// The guest that gets `serial`: None unless it is a BitBabbler serial
    /// (only those are ever routed), else the first domain that lists it
    /// ([`Config::domain_for_serial`]).
    pub fn owner_of(&self, serial: &str) -> Option<&DomainConf> {
        is_valid_serial(serial)
            .then(|| self.domain_for_serial(serial))
            .flatten()
    }

    /// Whether guest `d` gets `serial` ([`Config::owner_of`]).
    pub fn wins(&self, d: &DomainConf, serial: &str) -> bool {
        self.owner_of(serial).is_some_and(|f| f.id == d.id)
    }

    /// The serials guest `d` gets, in its list's order: the valid ones it
    /// wins ([`Config::wins`]).
    pub fn serials_of<'c>(&'c self, d: &'c DomainConf) -> impl Iterator<Item = &'c str> + 'c {
        d.serials
            .iter()
            .map(String::as_str)
            .filter(move |s| self.wins(d, s))
    }

    /// Who gets each of the present USB `devices` among the `DOMAIN_USB_`
    /// elements of all guests, in file order (guests in [`Config::domains`]
    /// order, then each guest's elements), by the rule of
    /// [`crate::selector`]: the most specific element, then the earlier one,
    /// one device per element. A device's route is Some((guest index,
    /// element index in that guest's list)).
    pub fn usb_routes(&self, devices: &[crate::selector::Candidate]) -> UsbRoutes {
        let elements: Vec<(usize, usize)> = self
            .domains
            .iter()
            .enumerate()
            .flat_map(|(d, dom)| (0..dom.usb.len()).map(move |e| (d, e)))
            .collect();
        let selectors: Vec<Selector> = elements
            .iter()
            .map(|&(d, e)| self.domains[d].usb[e].clone())
            .collect();
        let assignment = crate::selector::assign(&selectors, devices);
        UsbRoutes {
            route: assignment
                .owner
                .iter()
                .map(|o| o.map(|i| elements[i]))
                .collect(),
            elements,
            overlaps: assignment.overlaps,
        }
    }

    /// The present devices the `DOMAIN_USB_` elements share out, each with
    /// its route (guest index, element index; [`Config::usb_routes`]):
    /// every USB device in `usb` (sysfs order) except the BitBabblers that
    /// `DOMAIN_RNG_` gives a guest, which keep their serial's route. The one
    /// place that says which guest gets a device by an element.
    pub fn element_routes<'p>(
        &self,
        usb: &'p [crate::sysfs::UsbDevice],
    ) -> Vec<(&'p crate::sysfs::UsbDevice, Option<(usize, usize)>)> {
        let shared: Vec<&crate::sysfs::UsbDevice> = usb
            .iter()
            .filter(|d| {
                !(d.is_bitbabbler()
                    && d.serial
                        .as_deref()
                        .is_some_and(|s| self.owner_of(s).is_some()))
            })
            .collect();
        if self.domains.iter().all(|d| d.usb.is_empty()) {
            return shared.into_iter().map(|d| (d, None)).collect();
        }
        let candidates: Vec<_> = shared.iter().map(|d| d.candidate()).collect();
        let routes = self.usb_routes(&candidates);
        shared.into_iter().zip(routes.route).collect()
    }

    /// Whether some `DOMAIN_USB_` element matches `dev`. When none does,
    /// [`Config::element_routes`] gives `dev` no route whatever other
    /// devices are present: an element only ever takes a device it
    /// matches ([`crate::selector::assign`]).
    pub fn elements_may_take(&self, dev: &crate::sysfs::UsbDevice) -> bool {
        let candidate = dev.candidate();
        self.domains
            .iter()
            .flat_map(|d| &d.usb)
            .any(|e| e.matches(&candidate))
    }

    /// The present devices that guest `guest` (an index into `domains`)
    /// gets by its `DOMAIN_USB_` elements, each with the element's index:
    /// [`Config::element_routes`] for one guest. The hook and `sync` ask
    /// this.
    pub fn element_devices<'p>(
        &self,
        guest: usize,
        usb: &'p [crate::sysfs::UsbDevice],
    ) -> Vec<(&'p crate::sysfs::UsbDevice, usize)> {
        if self.domains.get(guest).is_none_or(|d| d.usb.is_empty()) {
            return Vec::new();
        }
        self.element_routes(usb)
            .into_iter()
            .filter_map(|(dev, route)| match route {
                Some((d, e)) if d == guest => Some((dev, e)),
                _ => None,
            })
            .collect()
    }

    /// Every present device guest `guest` (an index into `domains`) gets,
    /// with bbvirt's hostdev alias for it: the BitBabblers of its serials
    /// ([`Config::serials_of`], alias `ua-bbvirt-SERIAL`), then the devices
    /// its `DOMAIN_USB_` elements get ([`Config::element_devices`], alias
    /// [`crate::hostdev::usb_alias`]). The one answer to "which devices does
    /// this guest hold": sync, the hook and the saved-state rewrite ask it.
    pub fn guest_devices<'p>(
        &self,
        guest: usize,
        scan: &'p crate::sysfs::Scan,
    ) -> Vec<(String, &'p crate::sysfs::UsbDevice)> {
        let Some(d) = self.domains.get(guest) else {
            return Vec::new();
        };
        let mut out: Vec<(String, &crate::sysfs::UsbDevice)> = self
            .serials_of(d)
            .filter_map(|s| crate::sysfs::with_serial(&scan.devices, s))
            .map(|dev| {
                let serial = dev.serial.as_deref().unwrap_or_default();
                (crate::hostdev::alias_for(serial), dev)
            })
            .collect();
        for (dev, e) in self.element_devices(guest, &scan.usb) {
            if !out.iter().any(|(_, o)| o.name == dev.name) {
                out.push((
                    crate::hostdev::usb_alias(dev.id, &d.id, e, dev.serial.as_deref()),
                    dev,
                ));
            }
        }
        out
    }

    /// The index in `domains` of the guest libvirt calls `name` (its
    /// libvirt name, never a config id that maps to another name).
    pub fn guest_named(&self, name: &str) -> Option<usize> {
        self.domains.iter().position(|d| d.libvirt_name() == name)
    }

    /// The domain with config id or libvirt name `name`.
    pub fn find_domain(&self, name: &str) -> Option<&DomainConf> {
        self.domains
            .iter()
            .find(|d| d.id == name)
            .or_else(|| self.domains.iter().find(|d| d.libvirt_name() == name))
    }

    /// Serials listed by more than one domain, as
    /// `(serial, first_id, other_id)`: the first domain wins (see
    /// [`Config::domain_for_serial`]); the caller should warn about the rest.
    pub fn duplicates(&self) -> Vec<(String, String, String)> {
        let mut owner: HashMap<&str, &str> = HashMap::new();
        let mut out: Vec<(String, String, String)> = Vec::new();
        for d in &self.domains {
            for s in &d.serials {
                match owner.get(s.as_str()) {
                    None => {
                        owner.insert(s, &d.id);
                    }
                    Some(first) if *first != d.id => {
                        let dup = (s.clone(), first.to_string(), d.id.clone());
                        if !out.contains(&dup) {
                            out.push(dup);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_native;
    use std::path::Path;

    #[test]
    fn duplicates_first_wins() {
        let c = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_RNG_a=(S1 S2 S2)\nDOMAIN_RNG_b=(S2 S3)\nDOMAIN_RNG_c=(S1 S2)",
        )
        .unwrap();
        assert_eq!(
            c.duplicates(),
            vec![
                ("S2".into(), "a".into(), "b".into()),
                ("S1".into(), "a".into(), "c".into()),
                ("S2".into(), "a".into(), "c".into()),
            ]
        );
        assert_eq!(c.domain_for_serial("S2").map(|d| d.id.as_str()), Some("a"));
    }
    #[test]
    fn usb_routes_follow_specificity_then_file_order_one_device_each() {
        use crate::selector::{Candidate, UsbId};
        let c = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_USB_a=( \"id=10c4:ea60\" )\n\
             DOMAIN_USB_b=( \"id=10c4:ea60 port=1-5\" \"id=0658:0200\" )\n",
        )
        .unwrap();
        let cp = UsbId {
            vendor: 0x10c4,
            product: 0xea60,
        };
        let zw = UsbId {
            vendor: 0x0658,
            product: 0x0200,
        };
        let dev = |id, bus, ports: &'static [u32]| Candidate {
            id,
            serial: Some("0001"),
            bus,
            ports,
        };
        // Twins with serial 0001 at 1-4 and 1-5, a Z-Wave stick, a stranger.
        let other = UsbId {
            vendor: 0x046d,
            product: 0xc52b,
        };
        let devices = [
            dev(cp, 1, &[4]),
            dev(cp, 1, &[5]),
            dev(zw, 2, &[1]),
            dev(other, 2, &[2]),
        ];
        let r = c.usb_routes(&devices);
        // 1-5 goes to b's port element (more specific), 1-4 to a's.
        assert_eq!(r.route, [Some((0, 0)), Some((1, 0)), Some((1, 1)), None]);
        // a's id= element matches both twins: reported.
        assert!(!r.overlaps.is_empty());
        // Without the port element, a's element takes one twin (port
        // order) and the other stays with the host.
        let c = parse_native(
            Path::new("/t/vm.conf"),
            "DOMAIN_USB_a=( \"id=10c4:ea60\" )\n",
        )
        .unwrap();
        assert_eq!(
            c.usb_routes(&devices).route,
            [Some((0, 0)), None, None, None]
        );
    }
}
