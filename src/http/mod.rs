//! The HTTP front: a pure HTTP/1.1 codec and the routes the workers run.

pub mod codec;
pub mod routes;
