//! `ringq::record::decode_txn` on arbitrary bytes.
//!
//! Checks: decoding never panics; an accepted body re-encodes (with
//! `encode_txn`) to a body that decodes to the same operations, and to the
//! very same bytes (the encoding is canonical: every tag and flag must be 0
//! or 1, nothing may trail the last operation). A transaction holding a
//! `Checkout` or `Ack` is checked for the operations only: their ids may
//! come back in the other form, plain (tags 3 and 4, what a queue of
//! format 4 or older wrote for every list) or as runs (tags 11 and 12),
//! whichever the writer finds smaller.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringq::record::{Op, decode_txn, encode_txn};

fuzz_target!(|data: &[u8]| {
    let Ok(ops) = decode_txn(data) else {
        return;
    };
    let mut buf = Vec::with_capacity(data.len());
    encode_txn(&ops, &mut buf);
    let again = match decode_txn(&buf) {
        Ok(again) => again,
        Err(e) => panic!("re-encoded transaction does not decode: {e}"),
    };
    assert_eq!(again, ops, "operations changed across encode/decode");
    if !ops.iter().any(|op| matches!(op, Op::Checkout { .. } | Op::Ack { .. })) {
        assert_eq!(buf, data, "accepted body re-encodes to different bytes");
    }
});
