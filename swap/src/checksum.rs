//! Per-chunk checksums.
//!
//! xxh3-64 (xxhash-rust) rather than crc32c: on the reference 2-core x86-64 VM it hashes at
//! ~19.5 GB/s against crc32c's ~14.7 GB/s, i.e. at memcpy speed, so checksumming does not
//! become the bottleneck of host-tier swaps; and 64 bits make an undetected random corruption
//! (2^-64) negligible even over millions of chunks. The chunk index is the seed, so a chunk
//! written at the wrong position (or swapped with another) fails its check too.

/// The checksum of chunk `index` holding `data`.
pub fn chunk_checksum(index: u32, data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(data, u64::from(index))
}

/// The checksum of a manifest body.
pub fn manifest_checksum(body: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_part_of_the_checksum() {
        let data = [7u8; 100];
        assert_ne!(chunk_checksum(0, &data), chunk_checksum(1, &data));
    }

    #[test]
    fn one_flipped_bit_changes_the_checksum() {
        let mut data = vec![0u8; 8192];
        let before = chunk_checksum(3, &data);
        data[4000] ^= 0x10;
        assert_ne!(before, chunk_checksum(3, &data));
    }
}
