//! Feeds arbitrary bytes to the frame decoder: it must return Ok or Err, never panic, and
//! never allocate beyond the frame limits (libFuzzer's `-rss_limit_mb` catches that).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gpufn_proto::frame::fuzz_one(data);
});
