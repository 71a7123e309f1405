//! A `_bulk_get` answer of any bytes: parsed or refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = settee::fuzz_hooks::parse_bulk_get(data);
});
