//! The NIP-86 management API: admins change the relay's rules at run time.
//!
//! - [`nip98`]: HTTP authorization by a signed event;
//! - [`methods`]: what each method reads or changes;
//! - [`endpoint`]: the HTTP side, answers and status codes;
//! - [`client`]: the `starling admin` command, which calls the API.
//!
//! Architecture invariant: the API changes rules only through [`Node::change_rules`],
//! which stores the change with its audit record and applies it on every node; nothing
//! here holds rules of its own.
//!
//! [`Node::change_rules`]: crate::node::Node::change_rules

pub mod client;
pub mod endpoint;
pub mod methods;
pub mod nip98;

pub use endpoint::Replays;
