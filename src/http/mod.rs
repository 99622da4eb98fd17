//! The HTTP front: a pure HTTP/1.1 codec (used by the reactor to split requests and by the routes to write
//! responses), the routes the workers run, and the Prometheus export.

pub mod codec;
mod metrics;
pub mod routes;
mod ui;
