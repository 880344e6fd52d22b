//! What stands between the network and the routes: the edge (security headers, panic guard, log line,
//! the names answered), the client's address behind trusted proxies, the cross-site checks of form
//! posts, and the deadline of a request body.

pub mod body_deadline;
pub mod client_ip;
pub mod csrf;
pub mod edge;
pub mod host;
pub mod origin;
