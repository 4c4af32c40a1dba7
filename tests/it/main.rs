//! bbvirt's integration tests, in one crate (one link of libvirt, one
//! build): each module tests one part from the outside, through the
//! library's API or the built binary; [`util`] holds what they share.

mod util;

mod actions;
mod check;
mod cli;
mod config_corpus;
mod config_fuzz;
mod deadline;
mod devices;
mod event;
mod event_diff;
mod hook_script;
mod hostile;
mod install;
mod remote;
mod remote_status;
mod saved;
mod status;
mod sysfs;
