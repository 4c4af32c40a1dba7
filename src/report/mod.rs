//! What the two reports, `bbvirt status` and `bbvirt devices`, both show
//! and how they look at it: the live domains libvirt shows ([`live`]),
//! where vm.conf sends each device ([`routes`]), the devices this host
//! serves ([`served`]), whether libvirt and sysfs could be read, and the
//! aligned table both draw. It sits below both so that a listing of the
//! devices does not depend on the status report: each report keeps only
//! what it alone shows.

use serde::Serialize;

pub mod live;
pub mod routes;
pub mod served;

pub use live::{DomainState, LiveDomain, Seen, look_at_libvirt, uri_of};
pub use routes::{Route, alias_of, routes_of};
pub use served::{ClientState, Served, ServedDevice, served_of};

/// Whether libvirt could be reached, and what went wrong if not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LibvirtStatus {
    pub reachable: bool,
    pub error: Option<String>,
}

/// Whether sysfs could be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysfsStatus {
    pub error: Option<String>,
}

/// Appends an aligned table: two spaces of indent and between columns
/// (`bbvirt status` and `bbvirt devices` draw their tables with it).
pub fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(header.len()) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::from(" ");
        for (cell, w) in row.iter().zip(&widths) {
            line.push(' ');
            line.push_str(cell);
            let pad = w.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad + 1));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}
