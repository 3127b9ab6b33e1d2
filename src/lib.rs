//! Shared code of the example engines (`examples/`) and benchmarks
//! (`benches/`) of the lb workspace. Not published.

pub mod replay;
