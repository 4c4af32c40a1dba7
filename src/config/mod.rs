//! vm.conf: which devices belong to which libvirt guest (BitBabblers by
//! serial, any USB device by `DOMAIN_USB_` elements).
//!
//! The file (by default [`DEFAULT_CONFIG`]) is, per the bit-babbler manual, a
//! bash fragment that the original `bbvirt` script simply sourced.  Per guest,
//! with `<id>` a shell identifier:
//!
//! - `DOMAIN_RNG_<id>=( SERIAL ... )`: the serials passed through to that guest;
//! - `DOMAIN_URI_<id>="URI"`: the libvirt connection URI (optional);
//! - `DOMAIN_NAME_<id>="name"`: the libvirt domain name when it is not a shell
//!   identifier (optional, e.g. `kbsd-unstable`);
//! - `DOMAIN_USB_<id>=( "MATCH" ... )`: USB devices of any kind, one element
//!   per device, each `id=VVVV:PPPP`, `serial=S`, `port=BUS-PORT[.PORT...]`
//!   words ([`crate::selector`]; the original script ignores this variable).
//!   A malformed element is an error at its line.
//!
//! # How the file is read
//!
//! 1. **Permissions first.**  The file decides which guest gets which
//!    device, and in bash mode it is executed, so before using it at all we
//!    refuse a file that someone other than root (or, when not running as
//!    root, the invoking user) could have written: see [`check_permissions`].
//! 2. **Native parse.**  Almost every real vm.conf is a list of plain
//!    assignments.  [`parse_native`] understands that subset of bash exactly
//!    (quoting, escapes, multi-line arrays, comments, `+=`, `declare`/`export`/
//!    `readonly` prefixes, concatenation, `;`) without executing anything: it
//!    is safe and fast, and gives `FILE:LINE: message` errors for mistakes it
//!    can be sure of (unterminated quote or array, DOS line endings, bad bytes).
//! 3. **Bash fallback.**  The manual lets admins build the file dynamically
//!    (loops, `$VAR`, command substitution...).  As soon as the native parser
//!    meets anything outside its subset it stops and the file is evaluated by
//!    `/bin/bash` instead ([`eval_with_bash`]), with a fixed script, an empty
//!    environment, no stdin and a timeout; the variables are read back through
//!    a NUL-separated dump, never by parsing `declare -p` output.
//! 4. **Validation, setting by setting.**  Either way the variables then
//!    become a [`Config`] one setting at a time ([`Validated`]): a wrong
//!    setting (a malformed `DOMAIN_USB_` element, a bad `BBVIRT_TIMEOUT`) is
//!    an error of its own and the rest is still known. Every action wants
//!    all or nothing ([`load_report`]: any error fails the run); `check`
//!    takes the rest with the errors ([`load_lenient`]) and checks it too.
//!
//! # Domains and their order
//!
//! A domain is every `<id>` that has any of these variables set (an
//! empty array `DOMAIN_RNG_x=()` counts; a bare `declare -a DOMAIN_RNG_x` does
//! not, as in bash).  Empty `DOMAIN_URI_`/`DOMAIN_NAME_` values mean "not set",
//! as in the original script.  With the native parser domains are in order of
//! the first assignment of any of their variables in the file; in bash mode
//! the order is alphabetical by id (bash cannot tell us the file order).  When
//! a serial is listed by two domains the first one in that order wins
//! ([`Config::domain_for_serial`], [`Config::duplicates`]).
//!
//! # The modules
//!
//! One job each: `types` (what a configuration is: [`Config`],
//! [`DomainConf`], [`SourceLines`]), `load` (which file, and the steps
//! above in order), `perms` (step 1), `native` (step 2), `bash` (step 3),
//! `validate` (step 4), `serve` (an exporting host's `SERVE_USB_`
//! settings), `routes` (which devices a guest gets), `error` (why a file
//! cannot be used). Callers name them all through this module.

mod bash;
mod error;
mod load;
mod native;
mod perms;
mod routes;
pub mod serve;
mod types;
mod validate;

pub use bash::{BASH, BASH_TIMEOUT};
pub use error::{ConfigError, NativeError};
pub use load::{
    CONFIG_DIR, DEFAULT_CONFIG, Loaded, Via, config_path, eval_with_bash, load_lenient,
    load_report, resolve_config_path,
};
pub use native::{parse_bytes, parse_native};
pub use perms::check_permissions;
pub use routes::UsbRoutes;
pub use types::{Config, DomainConf, SourceLines};
pub use validate::{TIMEOUT_VAR, Validated};

use types::VarLines;
use validate::{RawVar, validate};
