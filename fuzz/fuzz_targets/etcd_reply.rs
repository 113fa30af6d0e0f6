//! etcd's answers, as the cluster directory reads them (issue 16): hostile
//! or garbled JSON bodies and watch messages never panic, and whatever is
//! accepted stays within the directory's bounds (values ≤ 1 KiB).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::cluster::etcd::reply;
use tether::cluster::model::MAX_VALUE_BYTES;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 => {
            if let Ok(range) = reply::range(body) {
                let values = range.kvs.iter().filter_map(|kv| kv.value.as_ref());
                assert!(values.map(Vec::len).all(|n| n <= MAX_VALUE_BYTES));
            }
        }
        1 => drop(reply::txn(body)),
        2 => drop(reply::lease_grant(body)),
        3 => drop(reply::lease_keepalive(body)),
        4 => drop(reply::auth_token(body)),
        5 => drop(reply::watch_message(body)),
        _ => drop(reply::error(u16::from(which) * 3, body)),
    }
});
