//! The CUDA runtime's integrity check (export table `d4082055…`, slot 1).
//!
//! The runtime asks the driver for a 16-byte keyed hash and compares it with its own
//! computation; a wrong answer makes every runtime call fail with
//! `cudaErrorSoftwareValidityNotEstablished`. The construction is HMAC over MD2 (RFC 1319)
//! with a fixed 16-byte key. The message is the driver version the stub reports, the
//! requested version, the caller's pid and thread, the addresses of two export tables and of
//! the check function itself, the caller's timestamp, and then UUID and PCI location of every
//! device. Versions ending in 0 or 1 are answered with fixed constants. (Layout as documented
//! in `shared/research/remoting.md` §1.2, from ZLUDA, LUPINE and other implementations.)

/// The MD2 substitution table (RFC 1319, built from the digits of pi).
const PI_SUBST: [u8; 256] = [
    41, 46, 67, 201, 162, 216, 124, 1, 61, 54, 84, 161, 236, 240, 6, 19, 98, 167, 5, 243, 192, 199,
    115, 140, 152, 147, 43, 217, 188, 76, 130, 202, 30, 155, 87, 60, 253, 212, 224, 22, 103, 66,
    111, 24, 138, 23, 229, 18, 190, 78, 196, 214, 218, 158, 222, 73, 160, 251, 245, 142, 187, 47,
    238, 122, 169, 104, 121, 145, 21, 178, 7, 63, 148, 194, 16, 137, 11, 34, 95, 33, 128, 127, 93,
    154, 90, 144, 50, 39, 53, 62, 204, 231, 191, 247, 151, 3, 255, 25, 48, 179, 72, 165, 181, 209,
    215, 94, 146, 42, 172, 86, 170, 198, 79, 184, 56, 210, 150, 164, 125, 182, 118, 252, 107, 226,
    156, 116, 4, 241, 69, 157, 112, 89, 100, 113, 135, 32, 134, 91, 207, 101, 230, 45, 168, 2, 27,
    96, 37, 173, 174, 176, 185, 246, 28, 70, 97, 105, 52, 64, 126, 15, 85, 71, 163, 35, 221, 81,
    175, 58, 195, 92, 249, 206, 186, 197, 234, 38, 44, 83, 13, 110, 133, 40, 132, 9, 211, 223, 205,
    244, 65, 129, 77, 82, 106, 220, 55, 200, 108, 193, 171, 250, 36, 225, 123, 8, 12, 189, 177, 74,
    120, 136, 149, 139, 227, 99, 232, 109, 233, 203, 213, 254, 59, 0, 29, 57, 242, 239, 183, 14,
    102, 88, 208, 228, 166, 119, 114, 248, 235, 117, 75, 10, 49, 68, 80, 180, 143, 237, 31, 26,
    219, 153, 141, 51, 159, 17, 131, 20,
];

/// The HMAC key (one MD2 block).
const KEY: [u8; 16] = [
    0x14, 0x6A, 0xDD, 0xAE, 0x53, 0xA9, 0xA7, 0x52, 0xAA, 0x08, 0x41, 0x36, 0x0B, 0xF5, 0x5A, 0x9F,
];

/// MD2 (RFC 1319).
#[derive(Clone)]
struct Md2 {
    /// The 48-byte transform state; its first 16 bytes are the digest.
    x: [u8; 48],
    checksum: [u8; 16],
    block: [u8; 16],
    filled: usize,
    last: u8,
}

impl Md2 {
    fn new() -> Self {
        Md2 {
            x: [0; 48],
            checksum: [0; 16],
            block: [0; 16],
            filled: 0,
            last: 0,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let i = self.filled;
            self.block[i] = b;
            self.checksum[i] ^= PI_SUBST[usize::from(b ^ self.last)];
            self.last = self.checksum[i];
            self.filled += 1;
            if self.filled == 16 {
                self.transform();
                self.filled = 0;
            }
        }
    }

    fn transform(&mut self) {
        for i in 0..16 {
            self.x[16 + i] = self.block[i];
            self.x[32 + i] = self.x[i] ^ self.block[i];
        }
        let mut t = 0u8;
        for round in 0..18u8 {
            for byte in self.x.iter_mut() {
                *byte ^= PI_SUBST[usize::from(t)];
                t = *byte;
            }
            t = t.wrapping_add(round);
        }
    }

    fn finish(mut self) -> [u8; 16] {
        let pad = 16 - self.filled;
        self.update(&vec![pad as u8; pad]);
        let checksum = self.checksum;
        self.update(&checksum);
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.x[..16]);
        out
    }
}

fn hmac_md2(message: &[u8]) -> [u8; 16] {
    let mut inner = Md2::new();
    inner.update(&KEY.map(|k| k ^ 0x36));
    inner.update(message);
    let inner = inner.finish();
    let mut outer = Md2::new();
    outer.update(&KEY.map(|k| k ^ 0x5c));
    outer.update(&inner);
    outer.finish()
}

/// What a device contributes to the check.
#[derive(Debug, Clone, Copy)]
pub struct DeviceIdentity {
    pub uuid: [u8; 16],
    pub pci_domain: i32,
    pub pci_bus: i32,
    pub pci_device: i32,
}

/// Everything the check covers besides the devices.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput {
    pub driver_version: u32,
    pub version: u32,
    pub pid: u32,
    pub thread: u32,
    pub cudart_table: usize,
    pub integrity_table: usize,
    pub function: usize,
    pub unix_seconds: u64,
}

/// The 16-byte answer, as two native-endian u64 words.
pub fn answer(input: &CheckInput, devices: &[DeviceIdentity]) -> [u64; 2] {
    match input.version % 10 {
        0 => return [0x3341_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8],
        1 => return [0x1841_181C_03CB_675C, 0x8ED3_83AA_1F4C_D1E8],
        _ => {}
    }
    // The C struct layout: four u32, three pointers, one u64 (48 bytes, no padding).
    let mut message = Vec::with_capacity(48 + devices.len() * 28);
    for word in [input.driver_version, input.version, input.pid, input.thread] {
        message.extend_from_slice(&word.to_ne_bytes());
    }
    for address in [input.cudart_table, input.integrity_table, input.function] {
        message.extend_from_slice(&(address as u64).to_ne_bytes());
    }
    message.extend_from_slice(&input.unix_seconds.to_ne_bytes());
    for device in devices {
        message.extend_from_slice(&device.uuid);
        for word in [device.pci_domain, device.pci_bus, device.pci_device] {
            message.extend_from_slice(&word.to_ne_bytes());
        }
    }
    let digest = hmac_md2(&message);
    let mut low = [0u8; 8];
    let mut high = [0u8; 8];
    low.copy_from_slice(&digest[..8]);
    high.copy_from_slice(&digest[8..]);
    [u64::from_ne_bytes(low), u64::from_ne_bytes(high)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md2_matches_rfc_1319_vectors() {
        let digest = |s: &str| {
            let mut md = Md2::new();
            md.update(s.as_bytes());
            hex(&md.finish())
        };
        assert_eq!(digest(""), "8350e5a3e24c153df2275c9f80692773");
        assert_eq!(digest("abc"), "da853b0d3f88d99b30283a69e6ded6bb");
        assert_eq!(
            digest(
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            "d5976f79d83d3a0dc9806c3c66f3efd8"
        );
    }

    #[test]
    fn inner_key_block_state_matches_the_published_trace() {
        // State after the key block, as recorded from a real runtime by ZLUDA's unit test.
        let mut md = Md2::new();
        md.update(&KEY.map(|k| k ^ 0x36));
        assert_eq!(hex(&md.x[..16]), "8b219a49e86d1aeef237f9b54a8c3c75");
        assert_eq!(hex(&md.checksum), "57a110860e60441e705f67d1eb67a13d");
    }

    #[test]
    fn versions_ending_in_0_and_1_get_constants_others_a_hash_of_the_input() {
        let input = CheckInput {
            driver_version: 13050,
            version: 13000,
            pid: 1,
            thread: 2,
            cudart_table: 3,
            integrity_table: 4,
            function: 5,
            unix_seconds: 6,
        };
        assert_eq!(answer(&input, &[])[0], 0x3341_181C_03CB_675C);
        let hashed = CheckInput {
            version: 13002,
            ..input
        };
        let a = answer(&hashed, &[]);
        let other_thread = answer(
            &CheckInput {
                thread: 9,
                ..hashed
            },
            &[],
        );
        assert_ne!(a, other_thread);
        let device = DeviceIdentity {
            uuid: [7; 16],
            pci_domain: 0,
            pci_bus: 1,
            pci_device: 0,
        };
        assert_ne!(a, answer(&hashed, &[device]));
    }
}
