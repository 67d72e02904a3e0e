#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| trainprov_fuzz::datacheck_parquet(data));
