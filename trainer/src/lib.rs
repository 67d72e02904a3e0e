//! The built-in LoRA trainer of trainprov.
//!
//! This crate will hold the deterministic candle LoRA trainer that `trainprov train` runs
//! in-process (see `shared/DESIGN.md`, "The trainer's determinism contract"). It is a
//! placeholder in the workspace until the trainer issue lands, so that the layout and
//! dependency graph are fixed from the start.
#![forbid(unsafe_code)]

/// The build type URI that records made by the built-in trainer will carry.
pub const BUILD_TYPE: &str = "https://trainprov.dev/buildtypes/candle-lora/v1";
