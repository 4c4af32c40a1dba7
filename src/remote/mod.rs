//! USB over the network: a device plugged into an **exporting host** is
//! served there by `usbredirect` behind a TLS tunnel, and a guest on a
//! **hypervisor** gets it as a libvirt `<redirdev>`. This module holds the
//! pure, tested values of that path; the I/O is elsewhere: vm.conf's
//! `SERVE_USB_` ([`crate::config::serve`]) and `DOMAIN_REMOTE_`, `bbvirt
//! serve` ([`crate::serve`]), `bbvirt tunnels` ([`crate::tunnels`]), and a
//! guest's redirdevs synced by [`crate::actions`].
//!
//! - [`endpoint`]: `HOST:PORT` ([`endpoint::Endpoint`]: [`endpoint::Host`],
//!   [`endpoint::Port`]);
//! - [`element`]: the two vm.conf elements to come: a guest's
//!   `DOMAIN_REMOTE_<id>=( "HOST:PORT [tls=yes|no]" ... )`
//!   ([`element::RemoteElement`]) and an exporting host's
//!   `SERVE_USB_<port>="<DOMAIN_USB_ words> [tls=yes|no]"`
//!   ([`element::ServeElement`]).
//! - [`redirdev`]: the `<redirdev>` XML, its alias, and reading bbvirt's
//!   redirdevs back from a live domain XML.
//! - [`tunnel`]: the stunnel configuration of a host's TLS tunnels (server
//!   ones for its served devices, client ones for its guests' remote
//!   devices), and the ports that would clash.
//!
//! # Decisions
//!
//! - **TLS unless `tls=no` is written** ([`element::Transport`]): usbredir
//!   has no authentication nor encryption of its own, and what travels is a
//!   keyboard's keys or a token's secrets. Plaintext is only for a network
//!   the admin vouches for, and must be asked for by name: any other word
//!   than `tls=yes` or `tls=no` is an error, as is a second `tls=`.
//! - **The tunnel gives TLS, not libvirt**: the redirdev is plain
//!   `type='tcp'` with no `tls=` attribute, connecting to the local end of
//!   the tunnel. libvirt 11.3 hot-plugs a `tls='yes'` redirdev as plain
//!   TCP: the attribute would claim a protection the stream does not have.
//!   So the alias names the exporting host and port (the device), and the
//!   XML's `<source>` names where QEMU connects: two parameters of
//!   [`redirdev::redirdev_xml`].
//! - **Strict values, each with its own error naming it**: a port is
//!   1-65535 in plain decimal (no sign, space or leading zero); a host is a
//!   DNS name, an IPv4 address, or an IPv6 address in brackets (`[::1]`,
//!   as in URLs, so that `HOST:PORT` splits at the last ':' after the ']'
//!   with no guessing; a bare one is refused with a hint, a zone id
//!   `%eth0` refused: its interface name means nothing on another host).
//!   A name whose last label is all digits (`1.2.3`, `999.1.1.1`) is a
//!   mistyped address, refused rather than looked up in DNS. Control
//!   characters in a message are escaped ([`crate::text::escape_controls`]).
//! - **One alias per exporting host and port** (`ua-bbnet-...`,
//!   [`redirdev::alias_for`]), without the guest: an alias needs to be
//!   unique within one guest only, and the same remote device keeps its
//!   alias on every hypervisor, which migration needs. The mapping is one
//!   to one and reads back ([`redirdev::parse_alias`]); its prefix is none
//!   of the hostdevs' ([`crate::hostdev`]) nor their prefix, so each kind
//!   of bbvirt device is told from the others and from an admin's.
//! - **Seen without QMP**: `status` tells whether a remote device's stream
//!   is up from the kernel's socket tables and the guest's QEMU's sockets
//!   ([`crate::sockets`]), never through QEMU's monitor (libvirt taints a
//!   domain whose monitor is used directly); on an exporting host, from
//!   what listens or is connected on usbredirect's port.
//! - **`HOST:PORT` on the command line** (`attach`, `detach`,
//!   [`crate::device::DeviceArg`]): a word whose part before its first ':'
//!   is all digits is `BUS:DEV`; IPv6 is bracketed anyway, so the only
//!   words that could be either are `digits:digits`, and those stay what
//!   they always were.
//! - **Reuse**: XML attributes are escaped by [`crate::hostdev::escape_attr`],
//!   domain XML read with `roxmltree` into [`crate::hostdev::XmlError`],
//!   and `SERVE_USB_` words split and checked by [`crate::selector`].
//!
//! # The path (issue 23: built as far as the lab shows, scenarios 70-71;
//! # migration, save and restore still as designed, unproven)
//!
//! ```text
//!  exporting host                                hypervisor
//!  usbredirect --device B-D  <- stunnel server  <==TLS==  stunnel client <- QEMU usb-redir
//!  --as 127.0.0.1:INNER         HOST:PORT,               127.0.0.1:PORT     <redirdev> with
//!  (bbvirt-serve@PORT)          requireCert,             (one per remote)   <reconnect>
//!                               verifyChain
//! ```
//!
//! - **The engine is `usbredirect`, not USB/IP.** QEMU speaks usbredir
//!   natively, so the device goes straight into the guest's QEMU: moving
//!   the guest (migration, save/restore) is QEMU reconnecting its character
//!   device, with nothing on the hypervisor's own USB stack. USB/IP would
//!   make the device a local one of the hypervisor first (the `vhci-hcd`
//!   module and `usbip attach` on each hypervisor, and a detach and attach
//!   at every move), puts the hypervisor's kernel USB stack on the network's
//!   path, serves every exported device on one port, and has no
//!   authentication or encryption either.
//! - **What usbredirect 0.15 (Debian 13) does as a server**, read in its
//!   source (`tools/usbredirect.c`) and seen in the lab (scenario 70,
//!   2026-12-08): it binds the address given with `--as` (an IP literal);
//!   it serves one client: a second connection is accepted and closed at
//!   once ("Rejecting new connection: already connected to a client"), and
//!   the first keeps the device; it **exits when its client goes** (status
//!   0, seen), and with status 0 too when it cannot open its device (in
//!   the source). **An unplugged device is not an unplug for the guest**:
//!   usbredirect went on running and the guest's usb-redir device still
//!   said 480 Mb/s 30 s after the gadget was gone; only the server's end
//!   (its process killed) reaches the guest as an unplug (1.5 Mb/s within
//!   4 s, `../shared/LAB.md`). So one systemd unit per served device,
//!   started by bbvirt when the device comes, **stopped by bbvirt when it
//!   goes**, restarted after each client, and never restarted for a device
//!   that is gone (its exit status tells nothing). usbredirect 0.13
//!   (Debian 12) was reported to spin a CPU while it waits for a client;
//!   in the lab (74 on bookworm) a fresh one, as `bbvirt serve` runs after
//!   each client, used 7 % of a CPU waiting, and it keeps a second
//!   client's connection open without a byte where 0.15 closes it.
//! - **TLS by stunnel at both ends**, mutual, with certificates of one CA
//!   (`requireCert`, `verifyChain`): QEMU's own character-device TLS cannot
//!   be used, since libvirt 11.3 hot-plugs a `tls='yes'` redirdev as plain
//!   TCP. QEMU's plain leg stays on the hypervisor's loopback. Seen in the
//!   lab (scenario 70, exporting host in a network namespace): a running
//!   guest held the gadget at its own 480 Mb/s 3.1 s after the attach;
//!   every byte between the hosts was a TLS record; a client with no
//!   certificate, one of another CA, and a second valid one got nothing
//!   while the guest kept the device; with usbredirect serving again,
//!   `<reconnect>` (2 s) had the device back in the guest within 0.4 s.
//! - **Migration**: the XML a guest carries names `127.0.0.1:PORT`, the
//!   same on every hypervisor that has the same vm.conf; the destination's
//!   QEMU connects through its own stunnel while the source still holds the
//!   device, is refused (one client), and `<reconnect>` retries until the
//!   source's QEMU has gone and usbredirect serves again.

pub mod element;
pub mod endpoint;
pub mod redirdev;
pub mod tunnel;
