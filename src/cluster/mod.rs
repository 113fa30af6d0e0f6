//! Several edge nodes sharing one actor directory on etcd (issue 16,
//! groundwork; nothing in the gateway uses it yet). `model` is the
//! directory's layout and rules without IO. Never reaches into `server`.

pub mod model;
