//! The machine a run ran on: OS, CPU and ISA features, memory, libc, toolchain, thread and determinism variables, Python.
