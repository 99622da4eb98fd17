//! The bundled client against a real in-process server.

mod common;

use bankcache_client::{Client, Error};
use common::in_process::InProcess;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct User {
    name: String,
    age: u32,
}

/// Typed values round-trip, a missing key is `None`, and server errors keep their message.
#[test]
fn typed_round_trips_and_errors() {
    let server = InProcess::start();
    let mut c = Client::connect(server.addr).unwrap();
    c.ping().unwrap();
    let ann = User { name: "ann".into(), age: 41 };
    c.put("users", "ann", &ann, None).unwrap();
    assert_eq!(c.get::<User>("users", "ann").unwrap(), Some(ann));
    assert_eq!(c.get::<User>("users", "bob").unwrap(), None);
    c.put("n", "x", &5, Some(60.0)).unwrap();
    assert_eq!(c.incr("n", "x", 1.5).unwrap(), 6.5);
    assert!(c.touch("n", "x").unwrap());
    assert!(!c.touch("n", "y").unwrap());
    assert_eq!(c.bank_keys("users").unwrap(), ["ann"]);
    assert_eq!(c.bank_list().unwrap(), ["users", "n"]);
    match c.incr("users", "ann", 1.0) {
        Err(Error::Server(m)) => {
            assert_eq!(m, "float() argument must be a string or a real number, not 'dict'")
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(c.delete("users", "ann").unwrap());
    assert!(!c.delete("users", "ann").unwrap());
    c.bank_reset("n").unwrap();
    assert!(c.bank_keys("n").unwrap().is_empty());
    assert_eq!(c.stats().unwrap()["ops_put"], 2);
}
