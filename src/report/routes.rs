//! Where vm.conf sends each present device, as a report shows it: its
//! guest, bbvirt's alias for it and the setting that does
//! ([`routes_of`], from [`crate::config::Config::element_routes`] and the
//! serials' owners). `status` and `devices` show the same routes.

use crate::config::DomainConf;
use crate::context::Context;
use crate::device::is_valid_serial;
use crate::hostdev::{alias_for, usb_alias};
use crate::sysfs::{Scan, UsbDevice};

/// Where vm.conf sends a device: its guest, bbvirt's alias for it, and
/// the setting that does (`DOMAIN_RNG_g1`, `DOMAIN_USB_ha[0]`).
pub struct Route<'c> {
    pub domain: &'c DomainConf,
    pub alias: String,
    pub by: String,
}

/// bbvirt's hostdev alias for a device: its route's, or (a BitBabbler with
/// a valid serial, assigned to no guest) its serial's, as when attached by
/// hand; None for any other device no guest gets.
pub fn alias_of(dev: &UsbDevice, route: Option<&Route>) -> Option<String> {
    match route {
        Some(r) => Some(r.alias.clone()),
        None => dev
            .serial
            .as_deref()
            .filter(|s| dev.is_bitbabbler() && is_valid_serial(s))
            .map(alias_for),
    }
}

/// The devices status shows, in sysfs order, with their routes: every
/// BitBabbler, and every other USB device a `DOMAIN_USB_` element gets.
pub fn routes_of<'s, 'c>(
    ctx: &Context<'c>,
    scan: &'s Scan,
) -> Vec<(&'s UsbDevice, Option<Route<'c>>)> {
    let config = ctx.config;
    let by_element = config.element_routes(&scan.usb);
    scan.usb
        .iter()
        .filter_map(|dev| {
            let rng = dev
                .serial
                .as_deref()
                .filter(|_| dev.is_bitbabbler())
                .and_then(|s| Some((s, config.owner_of(s)?)));
            if let Some((serial, d)) = rng {
                let by = format!("DOMAIN_RNG_{}", d.id);
                return Some((
                    dev,
                    Some(Route {
                        domain: d,
                        alias: alias_for(serial),
                        by,
                    }),
                ));
            }
            let element = by_element
                .iter()
                .find(|(d, _)| *d == dev)
                .and_then(|(_, r)| *r)
                .map(|(d, e)| {
                    let domain = &config.domains[d];
                    Route {
                        domain,
                        alias: usb_alias(dev.id, &domain.id, e, dev.serial.as_deref()),
                        by: format!("DOMAIN_USB_{}[{e}]", domain.id),
                    }
                });
            (element.is_some() || dev.is_bitbabbler()).then_some((dev, element))
        })
        .collect()
}
