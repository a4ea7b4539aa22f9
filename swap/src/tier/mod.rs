pub mod cold;
pub mod disk;
