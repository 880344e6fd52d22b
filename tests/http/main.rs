//! authrun's HTTP behaviour, driven in-process through the router and over real TCP on 127.0.0.1, with real
//! scripts in temp dirs and a manual clock.

mod helpers;
mod smoke;
