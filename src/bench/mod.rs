//! `gpufn bench …`: benchmark programs. Each measures its baseline in the same run.

pub mod gateway;
pub mod invoke;
pub mod stub;
pub mod swap;
pub mod transport;
