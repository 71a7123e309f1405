//! A stored document record of any bytes: decoded or reported corrupt,
//! never a panic; what decodes survives an encode/decode round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (key, record) = data.split_at(data.len().min(data.first().map_or(0, |b| *b as usize % 8)));
    if settee::fuzz_hooks::decode_record(key, record) {
        // decode_record already checked the round trip.
    }
});
