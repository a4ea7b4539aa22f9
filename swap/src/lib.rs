//! `gpufn-swap`: tiered store for swapped-out device memory (host RAM, disk, object store).
