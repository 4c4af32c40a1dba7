//! Can a guest take a USB device at all, and at what speed? Read from its
//! domain XML (the models of its USB controllers also tell the status what
//! an attached device's guest port runs at).
//!
//! Why: a guest without a USB controller cannot take a USB hostdev (every
//! attach fails), and a USB 1.1 controller (libvirt's default `piix3-uhci`
//! on the `pc` machine type) caps a BitBabbler far below its rate; the
//! bit-babbler documentation recommends an xHCI controller.
//!
//! The best controller of the guest counts (a guest may have several).
//! `model='none'` or no `<controller type='usb'>` at all is no controller.
//! A controller without a model is libvirt's default for the machine type:
//! USB 1.1 (`piix3-uhci`) on `pc`/i440fx, USB 2 or 3 on `q35`; on other
//! machines its speed is not known and nothing is said about it. Models
//! this module does not know are taken as usable, not guessed at.

/// The model of each USB controller in a domain XML, by its `index` (the
/// guest-side bus of [`crate::hostdev::UsbHostdev::guest_port`]); controllers
/// without a model are left out. With the hostdev's guest port this is what
/// libvirt can tell of a device's place without asking QEMU: the speed the
/// device negotiated is not in the XML (QEMU's `info usb` has it), so bbvirt
/// shows the controller's generation ([`model_speed`]) instead.
pub fn controller_models(
    domain_xml: &str,
) -> Result<std::collections::BTreeMap<String, String>, roxmltree::Error> {
    let doc = roxmltree::Document::parse(domain_xml)?;
    Ok(usb_controllers(&doc)
        .filter_map(|c| {
            let model = c.attribute("model")?;
            Some((
                c.attribute("index").unwrap_or("0").to_string(),
                model.to_string(),
            ))
        })
        .collect())
}

/// The `<controller type='usb'>` elements under the domain's `<devices>`.
fn usb_controllers<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    doc.root_element()
        .children()
        .filter(|n| n.has_tag_name("devices"))
        .flat_map(|d| d.children())
        .filter(|n| n.has_tag_name("controller") && n.attribute("type") == Some("usb"))
}

/// The fix bbvirt suggests for a guest with no usable controller.
pub const XHCI_FIX: &str = "<controller type='usb' model='qemu-xhci'/>";

/// The USB generation of a controller model, as far as bbvirt cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Speed {
    /// The model is not known to bbvirt (or the default of an unknown machine).
    Unknown,
    /// UHCI/OHCI: 12 Mb/s.
    Usb1,
    /// EHCI: 480 Mb/s.
    Usb2,
    /// xHCI.
    Usb3,
}

impl Speed {
    /// For people: "USB 3", or "USB ?" when unknown.
    pub fn label(self) -> &'static str {
        match self {
            Speed::Unknown => "USB ?",
            Speed::Usb1 => "USB 1.1",
            Speed::Usb2 => "USB 2",
            Speed::Usb3 => "USB 3",
        }
    }
}

/// What the guest's USB controllers allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsbSupport {
    /// No USB controller (none defined, or `model='none'`).
    NoController,
    /// The best controller there is, by model (`default` for no model).
    Controller { model: String, speed: Speed },
}

impl UsbSupport {
    /// Whether a USB hostdev can be attached at all.
    pub fn can_attach(&self) -> bool {
        !matches!(self, UsbSupport::NoController)
    }

    /// Whether the only controllers are USB 1.1.
    pub fn usb1_only(&self) -> bool {
        matches!(
            self,
            UsbSupport::Controller {
                speed: Speed::Usb1,
                ..
            }
        )
    }
}

/// The speed of a libvirt USB controller model.
pub fn model_speed(model: &str) -> Speed {
    match model {
        m if m.contains("xhci") => Speed::Usb3,
        m if m.contains("ehci") || m == "qusb2" => Speed::Usb2,
        m if m.contains("uhci") || m.contains("ohci") || m == "qusb1" => Speed::Usb1,
        _ => Speed::Unknown,
    }
}

/// The speed of libvirt's default controller on this machine type.
fn default_speed(machine: Option<&str>) -> Speed {
    match machine {
        Some(m) if m == "pc" || m.starts_with("pc-i440fx") => Speed::Usb1,
        Some(m) if m == "q35" || m.starts_with("pc-q35") => Speed::Usb2,
        _ => Speed::Unknown,
    }
}

/// Reads the USB controllers of a domain XML (live or inactive).
pub fn usb_support(domain_xml: &str) -> Result<UsbSupport, roxmltree::Error> {
    let doc = roxmltree::Document::parse(domain_xml)?;
    let root = doc.root_element();
    let machine = root
        .children()
        .find(|n| n.has_tag_name("os"))
        .and_then(|os| os.children().find(|n| n.has_tag_name("type")))
        .and_then(|t| t.attribute("machine"));
    let best = usb_controllers(&doc)
        .filter_map(|c| match c.attribute("model") {
            Some("none") => None,
            Some(m) => Some((model_speed(m), m.to_string())),
            None => Some((default_speed(machine), "default".to_string())),
        })
        // Unknown sorts lowest but is never judged: prefer a known model.
        .max_by_key(|(speed, _)| *speed);
    Ok(match best {
        None => UsbSupport::NoController,
        Some((speed, model)) => UsbSupport::Controller { model, speed },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(machine: &str, controllers: &str) -> String {
        format!(
            "<domain type='qemu'><name>g</name>\
             <os><type arch='x86_64' machine='{machine}'>hvm</type></os>\
             <devices>{controllers}<memballoon model='none'/></devices></domain>"
        )
    }

    fn support(machine: &str, controllers: &str) -> UsbSupport {
        usb_support(&domain(machine, controllers)).unwrap()
    }

    #[test]
    fn no_controller_at_all_or_model_none_cannot_attach() {
        for c in ["", "<controller type='usb' index='0' model='none'/>"] {
            let s = support("pc-i440fx-9.2", c);
            assert_eq!(s, UsbSupport::NoController, "{c}");
            assert!(!s.can_attach());
        }
        // Other controller types are not USB.
        let s = support("pc", "<controller type='pci' index='0' model='pci-root'/>");
        assert_eq!(s, UsbSupport::NoController);
    }

    #[test]
    fn uhci_only_is_usb1() {
        let s = support(
            "pc-i440fx-9.2",
            "<controller type='usb' index='0' model='piix3-uhci'/>",
        );
        assert!(s.can_attach());
        assert!(s.usb1_only());
    }

    #[test]
    fn ehci_and_xhci_are_not_usb1_and_the_best_counts() {
        let s = support(
            "q35",
            "<controller type='usb' index='0' model='ich9-ehci1'/>",
        );
        assert_eq!(
            s,
            UsbSupport::Controller {
                model: "ich9-ehci1".into(),
                speed: Speed::Usb2
            }
        );
        let s = support(
            "pc",
            "<controller type='usb' index='0' model='piix3-uhci'/>\
             <controller type='usb' index='1' model='qemu-xhci' ports='15'/>",
        );
        assert_eq!(
            s,
            UsbSupport::Controller {
                model: "qemu-xhci".into(),
                speed: Speed::Usb3
            }
        );
        assert!(!s.usb1_only());
    }

    #[test]
    fn no_model_is_the_machines_default() {
        let c = "<controller type='usb' index='0'/>";
        assert!(support("pc-i440fx-7.2", c).usb1_only());
        assert!(support("pc", c).usb1_only());
        assert!(!support("pc-q35-10.0", c).usb1_only());
        assert_eq!(
            support("virt", c),
            UsbSupport::Controller {
                model: "default".into(),
                speed: Speed::Unknown
            }
        );
    }

    #[test]
    fn unknown_models_are_usable_and_not_judged() {
        let s = support("pc", "<controller type='usb' model='future-hci'/>");
        assert!(s.can_attach());
        assert!(!s.usb1_only());
    }

    #[test]
    fn controller_models_by_index() {
        let xml = domain(
            "pc",
            "<controller type='usb' index='0' model='piix3-uhci'/>\
             <controller type='usb' index='1' model='qemu-xhci' ports='15'/>\
             <controller type='usb' index='2'/>\
             <controller type='pci' index='0' model='pci-root'/>",
        );
        let models = controller_models(&xml).unwrap();
        assert_eq!(
            models.into_iter().collect::<Vec<_>>(),
            [
                ("0".to_string(), "piix3-uhci".to_string()),
                ("1".to_string(), "qemu-xhci".to_string())
            ]
        );
    }

    #[test]
    fn bad_xml_is_an_error_not_a_panic() {
        assert!(usb_support("<domain><devices>").is_err());
        assert!(usb_support("").is_err());
        assert!(controller_models("<domain").is_err());
    }
}
