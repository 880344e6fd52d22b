//! What stands between the network and the routes: the edge (security headers, panic guard, log line,
//! the names answered), the client's address behind trusted proxies, and the cross-site checks of form
//! posts.

pub mod client_ip;
pub mod csrf;
pub mod edge;
pub mod host;
pub mod origin;
