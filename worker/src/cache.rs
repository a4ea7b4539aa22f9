//! Module images by content hash, shared by every session of a worker, so a program that
//! loads an image another session already sent never uploads it again
//! (`ModuleLoad { inline: false }`). Bounded by total bytes; the least recently used image
//! goes first.

use gpufn_proto::message::ImageHash;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The SHA-256 of an image, as clients name it.
pub fn hash_image(image: &[u8]) -> ImageHash {
    ImageHash(Sha256::digest(image).into())
}

/// A bounded, shared store of module images.
#[derive(Debug)]
pub struct ModuleCache {
    capacity: u64,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    images: HashMap<ImageHash, Entry>,
    bytes: u64,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    image: Arc<[u8]>,
    last_used: u64,
}

impl ModuleCache {
    pub fn new(capacity: u64) -> Self {
        ModuleCache {
            capacity,
            inner: Mutex::new(Entries::default()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        // The map is consistent after every statement, so a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The image with this hash, if cached.
    pub fn get(&self, hash: &ImageHash) -> Option<Arc<[u8]>> {
        let mut entries = self.entries();
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.images.get_mut(hash)?;
        entry.last_used = now;
        Some(entry.image.clone())
    }

    /// Keeps `image` under `hash` (which the caller has verified), evicting the least
    /// recently used images beyond the capacity. Images larger than the whole cache are not
    /// kept.
    pub fn insert(&self, hash: ImageHash, image: Arc<[u8]>) {
        let size = image.len() as u64;
        if size > self.capacity {
            return;
        }
        let mut entries = self.entries();
        entries.clock += 1;
        let now = entries.clock;
        if let Some(old) = entries.images.insert(
            hash,
            Entry {
                image,
                last_used: now,
            },
        ) {
            entries.bytes -= old.image.len() as u64;
        }
        entries.bytes += size;
        while entries.bytes > self.capacity {
            let oldest = entries
                .images
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(h, _)| *h);
            let Some(oldest) = oldest else { break };
            if let Some(e) = entries.images.remove(&oldest) {
                entries.bytes -= e.image.len() as u64;
            }
        }
    }

    /// Bytes of images held.
    pub fn bytes(&self) -> u64 {
        self.entries().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(byte: u8, len: usize) -> (ImageHash, Arc<[u8]>) {
        let data: Arc<[u8]> = vec![byte; len].into();
        (hash_image(&data), data)
    }

    #[test]
    fn keeps_images_by_hash_and_evicts_the_least_recently_used() {
        let cache = ModuleCache::new(250);
        let (a, da) = image(1, 100);
        let (b, db) = image(2, 100);
        let (c, dc) = image(3, 100);
        cache.insert(a, da.clone());
        cache.insert(b, db);
        assert_eq!(cache.get(&a).as_deref(), Some(&*da));
        cache.insert(c, dc);
        assert!(cache.get(&b).is_none(), "b was least recently used");
        assert!(cache.get(&a).is_some());
        assert!(cache.get(&c).is_some());
        assert_eq!(cache.bytes(), 200);
    }

    #[test]
    fn images_larger_than_the_cache_are_not_kept() {
        let cache = ModuleCache::new(10);
        let (h, d) = image(1, 11);
        cache.insert(h, d);
        assert!(cache.get(&h).is_none());
        assert_eq!(cache.bytes(), 0);
    }
}
