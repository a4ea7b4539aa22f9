//! `gpufn-ptx`: fatbin reader, PTX parser and CPU interpreter for the worker's `cpu` backend.
