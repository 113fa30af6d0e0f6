//! Several edge nodes sharing one actor directory on etcd (issue 16,
//! groundwork; nothing in the gateway uses it yet). `model` is the
//! directory's layout and rules without IO, `etcd` a small client of
//! etcd's JSON gateway, `directory` the threads that run the two for the
//! workers. Never reaches into `server`.

pub mod directory;
pub mod etcd;
pub mod model;
